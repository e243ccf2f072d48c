"""Gaussian expectations of activations under a 2x2 covariance, and the activation registry.

For (u, v) ~ N(0, [[s11, s12], [s12, s22]]) an activation provides, elementwise over arrays:
    k    = E[phi(u) phi(v)]
    kdot = E[phi'(u) phi'(v)]
(Jacot et al. 2018 eq. for Sigma/Sigmadot; Arora et al. 2019 eqs. 12-13; Cho & Saul 2009 for ReLU.)

Closed forms: ReLU-like slope pairs (ReLU, leaky ReLU, identity, the normalized ReLU of Feng & Kolter)
by the arc-cosine kernels of degree 1 and 0; erf by Williams (1997). Every other activation (any JAX
callable; tanh, elu, softplus, sigmoid, silu, gelu are registered) uses :func:`polar_expectations`:
a product quadrature of the 2-D Gaussian in polar coordinates of the whitened variables, split at the
angles where u = 0 or v = 0, so that a kink of phi at 0 (ELU, ReLU-like) falls on an arc boundary and
the rule converges spectrally instead of at the algebraic rate of plain Gauss-Hermite.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
from jax import lax

from ntkrepro.blocks import kernel_jit

RADIAL_NODES = 40
ANGULAR_NODES = 32
VECTORIZED_RADIAL_LIMIT = 2**18  # batch x radial nodes above which the radial sum is a loop


@dataclass(frozen=True)
class Activation:
    """An activation phi with its derivatives and Gaussian expectations.

    Attributes:
        name: registry name (with its parameter, e.g. ``"leaky_relu:0.1"``).
        fn, deriv: phi and phi' (elementwise JAX functions); ``deriv2`` is phi'' (None where it is a
            distribution, e.g. ReLU-like).
        expectations: ``(s11, s12, s22) -> (k, kdot)`` elementwise on broadcastable arrays.
        second_moment: ``q -> E[phi(sqrt(q) Z)^2]``, Z ~ N(0, 1), elementwise.
        has_closed_form: whether ``expectations`` is exact (else quadrature, accuracy ~1e-10).
        mp_expectations: the closed form in mpmath (scalar ``(s11, s12, s22) -> (k, kdot)``) for
            high-precision recursions, or None.
        unit_expectations: for a positively homogeneous phi (phi(t x) = t phi(x), t > 0): ``c -> (k, kdot)``
            at unit variances and correlation c, elementwise (c as computed: clipped and snapped there); then
            k(s11, s12, s22) = sqrt(s11 s22) k(1, c, 1) and kdot(s11, s12, s22) = kdot(1, c, 1)
            (:func:`broadcast_expectations`). None otherwise.
    """

    name: str
    fn: Callable
    deriv: Callable
    expectations: Callable
    second_moment: Callable = field(default=None, compare=False)
    has_closed_form: bool = False
    deriv2: Callable | None = field(default=None, compare=False)
    mp_expectations: Callable | None = field(default=None, compare=False)
    unit_expectations: Callable | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.second_moment is None:  # E[phi(sqrt(q) Z)^2] from the 2x2 expectation at c = 1
            expectations = self.expectations
            object.__setattr__(self, "second_moment", lambda q: expectations(q, q, q)[0])


# ---------------------------------------------------------------- quadrature rules


@functools.cache
def half_line_gauss_rule(num_nodes: int, power: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the weight r^power exp(-r^2/2) on [0, inf) (Golub-Welsch from exact moments).

    The moments 2^((k+p-1)/2) Gamma((k+p+1)/2) are Cholesky-factored in mpmath at high precision (the
    Hankel matrix is badly conditioned), the Jacobi matrix is diagonalized in float64.
    Returns (nodes, weights) with sum(weights) = integral of the weight.
    """
    n = num_nodes
    with mpmath.workdps(40 + 3 * n):
        moments = [mpmath.power(2, mpmath.mpf(k + power - 1) / 2)
                   * mpmath.gamma(mpmath.mpf(k + power + 1) / 2) for k in range(2 * n + 1)]
        hankel = mpmath.matrix(n + 1, n + 1)
        for i in range(n + 1):
            for j in range(n + 1):
                hankel[i, j] = moments[i + j]
        upper = mpmath.cholesky(hankel).T
        alpha = [upper[0, 1] / upper[0, 0]]
        alpha += [upper[j, j + 1] / upper[j, j] - upper[j - 1, j] / upper[j - 1, j - 1] for j in range(1, n)]
        beta = [upper[j + 1, j + 1] / upper[j, j] for j in range(n - 1)]
        alpha = np.array([float(a) for a in alpha])
        beta = np.array([float(b) for b in beta])
        mass = float(moments[0])
    jacobi = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    return nodes, mass * vectors[0] ** 2


def gaussian_mean(g: Callable, q, *, num_nodes: int = 64):
    """E[g(sqrt(q) Z)], Z ~ N(0, 1), elementwise in q >= 0, for g smooth except possibly at 0.

    The half-line rule on each side of 0 makes a kink of g at 0 harmless.
    """
    q = jnp.asarray(q, jnp.result_type(q, float))
    nodes, weights = half_line_gauss_rule(num_nodes, 0)
    nodes = jnp.asarray(nodes, q.dtype)
    weights = jnp.asarray(weights / math.sqrt(2 * math.pi), q.dtype)
    z = jnp.sqrt(jnp.maximum(q, 0.0))[..., None] * nodes
    return jnp.sum(weights * (g(z) + g(-z)), axis=-1)


def _horner(coeffs, t):
    """sum_k coeffs[k] t^k in the dtype of t."""
    poly = jnp.asarray(coeffs[-1], t.dtype)
    for c in coeffs[-2::-1]:
        poly = poly * t + c
    return poly


def _chebyshev_interpolant(fn, degree: int, hi: float) -> tuple[float, ...]:
    """Monomial coefficients of the polynomial of ``degree`` that interpolates the mpmath function ``fn`` at the
    Chebyshev nodes of [0, hi], in 40-digit arithmetic."""
    with mpmath.workdps(40):
        n = degree + 1
        nodes = [hi * (1 - mpmath.cos(mpmath.pi * (k + mpmath.mpf(1) / 2) / n)) / 2 for k in range(n)]
        coeffs = mpmath.lu_solve(mpmath.matrix([[t**j for j in range(n)] for t in nodes]),
                                 mpmath.matrix([fn(t) for t in nodes]))
        return tuple(float(c) for c in coeffs)


@functools.cache
def _asin_coefficients(degree: int) -> tuple[float, ...]:
    """Monomial coefficients c_j of p(t) = (asin(sqrt t) - sqrt t) / t^1.5 ~ sum_j c_j t^j on t in [0, 1/4]
    (max relative error of asin: 1.6e-16 at degree 12, 6e-11 at degree 6)."""
    return _chebyshev_interpolant(lambda t: (mpmath.asin(mpmath.sqrt(t)) - mpmath.sqrt(t)) / t**1.5, degree, 0.25)


def _asin_small(s):
    """asin(s) for 0 <= s <= 1/2: s + s^3 p(s^2), p of degree 12 (float64) or 6 (float32)."""
    coeffs = _asin_coefficients(12 if s.dtype == jnp.float64 else 6)
    t = s * s
    return s + s * t * _horner(coeffs, t)


def _asin_folded(a):
    """(a > 1/2, asin(a) for a <= 1/2 else asin(sqrt((1 - a) / 2))) for 0 <= a <= 1: the argument folded into
    [0, 1/2], where :func:`_asin_small` holds (asin(a) = pi/2 - 2 asin(sqrt((1 - a) / 2)))."""
    big = a > 0.5
    return big, _asin_small(jnp.where(big, jnp.sqrt(jnp.maximum(1.0 - a, 0.0) * 0.5), a))


# Abramowitz & Stegun 4.4.46: arccos(a) = sqrt(1 - a) sum_k c_k a^k + e, |e| <= 2e-8 on [0, 1].
_ACOS_COEFFS_AS = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046, 0.0308918810, -0.0170881256,
                   0.0066700901, -0.0012624911)


@functools.cache
def _relu_moment_coefficients(degree: int) -> tuple[float, ...]:
    """Monomial coefficients of S(a) = (sqrt(1 + a) - a arccos(a) / sqrt(1 - a)) / (1 - a) on [0, 1] (analytic
    there, 0.94 <= S <= 1: max relative error 1.8e-8 at degree 6, under float32's half ulp, 6e-8)."""
    return _chebyshev_interpolant(
        lambda a: (mpmath.sqrt(1 + a) - a * mpmath.acos(a) / mpmath.sqrt(1 - a)) / (1 - a), degree, 1.0)


def arccos(x):
    """arccos to within a few ulps, elementwise, as polynomials plus one sqrt that XLA vectorizes (its own
    arccos is an atan2 that costs ~10-30x more and dominates a kernel recursion on CPU).

    float32: A&S 4.4.46 (absolute error <= 2e-8). float64: |x| <= 1/2 as pi/2 - asin(x), |x| > 1/2 as
    2 asin(sqrt((1 - |x|) / 2)) (exact near |x| = 1, where arccos is steep), asin by :func:`_asin_small`.
    """
    a = jnp.abs(x)
    if x.dtype == jnp.float32:
        r = jnp.sqrt(1.0 - a) * _horner(_ACOS_COEFFS_AS, a)
    else:
        big, s = _asin_folded(a)
        r = jnp.where(big, 2.0 * s, jnp.pi / 2 - s)
    return jnp.where(x < 0, jnp.pi - r, r)


def arcsin(x):
    """arcsin with the accuracy and speed of :func:`arccos` (relative accuracy kept near 0)."""
    big, s = _asin_folded(jnp.abs(x))
    r = jnp.where(big, jnp.pi / 2 - 2.0 * s, s)
    return jnp.where(x < 0, -r, r)


def arccos_and_sine(x):
    """(arccos(x), sqrt(1 - x^2)) for -1 <= x <= 1: :func:`arccos` and the sine as sqrt((1 - |x|)(1 + |x|)),
    which keeps its relative accuracy near |x| = 1 (1 - |x| is exact there)."""
    a = jnp.abs(x)
    return arccos(x), jnp.sqrt(jnp.maximum((1.0 - a) * (1.0 + a), 0.0))


def _snapped_magnitude(c):
    """|c| clipped to 1, within 8 ulps of 1 snapped to 1 (:func:`snap_correlation`'s rule, on the magnitude)."""
    a = jnp.minimum(jnp.abs(c), 1.0)
    return jnp.where(1.0 - a <= 8 * jnp.finfo(c.dtype).eps, 1.0, a)


def relu_moments(c):
    """(sqrt(1 - c^2) + c (pi - arccos c), pi - arccos c): 2 pi E[relu(u) relu(v)] and 2 pi E[relu'(u) relu'(v)]
    at unit variances and correlation c (Cho & Saul 2009; Arora eqs. 12-13), c by :func:`snap_correlation`'s
    rule (applied here, on |c|: a raw correlation that rounding took past +-1 is fine).

    float32, one square root per entry: with a = |c| and r = sqrt(1 - a), arccos a = r P(a) (A&S 4.4.46) and
    the first moment is [c >= 0] pi a + r (1 - a) S(a) (:func:`_relu_moment_coefficients`: the sine's and the
    angle's terms, both sqrt(2) r at a = 1, cancel into r (1 - a) S exactly), so it keeps its relative accuracy
    near c = -1, where it vanishes like (1 + c)^1.5, and each moment needs only its own polynomial (the NNGP
    part of a CNTK layer evaluates no arccos). Square roots were the costliest operations of a ReLU layer on the
    project's CPU (benchmarks/README). float64: from :func:`arccos_and_sine`."""
    a = _snapped_magnitude(c)
    positive = c >= 0
    if c.dtype != jnp.float32:
        c = jnp.where(positive, a, -a)
        theta, sine = arccos_and_sine(c)
        return sine + c * (jnp.pi - theta), jnp.pi - theta
    one_minus = 1.0 - a
    r = jnp.sqrt(one_minus)
    first = jnp.where(positive, jnp.pi * a, 0.0) + r * one_minus * _horner(_relu_moment_coefficients(6), a)
    angle = r * _horner(_ACOS_COEFFS_AS, a)  # arccos |c|
    return first, jnp.where(positive, jnp.pi - angle, angle)


def snap_correlation(c):
    """c clipped to [-1, 1], |c| within 8 ulps of 1 snapped to +-1: arccos amplifies a rounding error e of
    c near 1 to sqrt(2e) (~1e-8), so an input paired with itself (c = 1 up to rounding of x.x) would
    otherwise be off by that much; the snap changes any result by at most the same amount."""
    return jnp.copysign(_snapped_magnitude(c), c)


def _correlation(s11, s12, s22):
    """c = s12 / sqrt(s11 s22) by :func:`snap_correlation` (0 where a variance vanishes) and sqrt(s11 s22),
    both correctly rounded (on the diagonal, s11 = s12 = s22, the norm is s11 exactly)."""
    norm = jnp.sqrt(s11 * s22)
    safe = jnp.where(norm > 0, norm, 1.0)
    return jnp.where(norm > 0, snap_correlation(s12 / safe), 0.0), norm


def _root_and_inverse(var):
    """(sqrt(var), 1 / sqrt(var)), the inverse 0 where var = 0 (a vanishing variance gives correlation 0). The
    inverse divides the root, so that their product is 1 to half an ulp: a reciprocal square root of its
    own (~1.5 ulp) would scale the kernel by a per-row error each layer (3x the float32 error at depth 10)."""
    root = jnp.sqrt(jnp.maximum(var, 0.0))
    positive = root > 0
    return root, jnp.where(positive, 1.0 / jnp.where(positive, root, 1.0), 0.0)


def variance_factors(activation: Activation, var) -> tuple:
    """What the closed form of ``activation`` uses of a per-pixel (or per-input) variance array: for a
    positively homogeneous activation (``unit_expectations``) its root and inverse root
    (:func:`_root_and_inverse`), else ``(var,)``. Computed once per variance array and reused for every pair
    it meets (:func:`factored_expectations`)."""
    if activation.unit_expectations is None:
        return (var,)
    return _root_and_inverse(var)


def factored_expectations(activation: Activation, factors1: tuple, s12, factors2: tuple):
    """``activation.expectations(var1, s12, var2)`` from the :func:`variance_factors` of the variances, small
    arrays broadcast against the pairs s12 (a Gram tile's rows and columns, an image's pixels). For a
    positively homogeneous activation the correlation is s12 times the inverse roots and the scale the roots'
    product: no square root or division per pair but the closed form's own."""
    if activation.unit_expectations is None:
        return activation.expectations(factors1[0], s12, factors2[0])
    (root1, inverse1), (root2, inverse2) = factors1, factors2
    k, kdot = activation.unit_expectations(s12 * inverse1 * inverse2)  # snapped there
    return k * (root1 * root2), kdot


def broadcast_expectations(activation: Activation, var1, s12, var2):
    """:func:`factored_expectations` of the variances var1, var2 (small arrays broadcast against s12)."""
    return factored_expectations(activation, variance_factors(activation, var1), s12,
                                 variance_factors(activation, var2))


@functools.partial(kernel_jit, static_argnames=("fn", "deriv", "radial_nodes", "angular_nodes"))
def polar_expectations(fn: Callable, deriv: Callable, s11, s12, s22, *,
                       radial_nodes: int = RADIAL_NODES, angular_nodes: int = ANGULAR_NODES):
    """(E[phi(u)phi(v)], E[phi'(u)phi'(v)]) by quadrature in polar coordinates, kinks of phi at 0 exact.

    Whitened: u = sqrt(s11) r cos(t), v = sqrt(s22) r cos(t - psi), psi = arccos(c). The integrand is
    smooth in r on every ray (r e^{-r^2/2} Gauss rule on [0, inf)) and smooth in t between the four
    angles where u or v changes sign, which bound the arcs of Gauss-Legendre rules. The arcs at
    t + pi give (-u, -v), so two arcs are evaluated for both signs.
    """
    dtype = jnp.result_type(s11, s12, s22, float)
    s11, s12, s22 = jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in (s11, s12, s22)))
    c, _ = _correlation(s11, s12, s22)
    psi = jnp.arccos(c)
    root11, root22 = jnp.sqrt(jnp.maximum(s11, 0.0)), jnp.sqrt(jnp.maximum(s22, 0.0))
    radii, radial_w = (jnp.asarray(a, dtype) for a in half_line_gauss_rule(radial_nodes, 1))
    legendre_x, legendre_w = np.polynomial.legendre.leggauss(angular_nodes)
    unit_x = jnp.asarray((legendre_x + 1.0) / 2.0, dtype)
    unit_w = jnp.asarray(legendre_w / 2.0, dtype)
    # arc 1: t in [-pi/2, psi - pi/2] (u >= 0 >= v); arc 2: t in [psi - pi/2, pi/2] (u, v >= 0)
    starts = (-jnp.pi / 2 + 0.0 * psi, psi - jnp.pi / 2)
    lengths = (psi, jnp.pi - psi)

    def integrands(a, b):
        return fn(a) * fn(b) + fn(-a) * fn(-b), deriv(a) * deriv(b) + deriv(-a) * deriv(-b)

    def ray_sums(theta):
        a, b = root11 * jnp.cos(theta), root22 * jnp.cos(theta - psi)
        if s11.size * radial_nodes <= VECTORIZED_RADIAL_LIMIT:  # small batches: radial nodes on an axis
            k, kdot = integrands(a[..., None] * radii, b[..., None] * radii)
            return jnp.sum(radial_w * k, axis=-1), jnp.sum(radial_w * kdot, axis=-1)

        def radial(j, acc):  # large batches (Gram matrices): memory of a few batch-sized arrays
            k, kdot = integrands(radii[j] * a, radii[j] * b)
            return acc[0] + radial_w[j] * k, acc[1] + radial_w[j] * kdot

        return lax.fori_loop(0, radial_nodes, radial, (jnp.zeros_like(a), jnp.zeros_like(a)))

    def body(i, acc):
        k_acc, kdot_acc = acc
        for start, length in zip(starts, lengths, strict=True):
            k, kdot = ray_sums(start + length * unit_x[i])
            k_acc = k_acc + length * unit_w[i] * k
            kdot_acc = kdot_acc + length * unit_w[i] * kdot
        return k_acc, kdot_acc

    zero = jnp.zeros_like(s11)
    k, kdot = lax.fori_loop(0, angular_nodes, body, (zero, zero))
    return k / (2 * jnp.pi), kdot / (2 * jnp.pi)


# ---------------------------------------------------------------- closed forms


def _relu_like_expectations(neg_slope: float, pos_slope: float):
    """phi(x) = pos_slope x (x > 0), neg_slope x (x <= 0) = b relu(x) - a relu(-x), positively homogeneous:
    k(s11, s12, s22) = sqrt(s11 s22) k(1, c, 1), c = s12 / sqrt(s11 s22). At unit variances, with
    theta = arccos(c) (Cho & Saul 2009; Arora eqs. 12-13):
    E[phi phi] = ((a^2 + b^2)(sqrt(1 - c^2) + c (pi - theta)) - 2ab (sqrt(1 - c^2) - c theta)) / (2 pi),
    E[phi' phi'] = ((a^2 + b^2)(pi - theta) + 2ab theta) / (2 pi).
    Returns (expectations, unit_expectations, mp_expectations).
    """
    a, b = neg_slope, pos_slope
    same, cross = a * a + b * b, 2.0 * a * b

    def unit_expectations(c):  # sine - c theta = first - pi c, theta = pi - angle (relu_moments)
        first, angle = relu_moments(c)
        k, kdot = same * first, same * angle
        if cross != 0.0:  # ReLU: no flipped kernel
            k = (same - cross) * first + cross * jnp.pi * snap_correlation(c)
            kdot = (same - cross) * angle + cross * jnp.pi
        return k / (2.0 * jnp.pi), kdot / (2.0 * jnp.pi)

    def expectations(s11, s12, s22):
        c, norm = _correlation(s11, s12, s22)
        k, kdot = unit_expectations(c)
        return jnp.where(norm > 0, norm * k, 0.0), kdot

    def mp_expectations(s11, s12, s22):
        s11, s12, s22 = (mpmath.mpf(v) for v in (s11, s12, s22))
        norm = mpmath.sqrt(s11 * s22)
        lam = max(min(s12 / norm, mpmath.mpf(1)), mpmath.mpf(-1)) if norm > 0 else mpmath.mpf(0)
        theta = mpmath.acos(lam)
        root = mpmath.sqrt(1 - lam**2)
        j_same = norm * (lam * (mpmath.pi - theta) + root) / (2 * mpmath.pi)
        j_flip = norm * (-lam * theta + root) / (2 * mpmath.pi)
        k = (a * a + b * b) * j_same - 2 * a * b * j_flip
        kdot = ((a * a + b * b) * (mpmath.pi - theta) + 2 * a * b * theta) / (2 * mpmath.pi)
        return k, kdot

    return expectations, unit_expectations, mp_expectations


def relu_like(neg_slope: float, pos_slope: float, *, name: str | None = None) -> Activation:
    """The piecewise-linear activation with slopes (neg_slope, pos_slope) (Hayou Def. 1), closed form."""
    a, b = float(neg_slope), float(pos_slope)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"relu_like slopes must be finite, got ({neg_slope}, {pos_slope})")
    expectations, unit_expectations, mp_expectations = _relu_like_expectations(a, b)
    return Activation(
        name=name or f"relu_like:{a:g},{b:g}",
        fn=lambda x: jnp.where(x > 0, b * x, a * x),
        deriv=lambda x: jnp.where(x > 0, b, a).astype(jnp.result_type(x, float)),
        expectations=expectations,
        second_moment=lambda q: (a * a + b * b) * jnp.asarray(q) / 2.0,
        has_closed_form=True,
        mp_expectations=mp_expectations,
        unit_expectations=unit_expectations,
    )


def _erf_expectations(s11, s12, s22):
    """Williams (1997): E erf(u)erf(v) = (2/pi) arcsin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22)));
    E erf'(u)erf'(v) = (4/pi) det(I + 2 Sigma)^(-1/2)."""
    denom = (1.0 + 2.0 * s11) * (1.0 + 2.0 * s22)
    k = (2.0 / jnp.pi) * arcsin(jnp.clip(2.0 * s12 / jnp.sqrt(denom), -1.0, 1.0))
    kdot = (4.0 / jnp.pi) / jnp.sqrt(denom - 4.0 * s12**2)
    return k, kdot


def _erf_mp_expectations(s11, s12, s22):
    s11, s12, s22 = (mpmath.mpf(v) for v in (s11, s12, s22))
    denom = (1 + 2 * s11) * (1 + 2 * s22)
    return (2 / mpmath.pi) * mpmath.asin(2 * s12 / mpmath.sqrt(denom)), (4 / mpmath.pi) / mpmath.sqrt(
        denom - 4 * s12**2)


ERF = Activation(
    name="erf",
    fn=jax.scipy.special.erf,
    deriv=lambda x: (2.0 / jnp.sqrt(jnp.pi)) * jnp.exp(-x * x),
    expectations=_erf_expectations,
    second_moment=lambda q: (2.0 / jnp.pi) * arcsin(2.0 * jnp.asarray(q) / (1.0 + 2.0 * jnp.asarray(q))),
    has_closed_form=True,
    deriv2=lambda x: (-4.0 / jnp.sqrt(jnp.pi)) * x * jnp.exp(-x * x),
    mp_expectations=_erf_mp_expectations,
)

RELU = relu_like(0.0, 1.0, name="relu")
IDENTITY = relu_like(1.0, 1.0, name="identity")


# ---------------------------------------------------------------- numerical activations


def _elementwise_grad(fn: Callable) -> Callable:
    return jnp.vectorize(jax.grad(lambda x: fn(x)))


def from_callable(fn: Callable, *, name: str | None = None, deriv: Callable | None = None,
                  deriv2: Callable | None = None, radial_nodes: int = RADIAL_NODES,
                  angular_nodes: int = ANGULAR_NODES) -> Activation:
    """An activation given as a JAX function; expectations by :func:`polar_expectations`.

    ``deriv`` / ``deriv2`` default to JAX autodiff of ``fn``. Accurate (~1e-10) for phi smooth except
    possibly at 0 and of at most exponential growth, at moderate variances (s11, s22 <~ 10).
    """
    if not callable(fn):
        raise ValueError(f"activation must be a registered name or a callable, got {fn!r}")
    deriv = deriv or _elementwise_grad(fn)
    deriv2 = deriv2 or _elementwise_grad(deriv)

    def expectations(s11, s12, s22):
        return polar_expectations(fn, deriv, s11, s12, s22,
                                  radial_nodes=radial_nodes, angular_nodes=angular_nodes)

    return Activation(
        name=name or getattr(fn, "__name__", "callable"),
        fn=fn,
        deriv=deriv,
        expectations=expectations,
        second_moment=lambda q: gaussian_mean(lambda z: fn(z) ** 2, q),
        has_closed_form=False,
        deriv2=deriv2,
    )


def _elu(alpha: float) -> Activation:
    return from_callable(
        lambda x: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0))),
        name="elu" if alpha == 1.0 else f"elu:{alpha:g}",
        deriv=lambda x: jnp.where(x > 0, 1.0, alpha * jnp.exp(jnp.minimum(x, 0.0))),
        deriv2=lambda x: jnp.where(x > 0, 0.0, alpha * jnp.exp(jnp.minimum(x, 0.0))),
    )


def _sigmoid_deriv(x):
    s = jax.nn.sigmoid(x)
    return s * (1.0 - s)


def _std_normal_pdf(x):
    return jnp.exp(-x * x / 2.0) / jnp.sqrt(2.0 * jnp.pi)


def _std_normal_cdf(x):
    return 0.5 * jax.scipy.special.erfc(-x / jnp.sqrt(2.0))


_FIXED: dict[str, Callable[[], Activation]] = {
    "relu": lambda: RELU,
    "identity": lambda: IDENTITY,
    "normalized_relu": lambda: relu_like(0.0, math.sqrt(2.0), name="normalized_relu"),
    "erf": lambda: ERF,
    "tanh": lambda: from_callable(
        jnp.tanh, name="tanh", deriv=lambda x: 1.0 - jnp.tanh(x) ** 2,
        deriv2=lambda x: -2.0 * jnp.tanh(x) * (1.0 - jnp.tanh(x) ** 2)),
    "softplus": lambda: from_callable(jax.nn.softplus, name="softplus", deriv=jax.nn.sigmoid,
                                      deriv2=_sigmoid_deriv),
    "sigmoid": lambda: from_callable(jax.nn.sigmoid, name="sigmoid", deriv=_sigmoid_deriv),
    "silu": lambda: from_callable(
        lambda x: x * jax.nn.sigmoid(x), name="silu",
        deriv=lambda x: jax.nn.sigmoid(x) + x * _sigmoid_deriv(x)),
    "gelu": lambda: from_callable(
        lambda x: x * _std_normal_cdf(x), name="gelu",
        deriv=lambda x: _std_normal_cdf(x) + x * _std_normal_pdf(x),
        deriv2=lambda x: (2.0 - x * x) * _std_normal_pdf(x)),
}
# name -> (constructor, default parameters; None = required)
_PARAMETRIC: dict[str, tuple[Callable[..., Activation], tuple]] = {
    "leaky_relu": (lambda slope: relu_like(slope, 1.0, name=f"leaky_relu:{slope:g}"), (0.01,)),
    "relu_like": (relu_like, (None, None)),
    "elu": (_elu, (1.0,)),
}
KNOWN = sorted([*_FIXED, *_PARAMETRIC])


@functools.cache
def _build(name: str, params: tuple) -> Activation:
    if name in _FIXED:
        return _FIXED[name]()
    return _PARAMETRIC[name][0](*params)


def _parse(spec: str) -> Activation:
    """'name' or 'name:p1,p2' -> a cached Activation (equal specs give the same object, so jit caches hit)."""
    name, _, args = spec.partition(":")
    name = name.strip()
    if name in _FIXED and not args:
        return _build(name, ())
    if name in _PARAMETRIC:
        _, defaults = _PARAMETRIC[name]
        try:
            values = tuple(float(a) for a in args.split(",")) if args else ()
        except ValueError:
            raise ValueError(f"activation {spec!r}: parameters must be numbers") from None
        if len(values) not in (0, len(defaults)) or (not values and None in defaults):
            raise ValueError(f"activation {spec!r}: {name} takes {len(defaults)} parameter(s)")
        return _build(name, values or defaults)
    raise ValueError(
        f"unknown activation {spec!r}; known: {', '.join(KNOWN)} "
        "(parameters after a colon: 'leaky_relu:0.1', 'elu:1.0', 'relu_like:0.1,1'), or pass a callable"
    )


@functools.lru_cache(maxsize=64)
def _wrap_callable(fn: Callable) -> Activation:
    return from_callable(fn)


def get_activation(spec: str | Activation | Callable) -> Activation:
    """Look up an activation by name (``"relu"``, ``"leaky_relu:0.1"``, ...), pass an
    :class:`Activation` through, or wrap a JAX callable (:func:`from_callable`)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        return _parse(spec)
    if callable(spec):
        return _wrap_callable(spec)
    raise ValueError(f"activation must be a name, an Activation or a callable, got {spec!r}")


def unit_second_moment(activation: str | Activation | Callable) -> float:
    """E[phi(z)^2], z ~ N(0, 1): the activation's 2x2 expectation at unit variance and correlation 1
    (closed form for registered activations, polar quadrature for a callable)."""
    one = np.float64(1.0)
    return float(get_activation(activation).expectations(one, one, one)[0])


def c_sigma(activation: str | Activation | Callable) -> float:
    """c_sigma = 1 / E[phi(z)^2], z ~ N(0, 1) (Arora et al. 2019 eq. 6; 2 for ReLU): the weight variance
    that keeps the second moment through a layer."""
    second = unit_second_moment(activation)
    if not (math.isfinite(second) and second > 0):
        name = get_activation(activation).name
        raise ValueError(f"activation {name}: E[phi(z)^2] = {second}, cannot normalize by it")
    return 1.0 / second
