"""Kernel regression, label encodings and metrics.

Prediction (Arora et al. 2019 sec. 5; survey eq. 89 with f_0 = 0 in expectation):
    Y_hat = K(test, train) (K(train, train) + ridge I)^-1 Y.
Multi-output targets Y of shape (n, k) use the kernel Theta (x) I_k implicitly: one solve with k
right-hand sides, never the (nk, nk) matrix (survey sec. 5.1).

Singular matrices: ``ridge=0`` is allowed. If the Cholesky factorization of K + ridge I fails (a
non-positive pivot), the default raises a ValueError; with ``jitter > 0`` the explicit policy is to
retry with ridge + jitter * mean(diag K) * 10^j for j = 0, 1, 2 and to warn with the ridge used.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jax.scipy.sparse.linalg import cg

from ntkrepro.checks import real_array, symmetric

JITTER_STEPS = 3


def full_precision_matmuls(fn):
    """Run ``fn`` with full-precision matmuls (no TF32 on GPUs for float32 inputs)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def check_finite(name, a):
    """Raise if the concrete array ``a`` has NaN or inf (traced arrays pass)."""
    if not isinstance(a, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(a))):
        raise ValueError(f"{name} contains NaN or inf")


def _check_nonneg(name, v):
    if not math.isfinite(float(v)) or float(v) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def _check_system(k_train, y_train, k_test):
    k_train, y_train = (jnp.asarray(real_array(n, a)) for n, a in (("k_train", k_train), ("y_train", y_train)))
    if k_train.ndim != 2 or k_train.shape[0] != k_train.shape[1] or k_train.shape[0] == 0:
        raise ValueError(f"k_train must be a square (n, n) matrix, got shape {k_train.shape}")
    n = k_train.shape[0]
    if y_train.ndim not in (1, 2) or y_train.shape[0] != n:
        raise ValueError(f"y_train must be (n,) or (n, k) with n = {n}, got shape {y_train.shape}")
    if k_test is not None:
        k_test = jnp.asarray(real_array("k_test", k_test))
        if k_test.ndim != 2 or k_test.shape[1] != n:
            raise ValueError(f"k_test must be (m, n) with n = {n} training points, got shape {k_test.shape}")
    for name, a in (("k_train", k_train), ("y_train", y_train), ("k_test", k_test)):
        if a is not None:
            check_finite(name, a)
    symmetric("k_train", k_train)
    return k_train, y_train, k_test


@jax.jit
def _cholesky(k, ridge):
    return cho_factor(k + ridge * jnp.eye(k.shape[0], dtype=k.dtype), lower=True)[0]


def _factor(k_train, ridge: float, jitter: float):
    """Cholesky factor of K + r I under the module's jitter policy; returns (factor, r)."""
    scale = float(jnp.mean(jnp.diagonal(k_train)))
    retries = [ridge + jitter * abs(scale) * 10.0**j for j in range(JITTER_STEPS)] if jitter else []
    ridges = [ridge, *retries]
    for r in ridges:
        factor = _cholesky(k_train, jnp.asarray(r, k_train.dtype))
        if bool(jnp.all(jnp.isfinite(factor))) and bool(jnp.all(jnp.diagonal(factor) > 0)):
            if r != ridge:
                warnings.warn(f"kernel matrix not positive definite at ridge={ridge:g}; used ridge={r:g} "
                              "(jitter policy)", RuntimeWarning, stacklevel=3)
            return factor, r
    hint = "pass ridge > 0 or jitter > 0" if not jitter else "increase ridge or jitter"
    raise ValueError(f"K_train + {ridges[-1]:g} I is not positive definite (Cholesky failed); {hint}")


@full_precision_matmuls
def solve(k_train, y_train, *, ridge: float = 0.0, jitter: float = 0.0, solver: str = "cholesky",
          tol: float = 1e-10, max_iter: int | None = None):
    """alpha = (K + ridge I)^-1 Y for Y of shape (n,) or (n, k).

    ``solver="cholesky"`` (exact, with the jitter policy of the module docstring) or ``"cg"``
    (conjugate gradients on all k right-hand sides at once; ``tol`` is the relative residual, a
    ValueError if it is not reached within ``max_iter`` (default 10 n) iterations).
    """
    _check_nonneg("ridge", ridge)
    _check_nonneg("jitter", jitter)
    k_train, y_train, _ = _check_system(k_train, y_train, None)
    y = y_train.astype(k_train.dtype)
    if solver == "cholesky":
        factor, _ = _factor(k_train, float(ridge), float(jitter))
        return cho_solve((factor, True), y)
    if solver == "cg":
        n = k_train.shape[0]
        matvec = lambda v: k_train @ v + ridge * v
        alpha, _ = cg(matvec, y, tol=tol, maxiter=max_iter or 10 * n)
        residual = float(jnp.linalg.norm(matvec(alpha) - y) / jnp.maximum(jnp.linalg.norm(y), 1e-300))
        if not residual <= 10 * tol:
            raise ValueError(f"conjugate gradients did not converge: relative residual {residual:.2e} "
                             f"> {tol:g}")
        return alpha
    raise ValueError(f"unknown solver {solver!r}; use 'cholesky' or 'cg'")


@full_precision_matmuls
def kernel_regression(k_train, y_train, k_test, *, ridge: float = 0.0, jitter: float = 0.0,
                      solver: str = "cholesky", tol: float = 1e-10, max_iter: int | None = None):
    """Kernel (ridge) regression predictions K(test, train) (K(train, train) + ridge I)^-1 Y.

    Args:
        k_train: (n, n) train Gram; y_train: (n,) or (n, k) targets; k_test: (m, n) test-train kernel.
        ridge, jitter, solver, tol, max_iter: see :func:`solve` and the module docstring.
    Returns:
        (m,) or (m, k) predictions.
    """
    k_train, y_train, k_test = _check_system(k_train, y_train, k_test)
    alpha = solve(k_train, y_train, ridge=ridge, jitter=jitter, solver=solver, tol=tol, max_iter=max_iter)
    return k_test.astype(alpha.dtype) @ alpha


def one_hot_shifted(labels, num_classes: int, pos: float = 0.9, neg: float = -0.1):
    """(n, num_classes) targets: ``pos`` at the true class, ``neg`` elsewhere (Arora et al.: 0.9/-0.1)."""
    labels = np.asarray(labels)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return jnp.where(jnp.arange(num_classes)[None, :] == jnp.asarray(labels)[:, None], pos, neg)


def accuracy(predictions, labels) -> float:
    """Fraction of correct predictions: argmax of (m, k) scores, or for (m,) scores of a +-1 encoding the
    sign (positive -> class 1; labels in {0, 1} or {-1, 1})."""
    predictions, labels = jnp.asarray(predictions), np.asarray(labels)
    if labels.ndim != 1 or predictions.shape[0] != labels.shape[0] or predictions.ndim not in (1, 2):
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} do not match: "
                         "expected (m, k) or (m,) scores and (m,) labels")
    if predictions.ndim == 2:
        return float(jnp.mean(jnp.argmax(predictions, axis=1) == jnp.asarray(labels)))
    if not set(np.unique(labels)) <= {-1, 0, 1}:
        raise ValueError("1-D scores need binary labels in {0, 1} or {-1, 1}")
    return float(jnp.mean((predictions > 0) == jnp.asarray(labels > 0)))


def mse(predictions, targets) -> float:
    """Mean over all entries of the squared error."""
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(f"shapes differ: predictions {predictions.shape}, targets {targets.shape}")
    return float(jnp.mean((predictions - targets) ** 2))
