"""DEQ-NTK of fully connected networks with input injection (Feng & Kolter, sec. 3 and appendix A).

Finite depth (Thm. 1, eqs. 2-6), for a network with L hidden layers (design ``depth`` = L + 1):
    Sigma(0) = x.y,   Sigma(h) = sW2 E[s(u)s(v)] + sU2 x.y + sb2,   Sigmadot(h) = sW2 E[s'(u)s'(v)],
    Theta(0) = Sigma(0),   Theta(h) = Sigmadot(h) Theta(h-1) + Sigma(h),   (u, v) ~ N(0, Sigma(h-1)),
with s the normalized ReLU sqrt(2) max(0, x) by default.

Fixed point (Thm. 2, eqs. 7-9), inputs on the unit sphere, sW2 + sU2 + sb2 = 1, sW2 < 1:
    rho* solves R(rho) = rho,  R(rho) = sW2 (sqrt(1 - rho^2) + (pi - arccos rho) rho) / pi + sU2 x.y + sb2,
    Sigmadot* = sW2 (pi - arccos rho*) / pi,  Theta* = rho* / (1 - Sigmadot*).
g(rho) = R(rho) - rho is convex and decreasing (g' <= sW2 - 1 < 0), and g >= 0 at rho_0 = sU2 x.y + sb2,
so Newton's method from rho_0 increases monotonically to the root without overshoot: it runs on the
whole Gram at once and stops when max |g| <= tol.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.blocks import blockwise, blockwise_on_host, kernel_jit, row_block
from ntkrepro.checks import finite_kernel
from ntkrepro.kernels.chebyshev import clenshaw
from ntkrepro.kernels.fc import (
    Kernels,
    check_depth,
    check_inputs,
    check_variances,
    gaussian_layer,
    layer_sweep,
    tile_gram,
)
from ntkrepro.kernels.gaussian import arccos, get_activation


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["nngp", "ntk", "iterations", "max_residual"], meta_fields=[])
@dataclass(frozen=True)
class DEQFixedPoint:
    """Thm. 2 fixed point: ``nngp`` = Sigma*, ``ntk`` = Theta* (n1, n2), Newton steps, max |R(rho) - rho|."""

    nngp: jax.Array
    ntk: jax.Array
    iterations: jax.Array
    max_residual: jax.Array


@functools.partial(kernel_jit, static_argnames=("depth", "activation", "all_depths"))
def _deq_iteration(x1, x2, sigma_w2, sigma_u2, sigma_b2, *, depth, activation, all_depths):
    def tile(xa, xb, same):
        g1, g2, g12 = tile_gram(xa, xb, same)

        def layer(carry, _):
            d1, d2, sigma, theta = carry
            k1, k2, k, kdot = gaussian_layer(activation, d1, d2, sigma)
            sigma_next = sigma_w2 * k + sigma_u2 * g12 + sigma_b2
            return (sigma_w2 * k1 + sigma_u2 * g1 + sigma_b2, sigma_w2 * k2 + sigma_u2 * g2 + sigma_b2,
                    sigma_next, sigma_w2 * kdot * theta + sigma_next)

        return layer_sweep(layer, (g1, g2, g12, g12), all_depths=all_depths, length=depth - 1)

    return blockwise(tile, x1, x2)


def deq_kernels(x1, x2=None, *, depth: int, sigma_w2: float, sigma_u2: float, sigma_b2: float,
                activation="normalized_relu", all_depths: bool = False, dtype=None) -> Kernels:
    """Finite-depth DEQ-NTK iteration (Thm. 1): ``nngp`` = Sigma(L), ``ntk`` = Theta(L), L = depth - 1.

    With ``sigma_u2 = 0`` this is the plain FC NTK with Sigma(0) = x.y (any sigma_w2). No unit-norm or
    variance-sum condition is needed here. ``all_depths`` gives Theta(0..L) along a leading axis.
    """
    depth = check_depth(depth)
    act = get_activation(activation)
    check_variances(sigma_w2=sigma_w2, sigma_u2=sigma_u2, sigma_b2=sigma_b2)
    x1, x2 = check_inputs(x1, x2, dtype=dtype)
    as_dtype = lambda v: jnp.asarray(v, x1.dtype)
    out = _deq_iteration(x1, x2, as_dtype(sigma_w2), as_dtype(sigma_u2), as_dtype(sigma_b2),
                         depth=depth, activation=act, all_depths=bool(all_depths))
    finite_kernel("the DEQ iteration NTK", out.ntk, x1, x2)
    return out


# ---------------------------------------------------------------- Thm. 2 fixed point
#
# In angles, rho = cos(phi) and x.y = t = cos(psi), the fixed-point equation R(rho) = rho reads (using
# sW2 + sU2 + sb2 = 1, every term computed without cancellation)
#     F(phi) = -(1 - sW2)(1 - cos phi) - sW2 (sin phi - phi cos phi) / pi + sU2 (1 - t) = 0,
# F is decreasing on [0, pi] with F(0) >= 0 >= F(pi): one root phi*(psi), an analytic function of psi
# in [0, pi]. It is interpolated once per (sW2, sU2) by a Chebyshev series in psi (nodes solved by
# bisection to full precision), evaluated for every entry, then certified entrywise by |F| <= tol, with
# vectorized Newton steps in phi on the whole tile should any entry miss the tolerance.

CHEB_DEGREES = (32, 64, 128)
CHEB_TRIM = 1e-14
SERIES_PHI = 0.1  # below it sin(phi) - phi cos(phi) by its Taylor series


def _sin_minus_phi_cos(phi, xp=jnp):
    series = phi**3 * (1 / 3 - phi**2 * (1 / 30 - phi**2 * (1 / 840 - phi**2 / 45360)))
    return xp.where(phi < SERIES_PHI, series, xp.sin(phi) - phi * xp.cos(phi))


def _angle_residual(phi, one_minus_t, sigma_w2, sigma_u2, xp=jnp):
    """F(phi) = R(cos phi) - cos phi in the cancellation-free form above."""
    one_minus_cos = 2.0 * xp.sin(phi / 2) ** 2
    return (-(1.0 - sigma_w2) * one_minus_cos - sigma_w2 * _sin_minus_phi_cos(phi, xp) / np.pi
            + sigma_u2 * one_minus_t)


@functools.lru_cache(maxsize=64)
def _chebyshev_fixed_point(sigma_w2: float, sigma_u2: float) -> np.ndarray:
    """Chebyshev coefficients of phi*(psi) on psi in [0, pi] (variable x = 2 psi / pi - 1): the first
    degree in 32, 64, 128 whose last 8 coefficients are below 1e-14, trimmed at 1e-14 (the nodes carry
    rounding noise ~1e-15; entries are certified by their residual afterwards anyway)."""

    def phi_star(x):
        psi = (np.asarray(x) + 1.0) * np.pi / 2
        one_minus_t = 2.0 * np.sin(psi / 2) ** 2
        lo, hi = np.zeros_like(psi), np.full_like(psi, np.pi)
        for _ in range(64):  # bisection: F(lo) >= 0 >= F(hi)
            mid = (lo + hi) / 2
            positive = _angle_residual(mid, one_minus_t, sigma_w2, sigma_u2, np) >= 0
            lo, hi = np.where(positive, mid, lo), np.where(positive, hi, mid)
        return (lo + hi) / 2

    for degree in CHEB_DEGREES:
        coeffs = np.polynomial.chebyshev.chebinterpolate(phi_star, degree)
        if np.abs(coeffs[-8:]).max() < CHEB_TRIM:
            break
    significant = np.nonzero(np.abs(coeffs) > CHEB_TRIM)[0]
    return coeffs[: significant[-1] + 1] if significant.size else coeffs[:1]  # sigma_u2 = 0: phi* = 0


@functools.partial(kernel_jit, static_argnames=("max_iter",))
def _fixed_point_tile(xa, xb, coeffs, sigma_w2, sigma_u2, tol, *, max_iter):
    """(Sigma*, Theta*, Newton steps, max |F|, converged) for the tile x_a x_b^T."""
    t = jnp.clip(jnp.matmul(xa, xb.T, precision=lax.Precision.HIGHEST), -1.0, 1.0)
    # |t| within 8 ulps of 1 is +-1 (as in gaussian._correlation): arccos would turn the rounding of
    # x.x into an error ~1e-8 in phi and in Theta*.
    t = jnp.where(1.0 - jnp.abs(t) <= 8 * jnp.finfo(t.dtype).eps, jnp.sign(t), t)
    one_minus_t = 1.0 - t
    phi = jnp.clip(clenshaw(coeffs, 2.0 * arccos(t) / jnp.pi - 1.0), 0.0, jnp.pi)
    phi = jnp.where(t == 1.0, 0.0, phi)  # x = y: the fixed point is rho = 1 exactly
    residual = lambda p: _angle_residual(p, one_minus_t, sigma_w2, sigma_u2)
    slope = lambda p: -jnp.sin(p) * ((1.0 - sigma_w2) + sigma_w2 * p / jnp.pi)
    # an entry is done when |F| <= tol and the Newton correction |F / F'| <= tol (phi is then
    # accurate to ~tol too, also where F' is small near rho = 1)
    done = lambda f, df: (jnp.abs(f) <= tol) & (jnp.abs(f) <= tol * jnp.abs(df))

    def cond(state):
        it, p, _, _, f = state
        return (it < max_iter) & ~jnp.all(done(f, slope(p)))

    def safeguarded_newton(state):
        """Newton in phi kept inside a per-entry bracket of the root (F is decreasing), else bisection."""
        it, p, lo, hi, f = state
        df = slope(p)
        active = ~done(f, df)
        lo, hi = jnp.where(active & (f > 0), p, lo), jnp.where(active & (f <= 0), p, hi)
        newton = p - f / jnp.where(df != 0, df, 1.0)
        inside = (df != 0) & (newton > lo) & (newton < hi)
        p = jnp.where(active, jnp.where(inside, newton, (lo + hi) / 2), p)
        return it + 1, p, lo, hi, residual(p)

    init = (jnp.asarray(0), phi, jnp.zeros_like(phi), jnp.full_like(phi, jnp.pi), residual(phi))
    it, phi, _, _, res = lax.while_loop(cond, safeguarded_newton, init)
    rho = jnp.cos(phi)
    theta = rho / (1.0 - sigma_w2 * (jnp.pi - phi) / jnp.pi)
    return rho, theta, it, jnp.max(jnp.abs(res)), jnp.all(done(res, slope(phi)))


def deq_ntk(x1, x2=None, *, sigma_w2: float, sigma_u2: float, sigma_b2: float, tol: float | None = None,
            max_iter: int = 20, norm_tol: float = 1e-6, sum_tol: float = 1e-9, tile: int = 2048,
            dtype=None) -> DEQFixedPoint:
    """DEQ-NTK fixed point Theta* and Sigma* (Thm. 2, eqs. 7-9) for a whole Gram matrix.

    phi* = arccos(rho*) comes from a Chebyshev interpolant in arccos(x.y) (the fixed point depends on
    x.y alone), every entry is then certified by its own residual |R(rho) - rho| <= tol, and vectorized
    Newton steps run on a tile if any entry misses it (see the comment above ``_angle_residual``). The
    Gram is built in ``tile`` x ``tile`` blocks (only the upper ones when x2 is None).

    Args:
        x1, x2: inputs on the unit sphere (|x| = 1 within ``norm_tol``); x2 None: the Gram of x1.
        sigma_w2, sigma_u2, sigma_b2: DEQ-NTK initialization: sum 1 within ``sum_tol``, sigma_w2 < 1.
        tol: max |R(rho) - rho| accepted (default 1e-12 in float64, 1e-5 in float32); ``max_iter``
            Newton steps at most, else RuntimeError.
    Returns:
        :class:`DEQFixedPoint`: nngp = Sigma*, ntk = Theta*, iterations (Newton steps after the
        interpolant, max over tiles; usually 0), max_residual (max over all entries).
    """
    check_variances(sigma_w2=sigma_w2, sigma_u2=sigma_u2, sigma_b2=sigma_b2)
    if not float(sigma_w2) < 1.0:
        raise ValueError(f"the DEQ-NTK fixed point needs sigma_w2 < 1 (Lemma 1), got {sigma_w2}")
    total = float(sigma_w2) + float(sigma_u2) + float(sigma_b2)
    if abs(total - 1.0) > sum_tol:
        raise ValueError(f"Thm. 2 needs sigma_w2 + sigma_u2 + sigma_b2 = 1 (DEQ-NTK initialization), "
                         f"got {total!r}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    x1, x2 = check_inputs(x1, x2, dtype=dtype)
    if tol is None:
        tol = 1e-12 if x1.dtype == jnp.float64 else 1e-5
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None:
            dev = float(jnp.max(jnp.abs(jnp.linalg.norm(x, axis=1) - 1.0)))
            if dev > norm_tol:
                raise ValueError(f"Thm. 2 needs unit-norm inputs: {name} rows deviate from norm 1 by up to "
                                 f"{dev:.2e} > norm_tol={norm_tol:g}; normalize x / |x| first")

    dt = x1.dtype
    coeffs = jnp.asarray(_chebyshev_fixed_point(float(sigma_w2), float(sigma_u2)), dt)
    args = (coeffs, jnp.asarray(sigma_w2, dt), jnp.asarray(sigma_u2, dt), jnp.asarray(tol, dt))
    symmetric = x2 is None
    xb_all = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb_all.shape[0]
    size_a = min(tile, n1)
    size_b = size_a if symmetric else min(tile, n2)  # equal tiles, one compilation per call
    tile_stats = []  # (Newton steps, max residual, converged) per tile

    def pair_block(r0, c0):
        rho, theta, it, res, ok = _fixed_point_tile(row_block(x1, r0, size_a), row_block(xb_all, c0, size_b),
                                                    *args, max_iter=int(max_iter))
        tile_stats.append((int(it), float(res), bool(ok)))
        return rho, theta

    rho, theta = blockwise_on_host(pair_block, n1, n2, size_a, size_b, symmetric=symmetric)
    steps, residuals, oks = zip(*tile_stats, strict=True)
    iterations, worst, converged = max(steps), max(residuals), all(oks)
    if not (converged and worst <= tol):
        raise RuntimeError(f"DEQ-NTK fixed point did not reach tol={tol:g} (|F| and Newton correction) "
                           f"within {max_iter} Newton steps (max residual {worst:.2e})")
    return DEQFixedPoint(jax.device_put(rho), jax.device_put(theta), jnp.asarray(iterations), jnp.asarray(worst))
