"""Kernel regression, label encodings and metrics.

Prediction (Arora et al. 2019 sec. 5; survey eq. 89 with f_0 = 0 in expectation):
    Y_hat = K(test, train) (K(train, train) + ridge I)^-1 Y.
Multi-output targets Y of shape (n, k) use the kernel Theta (x) I_k implicitly: one solve with k
right-hand sides, never the (nk, nk) matrix (survey sec. 5.1).

Singular matrices: ``ridge=0`` is allowed. If the Cholesky factorization of K + ridge I fails (a
non-positive pivot), the default raises a ValueError; with ``jitter > 0`` the explicit policy is to
retry with ridge + jitter * mean(diag K) * 10^j for j = 0, 1, 2 and to warn with the ridge used.

Large Grams (``overwrite_k=True``): K is a C-order numpy float32 or float64 array (an ``np.memmap`` too), of
which only the upper triangle is read (as :func:`ntkrepro.gram.compute_gram_into` writes it). The ridge is
added to its diagonal and a blocked Cholesky factors it in place (:func:`_solve_in_place`), so the peak memory
is K plus a few blocks of rows; the solve runs in K's dtype (float32 K: a float32 factor and solve, the
stated precision choice) and returns a numpy array. K is destroyed: a failed factorization cannot be
retried, so ``jitter`` must be 0 there.
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
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from ntkrepro.blocks import check_memory
from ntkrepro.checks import real_array, symmetric
from ntkrepro.progress import progress as progress_bar

JITTER_STEPS = 3
JAX_SOLVE_COPIES = 5  # copies of K alive in the jitted factorization (K, K + ridge I, the factor, casts)
ROW_CHUNK_BYTES = 64 << 20  # rows of K or K_test read at once by the in-place path
CHOLESKY_BLOCK = 1024  # rows per block of the in-place Cholesky (its temporaries: a few blocks x n)


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
    k_train = real_array("k_train", k_train)
    if not isinstance(k_train, jax.core.Tracer):
        itemsize = max(4, np.dtype(jax.dtypes.canonicalize_dtype(k_train.dtype)).itemsize)  # as jnp.asarray
        check_memory(JAX_SOLVE_COPIES * k_train.size * itemsize,
                     what=f"the in-memory solve of a {k_train.shape} training Gram ({JAX_SOLVE_COPIES} copies)",
                     driver="the number of training points, quadratically; pass a numpy K with overwrite_k=True "
                            "to factor it in place")
    k_train, y_train = jnp.asarray(k_train), jnp.asarray(real_array("y_train", y_train))
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
          tol: float = 1e-10, max_iter: int | None = None, overwrite_k: bool = False, progress: bool = False):
    """alpha = (K + ridge I)^-1 Y for Y of shape (n,) or (n, k).

    ``solver="cholesky"`` (exact, with the jitter policy of the module docstring) or ``"cg"``
    (conjugate gradients on all k right-hand sides at once; ``tol`` is the relative residual, a
    ValueError if it is not reached within ``max_iter`` (default 10 n) iterations). ``overwrite_k``:
    factor the upper triangle of a numpy K in place (module docstring; Cholesky only, no jitter), with
    ``progress`` (and ETA) over the factorization when asked.
    """
    _check_nonneg("ridge", ridge)
    _check_nonneg("jitter", jitter)
    if overwrite_k:
        k_train, y = _check_in_place(k_train, y_train, None, jitter=jitter, solver=solver)
        return _solve_in_place(k_train, y, float(ridge), progress)
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
                      solver: str = "cholesky", tol: float = 1e-10, max_iter: int | None = None,
                      overwrite_k: bool = False, progress: bool = False):
    """Kernel (ridge) regression predictions K(test, train) (K(train, train) + ridge I)^-1 Y.

    Args:
        k_train: (n, n) train Gram; y_train: (n,) or (n, k) targets; k_test: (m, n) test-train kernel.
        ridge, jitter, solver, tol, max_iter, overwrite_k, progress: see :func:`solve` and the module docstring
            (with ``overwrite_k`` K_test is read in row blocks, never copied whole).
    Returns:
        (m,) or (m, k) predictions.
    """
    if overwrite_k:
        _check_nonneg("ridge", ridge)
        _check_nonneg("jitter", jitter)
        k_train, y = _check_in_place(k_train, y_train, k_test, jitter=jitter, solver=solver)
        return predict_in_blocks(k_test, _solve_in_place(k_train, y, float(ridge), progress))
    k_train, y_train, k_test = _check_system(k_train, y_train, k_test)
    alpha = solve(k_train, y_train, ridge=ridge, jitter=jitter, solver=solver, tol=tol, max_iter=max_iter)
    return k_test.astype(alpha.dtype) @ alpha


def _row_blocks(a) -> tuple[range, int]:
    """(row starts, rows per block) of blocks of about ROW_CHUNK_BYTES of the 2-D array ``a``."""
    step = max(1, ROW_CHUNK_BYTES // max(1, a.shape[1] * a.dtype.itemsize))
    return range(0, a.shape[0], step), step


def _check_in_place(k_train, y_train, k_test, *, jitter: float, solver: str):
    """Checks of the in-place path before anything is written: K a square, contiguous, writeable numpy float32 /
    float64 array with a finite upper triangle; Y (n,) or (n, k) finite, cast to K's dtype; K_test (m, n)
    finite (read in row blocks). Returns (K, Y)."""
    if solver != "cholesky" or jitter:
        raise ValueError("overwrite_k=True factors K in place with Cholesky: it needs solver='cholesky' and "
                         "jitter=0 (a failed factorization has destroyed K, so it cannot be retried)")
    if not isinstance(k_train, np.ndarray) or k_train.dtype not in (np.float32, np.float64):
        raise ValueError(f"overwrite_k=True needs k_train as a numpy float32 or float64 array (np.memmap too), got "
                         f"{type(k_train).__name__} {getattr(k_train, 'dtype', '')}".rstrip())
    n = k_train.shape[0] if k_train.ndim == 2 else 0
    if k_train.shape != (n, n) or n == 0:
        raise ValueError(f"k_train must be a square (n, n) matrix, got shape {k_train.shape}")
    if not k_train.flags.writeable or not k_train.flags.c_contiguous:
        raise ValueError("overwrite_k=True needs a writeable, C-contiguous k_train (e.g. np.ascontiguousarray)")
    y = np.asarray(real_array("y_train", y_train))
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y_train must be (n,) or (n, k) with n = {n}, got shape {y.shape}")
    check_finite("y_train", y)
    starts, step = _row_blocks(k_train)
    for r0 in starts:
        if not np.all(np.isfinite(np.triu(k_train[r0:r0 + step, r0:]))):
            raise ValueError("k_train contains NaN or inf (in its upper triangle)")
    if k_test is not None:
        k_test = real_array("k_test", k_test)
        if k_test.ndim != 2 or k_test.shape[1] != n:
            raise ValueError(f"k_test must be (m, n) with n = {n} training points, got shape {k_test.shape}")
        starts, step = _row_blocks(k_test)
        for r0 in starts:
            check_finite("k_test", k_test[r0:r0 + step])
    return k_train, y.astype(k_train.dtype)


def _factor_in_place(k_train: np.ndarray, blocks: list[tuple[int, int]], ridge: float):
    """Blocked right-looking Cholesky K = U^T U of the upper triangle of a C-order K, in place; yields once per
    b x b block of matmul output (units of equal work, for the progress bar).

    Each diagonal block is factored and inverted (a b x b copy, in one thread), its row panel solved as one
    matmul with that inverse (b x n), and the trailing upper triangle updated row block by row block
    (temporaries of b x n; one matmul per row block: measured as fast as LAPACK's potrf on the whole K at
    n = 8,000, where b x b block matmuls were 1.6x slower). Only numpy's linear algebra is used: no LAPACK
    call sees the whole K (SciPy's LAPACK has 32-bit indices; its potrf on K with n > 46,340 overflows them
    and crashed here at n = 50,000), and one BLAS thread pool serves every call (alternating SciPy's and
    numpy's OpenBLAS made each spin while the other worked)."""
    for i, (k0, k1) in enumerate(blocks):
        upper = np.triu(k_train[k0:k1, k0:k1])
        try:
            with threadpool_limits(1):  # small LAPACK calls: 4-15x faster in one thread on a busy 2-core machine
                factor = np.linalg.cholesky(upper + np.triu(upper, 1).T, upper=True)
                inverse = np.triu(np.linalg.inv(factor))  # the panel solve as one matmul (TRTRI + GEMM)
        except np.linalg.LinAlgError:
            factor = None
        if factor is None or not np.all(np.isfinite(factor)):
            raise ValueError(f"K_train + {ridge:g} I is not positive definite (Cholesky failed in rows "
                             f"{k0}-{k1 - 1}); K was overwritten in place: rebuild it (its cached tiles make "
                             "that cheap) and pass ridge > 0")
        k_train[k0:k1, k0:k1] = factor
        if k1 == k_train.shape[0]:
            return
        panel = inverse.T @ k_train[k0:k1, k1:]  # U11^T X = A12
        k_train[k0:k1, k1:] = panel
        yield from range(len(blocks) - i - 1)
        for j, (r0, r1) in enumerate(blocks[i + 1:], start=i + 1):  # A22 -= X^T X, one row block at a time
            k_train[r0:r1, r0:] -= panel[:, r0 - k1:r1 - k1].T @ panel[:, r0 - k1:]
            yield from range(len(blocks) - j)


def _solve_in_place(k_train: np.ndarray, y: np.ndarray, ridge: float, progress: bool = False) -> np.ndarray:
    """(K + ridge I)^-1 Y from the upper triangle of a C-order K, factored in place by :func:`_factor_in_place`
    in blocks of CHOLESKY_BLOCK rows (K is destroyed; progress with ETA over its matmuls); then U^T z = Y and
    U alpha = z, block by block."""
    n = k_train.shape[0]
    diagonal = np.arange(n)
    k_train[diagonal, diagonal] += k_train.dtype.type(ridge)
    blocks = [(k0, min(k0 + CHOLESKY_BLOCK, n)) for k0 in range(0, n, CHOLESKY_BLOCK)]
    units = sum(m + m * (m + 1) // 2 for m in range(len(blocks)))  # panel blocks + upper update blocks per step
    for _ in progress_bar(_factor_in_place(k_train, blocks, ridge), total=units, desc=f"cholesky n={n}",
                          enabled=progress and units > 0):
        pass
    z = y.copy()
    with threadpool_limits(1):  # b x b solves and matrix-vector products: memory-bound
        for k0, k1 in blocks:  # U^T z = Y
            z[k0:k1] = np.linalg.solve(k_train[k0:k1, k0:k1].T, z[k0:k1])
            z[k1:] -= k_train[k0:k1, k1:].T @ z[k0:k1]
        for k0, k1 in reversed(blocks):  # U alpha = z
            z[k0:k1] = np.linalg.solve(k_train[k0:k1, k0:k1], z[k0:k1] - k_train[k0:k1, k1:] @ z[k1:])
    return z


def predict_in_blocks(k_test, alpha: np.ndarray) -> np.ndarray:
    """K_test alpha in alpha's dtype, K_test (m, n) (a memory map too) read in row blocks."""
    k_test = np.asarray(k_test)
    out = np.empty((k_test.shape[0], *alpha.shape[1:]), alpha.dtype)
    starts, step = _row_blocks(k_test)
    for r0 in starts:
        out[r0:r0 + step] = k_test[r0:r0 + step].astype(alpha.dtype, copy=False) @ alpha
    return out


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
