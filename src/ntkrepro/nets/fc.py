"""Fully connected networks in NTK or standard parameterization (Hayou et al. 2020 eq. 18; Lee et al.).

h_1 = sqrt(sigma_w2 / d) W_1 x + sqrt(sigma_b2) b_1,
h_l = sqrt(sigma_w2 / n) W_l phi(h_{l-1}) + sqrt(sigma_b2) b_l,   l = 2..depth,   f = output_scale * h_depth,
all W, b ~ N(0, 1). ``depth`` counts the weight layers including the readout, as ``fc_kernels`` does, so
the empirical NTK converges to ``fc_kernels(..., depth=depth, sigma_w2, sigma_b2).ntk`` as width grows.
Jacot et al. 2018's convention (x/sqrt(n_0) and beta * b) is ``sigma_w2=1.0, sigma_b2=beta**2``.
Biases exist only when ``sigma_b2 > 0`` (with sigma_b2 = 0 they have zero gradient in the NTK
parameterization and are left out in both parameterizations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp

from ntkrepro.kernels.gaussian import Activation
from ntkrepro.nets.core import (
    Network,
    check_frozen_layers,
    check_input,
    check_nonnegative,
    check_parameterization,
    check_positive_int,
    effective_weight,
    init_layers,
    readout_mask_fn,
    resolve_activation,
    trainable_mask_fn,
)


def fc(
    *,
    depth: int,
    width: int,
    out_dim: int = 1,
    activation: str | Activation | Callable = "relu",
    sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
    parameterization: str = "ntk",
    output_scale: float = 1.0,
    frozen_layers: Sequence[int] = (),
    dtype=jnp.float64,
) -> Network:
    """A fully connected net with ``depth`` weight layers (``depth - 1`` hidden layers of ``width``).

    Args:
        depth: weight layers including the readout (>= 1; depth 1 is a linear model).
        width: hidden width n.
        out_dim: number of outputs k.
        activation: registered name (``ntkrepro.kernels.gaussian``), ``Activation`` or JAX callable.
        sigma_w2, sigma_b2: weight and bias variances (Hayou/Lee convention).
        parameterization: ``"ntk"`` or ``"standard"`` (see ``ntkrepro.nets.core``).
        output_scale: multiplier kappa of the output (Arora et al. 2019 sec. 3.3).
        frozen_layers: 1-based layer numbers excluded from training and from the empirical NTK.
        dtype: parameter dtype; inputs are cast to it.
    """
    depth = check_positive_int("depth", depth)
    width = check_positive_int("width", width)
    out_dim = check_positive_int("out_dim", out_dim)
    sigma_w2 = check_nonnegative("sigma_w2", sigma_w2)
    sigma_b2 = check_nonnegative("sigma_b2", sigma_b2)
    check_parameterization(parameterization)
    frozen = check_frozen_layers(frozen_layers, depth)
    phi = resolve_activation(activation)
    use_bias = sigma_b2 > 0
    bias_scale = math.sqrt(sigma_b2)

    def init_fn(key, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"fc: input_shape must be (n, d), got {tuple(input_shape)}")
        d = check_positive_int("input dimension", input_shape[-1])
        fan_ins = [d] + [width] * (depth - 1)
        fan_outs = [width] * (depth - 1) + [out_dim]
        specs = []
        for fan_in, fan_out in zip(fan_ins, fan_outs, strict=True):
            layer = {"w": ((fan_in, fan_out), math.sqrt(sigma_w2 / fan_in))}
            if use_bias:
                layer["b"] = ((fan_out,), bias_scale)
            specs.append(layer)
        return init_layers(key, specs, parameterization, dtype)

    def taps_fn(params, x, taps):
        """The forward pass with ``taps[i]`` added to layer i's pre-activation, and per leaf the features
        (``ntkrepro.nets.core.taps_of``): c * (layer input) for w, c_b for b, with c, c_b the layer scales
        in the NTK parameterization and 1 in the standard one."""
        check_input(x, (params[0]["w"].shape[0],), "fc")
        h = jnp.asarray(x, dtype)
        features = []
        for i, layer in enumerate(params):
            if i > 0:
                h = phi(h)
            w = layer["w"]
            w_scale = math.sqrt(sigma_w2 / w.shape[0])
            pre = h @ effective_weight(w, w_scale, parameterization)
            if use_bias:
                pre = pre + effective_weight(layer["b"], bias_scale, parameterization)
            if taps is not None:
                pre = pre + taps[i]
                gradient_scale = w_scale if parameterization == "ntk" else 1.0
                features.append({"w": gradient_scale * h})
                if use_bias:
                    bias_gradient = bias_scale if parameterization == "ntk" else 1.0
                    features[-1]["b"] = jnp.full((h.shape[0], 1), bias_gradient, h.dtype)
            h = pre
        return output_scale * h, features

    def apply_fn(params, x):
        return taps_fn(params, x, None)[0]

    apply_fn.taps_fn = taps_fn  # the structured empirical NTK's hook
    return Network(init_fn, apply_fn, trainable_mask_fn(depth, frozen), readout_mask_fn(depth), depth,
                   out_dim)
