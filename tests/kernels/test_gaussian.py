"""Gaussian expectations: closed forms vs Monte Carlo and quadrature, quadrature vs closed forms and
scipy adaptive quadrature (kinked ELU included), registry and bad input."""

import math

import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.gaussian import (
    KNOWN,
    Activation,
    arccos,
    arccos_and_sine,
    arcsin,
    broadcast_expectations,
    c_sigma,
    from_callable,
    gaussian_mean,
    get_activation,
    half_line_gauss_rule,
    polar_expectations,
    relu_moments,
    unit_second_moment,
)

COVARIANCES = [(1.0, 0.3, 2.0), (0.5, -0.45, 0.7), (3.0, 2.9, 3.0), (2.0, 2.0, 2.0), (4.0, -1.5, 1.5)]

NUMPY_FNS = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
    "leaky_relu:0.2": (lambda x: np.where(x > 0, x, 0.2 * x), lambda x: np.where(x > 0, 1.0, 0.2)),
    "relu_like:-0.5,2": (lambda x: np.where(x > 0, 2 * x, -0.5 * x), lambda x: np.where(x > 0, 2.0, -0.5)),
    "normalized_relu": (lambda x: math.sqrt(2) * np.maximum(x, 0), lambda x: math.sqrt(2) * (x > 0)),
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
    "erf": (special.erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
            lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
    "softplus": (lambda x: np.logaddexp(0, x), special.expit),
    "sigmoid": (special.expit, lambda x: special.expit(x) * (1 - special.expit(x))),
    "silu": (lambda x: x * special.expit(x), lambda x: special.expit(x) * (1 + x * (1 - special.expit(x)))),
    "gelu": (lambda x: x * special.ndtr(x),
             lambda x: special.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
}
CLOSED = ["relu", "leaky_relu:0.2", "relu_like:-0.5,2", "normalized_relu", "identity", "erf"]


def _expect(name, cov):
    k, kdot = get_activation(name).expectations(*(jnp.asarray(v) for v in cov))
    return float(k), float(kdot)


def _dblquad(g, s11, s12, s22):
    """E[g(u, v)] by scipy adaptive quadrature in Cholesky coordinates, split along the lines u = 0 and
    v = 0 (so that kinks at 0 lie on region boundaries); 1-D quad when the covariance is singular."""
    if s12 * s12 >= s11 * s22 * (1 - 1e-15):
        f = lambda z: g(math.sqrt(s11) * z, math.sqrt(s22) * z * np.sign(s12)) * stats.norm.pdf(z)
        return sum(integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-13)[0] for lo, hi in ((-12, 0), (0, 12)))
    a, c, s = math.sqrt(s11), s12 / math.sqrt(s11), math.sqrt(s22 - s12**2 / s11)  # v = c z1 + s z2
    f = lambda z2, z1: g(a * z1, c * z1 + s * z2) * np.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)
    split = lambda z1: -c * z1 / s
    total = 0.0
    for lo, hi in ((-11, 0), (0, 11)):
        total += integrate.dblquad(f, lo, hi, lambda z1: -11, split, epsabs=1e-14, epsrel=1e-12)[0]
        total += integrate.dblquad(f, lo, hi, split, lambda z1: 11, epsabs=1e-14, epsrel=1e-12)[0]
    return total


@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_match_monte_carlo(name):
    rng = np.random.default_rng(0)
    fn, deriv = NUMPY_FNS[name]
    for s11, s12, s22 in COVARIANCES[:3]:
        z = rng.standard_normal((2, 400_000))
        u = math.sqrt(s11) * z[0]
        v = s12 / math.sqrt(s11) * z[0] + math.sqrt(s22 - s12**2 / s11) * z[1]
        k, kdot = _expect(name, (s11, s12, s22))
        for exact, samples in ((k, fn(u) * fn(v)), (kdot, deriv(u) * deriv(v))):
            stderr = samples.std() / math.sqrt(samples.size)
            assert abs(exact - samples.mean()) < 5 * stderr + 1e-12


@pytest.mark.parametrize("name", ["relu_like:-0.5,2", "erf"])
def test_closed_forms_match_adaptive_quadrature(name):
    fn, deriv = NUMPY_FNS[name]
    for cov in COVARIANCES[:2]:
        k, kdot = _expect(name, cov)
        assert k == pytest.approx(_dblquad(lambda u, v: fn(u) * fn(v), *cov), rel=1e-9, abs=1e-11)
        assert kdot == pytest.approx(_dblquad(lambda u, v: deriv(u) * deriv(v), *cov), rel=1e-9, abs=1e-11)


@pytest.mark.parametrize("name", ["tanh", "elu", "softplus", "gelu"])
def test_numerical_expectations_match_adaptive_quadrature(name):
    """The kink-aware polar rule reaches ~1e-11 also for ELU (kink at 0)."""
    fn, deriv = NUMPY_FNS[name]
    for cov in (COVARIANCES[0], COVARIANCES[2], COVARIANCES[4]):
        k, kdot = _expect(name, cov)
        assert k == pytest.approx(_dblquad(lambda u, v: fn(u) * fn(v), *cov), rel=1e-10, abs=1e-11)
        if name in ("tanh", "elu"):
            exact = _dblquad(lambda u, v: deriv(u) * deriv(v), *cov)
            assert kdot == pytest.approx(exact, rel=1e-10, abs=1e-11)


@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_numerical_expectations_match_monte_carlo(name):
    rng = np.random.default_rng(1)
    fn, deriv = NUMPY_FNS[name]
    s11, s12, s22 = COVARIANCES[1]
    z = rng.standard_normal((2, 400_000))
    u = math.sqrt(s11) * z[0]
    v = s12 / math.sqrt(s11) * z[0] + math.sqrt(s22 - s12**2 / s11) * z[1]
    k, kdot = _expect(name, (s11, s12, s22))
    for exact, samples in ((k, fn(u) * fn(v)), (kdot, deriv(u) * deriv(v))):
        assert abs(exact - samples.mean()) < 5 * samples.std() / math.sqrt(samples.size)


cov_strategy = st.tuples(
    st.floats(0.05, 6.0), st.floats(-0.999, 0.999), st.floats(0.05, 6.0)
).map(lambda t: (t[0], t[1] * math.sqrt(t[0] * t[2]), t[2]))


@settings(max_examples=25, deadline=None)
@given(cov=cov_strategy, slopes=st.sampled_from([(0.0, 1.0), (0.2, 1.0), (-0.5, 2.0), (1.5, -0.7)]))
def test_polar_quadrature_reproduces_closed_forms(cov, slopes):
    """Two independent algorithms: the polar quadrature of a callable vs the arc-cosine / Williams forms
    (a few fixed slope pairs: each activation compiles the quadrature once)."""
    relu_like = get_activation(f"relu_like:{slopes[0]!r},{slopes[1]!r}")
    for closed in (relu_like, get_activation("erf")):
        k, kdot = closed.expectations(*(jnp.asarray(v) for v in cov))
        kq, kdotq = polar_expectations(closed.fn, closed.deriv, *(jnp.asarray(v) for v in cov))
        scale = math.sqrt(cov[0] * cov[2]) * (1 + max(abs(s) for s in slopes) ** 2)
        assert float(kq) == pytest.approx(float(k), abs=1e-11 * scale)
        assert float(kdotq) == pytest.approx(float(kdot), abs=1e-11 * (1 + max(abs(s) for s in slopes) ** 2))


@settings(max_examples=25, deadline=None)
@given(cov=cov_strategy, scale=st.floats(0.1, 10.0))
def test_closed_form_invariances(cov, scale):
    s11, s12, s22 = (jnp.asarray(v) for v in cov)
    relu = get_activation("relu")
    k, kdot = relu.expectations(s11, s12, s22)
    k_swap, kdot_swap = relu.expectations(s22, s12, s11)
    k_scaled, kdot_scaled = relu.expectations(scale * s11, scale * s12, scale * s22)
    assert float(k_swap) == pytest.approx(float(k), rel=1e-12, abs=1e-15)
    assert float(k_scaled) == pytest.approx(scale * float(k), rel=1e-11, abs=1e-14)  # degree-1 homogeneous
    assert float(kdot_scaled) == pytest.approx(float(kdot), rel=1e-11)
    assert 0.0 <= float(kdot) <= 0.5 and float(k) >= 0.0


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.2", "erf", "identity", "tanh", "elu", "gelu"])
def test_second_moment_matches_expectation_on_the_diagonal_and_quad(name):
    act = get_activation(name)
    fn = NUMPY_FNS[name][0]
    for q in (0.3, 1.0, 4.0):
        integrand = lambda z, q=q: fn(math.sqrt(q) * z) ** 2 * stats.norm.pdf(z)
        exact = sum(integrate.quad(integrand, lo, hi, epsabs=1e-14)[0] for lo, hi in ((-12, 0), (0, 12)))
        assert float(act.second_moment(q)) == pytest.approx(exact, rel=1e-11)
        assert float(act.expectations(jnp.asarray(q), jnp.asarray(q), jnp.asarray(q))[0]) == pytest.approx(
            exact, rel=1e-10)


def test_gaussian_mean_and_half_line_rule_are_exact_on_known_integrals():
    assert float(gaussian_mean(lambda z: z**4, 2.0)) == pytest.approx(3 * 2.0**2, rel=1e-13)
    assert float(gaussian_mean(lambda z: jnp.maximum(z, 0.0), 2.0)) == pytest.approx(
        math.sqrt(2.0 / (2 * math.pi)), rel=1e-13)
    nodes, weights = half_line_gauss_rule(12, 1)
    for k in range(0, 23):  # degree 2n - 1 exactness of r^k against r e^{-r^2/2}
        exact = 2 ** (k / 2) * math.gamma(k / 2 + 1)
        assert np.sum(weights * nodes**k) == pytest.approx(exact, rel=1e-12)


def test_float32_agrees_with_float64():
    for name in ("relu", "erf", "tanh"):
        act = get_activation(name)
        cov64 = [jnp.asarray(v, jnp.float64) for v in COVARIANCES[0]]
        k64, kdot64 = act.expectations(*cov64)
        k32, kdot32 = act.expectations(*(v.astype(jnp.float32) for v in cov64))
        assert k32.dtype == jnp.float32 and kdot32.dtype == jnp.float32
        assert float(k32) == pytest.approx(float(k64), rel=2e-6)
        assert float(kdot32) == pytest.approx(float(kdot64), rel=2e-6)


def test_expectations_broadcast_over_arrays():
    s11 = jnp.array([1.0, 2.0])[:, None]
    s22 = jnp.array([1.0, 0.5, 3.0])[None, :]
    s12 = 0.3 * jnp.sqrt(s11 * s22)
    for name in ("relu", "tanh"):
        k, kdot = get_activation(name).expectations(s11, s12, s22)
        assert k.shape == kdot.shape == (2, 3)
        assert float(k[1, 2]) == pytest.approx(_expect(name, (2.0, float(s12[1, 2]), 3.0))[0], rel=1e-13)


def test_registry_names_parameters_and_callables():
    assert set(KNOWN) >= {"relu", "leaky_relu", "erf", "identity", "tanh", "elu", "softplus", "sigmoid",
                          "silu", "gelu"}
    assert get_activation("leaky_relu") is get_activation("leaky_relu:0.01")  # Hayou's default slope
    act = get_activation("relu")
    assert get_activation(act) is act and act.has_closed_form and not get_activation("tanh").has_closed_form
    custom = from_callable(lambda x: jnp.sin(x), name="sin")
    k, kdot = custom.expectations(jnp.asarray(1.0), jnp.asarray(0.5), jnp.asarray(1.0))
    # E sin(u) sin(v) = e^{-(s11 + s22)/2} sinh(s12); E cos cos = e^{-(s11 + s22)/2} cosh(s12)
    assert float(k) == pytest.approx(math.exp(-1) * math.sinh(0.5), rel=1e-12)
    assert float(kdot) == pytest.approx(math.exp(-1) * math.cosh(0.5), rel=1e-12)


def test_four_field_activation_keeps_working():
    """The original API Activation(name, fn, deriv, expectations) still builds, with a derived second moment."""
    relu = get_activation("relu")
    custom = Activation("my_relu", relu.fn, relu.deriv, relu.expectations)
    assert float(custom.second_moment(jnp.asarray(3.0))) == pytest.approx(1.5, rel=1e-14)
    assert get_activation(custom) is custom and not custom.has_closed_form


@pytest.mark.parametrize("spec", ["swish_typo", "leaky_relu:abc", "relu_like:0.1", "elu:1,2", 3.0, None])
def test_bad_activation_specs_raise(spec):
    with pytest.raises(ValueError):
        get_activation(spec)


def test_large_batches_take_the_radial_loop_and_agree_with_small_batches():
    from ntkrepro.kernels.gaussian import VECTORIZED_RADIAL_LIMIT

    rng = np.random.default_rng(3)
    n = VECTORIZED_RADIAL_LIMIT // 16  # x 40 radial nodes: above the limit
    s11, s22 = rng.uniform(0.2, 3.0, n), rng.uniform(0.2, 3.0, n)
    s12 = rng.uniform(-1, 1, n) * np.sqrt(s11 * s22)
    act = get_activation("elu")
    k_big, kdot_big = act.expectations(jnp.asarray(s11), jnp.asarray(s12), jnp.asarray(s22))
    k_small, kdot_small = act.expectations(*(jnp.asarray(v[:64]) for v in (s11, s12, s22)))
    np.testing.assert_allclose(k_big[:64], k_small, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(kdot_big[:64], kdot_small, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_polynomial_arccos_and_arcsin_match_numpy_to_a_few_ulps(dtype):
    tiny = np.finfo(dtype).tiny  # XLA flushes subnormals to zero on CPU
    near_one = 1 - np.logspace(-17, -1, 500)
    x = np.concatenate([np.linspace(-1, 1, 20_001), near_one, -near_one, np.logspace(-30, -1, 200),
                        0.5 + np.linspace(-1e-9, 1e-9, 21)]).astype(dtype)
    x = x[np.abs(x) >= tiny]
    eps = np.finfo(dtype).eps
    wide = x.astype(np.float64)
    acos = np.asarray(arccos(jnp.asarray(x)), np.float64)
    asin = np.asarray(arcsin(jnp.asarray(x)), np.float64)
    assert np.max(np.abs(acos - np.arccos(wide))) <= 4 * eps  # absolute: arccos lies in [0, pi]
    assert np.max(np.abs(asin - np.arcsin(wide)) / np.abs(np.arcsin(wide))) <= 4 * eps  # relative, also near 0
    assert float(arccos(jnp.asarray(1.0, dtype))) == 0.0 and float(arcsin(jnp.asarray(0.0, dtype))) == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_arccos_and_sine_match_extended_precision_to_a_few_ulps(dtype):
    """arccos to a few ulps absolute, sqrt(1 - x^2) to a few ulps relative, also near |x| = 1 (where 1 - x^2
    cancels) and across arccos's fold at |x| = 1/2 (references in long double)."""
    near_one = 1 - np.logspace(-17, -1, 500)
    x = np.concatenate([np.linspace(-1, 1, 20_001), near_one, -near_one, np.logspace(-30, -1, 200),
                        0.5 + np.linspace(-1e-9, 1e-9, 21), -0.5 + np.linspace(-1e-9, 1e-9, 21)]).astype(dtype)
    x = x[np.abs(x) >= np.finfo(dtype).tiny]
    eps = np.finfo(dtype).eps
    wide = x.astype(np.longdouble)
    theta, sine = (np.asarray(v, np.longdouble) for v in arccos_and_sine(jnp.asarray(x)))
    assert np.max(np.abs(theta - np.arccos(wide))) <= 4 * eps
    exact = np.sqrt((1 - wide) * (1 + wide))
    inside = exact > 0
    assert np.max(np.abs(sine[inside] - exact[inside]) / exact[inside]) <= 4 * eps
    assert np.all(sine[~inside] == 0) and np.all(sine >= 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_moments_match_40_digit_arithmetic(dtype):
    """sqrt(1 - c^2) + c (pi - arccos c) and pi - arccos c against mpmath at the snapped correlation (raw ones past
    +-1, as rounding leaves them, included): the angle to a few ulps absolute; the first moment to a few ulps
    absolute, and in float32 (one square root, the cancelling terms folded into a polynomial) to a few ulps
    relative everywhere, also near c = -1 where it vanishes like (1 + c)^1.5."""
    near_one = 1 - np.logspace(-17, -1, 300)
    x = np.unique(np.concatenate([np.linspace(-1, 1, 4_001), near_one, -near_one, np.logspace(-30, -1, 100),
                                  -np.logspace(-30, -1, 100)]).astype(dtype))
    eps = np.finfo(dtype).eps
    past = np.array([np.nextafter(dtype(1), dtype(2)), np.nextafter(dtype(-1), dtype(-2))], dtype)
    x = np.concatenate([x, past])
    first, angle = (np.asarray(v, np.float64) for v in relu_moments(jnp.asarray(x)))
    snapped = np.where(1 - np.abs(x) <= 8 * eps, np.sign(x), x)  # within 8 ulps of +-1: +-1 (snap_correlation)
    with mpmath.workdps(40):
        exact = [(mpmath.sqrt(1 - c * c) + c * (mpmath.pi - mpmath.acos(c)), mpmath.pi - mpmath.acos(c))
                 for c in map(mpmath.mpf, snapped.astype(np.float64))]
    exact_first, exact_angle = (np.array([float(v[k]) for v in exact]) for k in (0, 1))
    assert np.max(np.abs(angle - exact_angle)) <= 4 * eps
    assert np.max(np.abs(first - exact_first)) <= 6 * eps
    assert np.all(first[exact_first == 0] == 0)
    if dtype == np.float32:
        inside = exact_first > 0
        assert np.all(first >= 0)
        assert np.max(np.abs(first[inside] / exact_first[inside] - 1)) <= 4 * eps


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.2", "relu_like:-0.5,2", "identity", "normalized_relu",
                                  "erf", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_broadcast_expectations_equal_the_expectations_of_broadcast_arrays(name, dtype):
    """The tile form (variances as a column and a row broadcast against the pairs; their reciprocal roots for
    positively homogeneous activations) equals expectations on the broadcast arrays, zero variances, exact
    correlations +-1 and the mpmath closed form included."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5)) * rng.uniform(0.2, 3.0, (7, 1))
    x[2] = 0.0  # a vanishing variance
    x[4] = -1.7 * x[1]  # correlation -1 with row 1
    var = np.sum(x * x, axis=1)
    s12 = x @ x.T
    act = get_activation(name)
    v, s = jnp.asarray(var, dtype), jnp.asarray(s12, dtype)
    k, kdot = (np.asarray(a, np.float64) for a in broadcast_expectations(act, v[:, None], s, v[None, :]))
    k_ref, kdot_ref = (np.asarray(a, np.float64) for a in act.expectations(v[:, None], s, v[None, :]))
    tol = 4e-7 if dtype == np.float32 else 1e-14
    scale = np.sqrt(np.outer(var, var))
    np.testing.assert_allclose(k, k_ref, rtol=tol, atol=tol * scale.max())
    np.testing.assert_allclose(kdot, kdot_ref, rtol=tol, atol=tol)
    assert (act.unit_expectations is not None) == act.name.startswith(("relu", "leaky", "identity", "normalized"))
    if act.mp_expectations is not None and dtype == np.float64:
        for i, j in ((0, 1), (1, 4), (1, 1), (2, 3), (5, 6)):
            k_mp, kdot_mp = act.mp_expectations(var[i], s12[i, j], var[j])
            assert k[i, j] == pytest.approx(float(k_mp), rel=1e-14, abs=1e-14 * scale[i, j])
            assert kdot[i, j] == pytest.approx(float(kdot_mp), rel=1e-14, abs=1e-15)


def test_unit_second_moment_and_c_sigma():
    assert unit_second_moment("relu") == pytest.approx(0.5, rel=1e-15)
    assert unit_second_moment(lambda z: jnp.maximum(z, 0.0)) == pytest.approx(0.5, rel=1e-10)
    # E[tanh(z)^2] = 0.394294... (reference value by a direct scipy-free Riemann sum on a fine grid)
    z = np.linspace(-12, 12, 200001)
    riemann = np.sum(np.tanh(z) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)) * (z[1] - z[0])
    assert unit_second_moment(jnp.tanh) == pytest.approx(riemann, rel=1e-8)
    assert c_sigma("relu") == 2.0 and c_sigma("erf") == pytest.approx(1.0 / ((2 / np.pi) * np.arcsin(2 / 3)))
    with pytest.raises(ValueError, match="cannot normalize"):
        c_sigma(lambda z: 0.0 * z)
