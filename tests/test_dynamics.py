"""Linearized dynamics vs an ODE solve of gradient flow on a linear model and vs scipy's expm; the
NTK-ensemble covariance vs Monte Carlo over f_0; the GP posterior and its limits."""

import math

import numpy as np
import pytest
from scipy import integrate, linalg

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.dynamics import gp_posterior, linearized_outputs, ntk_ensemble
from ntkrepro.regression import kernel_regression


def _features(n, p, seed):
    return np.random.default_rng(seed).normal(size=(n, p))


def test_linearized_outputs_match_gradient_flow_of_a_linear_model():
    """f(x) = phi(x).w has the constant NTK Phi Phi^T; gradient flow of the mean loss
    (1/2N)|Phi w - y|^2 is w' = -(lr/N) Phi^T (Phi w - y), solved here with solve_ivp."""
    phi, phi_test = _features(6, 9, 0), _features(3, 9, 1)
    w0 = np.random.default_rng(2).normal(size=9)
    y = np.random.default_rng(3).normal(size=6)
    lr, times = 0.7, np.array([0.0, 0.5, 3.0, 20.0])
    sol = integrate.solve_ivp(lambda _, w: -(lr / 6) * phi.T @ (phi @ w - y), (0, times[-1]), w0,
                              t_eval=times, rtol=1e-11, atol=1e-12)
    train, test = linearized_outputs(phi @ phi.T, y, phi @ w0, t=times, lr=lr, ntk_test_train=phi_test @ phi.T,
                                     f0_test=phi_test @ w0)
    np.testing.assert_allclose(train, (phi @ sol.y).T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(test, (phi_test @ sol.y).T, rtol=1e-8, atol=1e-9)
    # the sum-loss convention runs N times faster
    fast, _ = linearized_outputs(phi @ phi.T, y, phi @ w0, t=times / 6, lr=lr, loss="sum")
    np.testing.assert_allclose(fast, train, rtol=1e-10, atol=1e-12)


def test_train_outputs_equal_matrix_exponential_and_limits():
    phi = _features(5, 8, 4)
    theta = phi @ phi.T
    y, f0 = np.random.default_rng(5).normal(size=(5, 2)), np.random.default_rng(6).normal(size=(5, 2))
    f_t, _ = linearized_outputs(theta, y, f0, t=2.5)
    np.testing.assert_allclose(f_t, y + linalg.expm(-2.5 * theta / 5) @ (f0 - y), rtol=1e-10)
    np.testing.assert_allclose(linearized_outputs(theta, y, f0, t=0.0)[0], f0, rtol=1e-12)
    np.testing.assert_allclose(linearized_outputs(theta, y, f0, t=math.inf)[0], y, rtol=1e-12)


def test_ensemble_at_infinity_is_eqs_155_156_and_kernel_regression():
    phi, phi_x = _features(7, 5, 7), _features(2, 5, 8)
    rng = np.random.default_rng(9)
    g, g_x = rng.normal(size=(7, 12)), rng.normal(size=(2, 12))
    full_ntk = np.concatenate([phi, phi_x]) @ np.concatenate([phi, phi_x]).T + np.eye(9)
    ntk, ntk_x = full_ntk[:7, :7], full_ntk[7:, :7]
    full_k = np.concatenate([g, g_x]) @ np.concatenate([g, g_x]).T
    k, k_x, k_xx = full_k[:7, :7], full_k[7:, :7], full_k[7:, 7:]
    y = rng.normal(size=7)
    mean, cov = ntk_ensemble(ntk, ntk_x, k, k_x, k_xx, y)
    a = ntk_x @ np.linalg.inv(ntk)
    np.testing.assert_allclose(mean, a @ y, rtol=1e-10)
    np.testing.assert_allclose(cov, k_xx + a @ k @ a.T - a @ k_x.T - k_x @ a.T, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(mean, kernel_regression(ntk, y, ntk_x), rtol=1e-10)
    # a singular NTK (7 points, 5 features): t = inf uses the pseudo-inverse, the minimum-norm interpolant
    singular_mean, _ = ntk_ensemble(phi @ phi.T, phi_x @ phi.T, k, k_x, k_xx, y)
    np.testing.assert_allclose(singular_mean, phi_x @ phi.T @ np.linalg.pinv(phi @ phi.T) @ y, rtol=1e-8)


def test_ensemble_covariance_matches_monte_carlo_over_initializations():
    """f_0 ~ GP(0, K) on train and test points jointly, pushed through the linearized map."""
    rng = np.random.default_rng(10)
    phi = rng.normal(size=(6, 10))
    theta = phi @ phi.T
    g = rng.normal(size=(6 + 2, 4))
    k = g @ g.T + 0.1 * np.eye(8)
    theta_x = rng.normal(size=(2, 10)) @ phi.T
    y, t = rng.normal(size=6), 4.0
    mean, cov = ntk_ensemble(theta, theta_x, k[:6, :6], k[6:, :6], k[6:, 6:], y, t=t)
    samples = np.linalg.cholesky(k) @ rng.standard_normal((8, 40_000))
    _, f_test = linearized_outputs(theta, np.broadcast_to(y[:, None], (6, 40_000)), samples[:6], t=t,
                                   ntk_test_train=theta_x, f0_test=samples[6:])
    f_test = np.asarray(f_test)
    np.testing.assert_allclose(f_test.mean(1), mean, atol=4 * np.sqrt(np.diag(cov).max() / 40_000))
    np.testing.assert_allclose(np.cov(f_test), cov, rtol=0.05, atol=0.03 * np.abs(cov).max())


def test_ensemble_variances_only_are_the_covariance_diagonal():
    rng = np.random.default_rng(12)
    phi, g = rng.normal(size=(9, 7)), rng.normal(size=(9, 5))
    theta, k = phi @ phi.T + 0.1 * np.eye(9), g @ g.T
    y = rng.normal(size=5)
    blocks = (theta[:5, :5], theta[5:, :5], k[:5, :5], k[5:, :5])
    for t in (2.0, [0.0, 3.0, math.inf]):
        mean, cov = ntk_ensemble(*blocks, k[5:, 5:], y, t=t)
        mean_v, var = ntk_ensemble(*blocks, np.diag(k[5:, 5:]), y, t=t, variances_only=True)
        np.testing.assert_allclose(mean_v, mean, rtol=1e-12)
        np.testing.assert_allclose(var, np.diagonal(np.asarray(cov), axis1=-2, axis2=-1), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="diagonal"):
        ntk_ensemble(*blocks, k[5:, 5:], y, variances_only=True)


def test_gp_posterior_and_nngp_trained_limit():
    rng = np.random.default_rng(11)
    g = rng.normal(size=(9, 6))
    k = g @ g.T + 0.05 * np.eye(9)
    y = rng.normal(size=6)
    mean, cov = gp_posterior(k[:6, :6], k[6:, :6], k[6:, 6:], y)
    inv = np.linalg.inv(k[:6, :6])
    np.testing.assert_allclose(mean, k[6:, :6] @ inv @ y, rtol=1e-10)
    np.testing.assert_allclose(cov, k[6:, 6:] - k[6:, :6] @ inv @ k[:6, 6:], rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvalsh(np.asarray(cov)).min() > -1e-10
    # training only the readout: Theta = K, and the t -> inf ensemble is the GP posterior (survey 151-153)
    mean_inf, cov_inf = ntk_ensemble(k[:6, :6], k[6:, :6], k[:6, :6], k[6:, :6], k[6:, 6:], y)
    np.testing.assert_allclose(mean_inf, mean, rtol=1e-9)
    np.testing.assert_allclose(cov_inf, cov, rtol=1e-8, atol=1e-10)
    means, covs = ntk_ensemble(k[:6, :6], k[6:, :6], k[:6, :6], k[6:, :6], k[6:, 6:], y, t=[0.0, 1e9])
    np.testing.assert_allclose(means[0], 0.0, atol=1e-14)
    np.testing.assert_allclose(covs[0], k[6:, 6:], rtol=1e-12)  # the prior at t = 0
    np.testing.assert_allclose(means[1], mean, rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(t=-1.0), "t must"),
    (dict(t=1.0, loss="median"), "loss"),
    (dict(t=1.0, lr=0.0), "lr"),
    (dict(t=1.0, f0_test=np.zeros(2)), "together"),
    (dict(t=[[1.0]]), "t must"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linearized_outputs(np.eye(3), np.zeros(3), np.zeros(3), **kwargs)
    with pytest.raises(ValueError, match="square"):
        ntk_ensemble(np.ones((3, 2)), np.ones((1, 3)), np.eye(3), np.ones((1, 3)), np.eye(1), np.zeros(3))
