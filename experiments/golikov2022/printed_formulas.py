"""Golikov et al. 2022, sec. 2, 4.1-4.3 and 8.1: the kernel formulas the survey prints, implemented exactly as
printed (normalizations included) and compared with this project's exact kernels and with Monte Carlo of the
finite nets the survey defines.

- ReLU expectations (sec. 4.3, eqs. 79-86): the integrals C, B, A (81, 82, 80), the decomposition (79), the
  unit-variance forms (83, 84) and the general-covariance forms (85, 86), against 2-D / 1-D adaptive
  quadrature of the defining Gaussian integrals and against Monte Carlo.
- One hidden layer, scalar input (sec. 2, eq. 18, net eq. 13): the printed expectation against
  ``fc_kernels(depth=2, sigma_w2=1)`` and Monte Carlo of the net.
- FC nets (sec. 4.1, net eq. 53: h_l = W_l x_{l-1} / sqrt(n_{l-1}), W ~ N(0, 1), no bias): the first-layer
  covariance q_1 = x^T x' (eq. 58 and the proof above it), the NTK by the backward recursion (58-59: Theta =
  sum_l qdot_l q_l), by the one-pass recursion (60-61) and the NNGP q_L (sec. 8.1), against
  ``fc_kernels(sigma_w2=1, sigma_b2=0)`` (the exact kernels of net 53) and Monte Carlo of net 53.
- CNN (sec. 4.2, net eq. 62: 1-D images of d pixels, filter ker = [-1, 0, 1], zero padding, no 1/|ker|,
  one output channel, f = mean_s phi(h_L^s)): the backward recursion (69-72 with Theta = sum_l sum_{s,s'}
  qdot_l q_l) and the one-pass recursion (78 with the readout 75), against Monte Carlo of net 62 (the mean
  of the empirical NTKs: with one output channel behind phi the empirical NTK stays random at any width) and,
  for ReLU, against this project's CNTK-GAP (``cntk`` on 1 x d images, a 3 x 3 filter that sees only its
  middle row): by ReLU's homogeneity E Theta_hat_62 = (ntk - nngp) / (alpha^L n0) with alpha = c_sigma / 9.

Every printed formula is also evaluated with the correction a derivation from the printed net gives (q_1 =
x^T x' / n0; eq. 78 with one sum over r and the pixel s' + r; eq. 75 without the second 1/d^2): the corrected
error is evidence of where a printed formula goes wrong, never the claim's measurement.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import integrate, special

from ntkrepro.checks import bad, param
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.kernels.gaussian import c_sigma, get_activation
from ntkrepro.nets import fc
from ntkrepro.stage import StageResult, main
from ntkrepro.stats import relative_error

ACTIVATIONS = ("relu", "erf")
KER = (-1, 0, 1)  # the survey's example filter (sec. 4.2, after eq. 62)
# Monte Carlo draws one per call: these wide FC nets' draws cost their initialization, and chunks of draws in one
# compiled call measured 0.79-1.0x (benchmarks/results/20261206-1800-mc.json, fc_structured / fc_covariance)
DRAWS_PER_CALL = 1

# phi and phi' in NumPy, for the quadratures of the printed expectations (eq. 18)
PHI = {"relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
       "erf": (special.erf, lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-z * z))}


# ---------------------------------------------------------------- sec. 4.3: ReLU expectations, as printed


def printed_c(lam):
    """Eq. 81: C = (1/pi) arctan(lambda / sqrt(1 - lambda^2)) (= arcsin(lambda) / pi)."""
    lam = np.asarray(lam, dtype=np.float64)
    return np.arctan(lam / np.sqrt(1.0 - lam**2)) / np.pi


def printed_b(lam):
    """Eq. 82: B = (1 - lambda^2) / sqrt(2 pi)."""
    return (1.0 - np.asarray(lam, dtype=np.float64) ** 2) / np.sqrt(2.0 * np.pi)


def printed_a(lam):
    """Eq. 80: A = C + lambda / sqrt(2 - 2 lambda^2) (2 / sqrt(pi)) B."""
    lam = np.asarray(lam, dtype=np.float64)
    return printed_c(lam) + lam / np.sqrt(2.0 - 2.0 * lam**2) * 2.0 / np.sqrt(np.pi) * printed_b(lam)


def printed_decomposition(lam):
    """Eq. 79: E[u]_+[v]_+ = lambda/4 + (lambda/2) A + sqrt((1 - lambda^2) / (2 pi)) B (unit variances)."""
    lam = np.asarray(lam, dtype=np.float64)
    return lam / 4.0 + lam / 2.0 * printed_a(lam) + np.sqrt((1.0 - lam**2) / (2.0 * np.pi)) * printed_b(lam)


def printed_relu_unit(lam):
    """Eq. 83: E[u]_+[v]_+ = (lambda (pi - arccos lambda) + sqrt(1 - lambda^2)) / (2 pi)."""
    lam = np.asarray(lam, dtype=np.float64)
    return (lam * (np.pi - np.arccos(lam)) + np.sqrt(1.0 - lam**2)) / (2.0 * np.pi)


def printed_step_unit(lam):
    """Eq. 84: E 1_{u>0} 1_{v>0} = (pi - arccos lambda) / (2 pi)."""
    return (np.pi - np.arccos(np.asarray(lam, dtype=np.float64))) / (2.0 * np.pi)


def printed_relu_general(q11, q12, q22):
    """Eq. 85: (lambda sqrt(q11 q22) (pi - arccos(q12 / sqrt(q11 q22))) + sqrt(q11 q22 - q12^2)) / (2 pi)."""
    q11, q12, q22 = (np.asarray(q, dtype=np.float64) for q in (q11, q12, q22))
    root = np.sqrt(q11 * q22)
    lam = q12 / root
    return (lam * root * (np.pi - np.arccos(lam)) + np.sqrt(q11 * q22 - q12**2)) / (2.0 * np.pi)


def printed_step_general(q11, q12, q22):
    """Eq. 86: (pi - arccos(q12 / sqrt(q11 q22))) / (2 pi)."""
    q11, q12, q22 = (np.asarray(q, dtype=np.float64) for q in (q11, q12, q22))
    return (np.pi - np.arccos(q12 / np.sqrt(q11 * q22))) / (2.0 * np.pi)


# ---- independent references: the defining integrals by adaptive quadrature


def _erf_slope(lam: float) -> float:
    return lam / math.sqrt(2.0 - 2.0 * lam * lam)


def _half_line(fn) -> float:
    return integrate.quad(fn, 0.0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def _gauss(u):
    return np.exp(-u * u / 2.0) / math.sqrt(2.0 * math.pi)


def quad_c(lam: float) -> float:
    """The integral of eq. 81, int_0^inf erf(a u) N(u) du, a = lambda / sqrt(2 - 2 lambda^2)."""
    a = _erf_slope(lam)
    return _half_line(lambda u: special.erf(a * u) * _gauss(u))


def quad_b(lam: float) -> float:
    """The integral of eq. 82, int_0^inf u exp(-a^2 u^2) N(u) du."""
    a = _erf_slope(lam)
    return _half_line(lambda u: u * np.exp(-a * a * u * u) * _gauss(u))


def quad_a(lam: float) -> float:
    """The integral of eq. 80, int_0^inf u^2 erf(a u) N(u) du."""
    a = _erf_slope(lam)
    return _half_line(lambda u: u * u * special.erf(a * u) * _gauss(u))


def quad_quadrant(q11: float, q12: float, q22: float, *, step: bool) -> float:
    """E g(u) g(v), (u, v) ~ N(0, Sigma), by 2-D adaptive quadrature of the density over the positive quadrant
    (g(z) = z for ReLU, 1 for the step): no homogeneity, no change of variables."""
    det = q11 * q22 - q12 * q12
    norm = 1.0 / (2.0 * math.pi * math.sqrt(det))

    def density(v, u):
        return norm * math.exp(-(q22 * u * u - 2.0 * q12 * u * v + q11 * v * v) / (2.0 * det))

    integrand = density if step else (lambda v, u: u * v * density(v, u))
    return integrate.dblquad(integrand, 0.0, np.inf, 0.0, np.inf, epsabs=1e-12, epsrel=1e-10)[0]


def monte_carlo_quadrant(q11: float, q12: float, q22: float, *, samples: int, seed: int) -> dict:
    """Monte Carlo E[u]_+[v]_+ and E 1_{u>0} 1_{v>0} with their standard errors."""
    rng = np.random.default_rng(seed)
    uv = rng.multivariate_normal([0.0, 0.0], [[q11, q12], [q12, q22]], size=samples)
    relu = np.maximum(uv[:, 0], 0.0) * np.maximum(uv[:, 1], 0.0)
    step = (uv[:, 0] > 0) & (uv[:, 1] > 0)
    return {"relu": relu.mean(), "relu_se": relu.std(ddof=1) / math.sqrt(samples),
            "step": step.mean(), "step_se": step.std(ddof=1) / math.sqrt(samples)}


def relu_expectation_table(lams, covariances, *, mc_samples: int, seed: int) -> pd.DataFrame:
    """Every printed ReLU formula next to its quadrature reference, the project's ReLU expectations and Monte
    Carlo: one row per (formula, case)."""
    rows = []
    relu = get_activation("relu")
    for lam in lams:
        lam = float(lam)
        for eq, printed, reference in (("81", printed_c, quad_c), ("82", printed_b, quad_b),
                                       ("80", printed_a, quad_a)):
            rows.append({"eq": eq, "q11": 1.0, "q12": lam, "q22": 1.0, "printed": float(printed(lam)),
                         "reference": reference(lam)})
        unit = [(1.0, lam, 1.0)]
        for q11, q12, q22 in unit + [(a, lam * math.sqrt(a * b), b) for a, b in covariances]:
            mc = monte_carlo_quadrant(q11, q12, q22, samples=mc_samples,
                                      seed=zlib.crc32(f"{seed}:{q11}:{q12}:{q22}".encode()))
            k, kdot = (float(v) for v in relu.expectations(q11, q12, q22))
            relu_ref = quad_quadrant(q11, q12, q22, step=False)
            step_ref = quad_quadrant(q11, q12, q22, step=True)
            cases = ([("79", printed_decomposition(lam), relu_ref, k, "relu"),
                      ("83", printed_relu_unit(lam), relu_ref, k, "relu"),
                      ("84", printed_step_unit(lam), step_ref, kdot, "step")] if (q11, q22) == (1.0, 1.0) else [])
            cases += [("85", printed_relu_general(q11, q12, q22), relu_ref, k, "relu"),
                      ("86", printed_step_general(q11, q12, q22), step_ref, kdot, "step")]
            for eq, value, ref, project, which in cases:
                rows.append({"eq": eq, "q11": q11, "q12": q12, "q22": q22, "printed": float(value),
                             "reference": ref, "project": project, "mc": mc[which], "mc_se": mc[f"{which}_se"]})
    table = pd.DataFrame(rows)
    table["abs_error"] = (table.printed - table.reference).abs()
    table["mc_z"] = (table.printed - table.mc) / table.mc_se
    return table


# ---------------------------------------------------------------- sec. 2, eq. 18: one hidden layer, scalar input


def printed_scalar_ntk(xs, activation: str) -> np.ndarray:
    """Eq. 18: Theta(x, x') = E_{a, w ~ N(0, 1)} (phi(wx) phi(wx') + a^2 phi'(wx) phi'(wx') x x'), E a^2 = 1, the
    w-integral by adaptive quadrature split at w = 0 (ReLU's kink)."""
    phi, dphi = PHI[activation]
    xs = np.asarray(xs, dtype=np.float64)
    out = np.empty((len(xs), len(xs)))
    for i, x in enumerate(xs):
        for j, y in enumerate(xs):
            def integrand(w, x=x, y=y):
                return (phi(w * x) * phi(w * y) + dphi(w * x) * dphi(w * y) * x * y) * _gauss(w)
            out[i, j] = (integrate.quad(integrand, -np.inf, 0.0, epsabs=1e-13, epsrel=1e-12)[0]
                         + integrate.quad(integrand, 0.0, np.inf, epsabs=1e-13, epsrel=1e-12)[0])
    return out


# ---------------------------------------------------------------- sec. 4.1 and 8.1: FC nets (eq. 53)


@dataclass(frozen=True)
class FcPrinted:
    """The survey's FC kernels on one input set: q_1, the NTK by eqs. 58-59 and by eqs. 60-61, the NNGP q_L."""

    q1: np.ndarray
    ntk_backward: np.ndarray
    ntk_forward: np.ndarray
    nngp: np.ndarray


def printed_fc(x, *, depth: int, activation: str, first_layer: Literal["printed", "over_n0"] = "printed"
               ) -> FcPrinted:
    """Eqs. 58-61 for the inputs x (m, n0) of net 53 with ``depth`` = L weight layers. ``first_layer``:
    ``"printed"`` q_1 = x^T x' (eq. 58); ``"over_n0"`` q_1 = x^T x' / n0 (the covariance of h_1 = W_1 x / sqrt(n0)).
    The expectations under Sigma_l use the project's closed forms (ReLU: eqs. 85-86, checked separately)."""
    act = get_activation(activation)
    x = np.asarray(x, dtype=np.float64)
    scale = 1.0 if first_layer == "printed" else 1.0 / x.shape[1]
    q = scale * x @ x.T
    qs, edots = [q], []  # q_l (l = 1..L) and E_{Sigma_l} phi' phi' (l = 1..L-1)
    for _ in range(depth - 1):
        diag = np.diag(qs[-1])
        k, kdot = (np.asarray(v, dtype=np.float64) for v in act.expectations(diag[:, None], qs[-1], diag[None, :]))
        edots.append(kdot)
        qs.append(k)
    qdot = np.ones_like(q)  # eq. 59: qdot_L = 1, qdot_l = qdot_{l+1} E_{Sigma_l} phi' phi'
    backward = qdot * qs[-1]
    for layer in range(depth - 2, -1, -1):
        qdot = qdot * edots[layer]
        backward = backward + qdot * qs[layer]
    forward = qs[0]  # eq. 61: Theta_1 = q_1, Theta_l = q_l + Theta_{l-1} E_{Sigma_{l-1}} phi' phi'
    for layer in range(1, depth):
        forward = qs[layer] + forward * edots[layer - 1]
    return FcPrinted(q1=qs[0], ntk_backward=backward, ntk_forward=forward, nngp=qs[-1])


def exact_fc(x, *, depth: int, activation: str):
    """This project's exact kernels of net 53 (sigma_w2 = 1, no bias): (nngp, ntk) of ``depth`` layers."""
    k = fc_kernels(x, depth=depth, activation=activation, sigma_w2=1.0, sigma_b2=0.0, dtype=jnp.float64)
    return np.asarray(k.nngp), np.asarray(k.ntk)


def first_layer_covariance_mc(x, *, width: int, seed: int) -> np.ndarray:
    """(1/width) sum_i h_1^i(x) h_1^i(x') of one draw of h_1 = W_1 x / sqrt(n0), W_1 ~ N(0, 1) (width, n0)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.random.default_rng(seed).standard_normal((width, x.shape[1]))
    h = x @ w.T / math.sqrt(x.shape[1])
    return h @ h.T / width


# ---------------------------------------------------------------- sec. 4.2: CNN (eq. 62), 1-D images (m, n0, d)


def shift_sum(m: np.ndarray) -> np.ndarray:
    """sum_{r in ker} M[..., s + r, s' + r] over the last two (pixel) axes, 0 out of range (zero padding)."""
    d = m.shape[-1]
    pad = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)])
    return sum(pad[..., 1 + r:1 + r + d, 1 + r:1 + r + d] for r in KER)


def _pixel_expectations(act, q: np.ndarray):
    """E phi(z^a) phi(z'^b) and E phi'(z^a) phi'(z'^b) for every image pair and pixel pair, (m, m, d, d), under
    Sigma(x, x') built from q (m, m, d, d): variances q[i, i, a, a], q[j, j, b, b], covariance q[i, j, a, b]."""
    diag = np.einsum("iiaa->ia", q)
    k, kdot = act.expectations(diag[:, None, :, None], q, diag[None, :, None, :])
    return np.asarray(k, dtype=np.float64), np.asarray(kdot, dtype=np.float64)


@dataclass(frozen=True)
class CnnPrinted:
    """The survey's CNN NTK on one image set, (m, m): backward recursion (69-72), one-pass (78 + 75) as printed,
    and the one-pass recursion corrected (evidence)."""

    ntk_backward: np.ndarray
    ntk_forward: np.ndarray
    ntk_forward_corrected: np.ndarray


def printed_cnn(x, *, convs: int, activation: str) -> CnnPrinted:
    """Eqs. 69-78 for images x (m, n0, d) of net 62 with ``convs`` = L convolutions."""
    act = get_activation(activation)
    x = np.asarray(x, dtype=np.float64)
    m, n0, d = x.shape
    q = shift_sum(np.einsum("ija,kjb->ikab", x, x)) / n0  # eq. 69
    qs, edots = [q], []  # q_l, l = 1..L, and E_{Sigma_l} phi'(z^a) phi'(z'^b), l = 1..L
    for layer in range(convs):
        k, kdot = _pixel_expectations(act, qs[-1])
        edots.append(kdot)
        if layer < convs - 1:
            qs.append(shift_sum(k))  # eq. 70
    qdot = edots[-1] / d**2  # eq. 71
    backward = np.sum(qdot * qs[-1], axis=(-2, -1))
    for layer in range(convs - 2, -1, -1):
        qdot = edots[layer] * shift_sum(qdot)  # eq. 72 (ker symmetric: s - r over r = s + r over r)
        backward = backward + np.sum(qdot * qs[layer], axis=(-2, -1))
    theta = corrected = qs[0]
    for layer in range(1, convs):
        theta = qs[layer] + _printed_eq78_sum(theta, edots[layer - 1])
        corrected = qs[layer] + shift_sum(corrected * edots[layer - 1])
    forward = np.sum(edots[-1] / d**2 * theta, axis=(-2, -1)) / d**2  # eq. 75 with qdot_L of eq. 71
    forward_corrected = np.sum(edots[-1] * corrected, axis=(-2, -1)) / d**2
    return CnnPrinted(ntk_backward=backward, ntk_forward=forward, ntk_forward_corrected=forward_corrected)


def _printed_eq78_sum(theta: np.ndarray, edot: np.ndarray) -> np.ndarray:
    """Eq. 78's sum as printed: sum_{r, r'} Theta_{:l-1}^{s+r, s'+r'} E phi'(z^{s+r}) phi'(z'^{s+r'})."""
    d = theta.shape[-1]
    pad_t = np.pad(theta, [(0, 0), (0, 0), (1, 1), (1, 1)])
    pad_e = np.pad(edot, [(0, 0), (0, 0), (1, 1), (1, 1)])
    s = np.arange(d)
    out = np.zeros_like(theta)
    for r in KER:
        for r2 in KER:
            e = pad_e[:, :, 1 + s + r, 1 + s + r2]  # (m, m, d): depends on s only
            out += pad_t[:, :, 1 + r:1 + r + d, 1 + r2:1 + r2 + d] * e[..., None]
    return out


def exact_cnn_relu(x, *, convs: int) -> np.ndarray:
    """E Theta_hat of net 62 for ReLU from this project's CNTK-GAP: images (m, 1, d, n0), depth L + 1;
    homogeneity gives E Theta_hat_62 = (ntk - nngp) / (alpha^L n0), alpha = c_sigma / q^2 = 2 / 9."""
    x = np.asarray(x, dtype=np.float64)
    n0 = x.shape[1]
    images = np.transpose(x, (0, 2, 1))[:, None]  # (m, 1, d, n0)
    k = cntk(images, depth=convs + 1, readout="gap", activation="relu", dtype=jnp.float64)
    alpha = c_sigma("relu") / 9.0
    return (np.asarray(k.ntk) - np.asarray(k.nngp)) / (alpha**convs * n0)


def cnn62_apply(params, x, activation: str):
    """Net 62: h_l^{i,s} = n_{l-1}^{-1/2} sum_j sum_r W_l^{ijr} x_{l-1}^{j,s+r} (zero padding), x_l = phi(h_l),
    f = (1/d) sum_s x_L^{1,s}; x (m, n0, d) -> (m,)."""
    phi = get_activation(activation).fn
    h = x
    for layer, w in enumerate(params):
        inp = h if layer == 0 else phi(h)
        pad = jnp.pad(inp, ((0, 0), (0, 0), (1, 1)))
        d = inp.shape[-1]
        shifted = jnp.stack([pad[:, :, 1 + r:1 + r + d] for r in KER], axis=2)  # (m, n, |ker|, d)
        h = jnp.einsum("ijr,mjrs->mis", w, shifted) / math.sqrt(inp.shape[1])
    return jnp.mean(phi(h[:, 0, :]), axis=-1)


def cnn62_init(key, *, n0: int, width: int, convs: int, dtype=jnp.float64):
    """W_l ~ N(0, 1) of shapes (n_l, n_{l-1}, |ker|), n_L = 1."""
    sizes = [n0] + [width] * (convs - 1) + [1]
    keys = jax.random.split(key, convs)
    return [jax.random.normal(k, (sizes[i + 1], sizes[i], len(KER)), dtype) for i, k in enumerate(keys)]


@functools.partial(jax.jit, static_argnames=("n0", "width", "convs", "activation"))
def cnn62_ntk_draws(keys, x, *, n0: int, width: int, convs: int, activation: str):
    """Empirical NTKs (eq. 63) of net 62, one per key: (len(keys), m, m)."""

    def one(key):
        params = cnn62_init(key, n0=n0, width=width, convs=convs, dtype=x.dtype)
        jac = jax.jacrev(cnn62_apply)(params, x, activation)
        return sum(jnp.einsum("i...,j...->ij", j, j) for j in jac)

    return jax.vmap(one)(keys)


def mc_mean_se(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    draws = np.asarray(draws, dtype=np.float64)
    return draws.mean(axis=0), draws.std(axis=0, ddof=1) / math.sqrt(len(draws))


def max_abs_z(value, mean, se) -> float:
    """max over entries of |value - mean| / se: the distance to a Monte Carlo mean in its standard errors (an
    entry every draw gives exactly, se = 0, counts 0 when the value equals it and inf otherwise)."""
    gap = np.abs(np.asarray(value, dtype=np.float64) - mean)
    exact = se == 0
    z = np.where(exact, np.where(gap <= 1e-12 * np.maximum(np.abs(mean), 1.0), 0.0, np.inf),
                 gap / np.where(exact, 1.0, se))
    return float(np.max(z))


# ---------------------------------------------------------------- typed params


@dataclass
class ReluGrid:
    """The ReLU expectations' cases."""

    lambdas: list[float] = param(min_len=1, ge=-0.95, le=0.95, doc="correlations (|lambda| < 1: eq. 81 divides "
                                 "by sqrt(1 - lambda^2))")
    variances: list[list[float]] = param(min_len=1, doc="(q11, q22) pairs of the general forms 85-86")
    mc_samples: int = param(ge=100)

    def check(self):
        for i, pair in enumerate(self.variances):
            if len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in pair):
                raise bad(f"params.relu.variances[{i}]", "must be a pair of positive variances (q11, q22)", pair)


@dataclass
class Scalar:
    """Sec. 2: one hidden layer, scalar inputs (net 13)."""

    inputs: list[float] = param(min_len=2, distinct=True, doc="scalar inputs x")
    width: int = param(ge=1)
    draws: int = param(ge=2)


@dataclass
class FcNet:
    """Sec. 4.1: net 53."""

    input_dim: int = param(ge=2, doc="n0 >= 2: at n0 = 1 q_1 = x^T x' / n0 cannot differ from x^T x'")
    n_points: int = param(ge=2)
    depth: int = param(ge=2, doc="a hidden layer for the recursions to act")
    width: int = param(ge=1)
    draws: int = param(ge=2)
    first_layer_width: int = param(ge=2, doc="units of the one draw of h_1 whose covariance is compared")


@dataclass
class CnnNet:
    """Sec. 4.2: net 62 on 1-D images."""

    channels: int = param(ge=1, doc="input channels n0")
    pixels: int = param(ge=2, doc="d: at d = 1 the 1/d^2 factors cannot show")
    n_points: int = param(ge=2)
    convs: int = param(ge=2, doc="L >= 2: eq. 78 needs a layer below")
    width: int = param(ge=1)
    draws: int = param(ge=2)
    batch: int = param(ge=1, doc="draws vmapped at once")


@dataclass
class Params:
    """``params`` of conf/experiment/golikov2022/printed_formulas.yaml."""

    activations: list[Literal["relu", "erf"]] = param(min_len=1, distinct=True)
    relu: ReluGrid = param()
    scalar: Scalar = param()
    fc: FcNet = param()
    cnn: CnnNet = param()


# ---------------------------------------------------------------- the stage


def _key(seed: int, *parts) -> jax.Array:
    return jax.random.PRNGKey(zlib.crc32(":".join(map(str, (seed, *parts))).encode()))


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    rng = np.random.default_rng(cfg.seed)
    metrics, rows = {}, []

    relu = relu_expectation_table(p.relu.lambdas, [tuple(v) for v in p.relu.variances],
                                  mc_samples=p.relu.mc_samples, seed=cfg.seed)
    for eq, g in relu.groupby("eq"):
        metrics[f"relu_eq{eq}_max_abs_error"] = float(g.abs_error.max())
        if g.mc.notna().any():
            metrics[f"relu_eq{eq}_max_mc_z"] = float(g.mc_z.abs().max())
            metrics[f"relu_eq{eq}_project_max_abs_error"] = float((g.printed - g.project).abs().max())

    xs = np.asarray(p.scalar.inputs, dtype=np.float64)
    x_fc = rng.standard_normal((p.fc.n_points, p.fc.input_dim))
    x_cnn = rng.standard_normal((p.cnn.n_points, p.cnn.channels, p.cnn.pixels))
    for act in p.activations:
        # eq. 18
        printed = printed_scalar_ntk(xs, act)
        exact = np.asarray(fc_kernels(xs[:, None], depth=2, activation=act, sigma_w2=1.0, dtype=jnp.float64).ntk)
        net = fc(depth=2, width=p.scalar.width, activation=act, sigma_w2=1.0)
        mc = monte_carlo_kernel(net.init_fn, net.apply_fn, _key(cfg.seed, "scalar", act), xs[:, None],
                                n_samples=p.scalar.draws, draws_per_call=DRAWS_PER_CALL)
        mean, se = np.asarray(mc.mean), np.asarray(mc.stderr)
        metrics[f"scalar_ntk_{act}_rel_error"] = relative_error(printed, exact)
        metrics[f"scalar_ntk_{act}_mc_max_z"] = max_abs_z(printed, mean, se)
        rows.append({"formula": "eq. 18", "activation": act, "printed_vs_exact": relative_error(printed, exact),
                     "printed_vs_mc": relative_error(printed, mean), "exact_vs_mc": relative_error(exact, mean)})

        # eqs. 58-61, sec. 8.1
        fcp = printed_fc(x_fc, depth=p.fc.depth, activation=act)
        fcc = printed_fc(x_fc, depth=p.fc.depth, activation=act, first_layer="over_n0")
        nngp, ntk = exact_fc(x_fc, depth=p.fc.depth, activation=act)
        q1_exact = np.asarray(fc_kernels(x_fc, depth=1, sigma_w2=1.0, dtype=jnp.float64).nngp)
        net = fc(depth=p.fc.depth, width=p.fc.width, activation=act, sigma_w2=1.0)
        key = _key(cfg.seed, "fc", act)
        mc_ntk = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x_fc, n_samples=p.fc.draws,
                                    draws_per_call=DRAWS_PER_CALL)
        mc_nngp = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x_fc, n_samples=p.fc.draws, kind="nngp",
                                     draws_per_call=DRAWS_PER_CALL)
        q1_mc = first_layer_covariance_mc(x_fc, width=p.fc.first_layer_width,
                                          seed=zlib.crc32(f"{cfg.seed}:q1".encode()))
        for name, value, corrected, reference, mc_mean in (
                ("fc_q1", fcp.q1, fcc.q1, q1_exact, q1_mc),
                ("fc_ntk_backward", fcp.ntk_backward, fcc.ntk_backward, ntk, np.asarray(mc_ntk.mean)),
                ("fc_ntk_forward", fcp.ntk_forward, fcc.ntk_forward, ntk, np.asarray(mc_ntk.mean)),
                ("fc_nngp", fcp.nngp, fcc.nngp, nngp, np.asarray(mc_nngp.mean))):
            metrics[f"{name}_{act}_rel_error"] = relative_error(value, reference)
            metrics[f"{name}_{act}_ratio"] = float(np.median(value / reference))
            metrics[f"{name}_{act}_corrected_rel_error"] = relative_error(corrected, reference)
            metrics[f"{name}_{act}_mc_rel_error"] = relative_error(value, mc_mean)
            metrics[f"{name}_{act}_exact_mc_rel_error"] = relative_error(reference, mc_mean)
            rows.append({"formula": name, "activation": act, "printed_vs_exact": relative_error(value, reference),
                         "printed_vs_mc": relative_error(value, mc_mean),
                         "exact_vs_mc": relative_error(reference, mc_mean),
                         "corrected_vs_exact": relative_error(corrected, reference),
                         "median_ratio_printed_exact": float(np.median(value / reference))})

        # eqs. 69-78
        cnp = printed_cnn(x_cnn, convs=p.cnn.convs, activation=act)
        keys = jax.random.split(_key(cfg.seed, "cnn", act), p.cnn.draws)
        draws = np.concatenate([np.asarray(cnn62_ntk_draws(keys[i:i + p.cnn.batch], jnp.asarray(x_cnn),
                                                           n0=p.cnn.channels, width=p.cnn.width, convs=p.cnn.convs,
                                                           activation=act))
                                for i in range(0, p.cnn.draws, p.cnn.batch)])
        mean, se = mc_mean_se(draws)
        exact = exact_cnn_relu(x_cnn, convs=p.cnn.convs) if act == "relu" else None
        for name, value in (("cnn_ntk_backward", cnp.ntk_backward), ("cnn_ntk_forward", cnp.ntk_forward),
                            ("cnn_ntk_forward_corrected", cnp.ntk_forward_corrected)):
            metrics[f"{name}_{act}_mc_rel_error"] = relative_error(value, mean)
            metrics[f"{name}_{act}_mc_max_z"] = max_abs_z(value, mean, se)
            row = {"formula": name, "activation": act, "printed_vs_mc": relative_error(value, mean)}
            if exact is not None:
                metrics[f"{name}_{act}_rel_error"] = relative_error(value, exact)
                row["printed_vs_exact"] = relative_error(value, exact)
                row["median_ratio_printed_exact"] = float(np.median(value / exact))
            rows.append(row)
        metrics[f"cnn_ntk_{act}_mc_cv"] = float(np.median(draws.std(axis=0, ddof=1) / np.abs(mean)))
        if exact is not None:
            metrics[f"cnn_ntk_{act}_exact_mc_rel_error"] = relative_error(exact, mean)
            metrics[f"cnn_ntk_forward_{act}_ratio"] = float(np.median(cnp.ntk_forward / exact))

    for name in ("scalar_ntk", "fc_q1", "fc_ntk_backward", "fc_ntk_forward", "fc_nngp"):
        metrics[f"{name}_max_rel_error"] = max(metrics[f"{name}_{a}_rel_error"] for a in p.activations)
    return StageResult(
        metrics=metrics,
        data={"name": "gaussian (synthetic inputs)", "source": "synthetic", "sha256": None, "substituted_for": None},
        sizes={"scalar_inputs": list(xs), "fc_input_dim": p.fc.input_dim, "fc_points": p.fc.n_points,
               "fc_depth": p.fc.depth, "fc_width": p.fc.width, "fc_draws": p.fc.draws,
               "cnn_channels": p.cnn.channels, "cnn_pixels": p.cnn.pixels, "cnn_points": p.cnn.n_points,
               "cnn_convs": p.cnn.convs, "cnn_width": p.cnn.width, "cnn_draws": p.cnn.draws,
               "relu_mc_samples": p.relu.mc_samples},
        seeds=[cfg.seed],
        tables={"relu_expectations": relu, "printed_kernels": pd.DataFrame(rows)},
        notes=["printed formulas implemented as printed; 'corrected' columns: the derivation's correction (evidence)"],
    )


if __name__ == "__main__":
    main(run, params=Params)
