"""Kernel regression: exact solves vs numpy, multi-output = Theta (x) I_k, CG vs Cholesky, the singular-
matrix policy, label encoding and metrics."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.regression import accuracy, kernel_regression, mse, one_hot_shifted, solve


def _pd_kernel(n, seed, d=None):
    """An RBF Gram (positive definite for distinct points) and a test block."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 3, 2))
    sq = np.sum((x[:, None] - x[None]) ** 2, -1)
    k = np.exp(-sq / 2)
    return k[:n, :n], k[n:, :n]


def test_interpolates_training_targets_and_matches_numpy():
    k, k_test = _pd_kernel(8, 0)
    y = np.random.default_rng(1).normal(size=(8, 3))
    np.testing.assert_allclose(kernel_regression(k, y, k), y, atol=1e-8)
    np.testing.assert_allclose(kernel_regression(k, y, k_test), k_test @ np.linalg.solve(k, y), rtol=1e-9)


def test_multi_output_equals_kronecker_formulation():
    """Solving with k right-hand sides is the (n k, n k) system with Theta (x) I_k (survey sec. 5.1)."""
    k, k_test = _pd_kernel(5, 2)
    y = np.random.default_rng(3).normal(size=(5, 4))
    big = np.kron(k, np.eye(4))
    big_test = np.kron(k_test, np.eye(4))
    expected = (big_test @ np.linalg.solve(big + 0.1 * np.eye(20), y.reshape(-1))).reshape(3, 4)
    np.testing.assert_allclose(kernel_regression(k, y, k_test, ridge=0.1), expected, rtol=1e-10)
    one_column = kernel_regression(k, y[:, 2], k_test, ridge=0.1)
    assert one_column.shape == (3,)
    np.testing.assert_allclose(one_column, expected[:, 2], rtol=1e-10)


def test_cg_solver_matches_cholesky():
    k, k_test = _pd_kernel(30, 4)
    y = np.random.default_rng(5).normal(size=(30, 2))
    exact = kernel_regression(k, y, k_test, ridge=1e-3)
    iterative = kernel_regression(k, y, k_test, ridge=1e-3, solver="cg", tol=1e-12)
    np.testing.assert_allclose(iterative, exact, rtol=1e-7, atol=1e-9)


def test_singular_matrix_raises_or_follows_the_jitter_policy():
    x = np.random.default_rng(6).normal(size=(6, 2))
    k = x @ x.T  # rank 2 < 6
    k[0, 0] -= 1e-3  # make it indefinite, not just singular
    y = np.ones(6)
    with pytest.raises(ValueError, match="not positive definite"):
        kernel_regression(k, y, k)
    with pytest.warns(RuntimeWarning, match="used ridge"):
        pred = kernel_regression(k, y, k, jitter=1e-2)
    used = 1e-2 * np.mean(np.diag(k))
    np.testing.assert_allclose(pred, k @ np.linalg.solve(k + used * np.eye(6), y), rtol=1e-8)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), ridge=st.floats(1e-6, 10.0), perm_seed=st.integers(0, 100))
def test_solution_solves_the_system_and_is_permutation_equivariant(seed, ridge, perm_seed):
    k, k_test = _pd_kernel(7, seed)
    y = np.random.default_rng(seed + 1).normal(size=(7, 2))
    alpha = np.asarray(solve(k, y, ridge=ridge))
    np.testing.assert_allclose((k + ridge * np.eye(7)) @ alpha, y, atol=1e-8 * (1 + np.abs(y).max()))
    p = np.random.default_rng(perm_seed).permutation(7)
    np.testing.assert_allclose(kernel_regression(k[np.ix_(p, p)], y[p], k_test[:, p], ridge=ridge),
                               kernel_regression(k, y, k_test, ridge=ridge), rtol=1e-8, atol=1e-10)


def test_one_hot_shifted():
    t = np.asarray(one_hot_shifted(np.array([2, 0]), 3))
    np.testing.assert_allclose(t, [[-0.1, -0.1, 0.9], [0.9, -0.1, -0.1]])
    np.testing.assert_allclose(one_hot_shifted(np.array([1]), 2, pos=1.0, neg=-1.0), [[-1.0, 1.0]])
    for bad in (np.array([3]), np.array([-1]), np.array([0.5]), np.array([[0]])):
        with pytest.raises(ValueError):
            one_hot_shifted(bad, 3)
    with pytest.raises(ValueError):
        one_hot_shifted(np.array([0]), 0)


def test_accuracy_and_mse():
    scores = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.4]])
    assert accuracy(scores, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(np.array([0.5, -0.2, 0.1]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(np.array([0.5, -0.2]), np.array([1, -1])) == 1.0
    assert mse(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        accuracy(scores, np.array([1, 0]))
    with pytest.raises(ValueError):
        accuracy(np.array([0.5, 0.1]), np.array([2, 0]))
    with pytest.raises(ValueError):
        mse(np.ones(2), np.ones(3))


@pytest.mark.parametrize("args,kwargs,match", [
    ((np.eye(3), np.ones(2), np.eye(3)), {}, "y_train"),
    ((np.ones((3, 2)), np.ones(3), np.eye(3)), {}, "square"),
    ((np.eye(3), np.ones(3), np.ones((2, 4))), {}, "k_test"),
    ((np.eye(3), np.array([1.0, np.nan, 0.0]), np.eye(3)), {}, "NaN"),
    ((np.eye(3), np.ones(3), np.eye(3)), {"ridge": -1.0}, "ridge"),
    ((np.eye(3), np.ones(3), np.eye(3)), {"solver": "lu"}, "solver"),
])
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kernel_regression(*args, **kwargs)


# ---------------------------------------------------------------- in place (overwrite_k=True)


def _spd(n, seed, dtype=np.float64):
    """A well-conditioned SPD matrix (eigenvalues in [1, 3]) and targets."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    k = (q * rng.uniform(1.0, 3.0, n)) @ q.T
    return ((k + k.T) / 2).astype(dtype), rng.normal(size=(n, 3))


@pytest.mark.parametrize("block", [7, 40, 1024])
def test_in_place_solve_matches_numpy_and_overwrites_k_with_its_factor(block, monkeypatch):
    monkeypatch.setattr("ntkrepro.regression.CHOLESKY_BLOCK", block)  # 7: six blocks, the last one of 5 rows
    k, y = _spd(40, 0)
    expected = np.linalg.solve(k + 0.5 * np.eye(40), y)
    factor = np.linalg.cholesky(k + 0.5 * np.eye(40)).T  # upper: K + rI = U^T U
    work = k.copy()
    work[np.tril_indices(40, -1)] = np.nan  # only the upper triangle is read
    alpha = solve(work, y, ridge=0.5, overwrite_k=True)
    assert isinstance(alpha, np.ndarray) and alpha.dtype == np.float64
    np.testing.assert_allclose(alpha, expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.triu(work), factor, rtol=1e-11, atol=1e-12)  # K itself now holds the factor
    np.testing.assert_allclose(solve(k.copy(), y[:, 0], ridge=0.5, overwrite_k=True), expected[:, 0], rtol=1e-11)


def test_in_place_float32_on_a_memory_map_and_kernel_regression(tmp_path):
    k, k_test = _pd_kernel(30, 3)
    y = np.random.default_rng(4).normal(size=(30, 2))
    reference = np.asarray(kernel_regression(k, y, k_test, ridge=1e-2))
    work = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float32, shape=(30, 30))
    work[:] = np.triu(k)
    pred = kernel_regression(work, y, k_test, ridge=1e-2, overwrite_k=True)
    assert pred.dtype == np.float32 and pred.shape == (3, 2)
    # float32 rounding of K and of the solve, amplified by the condition number of K + 0.01 I
    cond = np.linalg.cond(k + 1e-2 * np.eye(30))
    np.testing.assert_allclose(pred, reference, atol=10 * cond * np.finfo(np.float32).eps * np.abs(reference).max())
    work64 = np.triu(k)
    np.testing.assert_allclose(kernel_regression(work64, y, k_test, ridge=1e-2, overwrite_k=True), reference,
                               rtol=1e-9, atol=1e-12)


def test_in_place_refusals_before_anything_is_written():
    k, y = _spd(5, 1)
    for kwargs, match in (({"jitter": 1e-3}, "jitter=0"), ({"solver": "cg"}, "solver='cholesky'")):
        work = k.copy()
        with pytest.raises(ValueError, match=match):
            solve(work, y, overwrite_k=True, **kwargs)
        np.testing.assert_array_equal(work, k)
    for bad, match in ((jnp.asarray(k), "numpy float32 or float64"), (k.astype(int), "numpy float32"),
                       (k[:, :4].copy(), "square"), (k[::2, ::2], "C-contiguous"),
                       (np.asfortranarray(k), "C-contiguous")):
        with pytest.raises(ValueError, match=match):
            solve(bad, y[:bad.shape[0]], overwrite_k=True)
    work = k.copy()
    work[1, 3] = np.inf
    with pytest.raises(ValueError, match="upper triangle"):
        solve(work, y, overwrite_k=True)
    with pytest.raises(ValueError, match="k_test contains NaN"):
        kernel_regression(k.copy(), y, np.full((2, 5), np.nan), overwrite_k=True)
    work = k.copy()
    work[4, 4] = -1.0
    with pytest.raises(ValueError, match="not positive definite.*overwritten in place"):
        solve(work, y, overwrite_k=True)


def test_the_in_memory_solve_of_a_gram_beyond_memory_is_refused_with_the_in_place_hint(monkeypatch):
    from ntkrepro import blocks

    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 1000)
    k, y = _spd(20, 2)
    with pytest.raises(blocks.MemoryEstimateError, match="overwrite_k=True"):
        kernel_regression(k, y, k)
    np.testing.assert_allclose(solve(k.copy(), y, overwrite_k=True), np.linalg.solve(k, y), rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 10_000), ridge=st.floats(0.0, 5.0), block=st.integers(1, 12))
def test_property_in_place_equals_numpy_solve(n, seed, ridge, block):
    k, y = _spd(n, seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ntkrepro.regression.CHOLESKY_BLOCK", block)
        alpha = solve(k.copy(), y, ridge=ridge, overwrite_k=True)
    np.testing.assert_allclose(alpha, np.linalg.solve(k + ridge * np.eye(n), y), rtol=1e-10, atol=1e-12)


def test_in_place_progress_counts_every_unit_of_the_factorization(monkeypatch, capsys):
    monkeypatch.setattr("ntkrepro.regression.CHOLESKY_BLOCK", 7)  # 6 blocks: 5+4+..+0 panels, 15+10+6+3+1 updates
    k, y = _spd(40, 3)
    solve(k.copy(), y, overwrite_k=True, progress=True)
    assert "[cholesky n=40] 50/50 (100%)" in capsys.readouterr().err
