"""Training dynamics with a constant kernel: linearized networks, the NTK ensemble and GP posteriors.

Gradient flow (learning rate ``lr``) on the square loss with a constant NTK Theta (Jacot et al. 2018
sec. 5; survey eqs. 7-9). The loss convention fixes the time scale and is explicit:
    loss="mean": (1/2N) sum_i (f(x_i) - y_i)^2 (Jacot's paper)  -> operator rate * Theta, rate = lr / N;
    loss="sum":  (1/2) sum_i (f(x_i) - y_i)^2 (the survey)      -> rate = lr.
    f_t(X) = y + exp(-rate t Theta(X, X)) (f_0(X) - y),
    f_t(x) = f_0(x) + Theta(x, X) Theta(X, X)^-1 (I - exp(-rate t Theta(X, X))) (y - f_0(X)).
With f_0 ~ GP(0, K) (K the NNGP) f_t is Gaussian; with A_t = Theta(x, X) Theta^-1 (I - e^{-rate t Theta}):
    mean_t(x) = A_t(x) y,
    cov_t(x, x') = K(x, x') - A_t(x) K(X, x') - K(x, X) A_t(x')^T + A_t(x) K(X, X) A_t(x')^T
(survey eqs. 152-156; t = inf gives 155-156; Theta = K gives the GP posterior 149-150).
Everything goes through the eigendecomposition Theta(X, X) = V diag(lambda) V^T:
Theta^-1 (I - e^{-rate t Theta}) = V diag((1 - e^{-rate t lambda}) / lambda) V^T (-> rate t as lambda -> 0),
and at t = inf eigenvalues below ``rcond * max(lambda)`` are treated as 0 (a pseudo-inverse).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ntkrepro.checks import real_array, symmetric
from ntkrepro.regression import check_finite, full_precision_matmuls, kernel_regression

LOSSES = ("mean", "sum")


def _times(t):
    """t as a 1-D float array (scalar -> shape ()), checked >= 0 (inf allowed)."""
    t = np.asarray(t, dtype=float)
    if t.ndim > 1 or np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError(f"t must be a time >= 0 (or a 1-D array of them; inf allowed), got {t}")
    return t


def _rate(lr, loss, n) -> float:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    return float(lr) / n if loss == "mean" else float(lr)


def _square(name, a, n=None):
    a = jnp.asarray(real_array(name, a))
    if a.ndim != 2 or a.shape[0] != a.shape[1] or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name} must be a square ({n or 'n'}, {n or 'n'}) matrix, got shape {a.shape}")
    check_finite(name, a)
    symmetric(name, a)
    return a


def _rows(name, a, n, m=None):
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[1] != n or (m is not None and a.shape[0] != m):
        raise ValueError(f"{name} must be ({m or 'm'}, {n}), got shape {a.shape}")
    check_finite(name, a)
    return a


def _spectral_filter(eigenvalues, t, rate, rcond):
    """diag((1 - exp(-rate t lambda)) / lambda) per time (rows), with the limits of the module docstring."""
    lam = jnp.maximum(eigenvalues, 0.0)
    small = lam <= rcond * jnp.max(lam)
    safe = jnp.where(small, 1.0, lam)
    rows = []
    for time in np.atleast_1d(t):
        if math.isinf(time):
            rows.append(jnp.where(small, 0.0, 1.0 / safe))
        else:
            rows.append(jnp.where(small, rate * time, -jnp.expm1(-rate * time * lam) / safe))
    return jnp.stack(rows)


@full_precision_matmuls
def linearized_outputs(ntk_train, y_train, f0_train, *, t, lr: float = 1.0, loss: str = "mean",
                       ntk_test_train=None, f0_test=None, rcond: float = 1e-12):
    """Outputs of the linearized network at time(s) t (module docstring; Jacot sec. 5, survey eq. 9).

    Args:
        ntk_train: Theta(X, X) (N, N); y_train, f0_train: (N,) or (N, k) targets and initial outputs.
        t: a time >= 0 or a 1-D array of times (``inf`` allowed); with lr = 1 and loss="mean", t is the
            number of gradient-descent steps in the continuous-time limit.
        ntk_test_train, f0_test: Theta(x, X) (M, N) and f_0(x) for test outputs (both or neither).
    Returns:
        (f_t(X), f_t(x) or None), with a leading time axis when t is an array.
    """
    ntk_train = _square("ntk_train", ntk_train)
    n = ntk_train.shape[0]
    y, f0 = jnp.asarray(y_train), jnp.asarray(f0_train)
    if y.shape[0] != n or y.shape != f0.shape:
        raise ValueError(f"y_train {y.shape} and f0_train {f0.shape} must both have {n} rows and equal shapes")
    check_finite("y_train", y)
    check_finite("f0_train", f0)
    if (ntk_test_train is None) != (f0_test is None):
        raise ValueError("pass ntk_test_train and f0_test together (or neither)")
    times = _times(t)
    rate = _rate(lr, loss, n)
    lam, vecs = jnp.linalg.eigh(ntk_train)
    residual0 = vecs.T @ (f0 - y)  # in the eigenbasis
    decay = jnp.stack([jnp.exp(-rate * time * jnp.maximum(lam, 0.0)) for time in np.atleast_1d(times)])
    shape = (-1,) + (1,) * (residual0.ndim - 1)
    train = jnp.stack([y + vecs @ (d.reshape(shape) * residual0) for d in decay])
    test = None
    if ntk_test_train is not None:
        ntk_test_train = _rows("ntk_test_train", ntk_test_train, n)
        f0_test = jnp.asarray(f0_test)
        if f0_test.shape[0] != ntk_test_train.shape[0] or f0_test.shape[1:] != y.shape[1:]:
            raise ValueError(f"f0_test {f0_test.shape} does not match ntk_test_train {ntk_test_train.shape}")
        check_finite("f0_test", f0_test)
        filters = _spectral_filter(lam, times, rate, rcond)
        projected = ntk_test_train @ vecs
        test = jnp.stack([f0_test - projected @ (g.reshape(shape) * residual0) for g in filters])
    if times.ndim == 0:
        return train[0], None if test is None else test[0]
    return train, test


@full_precision_matmuls
def ntk_ensemble(ntk_train, ntk_test_train, nngp_train, nngp_test_train, nngp_test_test, y_train, *,
                 t=math.inf, lr: float = 1.0, loss: str = "mean", rcond: float = 1e-12,
                 variances_only: bool = False):
    """Mean and covariance over initializations of the linearized net at time t (survey eqs. 152-156).

    Args:
        ntk_train (N, N), ntk_test_train (M, N): the NTK; nngp_train (N, N), nngp_test_train (M, N),
        nngp_test_test (M, M): the NNGP K (the prior of f_0); y_train (N,) or (N, k).
        t: time >= 0 or a 1-D array (``inf``: eqs. 155-156).
        variances_only: ``nngp_test_test`` is only the diagonal K(x, x) (M,), and the variances (M,)
            are returned in place of the covariance (no (M, M) product is formed).
    Returns:
        (mean (M,) or (M, k), covariance (M, M) or variances (M,)), with a leading time axis when t is an
        array. The covariance is the same for every output (outputs are independent, Theta (x) I_k).
    """
    ntk_train = _square("ntk_train", ntk_train)
    n = ntk_train.shape[0]
    ntk_test_train = _rows("ntk_test_train", ntk_test_train, n)
    m = ntk_test_train.shape[0]
    nngp_train = _square("nngp_train", nngp_train, n)
    nngp_test_train = _rows("nngp_test_train", nngp_test_train, n, m)
    if variances_only:
        nngp_test_test = jnp.asarray(real_array("nngp_test_test", nngp_test_test))
        if nngp_test_test.shape != (m,):
            raise ValueError(f"nngp_test_test must be the diagonal ({m},) with variances_only, "
                             f"got shape {nngp_test_test.shape}")
        check_finite("nngp_test_test", nngp_test_test)
    else:
        nngp_test_test = _square("nngp_test_test", nngp_test_test, m)
    y = jnp.asarray(y_train)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y_train must be (N,) or (N, k) with N = {n}, got shape {y.shape}")
    check_finite("y_train", y)
    times = _times(t)
    lam, vecs = jnp.linalg.eigh(ntk_train)
    filters = _spectral_filter(lam, times, _rate(lr, loss, n), rcond)
    projected = ntk_test_train @ vecs
    means, covs = [], []
    for g in filters:
        a = (projected * g) @ vecs.T  # A_t (M, N)
        means.append(a @ y)
        if variances_only:
            cross = jnp.einsum("ij,ij->i", a, nngp_test_train)
            covs.append(nngp_test_test - 2 * cross + jnp.einsum("ij,jk,ik->i", a, nngp_train, a))
        else:
            cross = a @ nngp_test_train.T
            covs.append(nngp_test_test - cross - cross.T + a @ nngp_train @ a.T)
    if times.ndim == 0:
        return means[0], covs[0]
    return jnp.stack(means), jnp.stack(covs)


@full_precision_matmuls
def gp_posterior(k_train, k_test_train, k_test_test, y_train, *, noise: float = 0.0, jitter: float = 0.0):
    """Posterior mean K(x, X)(K + noise I)^-1 y and covariance K(x, x') - K(x, X)(K + noise I)^-1 K(X, x')
    of a zero-mean GP (survey eqs. 149-150); Cholesky solves with the jitter policy of
    :mod:`ntkrepro.regression`."""
    k_train = _square("k_train", k_train)
    n = k_train.shape[0]
    k_test_train = _rows("k_test_train", k_test_train, n)
    k_test_test = _square("k_test_test", k_test_test, k_test_train.shape[0])
    mean = kernel_regression(k_train, y_train, k_test_train, ridge=noise, jitter=jitter)
    reduction = kernel_regression(k_train, k_test_train.T, k_test_train, ridge=noise, jitter=jitter)
    return mean, k_test_test - reduction
