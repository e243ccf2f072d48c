"""Mean-field tools: EOC known values, fixed points vs independent quadrature, map derivatives vs finite
differences, depth recursions vs fc_kernels and across precisions, the ReLU EOC correlation rate, fits."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels import meanfield as mf
from ntkrepro.kernels.fc import fc_kernels


def test_relu_like_eoc_points():
    assert mf.eoc_sigma_w("relu", 0.0) == pytest.approx(math.sqrt(2), rel=1e-14)
    for a in (0.01, 0.1, 0.5):
        assert mf.eoc_sigma_w(f"leaky_relu:{a}", 0.0) == pytest.approx(math.sqrt(2 / (1 + a * a)), rel=1e-14)
    curve = mf.eoc_curve("relu")
    np.testing.assert_allclose([curve.sigma_b[0], curve.sigma_w[0]], [0.0, math.sqrt(2)], rtol=1e-14)
    assert curve.sigma_b.shape == (1,)
    with pytest.raises(ValueError, match="single point"):
        mf.eoc_sigma_w("relu", 0.1)


@pytest.mark.parametrize("name", ["tanh", "elu"])
def test_smooth_eoc_is_a_curve_from_0_1_with_chi1_equal_1(name):
    assert mf.eoc_sigma_w(name, 0.0) == pytest.approx(1.0, rel=1e-14)
    curve = mf.eoc_curve(name, num=12, q_range=(1e-6, 10.0))
    assert curve.sigma_b.size >= 10 and np.all(np.diff(curve.sigma_b) > 0)
    assert curve.sigma_b[0] < 1e-3 and curve.sigma_w[0] == pytest.approx(1.0, abs=1e-3)
    for sb, sw, q in list(zip(curve.sigma_b, curve.sigma_w, curve.q, strict=True))[4::3]:
        # q is the fixed point of the variance map there, and chi_1 = 1 at it
        assert mf.q_star(name, sigma_w2=sw**2, sigma_b2=sb**2, q0=q * 1.5) == pytest.approx(q, rel=1e-8)
        assert mf.chi1(name, sigma_w2=sw**2, sigma_b2=sb**2) == pytest.approx(1.0, abs=1e-9)
        assert mf.eoc_sigma_w(name, sb**2) == pytest.approx(sw, rel=1e-9)


def test_no_eoc_point_raises():
    """Softplus: sigma_b2(q) = q - E[phi^2] / E[phi'^2] < 0 for every q, so no EOC point with sigma_b2 = 0."""
    with pytest.raises(ValueError, match="no EOC"):
        mf.eoc_sigma_w("softplus", 0.0)


def test_q_star_against_independent_quadrature():
    assert mf.q_star("relu", sigma_w2=1.0, sigma_b2=0.5) == pytest.approx(1.0, rel=1e-12)  # q = 0.5 + q/2
    assert mf.q_star("relu", sigma_w2=2.0, sigma_b2=0.0, q0=3.0) == 3.0  # identity map on the EOC
    assert mf.q_star("relu", sigma_w2=3.0, sigma_b2=0.0) == math.inf
    assert mf.q_star("tanh", sigma_w2=0.8, sigma_b2=0.0) == pytest.approx(0.0, abs=1e-12)
    q = mf.q_star("tanh", sigma_w2=1.7, sigma_b2=0.05)
    second = integrate.quad(lambda z: np.tanh(math.sqrt(q) * z) ** 2 * stats.norm.pdf(z), -12, 12,
                            epsabs=1e-14)[0]
    assert q == pytest.approx(0.05 + 1.7 * second, rel=1e-11)


@pytest.mark.parametrize("name,sw2,sb2", [("tanh", 1.7, 0.05), ("erf", 1.2, 0.1), ("relu", 2.0, 0.0),
                                          ("elu", 1.5, 0.1)])
def test_correlation_map_and_derivatives(name, sw2, sb2):
    q = mf.q_star(name, sigma_w2=sw2, sigma_b2=sb2)
    assert float(mf.correlation_map(1.0, name, sigma_w2=sw2, sigma_b2=sb2, q=q)) == pytest.approx(1.0, rel=1e-10)
    c, h = np.array([-0.4, 0.2, 0.7]), 1e-5
    f = lambda x: np.asarray(mf.correlation_map(x, name, sigma_w2=sw2, sigma_b2=sb2, q=q))
    d1 = lambda x: np.asarray(mf.correlation_map_derivative(x, name, sigma_w2=sw2, sigma_b2=sb2, q=q))
    d2 = np.asarray(mf.correlation_map_derivative(c, name, sigma_w2=sw2, sigma_b2=sb2, q=q, order=2))
    np.testing.assert_allclose(d1(c), (f(c + h) - f(c - h)) / (2 * h), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(d2, (d1(c + h) - d1(c - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    assert mf.chi1(name, sigma_w2=sw2, sigma_b2=sb2, q=q) == pytest.approx(float(d1(1.0)), rel=1e-9)


def test_phase():
    assert mf.phase("relu", sigma_w2=2.0, sigma_b2=0.0) == "eoc"
    assert mf.phase("relu", sigma_w2=1.5, sigma_b2=0.0) == "ordered"
    assert mf.phase("relu", sigma_w2=3.0, sigma_b2=0.0) == "chaotic"
    assert mf.phase("tanh", sigma_w2=0.5, sigma_b2=0.1) == "ordered"
    assert mf.phase("tanh", sigma_w2=4.0, sigma_b2=0.1) == "chaotic"
    sw2 = mf.eoc_sigma_w2("tanh", sigma_b2=0.04)
    assert mf.phase("tanh", sigma_w2=sw2, sigma_b2=0.04) == "eoc"


def test_ntk_recursion_matches_fc_kernels_and_mpmath():
    x = np.array([[1.0, 0.3, -0.2], [0.4, -1.1, 0.5]])
    sw2, sb2, depth = 1.6, 0.2, 30
    exact = fc_kernels(x, depth=depth, sigma_w2=sw2, sigma_b2=sb2, all_depths=True)
    s1 = np.asarray(exact.nngp[0])
    for name in ("relu", "erf"):
        exact = fc_kernels(x, depth=depth, activation=name, sigma_w2=sw2, sigma_b2=sb2, all_depths=True)
        series = mf.ntk_recursion((s1[0, 0], s1[0, 1], s1[1, 1]), name, sigma_w2=sw2, sigma_b2=sb2, depth=depth)
        np.testing.assert_allclose(series.ntk12, np.asarray(exact.ntk)[:, 0, 1], rtol=1e-12)
        np.testing.assert_allclose(series.sigma11, np.asarray(exact.nngp)[:, 0, 0], rtol=1e-12)
        high = mf.ntk_recursion((s1[0, 0], s1[0, 1], s1[1, 1]), name, sigma_w2=sw2, sigma_b2=sb2, depth=depth,
                                precision="mpmath")
        np.testing.assert_allclose(high.ntk12, series.ntk12, rtol=1e-12)


def test_relu_eoc_correlation_rate_in_high_precision():
    """On the ReLU EOC 1 - c_l ~ 9 pi^2 / (2 l^2); the mpmath path resolves 1 - c near 1 where float64
    loses digits, and agrees with itself at higher precision."""
    series = mf.ntk_recursion((1.0, 0.3, 1.0), "relu", sigma_w2=2.0, sigma_b2=0.0, depth=600, precision="mpmath")
    finer = mf.ntk_recursion((1.0, 0.3, 1.0), "relu", sigma_w2=2.0, sigma_b2=0.0, depth=600, precision="mpmath",
                             dps=70)
    np.testing.assert_allclose(series.one_minus_correlation, finer.one_minus_correlation, rtol=1e-15)
    depths = np.arange(1, 601)
    fit = mf.fit_rate(depths, series.one_minus_correlation, kind="power", depth_range=(200, 600))
    # log-corrections make the local slope approach -2 slowly (-1.94 here, -1.98 over [1000, 3000])
    assert fit.slope == pytest.approx(-2.0, abs=0.08) and fit.r2 > 0.999
    scaled = depths**2 * series.one_minus_correlation
    assert scaled[-1] == pytest.approx(9 * math.pi**2 / 2, rel=0.06)
    assert abs(scaled[-1] - 9 * math.pi**2 / 2) < abs(scaled[99] - 9 * math.pi**2 / 2)
    assert series.ntk11[-1] / 600 == pytest.approx(1.0, rel=1e-12)  # K_L(x, x) / L = q on the EOC


def test_correlation_recursion_matches_the_pair_recursion_at_the_fixed_variance():
    """ReLU on the EOC keeps Sigma(x, x) = q, so the mean-field c_l equals the exact pair recursion's."""
    pair = mf.ntk_recursion((1.0, 0.2, 1.0), "relu", sigma_w2=2.0, sigma_b2=0.0, depth=50)
    corr, gap = mf.correlation_recursion(0.2, "relu", sigma_w2=2.0, sigma_b2=0.0, depth=50, q=1.0)
    np.testing.assert_allclose(corr, pair.correlation, rtol=1e-13)
    high, high_gap = mf.correlation_recursion(0.2, "relu", sigma_w2=2.0, sigma_b2=0.0, depth=50, q=1.0,
                                              precision="mpmath")
    np.testing.assert_allclose(high_gap, gap, rtol=1e-9)
    # tanh in the ordered phase: c_l -> 1 exponentially fast
    corr_tanh, _ = mf.correlation_recursion(0.0, "tanh", sigma_w2=0.8, sigma_b2=0.3, depth=40)
    assert abs(corr_tanh[-1] - 1.0) < 1e-6 and np.all(np.diff(corr_tanh) >= -1e-15)


def test_fit_rate_on_exact_laws():
    L = np.arange(1.0, 200.0)
    power = mf.fit_rate(L, 3.0 * L**-1.5, kind="power", depth_range=(10, 100))
    assert (power.slope, math.exp(power.intercept)) == (pytest.approx(-1.5), pytest.approx(3.0))
    assert power.r2 == pytest.approx(1.0) and power.n_points == 91 and power.depth_range == (10, 100)
    expo = mf.fit_rate(L, 2.0 * np.exp(-0.3 * L), kind="exponential")
    assert expo.slope == pytest.approx(-0.3)
    slow = mf.fit_rate(L[1:], 1.0 / np.log(L[1:]), kind="log")
    assert slow.slope == pytest.approx(-1.0)
    for bad in (dict(depths=L, errors=-L), dict(depths=L, errors=L, kind="cubic"),
                dict(depths=L, errors=L, depth_range=(500, 600)), dict(depths=L, errors=L[:-1])):
        with pytest.raises(ValueError):
            mf.fit_rate(**bad)


def test_bad_input():
    with pytest.raises(ValueError, match="mpmath"):
        mf.ntk_recursion((1.0, 0.5, 1.0), "tanh", sigma_w2=1.0, sigma_b2=0.0, depth=3, precision="mpmath")
    with pytest.raises(ValueError, match="precision"):
        mf.ntk_recursion((1.0, 0.5, 1.0), "relu", sigma_w2=1.0, sigma_b2=0.0, depth=3, precision="float128")
    with pytest.raises(ValueError, match="covariance"):
        mf.ntk_recursion((1.0, 2.0, 1.0), "relu", sigma_w2=1.0, sigma_b2=0.0, depth=3)
    with pytest.raises(ValueError, match="sigma_w2"):
        mf.chi1("tanh", sigma_w2=-1.0, sigma_b2=0.0)
    with pytest.raises(ValueError, match="unknown activation"):
        mf.q_star("swish_typo", sigma_w2=1.0, sigma_b2=0.0)
    with pytest.raises(ValueError, match="order"):
        mf.correlation_map_derivative(0.5, "tanh", sigma_w2=1.0, sigma_b2=0.1, order=3)
