"""Mean-field NTK recursions of Hayou et al. 2020 that stay accurate to depths of 1e6 and more.

The general recursion of one pair (any phase, any depth float64 resolves) is
``ntkrepro.kernels.meanfield.ntk_recursion``; this module continues it on the Edge of Chaos.

FFNN (Lemma 2): Sigma^1 = sigma_b2 + sigma_w2 x.x'/d, K^1 = Sigma^1,
    K^l = Sigmadot^l K^(l-1) + Sigma^l, Sigma^l = sigma_b2 + sigma_w2 E[phi phi],
    Sigmadot^l = sigma_w2 E[phi' phi'].
ReLU ResNet (Lemma 3, eqs. 24-25): y^l = y^(l-1) + a_l F(y^(l-1)), a_l = 1 (Thm. 2) or 1/sqrt(l) (Prop. 3),
    K^l = K^(l-1) (1 + a_l^2 Sigmadot^l) + a_l^2 Sigma^l, Sigma^l the branch's covariance.

Why a special path: on the Edge of Chaos the correlation c_l of layer l tends to 1 and its per-layer
change falls below float64's resolution of numbers near 1 (ReLU: 1 - c_l ~ 44/l^2, whose change per
layer is ~1e-16 at l = 1e6), so the plain float64 recursion stalls at a wrong plateau. Here the state is
gamma = 1 - c and both maps are written so that every quantity is computed relative to its own size:

* ReLU-like phi (slopes a < 0 < b side, rho = 2ab / (a^2 + b^2)) at sigma_b = 0: with c = cos(theta),
  1 - f(c) = gamma - (1 - rho)(sin t - t cos t)/pi and f'(c) = 1 - (1 - rho) t / pi exactly (arc-cosine
  kernels), sin t - t cos t by its Taylor series for small t.
* smooth phi (Hayou's class S; also ELU, whose phi'' jumps at 0): at the fixed-point variance q,
  1 - f'(c) = int_c^1 f''(s) ds and gamma - (1 - f(c)) = int_c^1 (s - c) f''(s) ds with
  f''(s) = sigma_w2 q E[phi''(u) phi''(v)] (corr. s). As functions of sigma = sqrt(1 - s), f'' is smooth
  (proof of Thm. 1.2), so R2 = (1 - f'(c))/gamma and R1 = (gamma - 1 + f(c))/gamma^2 (weighted means of
  f'' over [c, 1]) are interpolated once by Chebyshev polynomials in sigma, from Gauss-Legendre sums
  of f'' evaluated by ``ntkrepro.kernels.gaussian.polar_expectations`` (~1e-14 relative). Before
  that map applies, the variance must sit at its fixed point: the first layers run the general 2x2
  recursion (float64, ``ntkrepro.kernels.meanfield.ntk_recursion``) until it does.

Everything is normalized so nothing overflows: ResNet kernels are carried divided by
P_l = prod_{k<=l} (1 + a_k^2 sigma_w2 / 2) (the growth of the variance), with log P_l returned.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import partial

import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.blocks import kernel_jit
from ntkrepro.kernels import meanfield
from ntkrepro.kernels.chebyshev import clenshaw
from ntkrepro.kernels.gaussian import Activation, get_activation, polar_expectations

CHEB_DEGREE = 48
GL_NODES = 48
SERIES_THETA = 0.05  # below it, sin t - t cos t by its series (relative error < 1e-17)


# ------------------------------------------------------------------ activations and fixed points


def relu_like_rho(activation: Activation | str) -> float | None:
    """rho = 2ab / (a^2 + b^2) for a ReLU-like phi (slopes a for x < 0, b for x > 0); None otherwise."""
    act = get_activation(activation)
    if not (act.name in ("relu", "identity", "normalized_relu") or act.name.startswith(("leaky_relu", "relu_like"))):
        return None
    a, b = float(act.deriv(jnp.asarray(-1.0))), float(act.deriv(jnp.asarray(1.0)))
    return 2 * a * b / (a * a + b * b)


@dataclass(frozen=True)
class EOCPoint:
    """An exact Edge-of-Chaos point: chi_1 = 1 at the fixed-point variance q (to float64 round-off)."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q: float


def eoc_point(activation: str, *, sigma_b2: float) -> EOCPoint:
    """The EOC point with bias variance ``sigma_b2`` (``ntkrepro.kernels.meanfield.eoc_sigma_w2``) and its
    fixed-point variance q (``meanfield.q_star``), checked to have chi_1 = 1 (Sec. 4.1).

    ReLU-like activations have one EOC point, sigma_b2 = 0, sigma_w2 = 2 / (a^2 + b^2), on which every
    q is a fixed point (q is then the input's Sigma^1; returned as 1.0)."""
    if sigma_b2 < 0:
        raise ValueError(f"sigma_b2 must be >= 0, got {sigma_b2}")
    if relu_like_rho(activation) is not None:
        if sigma_b2 != 0:
            raise ValueError(f"{activation} is ReLU-like: its only EOC point has sigma_b2 = 0")
        act = get_activation(activation)
        a, b = float(act.deriv(jnp.asarray(-1.0))), float(act.deriv(jnp.asarray(1.0)))
        return EOCPoint(act.name, 2.0 / (a * a + b * b), 0.0, 1.0)

    if sigma_b2 == 0:  # q* = 0: the limit q -> 0 of the curve, sigma_w^2 = 1 / phi'(0)^2 (needs phi(0) = 0)
        if float(get_activation(activation).fn(jnp.asarray(0.0))) != 0.0:
            raise ValueError(f"{activation}: phi(0) != 0, so q = 0 is no fixed point and sigma_b2 = 0 has no EOC")
        slope0 = float(get_activation(activation).deriv(jnp.asarray(0.0)))
        return EOCPoint(activation, 1.0 / slope0**2, 0.0, 0.0)

    sigma_w2 = meanfield.eoc_sigma_w2(activation, sigma_b2=sigma_b2)
    q = meanfield.q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    chi = meanfield.chi1(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q) if math.isfinite(q) else math.nan
    if not abs(chi - 1.0) < 1e-10:
        raise ValueError(f"{activation}: the EOC point at sigma_b2={sigma_b2} is not the attracting fixed point")
    return EOCPoint(get_activation(activation).name, float(sigma_w2), float(sigma_b2), float(q))


# ------------------------------------------------------------------ near-one correlation maps


def sin_minus_t_cos(theta):
    """sin t - t cos t, by its series t^3/3 - t^5/30 + t^7/840 - t^9/45360 below SERIES_THETA."""
    t2 = theta * theta
    series = theta * t2 * (1 / 3 - t2 * (1 / 30 - t2 * (1 / 840 - t2 / 45360)))
    return jnp.where(theta < SERIES_THETA, series, jnp.sin(theta) - theta * jnp.cos(theta))


def angle_of_gamma(gamma):
    """The angle t = arccos(c) of a correlation c = 1 - gamma, from gamma without cancellation."""
    return 2.0 * jnp.arcsin(jnp.sqrt(jnp.maximum(gamma, 0.0) / 2.0))


@dataclass(frozen=True)
class SmoothMap:
    """Chebyshev interpolants of R1, R2 in sigma = sqrt(gamma) on [0, sigma_max] at variance q."""

    r1: np.ndarray
    r2: np.ndarray
    sigma_max: float
    q: float
    fpp1: float  # f''(1)


def _fpp(act: Activation, sigma_w2: float, q: float, s):
    """f''(s) = sigma_w2 q E[phi''(u) phi''(v)], (u, v) with variances q and correlation s."""
    s = jnp.asarray(s, jnp.float64)
    k, _ = polar_expectations(act.deriv2, act.deriv2, q + 0 * s, q * s, q + 0 * s)
    return sigma_w2 * q * k


@functools.lru_cache(maxsize=32)
def smooth_map(
    activation: str, *, sigma_w2: float, q: float, gamma_max: float = 0.5, degree: int = CHEB_DEGREE
) -> SmoothMap:
    """Build R1(sigma), R2(sigma) for a smooth (or C^1 with piecewise smooth phi'') activation."""
    act = get_activation(activation)
    if act.deriv2 is None:
        raise ValueError(f"{activation} has no second derivative: use the ReLU-like closed forms")
    sigma_max = math.sqrt(gamma_max)
    nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    sig = (nodes + 1.0) / 2.0 * sigma_max
    x_gl, w_gl = np.polynomial.legendre.leggauss(GL_NODES)
    # s in [0, sig]: s = sig (x + 1)/2; weight sig/2
    s = sig[:, None] * (x_gl[None] + 1.0) / 2.0
    w = sig[:, None] * w_gl[None] / 2.0
    g = np.asarray(_fpp(act, sigma_w2, q, 1.0 - s**2))
    gam = sig**2
    r2 = np.sum(w * g * 2 * s, axis=1) / gam
    r1 = np.sum(w * (gam[:, None] - s**2) * g * 2 * s, axis=1) / gam**2
    c1 = np.polynomial.chebyshev.chebfit(nodes, r1, degree)
    c2 = np.polynomial.chebyshev.chebfit(nodes, r2, degree)
    tail = max(np.abs(c1[-4:]).max() / np.abs(c1[0]), np.abs(c2[-4:]).max() / np.abs(c2[0]))
    if tail > 1e-12:
        raise ValueError(f"{activation}: Chebyshev interpolation of f'' not resolved (tail {tail:.1e})")
    fpp1 = float(_fpp(act, sigma_w2, q, 1.0))
    return SmoothMap(c1, c2, sigma_max, float(q), fpp1)


# ------------------------------------------------------------------ deep FFNN on the EOC


@partial(kernel_jit, static_argnames=("kind",))
def _ffnn_steps(kind, params, state, start, stop):
    """Advance (gamma, k12, k11, k22) from layer ``start`` to ``stop`` (exclusive loop bounds)."""

    def step(_, st):
        gamma, k12, k11, k22 = st
        if kind == "relu_like":
            rho, q, q11, q22 = params
            theta = angle_of_gamma(gamma)
            lam = 1.0 - (1.0 - rho) * theta / jnp.pi
            new_gamma = gamma - (1.0 - rho) * sin_minus_t_cos(theta) / jnp.pi
        else:
            r1, r2, sigma_max, q, q11, q22 = params
            x = 2.0 * jnp.sqrt(gamma) / sigma_max - 1.0
            lam = 1.0 - gamma * clenshaw(r2, x)
            new_gamma = gamma - gamma * gamma * clenshaw(r1, x)
        return new_gamma, lam * k12 + q * (1.0 - new_gamma), k11 + q11, k22 + q22

    return lax.fori_loop(start, stop, step, state)


@dataclass(frozen=True)
class DeepRun:
    """A deep recursion sampled at ``depths``: K^l (diagonal k11, k22 and off-diagonal k12; ResNets:
    divided by P_l, with ``log_p``), gamma = 1 - c^l (c^l the correlation of the layer-l pre-activations),
    the variances ``q11, q22`` reached and the layer where the near-one map took over."""

    depths: np.ndarray
    k11: np.ndarray
    k12: np.ndarray
    k22: np.ndarray
    gamma: np.ndarray
    q11: float
    q22: float
    switch_depth: int
    log_p: np.ndarray | None = None


def _record(depths: np.ndarray, advance, state, start: int, progress=None):
    rows = []
    pairs = zip(depths, progress(depths) if progress else depths, strict=True)
    for target, _ in pairs:
        if target > start:
            state = advance(state, start, int(target))
            start = int(target)
        rows.append([float(v) for v in state])
    return np.asarray(rows)


def ffnn_eoc(
    activation: str,
    *,
    point: EOCPoint,
    sigma1: tuple[float, float, float],
    depths,
    q_tol: float = 1e-9,
    max_general_depth: int = 1000,
    progress=None,
) -> DeepRun:
    """K^l of a FFNN on the EOC at the (increasing) ``depths``, for one input pair with first-layer
    covariance ``sigma1 = (Sigma^1(x,x), Sigma^1(x,x'), Sigma^1(x',x'))``.

    ReLU-like: closed forms from layer 1 (every variance is a fixed point). Smooth phi: the general
    recursion until both variances are within ``q_tol`` (relative) of the fixed point q, then the
    near-one map at q (raises if ``max_general_depth`` layers do not get there)."""
    depths = np.asarray(sorted(set(int(d) for d in depths)))
    if depths[0] < 1:
        raise ValueError("depths must be >= 1")
    s11, s12, s22 = (float(v) for v in sigma1)
    rho = relu_like_rho(activation)
    if rho is not None:
        if point.sigma_b2 != 0:
            raise ValueError("ReLU-like EOC needs sigma_b2 = 0")
        gamma0 = 1.0 - s12 / math.sqrt(s11 * s22)
        params = (rho, math.sqrt(s11 * s22), s11, s22)
        state = tuple(jnp.asarray(v) for v in (gamma0, s12, s11, s22))
        rows = _record(depths, lambda st, a, b: _ffnn_steps("relu_like", params, st, a + 1, b + 1), state, 1, progress)
        return DeepRun(depths, rows[:, 2], rows[:, 1], rows[:, 3], rows[:, 0], s11, s22, 1)
    smap = smooth_map(activation, sigma_w2=point.sigma_w2, q=point.q)

    general = meanfield.ntk_recursion(
        (s11, s12, s22), activation, sigma_w2=point.sigma_w2, sigma_b2=point.sigma_b2, depth=max_general_depth
    )
    settled = np.flatnonzero(
        (np.abs(general.s11 / point.q - 1) < q_tol) & (np.abs(general.s22 / point.q - 1) < q_tol)
    )
    if settled.size == 0:
        raise ValueError(f"{activation}: variances not within {q_tol:g} of q* after {max_general_depth} layers")
    switch = int(settled[0]) + 1  # layer number (1-based)
    gamma_switch = 1.0 - general.s12[switch - 1] / math.sqrt(general.s11[switch - 1] * general.s22[switch - 1])
    if gamma_switch > smap.sigma_max**2:
        raise ValueError(f"{activation}: 1 - c = {gamma_switch:.3g} at the switch exceeds the map's range")
    params = (jnp.asarray(smap.r1), jnp.asarray(smap.r2), smap.sigma_max, point.q, point.q, point.q)
    early = depths[depths <= switch]
    early_rows = np.stack(
        [
            1.0 - general.s12[early - 1] / np.sqrt(general.s11[early - 1] * general.s22[early - 1]),
            general.k12[early - 1],
            general.k11[early - 1],
            general.k22[early - 1],
        ],
        axis=1,
    )
    state = tuple(
        jnp.asarray(v)
        for v in (
            gamma_switch,
            general.k12[switch - 1],
            general.k11[switch - 1],
            general.k22[switch - 1],
        )
    )
    late = depths[depths > switch]
    late_rows = (
        _record(late, lambda st, a, b: _ffnn_steps("smooth", params, st, a + 1, b + 1), state, switch, progress)
        if late.size
        else np.zeros((0, 4))
    )
    rows = np.concatenate([early_rows.reshape(-1, 4), late_rows])
    return DeepRun(depths, rows[:, 2], rows[:, 1], rows[:, 3], rows[:, 0], point.q, point.q, switch)


# ------------------------------------------------------------------ deep ReLU ResNets


@partial(kernel_jit, static_argnames=("scaled",))
def _resnet_steps(scaled, params, state, start, stop):
    alpha, q, q11, q22 = params

    def step(layer, st):
        gamma, a12, a11, a22, log_p = st
        alpha_l = alpha / layer if scaled else alpha
        theta = angle_of_gamma(gamma)
        sd = sin_minus_t_cos(theta) / jnp.pi
        f = 1.0 - gamma + sd
        fprime = 1.0 - theta / jnp.pi
        w = alpha_l / (1.0 + alpha_l)
        a12 = (a12 * (1.0 + alpha_l * fprime) + alpha_l * q * f) / (1.0 + alpha_l)
        return gamma - w * sd, a12, a11 + w * q11, a22 + w * q22, log_p + jnp.log1p(alpha_l)

    return lax.fori_loop(start, stop, step, state)


def relu_resnet(
    *, sigma_w2: float, branch_scale: str, sigma1: tuple[float, float, float], depths, progress=None
) -> DeepRun:
    """Lemma 3's K_res^l of a ReLU ResNet with sigma_b = 0 (Thm. 2: ``"standard"``, Prop. 3: ``"scaled"``)
    at ``depths``, divided by P_l = prod_{k=2}^{l} (1 + a_k^2 sigma_w2/2) (``log_p`` = log P_l).

    With sigma_b = 0, Var y^l = P_l Sigma^1 and the branch covariance is (sigma_w2/2) sqrt(Q Q') f(c), f the
    normalized arc-cosine map, so everything is a closed form in gamma = 1 - c (see module docstring)."""
    if branch_scale not in ("standard", "scaled"):
        raise ValueError(f"branch_scale must be 'standard' or 'scaled', got {branch_scale!r}")
    if not sigma_w2 > 0:
        raise ValueError(f"sigma_w2 must be > 0, got {sigma_w2}")
    depths = np.asarray(sorted(set(int(d) for d in depths)))
    s11, s12, s22 = (float(v) for v in sigma1)
    params = (sigma_w2 / 2.0, math.sqrt(s11 * s22), s11, s22)
    state = tuple(jnp.asarray(v, jnp.float64) for v in (1.0 - s12 / math.sqrt(s11 * s22), s12, s11, s22, 0.0))
    rows = _record(
        depths,
        lambda st, a, b: _resnet_steps(branch_scale == "scaled", params, st, a + 1, b + 1),
        state,
        1,
        progress,
    )
    return DeepRun(depths, rows[:, 2], rows[:, 1], rows[:, 3], rows[:, 0], s11, s22, 1, log_p=rows[:, 4])
