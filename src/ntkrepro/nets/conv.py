"""Convolutional nets in Arora et al. 2019's conventions (sec. 4.1 vanilla, 4.2 global average pooling).

Images (n, P, Q, C0); filter q x q (q odd), stride 1, zero ("same") padding, no bias, no pooling
except the final GAP. With L = depth - 1 convolution layers:
    xt^(1) = W^(1) * x,
    x^(h) = sqrt(c_sigma / (C q^2)) sigma(xt^(h)),   xt^(h+1) = W^(h+1) * x^(h),   h = 1..L,
    vanilla: f = sum_{alpha, ij} W^(L+1)_{ij, alpha} x^(L)_{ij, alpha}   (W^(L+1) of shape P x Q x C x k),
    GAP:     f = sum_alpha W^(L+1)_alpha mean_{ij} x^(L)_{ij, alpha},
all weights N(0, 1); c_sigma = 1 / E[sigma(z)^2] (2 for ReLU). The readout keeps the 1/q^2 of x^(L)
exactly as the paper writes it. The empirical NTK of this net converges to ``cntk(..., depth,
readout, fix_first_last, filter_size)`` (the authors' code: no trace operator at the last layer;
``fix_first_last`` drops the first and last layer's gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ntkrepro.kernels import gaussian
from ntkrepro.kernels.gaussian import Activation
from ntkrepro.nets import core

READOUTS = ("vanilla", "gap")


def cnn(*, depth: int, channels: int, out_dim: int = 1, readout: str = "vanilla", fix_first_last: bool = False,
        filter_size: int = 3, activation: str | Activation | Callable = "relu", c_sigma: float | None = None,
        parameterization: str = "ntk", output_scale: float = 1.0, frozen_layers: Sequence[int] = (),
        dtype=jnp.float64) -> core.Network:
    """A CNN with ``depth - 1`` convolution layers of ``channels`` channels and a dense readout.

    Args:
        depth: weight layers including the readout = conv layers + 1 (Arora's table depth), >= 2.
        channels: channels C of every convolution layer.
        readout: ``"vanilla"`` (flatten + dense) or ``"gap"`` (global average pooling + dense).
        fix_first_last: freeze the first convolution and the readout (Arora sec. 4.2), besides
            ``frozen_layers``.
        filter_size: odd filter side q.
        activation: registered name, ``Activation`` or JAX callable.
        c_sigma: post-activation normalization; default 1 / E[sigma(z)^2] of ``activation``.
        out_dim, parameterization, output_scale, frozen_layers, dtype: as every net (``ntkrepro.nets.core``).
    """
    depth = core.check_positive_int("depth", depth, minimum=2)
    frozen = sorted(set(frozen_layers) | ({1, depth} if fix_first_last else set()))
    depth, channels, out_dim, frozen = core.check_net_args(
        depth=depth, width=channels, out_dim=out_dim, parameterization=parameterization, frozen_layers=frozen,
        width_name="channels", min_depth=2)
    q = core.check_positive_int("filter_size", filter_size)
    if q % 2 == 0:
        raise ValueError(f"filter_size must be odd (zero 'same' padding), got {q}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    phi = core.resolve_activation(activation)
    c = gaussian.c_sigma(activation) if c_sigma is None else float(c_sigma)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c_sigma must be finite and > 0, got {c}")
    post_scale = math.sqrt(c / (channels * q * q))  # scale of every weight that reads x^(h), h >= 1

    def init_fn(key, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"cnn: input_shape must be (n, P, Q, C0), got {tuple(input_shape)}")
        _, p_side, q_side, c0 = (int(s) for s in input_shape)
        for name, size in (("P", p_side), ("Q", q_side), ("C0", c0)):
            core.check_positive_int(f"input {name}", size)
        readout_shape = (p_side, q_side, channels, out_dim) if readout == "vanilla" else (channels, out_dim)
        specs = ([{"w": ((q, q, c0, channels), 1.0)}]
                 + [{"w": ((q, q, channels, channels), post_scale)} for _ in range(depth - 2)]
                 + [{"w": (readout_shape, post_scale)}])
        return core.init_layers(key, specs, parameterization, dtype)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def apply_fn(params, x):
        w_out = params[-1]["w"]
        c0 = params[0]["w"].shape[2]
        expected = (w_out.shape[0], w_out.shape[1], c0) if readout == "vanilla" else (None, None, c0)
        core.check_input(x, expected, f"cnn ({readout} readout)")
        h = conv(jnp.asarray(x, dtype), core.effective_weight(params[0]["w"], 1.0, parameterization))
        for layer in params[1:-1]:
            h = conv(phi(h), core.effective_weight(layer["w"], post_scale, parameterization))
        w_eff = core.effective_weight(w_out, post_scale, parameterization)
        if readout == "vanilla":
            out = jnp.einsum("npqc,pqck->nk", phi(h), w_eff)
        else:
            out = jnp.mean(phi(h), axis=(1, 2)) @ w_eff
        return output_scale * out

    return core.network(init_fn, apply_fn, depth=depth, out_dim=out_dim, frozen=frozen)
