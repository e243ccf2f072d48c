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
from ntkrepro.nets import core


def fc(*, depth: int, width: int, out_dim: int = 1, activation: str | Activation | Callable = "relu",
       sigma_w2: float = 2.0, sigma_b2: float = 0.0, parameterization: str = "ntk", output_scale: float = 1.0,
       frozen_layers: Sequence[int] = (), dtype=jnp.float64) -> core.Network:
    """A fully connected net with ``depth`` weight layers (``depth - 1`` hidden layers of ``width``).

    Args:
        depth: weight layers including the readout (>= 1; depth 1 is a linear model).
        width: hidden width n.
        activation: registered name (``ntkrepro.kernels.gaussian``), ``Activation`` or JAX callable.
        sigma_w2, sigma_b2: weight and bias variances (Hayou/Lee convention).
        out_dim, parameterization, output_scale, frozen_layers, dtype: as every net (``ntkrepro.nets.core``).
    """
    depth, width, out_dim, frozen = core.check_net_args(
        depth=depth, width=width, out_dim=out_dim, parameterization=parameterization, frozen_layers=frozen_layers)
    sigma_w2, sigma_b2 = core.check_nonnegative("sigma_w2", sigma_w2), core.check_nonnegative("sigma_b2", sigma_b2)
    phi = core.resolve_activation(activation)
    use_bias = sigma_b2 > 0
    bias_scale = math.sqrt(sigma_b2)

    def init_fn(key, input_shape):
        fan_outs = [width] * (depth - 1) + [out_dim]
        specs = core.dense_specs("fc", input_shape, fan_outs, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        return core.init_layers(key, specs, parameterization, dtype)

    def taps_fn(params, x, taps):
        """The forward pass with ``taps[i]`` added to layer i's pre-activation, and per leaf the features
        (``ntkrepro.nets.core.taps_of``): c * (layer input) for w, c_b for b, with c, c_b the layer scales
        in the NTK parameterization and 1 in the standard one."""
        core.check_input(x, (params[0]["w"].shape[0],), "fc")
        h = jnp.asarray(x, dtype)
        features = []
        for i, layer in enumerate(params):
            if i > 0:
                h = phi(h)
            w = layer["w"]
            w_scale = math.sqrt(sigma_w2 / w.shape[0])
            pre = h @ core.effective_weight(w, w_scale, parameterization)
            if use_bias:
                pre = pre + core.effective_weight(layer["b"], bias_scale, parameterization)
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
    return core.network(init_fn, apply_fn, depth=depth, out_dim=out_dim, frozen=frozen)
