"""DEQ-NTK: Thm. 1 iteration vs the paper's sum-product formula (eq. 6); Thm. 2 fixed point vs a long
finite-depth iteration and vs a scalar root finder on sampled entries; tiles; bad input."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.deq import deq_kernels, deq_ntk

PAPER_SETTINGS = [(0.25, 0.25, 0.5), (0.6, 0.4, 0.0), (0.8, 0.2, 0.0)]  # Feng & Kolter Tables 1-2


def _sphere(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normalized_relu_np(s11, s12, s22):
    """E[s(u)s(v)], E[s'(u)s'(v)] for s = sqrt(2) relu (eqs. 10-11, general variances)."""
    norm = np.sqrt(s11 * s22)
    lam = np.clip(s12 / norm, -1, 1)
    theta = np.arccos(lam)
    return norm * (np.sin(theta) + (np.pi - theta) * lam) / np.pi, (np.pi - theta) / np.pi


def _theorem1_sum_product(x, y, num_hidden, sw, su, sb):
    """Eq. 6 as printed: Theta(L) = sum_{h=1}^{L+1} Sigma(h-1) prod_{h'=h}^{L+1} Sigmadot(h'),
    Sigmadot(L+1) = 1."""
    xy, xx, yy = x @ y.T, np.sum(x * x, 1)[:, None], np.sum(y * y, 1)[None, :]
    sigmas, sigmadots = [xy], []
    qx, qy, s = xx, yy, xy
    for _ in range(num_hidden):
        k, kdot = _normalized_relu_np(qx, s, qy)
        sigmadots.append(sw * kdot)
        s = sw * k + su * xy + sb
        qx, qy = sw * qx + su * xx + sb, sw * qy + su * yy + sb
        sigmas.append(s)
    sigmadots.append(np.ones_like(xy))  # Sigmadot(L+1) := 1
    theta = np.zeros_like(xy)
    for h in range(1, num_hidden + 2):
        theta += sigmas[h - 1] * np.prod(sigmadots[h - 1:], axis=0)
    return sigmas[-1], theta


@pytest.mark.parametrize("sw,su,sb", [(0.5, 0.3, 0.2), (2.0, 0.0, 0.1), (1.2, 0.7, 0.4)])
def test_finite_depth_matches_sum_product_formula(sw, su, sb):
    """Any variances, inputs off the sphere: Thm. 1 needs neither condition."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    got = deq_kernels(x, y, depth=7, sigma_w2=sw, sigma_u2=su, sigma_b2=sb, all_depths=True)
    assert got.ntk.shape == (7, 4, 3)
    for num_hidden in range(7):
        sigma, theta = _theorem1_sum_product(x, y, num_hidden, sw, su, sb)
        np.testing.assert_allclose(got.ntk[num_hidden], theta, rtol=1e-12)
        np.testing.assert_allclose(got.nngp[num_hidden], sigma, rtol=1e-12)


@pytest.mark.parametrize("sw,su,sb", PAPER_SETTINGS)
def test_fixed_point_equals_long_finite_depth_iteration(sw, su, sb):
    x = _sphere(6, 5, 1)
    star = deq_ntk(x, sigma_w2=sw, sigma_u2=su, sigma_b2=sb)
    deep = deq_kernels(x, depth=400, sigma_w2=sw, sigma_u2=su, sigma_b2=sb)
    np.testing.assert_allclose(star.ntk, deep.ntk, rtol=1e-10)
    np.testing.assert_allclose(star.nngp, deep.nngp, rtol=1e-10)
    assert float(star.max_residual) <= 1e-12 and int(star.iterations) >= 0


@pytest.mark.parametrize("sw,su,sb", [*PAPER_SETTINGS, (0.9, 0.05, 0.05), (0.3, 0.0, 0.7)])
def test_fixed_point_matches_scalar_root_finder(sw, su, sb):
    """Sampled entries against brentq on the paper's eq. 8, R(rho) - rho, then eqs. 7 and 9."""
    x, y = _sphere(5, 4, 2), _sphere(4, 4, 3)
    y[0] = x[0]  # include t = 1
    y[1] = -x[1]  # and t = -1
    star = deq_ntk(x, y, sigma_w2=sw, sigma_u2=su, sigma_b2=sb)
    for i, j in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 0), (2, 1)]:
        t = float(np.clip(x[i] @ y[j], -1, 1))
        def r(rho, t=t):
            kappa = (math.sqrt(max(1 - rho * rho, 0)) + (math.pi - math.acos(rho)) * rho) / math.pi
            return sw * kappa + su * t + sb - rho

        rho = 1.0 if r(1.0) >= 0 else optimize.root_scalar(r, bracket=(-1.0, 1.0), method="brentq",
                                                            xtol=1e-15, rtol=1e-15).root
        theta = rho / (1 - sw * (math.pi - math.acos(rho)) / math.pi)
        assert float(star.nngp[i, j]) == pytest.approx(rho, rel=1e-10, abs=1e-12)
        assert float(star.ntk[i, j]) == pytest.approx(theta, rel=1e-9)


def test_known_values_diagonal_and_no_injection():
    x = _sphere(5, 3, 4)
    star = deq_ntk(x, sigma_w2=0.6, sigma_u2=0.4, sigma_b2=0.0)
    np.testing.assert_allclose(np.diag(star.ntk), 1 / (1 - 0.6), rtol=1e-12)  # rho* = 1, Sigmadot* = sW2
    np.testing.assert_allclose(np.diag(star.nngp), 1.0, rtol=1e-14)
    frozen = deq_ntk(x, sigma_w2=0.3, sigma_u2=0.0, sigma_b2=0.7)  # no injection: Sigma* = 1 everywhere
    np.testing.assert_allclose(frozen.nngp, 1.0, rtol=1e-10)
    np.testing.assert_allclose(frozen.ntk, 1 / 0.7, rtol=1e-8)


def test_tiles_equal_one_block_and_cross_gram():
    x, y = _sphere(7, 4, 5), _sphere(5, 4, 6)
    kw = dict(sigma_w2=0.25, sigma_u2=0.25, sigma_b2=0.5)
    whole = deq_ntk(x, **kw)
    tiled = deq_ntk(x, tile=3, **kw)
    np.testing.assert_allclose(tiled.ntk, whole.ntk, rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(tiled.ntk), np.asarray(tiled.ntk).T)
    cross = deq_ntk(x, y, tile=2, **kw)
    joint = deq_ntk(np.concatenate([x, y]), **kw)
    np.testing.assert_allclose(cross.ntk, np.asarray(joint.ntk)[:7, 7:], rtol=1e-13)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), setting=st.sampled_from(PAPER_SETTINGS))
def test_fixed_point_gram_is_symmetric_psd(seed, setting):
    x = _sphere(8, 3, seed)
    star = np.asarray(deq_ntk(x, sigma_w2=setting[0], sigma_u2=setting[1], sigma_b2=setting[2]).ntk)
    np.testing.assert_array_equal(star, star.T)
    assert np.linalg.eigvalsh(star).min() >= -1e-10 * np.abs(star).max()


def test_float32_agrees_with_float64():
    x = _sphere(6, 4, 7)
    kw = dict(sigma_w2=0.6, sigma_u2=0.4, sigma_b2=0.0)
    k64, k32 = deq_ntk(x, **kw), deq_ntk(x, dtype=jnp.float32, **kw)
    assert k32.ntk.dtype == jnp.float32
    np.testing.assert_allclose(k32.ntk, k64.ntk, rtol=1e-4)
    it64 = deq_kernels(x, depth=5, **kw)
    it32 = deq_kernels(x, depth=5, dtype=jnp.float32, **kw)
    np.testing.assert_allclose(it32.ntk, it64.ntk, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma_w2=1.0, sigma_u2=0.0, sigma_b2=0.0), "sigma_w2 < 1"),
    (dict(sigma_w2=0.5, sigma_u2=0.3, sigma_b2=0.3), "= 1"),
    (dict(sigma_w2=0.5, sigma_u2=-0.2, sigma_b2=0.7), "sigma_u2"),
    (dict(sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0, x1=2 * _sphere(3, 2, 0)), "unit-norm"),
    (dict(sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0, x2=_sphere(3, 4, 0)), "feature dims"),
    (dict(sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0, x1=np.full((2, 2), np.nan)), "NaN"),
    (dict(sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0, tile=0), "tile"),
])
def test_fixed_point_bad_input(kwargs, match):
    x1 = kwargs.pop("x1", _sphere(3, 2, 0))
    with pytest.raises(ValueError, match=match):
        deq_ntk(x1, **kwargs)


def test_finite_depth_bad_input():
    with pytest.raises(ValueError, match="depth"):
        deq_kernels(_sphere(3, 2, 0), depth=0, sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0)
    with pytest.raises(ValueError, match="sigma_b2"):
        deq_kernels(_sphere(3, 2, 0), depth=2, sigma_w2=0.5, sigma_u2=0.5, sigma_b2=-1.0)


def test_newton_steps_repair_a_poor_interpolant(monkeypatch):
    """With a deliberately crude start (3 Chebyshev terms) the vectorized Newton steps must do the work
    and land on the same fixed point, reporting their count."""
    from ntkrepro.kernels import deq

    x = _sphere(6, 3, 9)
    kw = dict(sigma_w2=0.8, sigma_u2=0.2, sigma_b2=0.0)
    exact = deq_ntk(x, **kw)
    crude = deq._chebyshev_fixed_point(0.8, 0.2)[:3]
    monkeypatch.setattr(deq, "_chebyshev_fixed_point", lambda sw, su: crude)
    repaired = deq_ntk(x, **kw)
    assert int(repaired.iterations) > 0 and float(repaired.max_residual) <= 1e-12
    np.testing.assert_allclose(repaired.ntk, exact.ntk, rtol=1e-9)
    with pytest.raises(RuntimeError, match="did not reach"):
        deq_ntk(x, max_iter=0, **kw)
