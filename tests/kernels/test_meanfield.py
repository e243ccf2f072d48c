"""Mean-field tools: EOC known values, fixed points vs independent quadrature, phases, the pair recursion
vs fc_kernels and vs a 40-digit mpmath recursion, the ReLU EOC correlation rate."""

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels import meanfield as mf
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.kernels.gaussian import get_activation


def eoc_sigma_w(name, sigma_b2):
    return math.sqrt(mf.eoc_sigma_w2(name, sigma_b2=sigma_b2))


def test_relu_like_eoc_points():
    assert eoc_sigma_w("relu", 0.0) == pytest.approx(math.sqrt(2), rel=1e-14)
    for a in (0.01, 0.1, 0.5):
        assert eoc_sigma_w(f"leaky_relu:{a}", 0.0) == pytest.approx(math.sqrt(2 / (1 + a * a)), rel=1e-14)
    curve = mf.eoc_curve("relu")
    np.testing.assert_allclose([curve.sigma_b[0], curve.sigma_w[0]], [0.0, math.sqrt(2)], rtol=1e-14)
    assert curve.sigma_b.shape == (1,)
    with pytest.raises(ValueError, match="single point"):
        eoc_sigma_w("relu", 0.1)


@pytest.mark.parametrize("name", ["tanh", "elu"])
def test_smooth_eoc_is_a_curve_from_0_1_with_chi1_equal_1(name):
    assert eoc_sigma_w(name, 0.0) == pytest.approx(1.0, rel=1e-14)
    curve = mf.eoc_curve(name, num=12, q_range=(1e-6, 10.0))
    assert curve.sigma_b.size >= 10 and np.all(np.diff(curve.sigma_b) > 0)
    assert curve.sigma_b[0] < 1e-3 and curve.sigma_w[0] == pytest.approx(1.0, abs=1e-3)
    for sb, sw, q in list(zip(curve.sigma_b, curve.sigma_w, curve.q, strict=True))[4::3]:
        # q is the fixed point of the variance map there, and chi_1 = 1 at it
        assert mf.q_star(name, sigma_w2=sw**2, sigma_b2=sb**2, q0=q * 1.5) == pytest.approx(q, rel=1e-8)
        assert mf.chi1(name, sigma_w2=sw**2, sigma_b2=sb**2) == pytest.approx(1.0, abs=1e-9)
        assert eoc_sigma_w(name, sb**2) == pytest.approx(sw, rel=1e-9)


def test_no_eoc_point_raises():
    """Softplus: sigma_b2(q) = q - E[phi^2] / E[phi'^2] < 0 for every q, so no EOC point with sigma_b2 = 0."""
    with pytest.raises(ValueError, match="no EOC"):
        eoc_sigma_w("softplus", 0.0)


def test_q_star_against_independent_quadrature():
    assert mf.q_star("relu", sigma_w2=1.0, sigma_b2=0.5) == pytest.approx(1.0, rel=1e-12)  # q = 0.5 + q/2
    assert mf.q_star("relu", sigma_w2=2.0, sigma_b2=0.0, q0=3.0) == 3.0  # identity map on the EOC
    assert mf.q_star("relu", sigma_w2=3.0, sigma_b2=0.0) == math.inf
    assert mf.q_star("tanh", sigma_w2=0.8, sigma_b2=0.0) == pytest.approx(0.0, abs=1e-12)
    q = mf.q_star("tanh", sigma_w2=1.7, sigma_b2=0.05)
    second = integrate.quad(lambda z: np.tanh(math.sqrt(q) * z) ** 2 * stats.norm.pdf(z), -12, 12,
                            epsabs=1e-14)[0]
    assert q == pytest.approx(0.05 + 1.7 * second, rel=1e-11)


def test_phase():
    assert mf.phase("relu", sigma_w2=2.0, sigma_b2=0.0) == "eoc"
    assert mf.phase("relu", sigma_w2=1.5, sigma_b2=0.0) == "ordered"
    assert mf.phase("relu", sigma_w2=3.0, sigma_b2=0.0) == "chaotic"
    assert mf.phase("tanh", sigma_w2=0.5, sigma_b2=0.1) == "ordered"
    assert mf.phase("tanh", sigma_w2=4.0, sigma_b2=0.1) == "chaotic"
    sw2 = mf.eoc_sigma_w2("tanh", sigma_b2=0.04)
    assert mf.phase("tanh", sigma_w2=sw2, sigma_b2=0.04) == "eoc"


def mp_pair_recursion(sigma1, name, *, sigma_w2, sigma_b2, depth, dps=40):
    """Lemma 2 for one pair at ``dps`` digits with the activation's mpmath closed form: rows
    (s11, s12, s22, k11, k12, k22, 1 - c) per depth, rounded to float64 at the end."""
    expect = get_activation(name).mp_expectations
    rows = []
    with mpmath.workdps(dps):
        sw, sb = mpmath.mpf(sigma_w2), mpmath.mpf(sigma_b2)
        a, b, c = (mpmath.mpf(v) for v in sigma1)
        k11, k12, k22 = a, b, c
        for _ in range(depth):
            rows.append((a, b, c, k11, k12, k22, 1 - b / mpmath.sqrt(a * c)))
            (e11, d11), (e12, d12), (e22, d22) = (expect(*v) for v in ((a, a, a), (a, b, c), (c, c, c)))
            a, b, c = sb + sw * e11, sb + sw * e12, sb + sw * e22
            k11, k12, k22 = sw * d11 * k11 + a, sw * d12 * k12 + b, sw * d22 * k22 + c
    return np.array([[float(v) for v in row] for row in rows])


def test_ntk_recursion_matches_fc_kernels_and_mpmath():
    x = np.array([[1.0, 0.3, -0.2], [0.4, -1.1, 0.5]])
    sw2, sb2, depth = 1.6, 0.2, 30
    for name in ("relu", "erf"):
        exact = fc_kernels(x, depth=depth, activation=name, sigma_w2=sw2, sigma_b2=sb2, all_depths=True)
        s1 = np.asarray(exact.nngp[0])
        sigma1 = (s1[0, 0], s1[0, 1], s1[1, 1])
        series = mf.ntk_recursion(sigma1, name, sigma_w2=sw2, sigma_b2=sb2, depth=depth)
        np.testing.assert_allclose(series.k12, np.asarray(exact.ntk)[:, 0, 1], rtol=1e-12)
        np.testing.assert_allclose(series.s11, np.asarray(exact.nngp)[:, 0, 0], rtol=1e-12)
        high = mp_pair_recursion(sigma1, name, sigma_w2=sw2, sigma_b2=sb2, depth=depth)
        for column, values in enumerate((series.s11, series.s12, series.s22, series.k11, series.k12, series.k22)):
            np.testing.assert_allclose(values, high[:, column], rtol=1e-12)


def test_relu_eoc_correlation_rate():
    """On the ReLU EOC 1 - c_l ~ 9 pi^2 / (2 l^2): float64 still resolves it at depth 600 (the 40-digit
    recursion agrees), and K_L(x, x) / L = q."""
    series = mf.ntk_recursion((1.0, 0.3, 1.0), "relu", sigma_w2=2.0, sigma_b2=0.0, depth=600)
    gap = 1.0 - series.s12 / np.sqrt(series.s11 * series.s22)
    high = mp_pair_recursion((1.0, 0.3, 1.0), "relu", sigma_w2=2.0, sigma_b2=0.0, depth=600)
    np.testing.assert_allclose(gap, high[:, 6], rtol=1e-9)
    depths = np.arange(1, 601)
    slope = np.polyfit(np.log(depths[199:]), np.log(high[199:, 6]), 1)[0]
    # log-corrections make the local slope approach -2 slowly (-1.94 here, -1.98 over [1000, 3000])
    assert slope == pytest.approx(-2.0, abs=0.08)
    scaled = depths**2 * high[:, 6]
    assert scaled[-1] == pytest.approx(9 * math.pi**2 / 2, rel=0.06)
    assert abs(scaled[-1] - 9 * math.pi**2 / 2) < abs(scaled[99] - 9 * math.pi**2 / 2)
    assert series.k11[-1] / 600 == pytest.approx(1.0, rel=1e-12)  # K_L(x, x) / L = q on the EOC


def test_bad_input():
    with pytest.raises(ValueError, match="covariance"):
        mf.ntk_recursion((1.0, 2.0, 1.0), "relu", sigma_w2=1.0, sigma_b2=0.0, depth=3)
    with pytest.raises(ValueError, match="sigma_w2"):
        mf.chi1("tanh", sigma_w2=-1.0, sigma_b2=0.0)
    with pytest.raises(ValueError, match="unknown activation"):
        mf.q_star("swish_typo", sigma_w2=1.0, sigma_b2=0.0)
    with pytest.raises(ValueError, match="depth"):
        mf.ntk_recursion((1.0, 0.5, 1.0), "relu", sigma_w2=1.0, sigma_b2=0.0, depth=0)
    with pytest.raises(ValueError, match="first-layer covariance"):
        mf.ntk_recursion((0.1, 0.0, 1.0), "relu", sigma_w2=1.0, sigma_b2=0.2, depth=3)  # Sigma^1 < sigma_b2
