"""The CIFAR ResNet-(6n+2) of He et al. 2016 (Sec. 4.2: 3x3 stem with 16 channels, three stages of n
basic blocks with 16, 32, 64 channels, stride 2 at the start of stages 2 and 3, global average pooling,
dense readout; identity shortcuts, subsampled and zero-padded where the shape changes, "option A"), with
Hayou et al. 2020's two residual scalings: block l (l = 2, 3, ... after the stem, eq. 13) adds
``a_l * branch`` with a_l = 1 (standard, eq. 12) or 1/sqrt(l) (scaled, eq. 13).

Standard parameterization, He-normal convolutions (variance 2 / fan_in), readout variance 1 / fan_in.
Optional batch normalization after every convolution of a branch (and the stem) uses the statistics of
the batch it is applied to (training and evaluation alike: there are no running averages, so evaluation
batches should be large), with a learned scale and shift initialized at 1 and 0.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from ntkrepro.nets import Network
from ntkrepro.nets.core import check_input, init_layers, readout_mask_fn, trainable_mask_fn

STAGE_CHANNELS = (16, 32, 64)
BN_EPS = 1e-5


def _conv(x, w, stride: int):
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _norm(x, scale, shift):
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    return (x - mean) * lax.rsqrt(var + BN_EPS) * scale + shift


def _shortcut(x, out_channels: int, stride: int):
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    pad = out_channels - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad))) if pad else x


def cifar_resnet(
    *, depth: int, num_classes: int, branch_scale: str = "standard", batch_norm: bool = True, dtype=jnp.float32
) -> Network:
    """ResNet-``depth`` for 32x32 images (depth = 6n + 2: 20, 32, 44, 50, 56, 104, 110 ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 >= 8, got {depth}")
    if branch_scale not in ("standard", "scaled"):
        raise ValueError(f"branch_scale must be 'standard' or 'scaled', got {branch_scale!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    per_stage = (depth - 2) // 6
    blocks = []  # (in_channels, out_channels, stride)
    channels = STAGE_CHANNELS[0]
    for stage, out in enumerate(STAGE_CHANNELS):
        for b in range(per_stage):
            blocks.append((channels, out, 2 if stage > 0 and b == 0 else 1))
            channels = out
    branch = [1.0 if branch_scale == "standard" else 1.0 / math.sqrt(k + 2) for k in range(len(blocks))]
    n_layers = len(blocks) + 2

    def init_fn(key, input_shape):
        c0 = int(input_shape[-1])
        specs = [{"w": ((3, 3, c0, STAGE_CHANNELS[0]), math.sqrt(2.0 / (9 * c0)))}]
        for cin, cout, _ in blocks:
            specs.append(
                {
                    "w1": ((3, 3, cin, cout), math.sqrt(2.0 / (9 * cin))),
                    "w2": ((3, 3, cout, cout), math.sqrt(2.0 / (9 * cout))),
                }
            )
        specs.append(
            {"w": ((STAGE_CHANNELS[-1], num_classes), math.sqrt(1.0 / STAGE_CHANNELS[-1])), "b": ((num_classes,), 0.0)}
        )
        params = init_layers(key, specs, "standard", dtype)
        if batch_norm:
            params[0].update(g=jnp.ones(STAGE_CHANNELS[0], dtype), s=jnp.zeros(STAGE_CHANNELS[0], dtype))
            for layer, (_, cout, _) in zip(params[1:-1], blocks, strict=True):
                layer.update(
                    g1=jnp.ones(cout, dtype),
                    s1=jnp.zeros(cout, dtype),
                    g2=jnp.ones(cout, dtype),
                    s2=jnp.zeros(cout, dtype),
                )
        return params

    def apply_fn(params, x):
        check_input(x, (None, None, None), "cifar_resnet")
        h = _conv(jnp.asarray(x, dtype), params[0]["w"], 1)
        if batch_norm:
            h = _norm(h, params[0]["g"], params[0]["s"])
        h = jnp.maximum(h, 0.0)
        for layer, (_, cout, stride), a_l in zip(params[1:-1], blocks, branch, strict=True):
            r = _conv(h, layer["w1"], stride)
            if batch_norm:
                r = _norm(r, layer["g1"], layer["s1"])
            r = _conv(jnp.maximum(r, 0.0), layer["w2"], 1)
            if batch_norm:
                r = _norm(r, layer["g2"], layer["s2"])
            h = jnp.maximum(_shortcut(h, cout, stride) + a_l * r, 0.0)
        pooled = jnp.mean(h, axis=(1, 2))
        return pooled @ params[-1]["w"] + params[-1]["b"]

    return Network(
        init_fn, apply_fn, trainable_mask_fn(n_layers, frozenset()), readout_mask_fn(n_layers), n_layers, num_classes
    )
