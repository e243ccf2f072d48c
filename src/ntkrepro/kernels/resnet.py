"""NNGP and NTK of fully connected residual networks at infinite width (Hayou et al. 2020, Lemma 3,
Thm. 2 and Prop. 3).

Network: y^1 = sigma_w/sqrt(d) W^1 x + sigma_b b^1 (no skip), and for l >= 2
    y^l = y^{l-1} + a_l F(y^{l-1}),   F(y) = sigma_w/sqrt(n) W^l phi(y) + sigma_b b^l,
with a_l = 1 (``branch_scale="standard"``, eq. 12) or a_l = 1/sqrt(l) (``"scaled"``, eq. 13).
With Q_l the covariance of y^l (the NNGP) and, under Q_{l-1},
    Sigma_l = sigma_b2 + sigma_w2 E[phi(u)phi(v)],   Sigmadot_l = sigma_w2 E[phi'(u)phi'(v)]:
    Q_1 = K_1 = sigma_b2 + sigma_w2 x.x'/d,
    Q_l = Q_{l-1} + a_l^2 Sigma_l,
    K_l = K_{l-1} (1 + a_l^2 Sigmadot_l) + a_l^2 Sigma_l        (Lemma 3 for a_l = 1).
The branch and the skip are independent given y^{l-1} (W^l has mean 0), so no cross term enters Q_l.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from ntkrepro.blocks import blockwise, kernel_jit
from ntkrepro.checks import finite_kernel
from ntkrepro.kernels import fc
from ntkrepro.kernels.gaussian import get_activation

BRANCH_SCALES = ("standard", "scaled")


@functools.partial(kernel_jit, static_argnames=("depth", "activation", "all_depths", "scaled"))
def _resnet(x1, x2, sigma_w2, sigma_b2, *, depth, activation, all_depths, scaled):
    dim = x1.shape[1]

    def tile(xa, xb, same):
        q1, q2, q12 = (sigma_b2 + sigma_w2 * g / dim for g in fc.tile_gram(xa, xb, same))

        def layer(carry, index):
            q1, q2, q12, ntk = carry
            branch = 1.0 / index if scaled else 1.0  # a_l^2
            k1, k2, k, kdot = fc.gaussian_layer(activation, q1, q2, q12)
            sigma = sigma_b2 + sigma_w2 * k
            return (q1 + branch * (sigma_b2 + sigma_w2 * k1), q2 + branch * (sigma_b2 + sigma_w2 * k2),
                    q12 + branch * sigma, ntk * (1.0 + branch * sigma_w2 * kdot) + branch * sigma)

        layers = jnp.arange(2, depth + 1, dtype=xa.dtype)
        return fc.layer_sweep(layer, (q1, q2, q12, q12), all_depths=all_depths, xs=layers)

    return blockwise(tile, x1, x2)


def resnet_kernels(x1, x2=None, *, depth: int, sigma_w2: float, sigma_b2: float = 0.0, activation="relu",
                   branch_scale: str = "standard", all_depths: bool = False, dtype=None) -> fc.Kernels:
    """NNGP Q_depth and NTK K_depth of the residual network of the module docstring.

    Args:
        x1, x2: inputs (n1, d), (n2, d); x2 None: the Gram of x1 (upper triangle computed).
        depth: layers L (the first one without a skip connection), >= 1.
        sigma_w2, sigma_b2: weight and bias variances of every layer.
        branch_scale: "standard" (a_l = 1, Thm. 2) or "scaled" (a_l = 1/sqrt(l), Prop. 3).
        all_depths: leading axis over depths 1..depth from one recursion.
    """
    depth = fc.check_depth(depth)
    if branch_scale not in BRANCH_SCALES:
        raise ValueError(f"branch_scale must be one of {BRANCH_SCALES}, got {branch_scale!r}")
    act = get_activation(activation)
    fc.check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    x1, x2 = fc.check_inputs(x1, x2, dtype=dtype)
    out = _resnet(x1, x2, jnp.asarray(sigma_w2, x1.dtype), jnp.asarray(sigma_b2, x1.dtype),
                  depth=depth, activation=act, all_depths=bool(all_depths), scaled=branch_scale == "scaled")
    finite_kernel("the ResNet NTK", out.ntk, x1, x2)
    return out
