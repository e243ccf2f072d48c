"""Mean-field tools of Hayou et al. 2020 (sec. 4.1 and supplementary sec. 2): variance and correlation
maps, chi_1, the Edge of Chaos, phases, depth recursions in float64 and in mpmath, and rate fits.

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

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
from jax import lax
from scipy import optimize

from ntkrepro.kernels.fc import check_variances
from ntkrepro.kernels.gaussian import Activation, gaussian_mean, get_activation, polar_expectations

Q_INFINITY = 1e12  # a variance map that passes this from q0 has no finite attracting fixed point


def _act(activation) -> Activation:
    return get_activation(activation)


@functools.partial(jax.jit, static_argnames=("act",))
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


# ---------------------------------------------------------------- correlation map


def correlation_map(c, activation, *, sigma_w2: float, sigma_b2: float, q: float | None = None):
    """f(c) (module docstring) at the variance q (default: q* from q0 = 1), elementwise in c."""
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    act = _act(activation)
    q = q_star(act, sigma_w2=sigma_w2, sigma_b2=sigma_b2) if q is None else q
    _check_positive_q(q)
    return _map_and_derivatives(jnp.asarray(c, jnp.float64), q, sigma_w2, sigma_b2, act=act, order=0)


@functools.partial(jax.jit, static_argnames=("act", "order"))
def _map_and_derivatives(c, q, sigma_w2, sigma_b2, *, act: Activation, order: int):
    """f (order 0), f' (1) or f'' (2) at correlations c and variance q (module docstring)."""
    qq = jnp.full_like(c, q)
    if order == 0:
        return (sigma_b2 + sigma_w2 * act.expectations(qq, q * c, qq)[0]) / q
    if order == 1:
        return sigma_w2 * act.expectations(qq, q * c, qq)[1]
    if act.has_closed_form:
        kdot = lambda s12, s: act.expectations(s, s12, s)[1]
        return sigma_w2 * q * jnp.vectorize(jax.grad(kdot))(q * c, qq)
    return sigma_w2 * q * polar_expectations(act.deriv, act.deriv2, qq, q * c, qq)[1]


def correlation_map_derivative(c, activation, *, sigma_w2: float, sigma_b2: float, q: float | None = None,
                               order: int = 1):
    """f'(c) = sigma_w2 E[phi' phi'] or f''(c) = sigma_w2 q E[phi'' phi''] (Price's theorem).

    Closed-form activations differentiate their exact E[phi' phi'] (ReLU-like: f'' = sigma_w2 (a - b)^2 /
    (2 pi sqrt(1 - c^2)), infinite at c = 1); others use phi'' with the kink-aware quadrature.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    act = _act(activation)
    q = q_star(act, sigma_w2=sigma_w2, sigma_b2=sigma_b2) if q is None else q
    _check_positive_q(q)
    if order == 2 and not act.has_closed_form and act.deriv2 is None:
        raise ValueError(f"activation {act.name!r} has no second derivative for f''")
    return _map_and_derivatives(jnp.asarray(c, jnp.float64), q, sigma_w2, sigma_b2, act=act, order=order)


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


def eoc_sigma_w(activation, sigma_b2: float) -> float:
    """The design's entry point: the EOC weight *standard deviation* sigma_w for bias *variance* sigma_b2."""
    return math.sqrt(eoc_sigma_w2(activation, sigma_b2=sigma_b2))


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


# ---------------------------------------------------------------- recursions along depth


def correlation_recursion(c0: float, activation, *, sigma_w2: float, sigma_b2: float, depth: int,
                          q: float | None = None, precision: str = "float64", dps: int = 40):
    """c_1 = c0, c_{l+1} = f(c_l) at the fixed variance q (default q*): the mean-field correlation
    recursion of Hayou's proofs. Returns (c_l, 1 - c_l) for l = 1..depth as float64 arrays, both
    computed in the working precision (``"mpmath"``: ``dps`` digits, closed-form activations)."""
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if not -1.0 <= float(c0) <= 1.0:
        raise ValueError(f"c0 must be a correlation in [-1, 1], got {c0}")
    act = _act(activation)
    q = q_star(act, sigma_w2=sigma_w2, sigma_b2=sigma_b2) if q is None else q
    _check_positive_q(q)
    if precision == "float64":
        corr = np.asarray(_correlation_scan(jnp.asarray(float(c0), jnp.float64), jnp.asarray(q, jnp.float64),
                                            jnp.asarray(sigma_w2, jnp.float64), jnp.asarray(sigma_b2, jnp.float64),
                                            act=act, depth=depth))
        return corr, 1.0 - corr
    if precision != "mpmath":
        raise ValueError(f"precision must be 'float64' or 'mpmath', got {precision!r}")
    if act.mp_expectations is None:
        raise ValueError(f"activation {act.name!r} has no mpmath closed form; use precision='float64'")
    values = []
    with mpmath.workdps(dps):
        qm, sw, sb = mpmath.mpf(q), mpmath.mpf(sigma_w2), mpmath.mpf(sigma_b2)
        c = mpmath.mpf(c0)
        for _ in range(depth):
            values.append((c, 1 - c))
            c = (sb + sw * act.mp_expectations(qm, qm * c, qm)[0]) / qm
        return tuple(np.array([float(v[i]) for v in values]) for i in (0, 1))


@functools.partial(jax.jit, static_argnames=("act", "depth"))
def _correlation_scan(c0, q, sigma_w2, sigma_b2, *, act, depth):
    def layer(c, _):
        c_next = (sigma_b2 + sigma_w2 * act.expectations(q, q * c, q)[0]) / q
        return c_next, c_next

    _, rest = lax.scan(layer, c0, None, length=depth - 1)
    return jnp.concatenate([c0[None], rest])


@dataclass(frozen=True)
class DepthSeries:
    """Per-depth values l = 1..depth for one input pair: NNGP (Sigma) and NTK (K) entries, the
    correlation c_l and 1 - c_l (computed in the working precision, so accurate also near c = 1)."""

    sigma11: np.ndarray
    sigma12: np.ndarray
    sigma22: np.ndarray
    ntk11: np.ndarray
    ntk12: np.ndarray
    ntk22: np.ndarray
    correlation: np.ndarray
    one_minus_correlation: np.ndarray


def ntk_recursion(sigma1: tuple[float, float, float], activation, *, sigma_w2: float, sigma_b2: float,
                  depth: int, precision: str = "float64", dps: int = 40) -> DepthSeries:
    """Hayou Lemma 2 for one pair (x, x') from Sigma_1 = (s11, s12, s22) (K_1 = Sigma_1), every depth.

    ``precision="mpmath"`` runs the recursion at ``dps`` digits with the activation's mpmath closed
    form (ReLU-like, erf, identity): on the EOC 1 - c_l ~ 1/l^2 (ReLU) falls below float64's
    resolution of c near 1 for very deep nets; the outputs are rounded to float64 at the end.
    """
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    s11, s12, s22 = (float(v) for v in sigma1)
    if not (s11 > 0 and s22 > 0 and s12 * s12 <= s11 * s22 * (1 + 1e-12)):
        raise ValueError(f"sigma1 = {sigma1} is not a covariance with positive variances")
    act = _act(activation)
    if precision == "float64":
        f64 = lambda v: jnp.asarray(v, jnp.float64)
        rows = np.asarray(_ntk_scan(f64([s11, s12, s22]), f64(sigma_w2), f64(sigma_b2), act=act, depth=depth))
        return DepthSeries(*rows.T)
    if precision != "mpmath":
        raise ValueError(f"precision must be 'float64' or 'mpmath', got {precision!r}")
    if act.mp_expectations is None:
        raise ValueError(f"activation {act.name!r} has no mpmath closed form; use precision='float64'")
    rows = []
    with mpmath.workdps(dps):
        sw, sb = mpmath.mpf(sigma_w2), mpmath.mpf(sigma_b2)
        a, b, c = mpmath.mpf(s11), mpmath.mpf(s12), mpmath.mpf(s22)
        k11, k12, k22 = a, b, c
        for layer in range(depth):
            corr = b / mpmath.sqrt(a * c)
            rows.append((a, b, c, k11, k12, k22, corr, 1 - corr))
            if layer == depth - 1:
                break
            (e11, edot11), (e12, edot12), (e22, edot22) = (act.mp_expectations(*v) for v in
                                                             ((a, a, a), (a, b, c), (c, c, c)))
            k11, k12, k22 = (sw * edot11 * k11 + sb + sw * e11, sw * edot12 * k12 + sb + sw * e12,
                             sw * edot22 * k22 + sb + sw * e22)
            a, b, c = sb + sw * e11, sb + sw * e12, sb + sw * e22
    return DepthSeries(*np.array([[float(v) for v in row] for row in rows]).T)


@functools.partial(jax.jit, static_argnames=("act", "depth"))
def _ntk_scan(sigma1, sigma_w2, sigma_b2, *, act, depth):
    """float64 path of :func:`ntk_recursion`: rows (s11, s12, s22, k11, k12, k22, c, 1 - c) per depth."""

    def row(sig, ntk):
        corr = sig[1] / jnp.sqrt(sig[0] * sig[2])
        return jnp.concatenate([sig, ntk, jnp.stack([corr, 1.0 - corr])])

    def layer(carry, _):
        sig, ntk = carry
        # entries (11, 12, 22) at once: (s11, s11, s11), (s11, s12, s22), (s22, s22, s22)
        k, kdot = act.expectations(sig[jnp.array([0, 0, 2])], sig, sig[jnp.array([0, 2, 2])])
        sig_next = sigma_b2 + sigma_w2 * k
        ntk_next = sigma_w2 * kdot * ntk + sig_next
        return (sig_next, ntk_next), row(sig_next, ntk_next)

    _, rows = lax.scan(layer, (sigma1, sigma1), None, length=depth - 1)
    return jnp.concatenate([row(sigma1, sigma1)[None], rows])


# ---------------------------------------------------------------- rate fits


@dataclass(frozen=True)
class RateFit:
    """Least-squares fit of a convergence rate over ``depth_range`` (inclusive, ``n_points`` used).

    kind "power": log err = intercept + slope log L; "exponential": log err = intercept + slope L;
    "log": log err = intercept + slope log(log L) (slope -1 for a Theta(1/log L) rate).
    """

    kind: str
    slope: float
    intercept: float
    depth_range: tuple[float, float]
    r2: float
    n_points: int


def fit_rate(depths, errors, *, kind: str = "power", depth_range: tuple[float, float] | None = None) -> RateFit:
    """Fit a rate to positive ``errors`` against ``depths`` (see :class:`RateFit`)."""
    depths, errors = np.asarray(depths, float), np.asarray(errors, float)
    if depths.shape != errors.shape or depths.ndim != 1:
        raise ValueError(f"depths {depths.shape} and errors {errors.shape} must be 1-D of equal length")
    lo, hi = (depths.min(), depths.max()) if depth_range is None else depth_range
    mask = (depths >= lo) & (depths <= hi)
    if mask.sum() < 2:
        raise ValueError(f"fewer than 2 points in depth_range ({lo}, {hi})")
    x, y = depths[mask], errors[mask]
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("errors must be finite and > 0 inside depth_range (a log is taken)")
    transforms = {"power": np.log, "exponential": lambda v: v, "log": lambda v: np.log(np.log(v))}
    if kind not in transforms:
        raise ValueError(f"kind must be one of {sorted(transforms)}, got {kind!r}")
    if kind in ("power", "log") and np.any(x <= (1 if kind == "log" else 0)):
        raise ValueError(f"kind={kind!r} needs depths > {1 if kind == 'log' else 0}")
    u, v = transforms[kind](x), np.log(y)
    slope, intercept = np.polyfit(u, v, 1)
    fitted = intercept + slope * u
    total = np.sum((v - v.mean()) ** 2)
    r2 = 1.0 - np.sum((v - fitted) ** 2) / total if total > 0 else 1.0
    return RateFit(kind, float(slope), float(intercept), (float(lo), float(hi)), float(r2), int(mask.sum()))
