"""Mean-field tools of Hayou et al. 2020 (sec. 4.1 and supplementary sec. 2): the variance map and its
fixed point, chi_1, the Edge of Chaos, phases and the NTK recursion of one input pair along depth
(continued to depths of 1e6 and more on the EOC by ``ntkrepro.kernels.deep``).

Names carry the kind of parameter: ``sigma_w2``/``sigma_b2`` are variances (the paper's sigma_w^2,
sigma_b^2), ``sigma_w``/``sigma_b`` standard deviations (the paper's plots and tables).
    variance map     q_{l+1} = sigma_b2 + sigma_w2 E[phi(sqrt(q_l) Z)^2],         fixed point q*,
    correlation map  f(c) = (sigma_b2 + sigma_w2 E[phi(u) phi(v)]) / q,  (u, v) ~ N(0, q [[1, c], [c, 1]]),
    f'(c) = sigma_w2 E[phi'(u) phi'(v)],  f''(c) = sigma_w2 q E[phi''(u) phi''(v)]   (Price's theorem),
    chi_1 = f'(1) = sigma_w2 E[phi'(sqrt(q) Z)^2]: < 1 ordered, = 1 Edge of Chaos, > 1 chaotic.
EOC curve by q > 0: sigma_w2 = 1 / E[phi'(sqrt(q) Z)^2], sigma_b2 = q - sigma_w2 E[phi(sqrt(q) Z)^2] >= 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from scipy import optimize

from ntkrepro.blocks import kernel_jit
from ntkrepro.kernels.fc import check_depth, check_variances, fc_kernels
from ntkrepro.kernels.gaussian import Activation, gaussian_mean, get_activation

Q_INFINITY = 1e12  # a variance map that passes this from q0 has no finite attracting fixed point


def _act(activation) -> Activation:
    return get_activation(activation)


@functools.partial(kernel_jit, static_argnames=("act",))
def _moment_arrays(q, *, act: Activation):
    """(E[phi(sqrt q Z)^2], E[phi'(sqrt q Z)^2]) elementwise in q, float64."""
    second = act.second_moment(q)
    if act.has_closed_form:
        return second, act.expectations(q, q, q)[1]
    return second, gaussian_mean(lambda z: act.deriv(z) ** 2, q)


def _moments(act: Activation, q) -> tuple:
    """Floats for a scalar q, arrays for an array of q."""
    second, deriv = _moment_arrays(jnp.asarray(q, jnp.float64), act=act)
    if np.ndim(q) == 0:
        return float(second), float(deriv)
    return np.asarray(second), np.asarray(deriv)


def _check_positive_q(q):
    if not (math.isfinite(float(q)) and float(q) > 0):
        raise ValueError(f"q must be a finite variance > 0, got {q}")


# ---------------------------------------------------------------- variance map


def variance_map(q, activation, *, sigma_w2: float, sigma_b2: float) -> float:
    """q -> sigma_b2 + sigma_w2 E[phi(sqrt(q) Z)^2]."""
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    return sigma_b2 + sigma_w2 * _moments(_act(activation), q)[0]


def q_star(activation, *, sigma_w2: float, sigma_b2: float, q0: float = 1.0, tol: float = 1e-14,
           max_iter: int = 200) -> float:
    """The fixed point of the variance map reached from q0 (Hayou sec. 4.1).

    Iterates the map, then (if not yet converged) brackets the root of V(q) - q on the side the
    iteration moves to and solves it with brentq (V increasing in q). Returns ``inf`` when the iteration
    diverges (no finite attracting fixed point, e.g. ReLU with sigma_w2 > 2) and q0 itself where the
    map is the identity (ReLU on the EOC: every q is fixed).
    """
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2, q0=q0)
    act = _act(activation)
    gap = lambda q: sigma_b2 + sigma_w2 * _moments(act, q)[0] - q
    q = float(q0)
    for _ in range(max_iter):
        step = gap(q)
        if abs(step) <= tol * max(1.0, q):
            return q
        q += step
        if not q < Q_INFINITY:
            return math.inf
    if gap(q) > 0:  # still increasing: the root is above q
        hi = 2.0 * q
        while gap(hi) > 0:
            hi *= 2.0
            if hi > Q_INFINITY:
                return math.inf
        return optimize.brentq(gap, q, hi, xtol=tol, rtol=4 * np.finfo(float).eps)
    return optimize.brentq(gap, 0.0, q, xtol=tol, rtol=4 * np.finfo(float).eps)


# ---------------------------------------------------------------- chi_1 and phases


def chi1(activation, *, sigma_w2: float, sigma_b2: float, q: float | None = None) -> float:
    """chi_1 = sigma_w2 E[phi'(sqrt(q) Z)^2] at q (default q*; ReLU-like: independent of q)."""
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    act = _act(activation)
    relu_like = _relu_like_eoc(act)
    if relu_like is not None:  # E[phi'^2] is the same at every q
        return sigma_w2 / relu_like
    q = q_star(act, sigma_w2=sigma_w2, sigma_b2=sigma_b2) if q is None else q
    if math.isinf(q):
        raise ValueError("chi_1 is undefined: the variance map has no finite fixed point (q* = inf)")
    _check_positive_q(q)
    return sigma_w2 * _moments(act, q)[1]


def phase(activation, *, sigma_w2: float, sigma_b2: float, q: float | None = None,
          tol: float = 1e-8) -> str:
    """'ordered' (chi_1 < 1), 'eoc' (|chi_1 - 1| <= tol) or 'chaotic' (chi_1 > 1)."""
    chi = chi1(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    return "eoc" if abs(chi - 1.0) <= tol else ("ordered" if chi < 1.0 else "chaotic")


# ---------------------------------------------------------------- Edge of Chaos


def _relu_like_eoc(act: Activation) -> float | None:
    """sigma_w2 = 2 / (a^2 + b^2) for a ReLU-like phi (closed form, no phi''; E[phi'^2] is the same at
    every q), else None."""
    if not act.has_closed_form or act.deriv2 is not None:
        return None
    mean_square_slope = float(act.expectations(jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(1.0))[1])
    return 1.0 / mean_square_slope


def eoc_point_from_q(activation, q: float) -> tuple[float, float]:
    """(sigma_b2, sigma_w2) of the EOC point whose fixed-point variance is q (sigma_b2 may be < 0)."""
    _check_positive_q(q)
    second, deriv = _moments(_act(activation), q)
    sigma_w2 = 1.0 / deriv
    return q - sigma_w2 * second, sigma_w2


def eoc_sigma_w2(activation, *, sigma_b2: float, q_max: float = 1e6) -> float:
    """The weight variance sigma_w^2 on the EOC for a given bias variance sigma_b^2.

    ReLU-like: only sigma_b2 = 0 (sigma_w2 = 2 / (a^2 + b^2)). phi(0) = 0 and sigma_b2 = 0: the q -> 0
    end, 1 / phi'(0)^2. Otherwise solves sigma_b2(q) = sigma_b2 along the EOC curve at the smallest
    crossing in q (ValueError if there is none up to q_max, e.g. Softplus at sigma_b2 = 0). The point is
    a fixed point of the variance map with chi_1 = 1; whether it attracts is not checked.
    """
    check_variances(sigma_b2=sigma_b2)
    act = _act(activation)
    relu_like = _relu_like_eoc(act)
    if relu_like is not None:
        if sigma_b2 != 0:
            raise ValueError(f"{act.name} is ReLU-like: its EOC is the single point sigma_b2 = 0")
        return relu_like
    zero = jnp.asarray(0.0)
    if sigma_b2 == 0 and float(act.fn(zero)) == 0:
        return 1.0 / float(act.deriv(zero)) ** 2  # the q -> 0 end of the curve, e.g. (0, 1) for Tanh, ELU
    qs = np.geomspace(1e-8, q_max, 400)
    second, deriv = _moments(act, qs)
    gaps = qs - second / deriv - sigma_b2
    crossing = np.nonzero((gaps[:-1] < 0) & (gaps[1:] >= 0))[0]
    if crossing.size == 0:
        raise ValueError(f"no EOC point with sigma_b2 = {sigma_b2} for {act.name} (q in [1e-8, {q_max:g}])")
    i = crossing[0]
    gap = lambda q: eoc_point_from_q(act, q)[0] - sigma_b2
    q = optimize.brentq(gap, qs[i], qs[i + 1], xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return eoc_point_from_q(act, q)[1]


class EOCCurve(NamedTuple):
    """Points (sigma_b, sigma_w) (standard deviations) of the EOC and their fixed-point variances q."""

    sigma_b: np.ndarray
    sigma_w: np.ndarray
    q: np.ndarray


def eoc_curve(activation, *, q_values=None, num: int = 60, q_range: tuple[float, float] = (1e-4, 1e2)) -> EOCCurve:
    """The EOC as (sigma_b, sigma_w) arrays, parameterized by q (log-spaced over ``q_range`` unless
    ``q_values`` is given), keeping sigma_b2 >= 0. ReLU-like: the single point (0, sqrt(2 / (a^2 + b^2)))."""
    act = _act(activation)
    relu_like = _relu_like_eoc(act)
    if relu_like is not None:
        return EOCCurve(np.zeros(1), np.array([math.sqrt(relu_like)]), np.full(1, np.nan))
    qs = np.geomspace(*q_range, num) if q_values is None else np.asarray(q_values, float)
    if np.any(~np.isfinite(qs)) or np.any(qs <= 0):
        raise ValueError("q values must be finite and > 0")
    second, deriv = _moments(act, qs)
    sigma_w2 = 1.0 / deriv
    sigma_b2 = qs - sigma_w2 * second
    keep = sigma_b2 >= 0
    return EOCCurve(np.sqrt(sigma_b2[keep]), np.sqrt(sigma_w2[keep]), qs[keep])


# ---------------------------------------------------------------- the recursion of one pair along depth


@dataclass(frozen=True)
class DepthSeries:
    """Per-depth values l = 1..depth for one input pair: NNGP Sigma^l (``s11, s12, s22``) and NTK K^l
    (``k11, k12, k22``)."""

    s11: np.ndarray
    s12: np.ndarray
    s22: np.ndarray
    k11: np.ndarray
    k12: np.ndarray
    k22: np.ndarray


def ntk_recursion(sigma1: tuple[float, float, float], activation, *, sigma_w2: float, sigma_b2: float,
                  depth: int) -> DepthSeries:
    """Hayou Lemma 2 for one pair (x, x') in float64, every depth l = 1..depth, from its first-layer
    covariance ``sigma1 = (Sigma^1(x,x), Sigma^1(x,x'), Sigma^1(x',x'))`` (K^1 = Sigma^1).

    Runs :func:`ntkrepro.kernels.fc.fc_kernels` on two points of R^2 with x.x'/d = (Sigma^1 - sigma_b2) /
    sigma_w2, so the pair follows the library's one FC recursion. On the EOC, float64 stalls where 1 - c^l
    falls below its resolution near 1 (ReLU: beyond ~1e4 layers): ``ntkrepro.kernels.deep`` goes on there.
    """
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    if not sigma_w2 > 0:
        raise ValueError(f"sigma_w2 must be > 0, got {sigma_w2}")
    depth = check_depth(depth)
    g11, g12, g22 = ((float(s) - sigma_b2) / sigma_w2 for s in sigma1)  # x.x'/d of the pair
    if g11 <= 0 or g22 <= 0 or abs(g12) > math.sqrt(g11 * g22):
        raise ValueError(f"sigma1 = {tuple(sigma1)} is not a first-layer covariance at sigma_b2 = {sigma_b2}")
    cos = g12 / math.sqrt(g11 * g22)
    x = np.array([[math.sqrt(2 * g11), 0.0], [math.sqrt(2 * g22) * cos, math.sqrt(2 * g22 * (1 - cos * cos))]])
    kernels = fc_kernels(x, depth=depth, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                         all_depths=True)
    nngp, ntk = np.asarray(kernels.nngp), np.asarray(kernels.ntk)
    return DepthSeries(nngp[:, 0, 0], nngp[:, 0, 1], nngp[:, 1, 1], ntk[:, 0, 0], ntk[:, 0, 1], ntk[:, 1, 1])
