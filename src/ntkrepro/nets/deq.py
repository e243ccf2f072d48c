"""Fully connected net with input injection: the finite-depth DEQ iteration (Feng & Kolter, sec. 3.1, Thm. 1).

With L = depth - 1 hidden layers of width N and the normalized ReLU sigma(u) = sqrt(2) max(0, u):
    f^(1) = W^(1) x,
    f^(h) = sqrt(sigma_w2 / N) W^(h) sigma(f^(h-1)) + sqrt(sigma_u2) U^(h) x + sqrt(sigma_b2) b^(h),
            h = 2..L+1,
output f = f^(L+1) (k units); all W, U, b ~ N(0, 1), weights NOT tied across layers.

Why this reading of the paper: Thm. 1's kernel (eqs. 2-6) has Sigma^(0) = x.y and
Sigma^(h) = sigma_w2 E[sigma(u) sigma(v)] + sigma_u2 x.y + sigma_b2, the covariance of f^(h+1) above,
and the NTK sums one term Sigma^(h-1) prod_{h' >= h} Sigmadot^(h') per weight layer h = 1..L+1, layer 1
being a plain W x. The printed net scales U and b by 1/sqrt(N_h), which would make their
contributions vanish as N grows, and its proof (App. A) sums the U term over N units; the scalings here
are the ones under which the empirical NTK converges to Thm. 1 exactly. The theorem treats untied
weights (Remark 1: a finite DEQ ties them; the paper analyses the untied net), so this net is untied.
Inputs are meant to be unit-norm (the DEQ-NTK setting), but any x works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ntkrepro.nets import core


def normalized_relu(u: jax.Array) -> jax.Array:
    """sqrt(2) max(0, u), so that E[sigma(z)^2] = 1 for z ~ N(0, 1) (Feng & Kolter Def. 3.1)."""
    return math.sqrt(2.0) * jnp.maximum(u, 0.0)


def deq_net(*, depth: int, width: int, sigma_w2: float, sigma_u2: float, sigma_b2: float, out_dim: int = 1,
            parameterization: str = "ntk", output_scale: float = 1.0, frozen_layers: Sequence[int] = (),
            dtype=jnp.float64) -> core.Network:
    """The input-injected net of Thm. 1 with ``depth`` weight layers (L = depth - 1 hidden layers).

    Args:
        depth: weight layers including the readout (>= 1; depth 1 is W x).
        width: hidden width N.
        sigma_w2, sigma_u2, sigma_b2: variances of the recurrent weights, the injection and the bias.
        out_dim, parameterization, output_scale, frozen_layers, dtype: as every net (``ntkrepro.nets.core``).
    """
    depth, width, out_dim, frozen = core.check_net_args(
        depth=depth, width=width, out_dim=out_dim, parameterization=parameterization, frozen_layers=frozen_layers)
    sigma_w2, sigma_u2, sigma_b2 = (core.check_nonnegative(name, value) for name, value in
                                    (("sigma_w2", sigma_w2), ("sigma_u2", sigma_u2), ("sigma_b2", sigma_b2)))
    w_scale = math.sqrt(sigma_w2 / width)
    u_scale = math.sqrt(sigma_u2)
    b_scale = math.sqrt(sigma_b2)

    def init_fn(key, input_shape):
        d = core.dense_input_dim("deq_net", input_shape)
        specs = [{"w": ((d, width if depth > 1 else out_dim), 1.0)}]
        for h in range(2, depth + 1):
            fan_out = width if h < depth else out_dim
            specs.append({"w": ((width, fan_out), w_scale), "u": ((d, fan_out), u_scale),
                          "b": ((fan_out,), b_scale)})
        return core.init_layers(key, specs, parameterization, dtype)

    def apply_fn(params, x):
        core.check_input(x, (params[0]["w"].shape[0],), "deq_net")
        x = jnp.asarray(x, dtype)
        f = x @ core.effective_weight(params[0]["w"], 1.0, parameterization)
        for layer in params[1:]:
            f = (normalized_relu(f) @ core.effective_weight(layer["w"], w_scale, parameterization)
                 + x @ core.effective_weight(layer["u"], u_scale, parameterization)
                 + core.effective_weight(layer["b"], b_scale, parameterization))
        return output_scale * f

    return core.network(init_fn, apply_fn, depth=depth, out_dim=out_dim, frozen=frozen)
