"""Fully connected residual nets (Hayou et al. 2020 eqs. 12-13 / 24-25, Lemma 3, Thm. 2, Prop. 3).

y^1 = sqrt(sigma_w2 / d) W^1 x + sqrt(sigma_b2) b^1                          (no skip on the first layer)
y^l = y^(l-1) + a_l [sqrt(sigma_w2 / n) W^l phi(y^(l-1)) + sqrt(sigma_b2) b^l],  l = 2..depth,
a_l = 1 (``"standard"``, Thm. 2) or 1 / sqrt(l) (``"scaled"``, Prop. 3); all W, b ~ N(0, 1).
Hayou's K_res^L is the NTK of one coordinate of y^L, so the output is the first ``out_dim``
coordinates of y^depth (no extra readout layer): the empirical NTK converges to Lemma 3's recursion
K^l = K^(l-1) (a_l^2 Sigmadot^l + 1) + a_l^2 Sigma^l with ``depth`` = Hayou's L.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp

from ntkrepro.kernels.gaussian import Activation
from ntkrepro.nets import core

BRANCH_SCALES = ("standard", "scaled")


def resnet(*, depth: int, width: int, out_dim: int = 1, activation: str | Activation | Callable = "relu",
           sigma_w2: float = 2.0, sigma_b2: float = 0.0, branch_scale: str = "standard", parameterization: str = "ntk",
           output_scale: float = 1.0, frozen_layers: Sequence[int] = (), dtype=jnp.float64) -> core.Network:
    """A residual net with a dense first layer and ``depth - 1`` residual dense blocks of ``width``.

    Args:
        depth: Hayou's L, the number of weight layers (>= 1).
        width: width n of every layer (>= out_dim).
        out_dim: number of outputs k (the first k coordinates of y^depth).
        activation: registered name, ``Activation`` or JAX callable.
        sigma_w2, sigma_b2: weight and bias variances.
        branch_scale: ``"standard"`` (a_l = 1) or ``"scaled"`` (a_l = 1 / sqrt(l)).
        parameterization, output_scale, frozen_layers, dtype: as every net (``ntkrepro.nets.core``).
    """
    depth, width, out_dim, frozen = core.check_net_args(
        depth=depth, width=width, out_dim=out_dim, parameterization=parameterization, frozen_layers=frozen_layers)
    if out_dim > width:
        raise ValueError(f"out_dim ({out_dim}) must not exceed width ({width}): outputs are units of y^L")
    sigma_w2, sigma_b2 = core.check_nonnegative("sigma_w2", sigma_w2), core.check_nonnegative("sigma_b2", sigma_b2)
    if branch_scale not in BRANCH_SCALES:
        raise ValueError(f"branch_scale must be one of {BRANCH_SCALES}, got {branch_scale!r}")
    phi = core.resolve_activation(activation)
    use_bias = sigma_b2 > 0
    bias_scale = math.sqrt(sigma_b2)
    branch = [1.0 if branch_scale == "standard" else 1.0 / math.sqrt(layer) for layer in range(2, depth + 1)]

    def init_fn(key, input_shape):
        specs = core.dense_specs("resnet", input_shape, [width] * depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        return core.init_layers(key, specs, parameterization, dtype)

    def dense(layer, h):
        w = layer["w"]
        out = h @ core.effective_weight(w, math.sqrt(sigma_w2 / w.shape[0]), parameterization)
        return out + core.effective_weight(layer["b"], bias_scale, parameterization) if use_bias else out

    def apply_fn(params, x):
        core.check_input(x, (params[0]["w"].shape[0],), "resnet")
        y = dense(params[0], jnp.asarray(x, dtype))
        for a_l, layer in zip(branch, params[1:], strict=True):
            y = y + a_l * dense(layer, phi(y))
        return output_scale * y[:, :out_dim]

    return core.network(init_fn, apply_fn, depth=depth, out_dim=out_dim, frozen=frozen, has_readout=False)
