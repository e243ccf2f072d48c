"""Paper-specific math of the Arora et al. 2019 stages: downsampling, Table 1 / Table 2 summaries (checked
on the paper's own tables against hand-computed values), the kernel gradient-descent solution of the
Thm. 3.2 check, the log-log slope, the labels-and-solve accuracy and the CNN learning-rate unit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

STAGES = Path(__file__).resolve().parents[2] / "experiments" / "arora2019"


def _load(name):
    if str(STAGES) not in sys.path:
        sys.path.insert(0, str(STAGES))  # the stages import their sibling arora_common.py
    spec = importlib.util.spec_from_file_location(f"arora2019_{name}", STAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("arora_common")
table1 = _load("table1")
table2 = _load("table2")
theory = _load("theory_checks")

# Table 1 of the paper: depth -> CNN-V, CNTK-V, CNTK-V-2K, CNN-GAP, CNTK-GAP, CNTK-GAP-2K
PAPER_T1 = {3: [61.97, 64.47, 40.94, 57.96, 70.47, 49.71], 4: [62.12, 65.52, 42.54, 80.58, 75.93, 51.06],
            6: [64.03, 66.03, 43.43, 80.97, 76.73, 51.73], 11: [70.97, 65.90, 43.42, 75.45, 77.43, 51.92],
            21: [80.56, 64.09, 42.53, 81.23, 77.08, 52.22]}
# Table 2: depth -> RF-V, CNTK-V, RF-GAP, CNTK-GAP
PAPER_T2 = {3: [87.25, 92.15, 51.10, 71.05], 4: [87.78, 92.80, 52.85, 94.50], 6: [88.73, 93.10, 53.98, 95.25],
            11: [87.80, 93.05, 56.55, 95.40], 21: [85.35, 91.95, 90.65, 95.70]}


def _cells_t1(depths=(3, 4, 6, 11, 21)):
    cols = [c for c, _ in table1.COLUMNS]
    return {(c, d): PAPER_T1[d][i] for d in depths for i, c in enumerate(cols)}


def test_downsample_matches_a_loop_and_rejects_bad_factors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 4, 3))
    out = common.downsample(x, 2)
    assert out.shape == (2, 3, 2, 3)
    for n in range(2):
        for i in range(3):
            for j in range(2):
                window = x[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                np.testing.assert_allclose(out[n, i, j], window.mean(axis=(0, 1)))
    assert common.downsample(x, 1) is x
    with pytest.raises(ValueError, match="does not divide"):
        common.downsample(x, 4)
    with pytest.raises(ValueError, match="positive integer"):
        common.downsample(x, 0)
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        common.downsample(x[0], 2)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4))
def test_downsample_preserves_the_image_mean(factor, blocks, channels):
    x = np.random.default_rng(factor * 7 + blocks).standard_normal((2, factor * blocks, factor * 2, channels))
    pooled = common.downsample(x, factor)
    np.testing.assert_allclose(pooled.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-12)


def test_kernel_kwargs_fix_first_last_for_gap_only():
    kw = dict(depth=3, filter_size=3, dtype="float32")
    assert common.kernel_kwargs(readout="vanilla", **kw)["fix_first_last"] is False
    assert common.kernel_kwargs(readout="gap", **kw)["fix_first_last"] is True
    with pytest.raises(ValueError, match="readout"):
        common.kernel_kwargs(readout="max", **kw)


def test_table1_summary_on_the_papers_own_table():
    m = table1.summarize(_cells_t1())
    assert m["acc_cntk_gap_d11"] == 77.43 and m["acc_cnn_v_d21"] == 80.56
    assert m["best_kernel_acc"] == 77.43 and m["best_kernel_depth"] == 11 and m["best_kernel_is_gap"] is True
    assert m["best_depth_cntk_v"] == 6
    # by hand: GAP - V per depth = 6.00, 10.41, 10.70, 11.53, 12.99
    assert m["gap_gain_cntk"] == pytest.approx((6.00 + 10.41 + 10.70 + 11.53 + 12.99) / 5)
    assert m["gap_gain_cnn"] == pytest.approx((-4.01 + 18.46 + 16.94 + 4.48 + 0.67) / 5)
    assert m["gap_gain_cntk_2k"] == pytest.approx((8.77 + 8.52 + 8.30 + 8.50 + 9.69) / 5)
    assert m["gap_beats_vanilla_cntk"] is True
    assert m["cnn_minus_cntk_best"] == pytest.approx(81.23 - 77.43)
    # Spearman by hand: no ties, rho = 1 - 6 sum d^2 / (n (n^2 - 1)); the rank differences are
    # (1, 0, 0, 0, 1 | 0, 0, 0, 1, 1) in the order of the depths (vanilla, then GAP) -> sum d^2 = 4
    assert m["rank_corr_2k_full"] == pytest.approx(1 - 6 * 4 / (10 * 99))
    assert m["rank_corr_2k_full_vanilla"] == pytest.approx(1 - 6 * 2 / (5 * 24))


def test_table1_summary_of_a_partial_table_leaves_the_rest_unmeasured():
    cells = {k: v for k, v in _cells_t1((3, 4)).items() if not k[0].startswith("cnn")}
    m = table1.summarize(cells)
    assert m["acc_cntk_v_d21"] is None and m["acc_cnn_v_d3"] is None
    assert m["gap_gain_cnn"] is None and m["cnn_minus_cntk_best"] is None
    assert m["rank_corr_2k_full"] == pytest.approx(1.0)  # 4 cells, same order in full and 2K
    assert m["rank_corr_2k_full_gap"] is None  # 2 depths are too few for a rank correlation
    cells[("cntk_gap", 4)] = 60.0  # below CNTK-V at depth 4
    assert table1.summarize(cells)["gap_beats_vanilla_cntk"] is False


def test_rank_correlation_is_undefined_for_constant_or_short_lists():
    assert table1.rank_correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert table1.rank_correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None
    assert table1.rank_correlation([1.0, 2.0], [1.0, 2.0]) is None


def test_table2_summary_on_the_papers_own_table():
    columns = ("rf_v", "cntk_v", "rf_gap", "cntk_gap")
    cells = {(c, d): PAPER_T2[d][i] for d in PAPER_T2 for i, c in enumerate(columns)}
    m = table2.summarize(cells)
    assert m["exact_beats_rf"] is True
    assert m["exact_minus_rf_v"] == pytest.approx((4.90 + 5.02 + 4.37 + 5.25 + 6.60) / 5)
    assert m["rf_gap_max_acc_upto_d11"] == 56.55  # depth 21's 90.65 is excluded
    cells[("rf_v", 6)] = 99.0
    assert table2.summarize(cells)["exact_beats_rf"] is False


def test_kernel_gd_prediction_matches_explicit_gradient_descent():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((7, 5))
    k_all = a @ a.T + 0.5 * np.eye(7)
    k_tr, k_te = k_all[:5, :5], k_all[5:, :5]
    y = rng.standard_normal((5, 2))
    eta, steps = 0.7 * 5 / np.linalg.eigvalsh(k_tr).max(), 40
    u, f = np.zeros((5, 2)), np.zeros((2, 2))
    for _ in range(steps):  # GD on (1/2n) sum ||u - y||^2 of the linear model with kernel K
        residual = u - y
        u, f = u - eta / 5 * k_tr @ residual, f - eta / 5 * k_te @ residual
    np.testing.assert_allclose(theory.kernel_gd_prediction(k_tr, k_te, y, learning_rate=eta, steps=steps), f,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theory.kernel_gd_prediction(k_tr, k_tr, y, learning_rate=eta, steps=steps), u,
                               rtol=1e-10, atol=1e-12)
    long = theory.kernel_gd_prediction(k_tr, k_te, y, learning_rate=eta, steps=100_000)
    np.testing.assert_allclose(long, k_te @ np.linalg.solve(k_tr, y), rtol=1e-8)
    with pytest.raises(ValueError, match="positive definite"):
        theory.kernel_gd_prediction(-k_tr, k_te, y, learning_rate=eta, steps=3)


@settings(max_examples=30, deadline=None)
@given(st.floats(-2.0, 2.0), st.floats(0.01, 100.0))
def test_loglog_slope_recovers_a_power_law(slope, scale):
    x = np.array([8.0, 16.0, 64.0, 256.0])
    s, b = common.loglog_slope(x, scale * x**slope)
    assert s == pytest.approx(slope, abs=1e-9) and b == pytest.approx(np.log(scale), abs=1e-8)


def test_loglog_slope_rejects_bad_input():
    with pytest.raises(ValueError):
        common.loglog_slope([1.0], [1.0])
    with pytest.raises(ValueError):
        common.loglog_slope([1.0, 2.0], [0.0, 1.0])


def test_regression_accuracy_uses_shifted_one_hot_targets_and_argmax():
    # identity train Gram: the prediction for a test point is the K_test-weighted sum of the targets
    k_tr = np.eye(3)
    k_te = np.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.9], [0.4, 0.5, 0.0]])
    acc = common.regression_accuracy(k_tr, k_te, np.array([0, 1, 2]), np.array([0, 2, 0]), num_classes=3,
                                     ridge=0.0, label_pos=0.9, label_neg=-0.1)
    # predictions K_test Y: row 1 -> class 0 (right); row 2: (-0.11, 0.09, 0.79) -> 2 (right);
    # row 3: (0.31, 0.41, -0.09) -> 1 (wrong)
    assert acc == pytest.approx(100 * 2 / 3)


def test_cnn_learning_rate_unit_is_the_inverse_mean_ntk_diagonal():
    from ntkrepro.nets import cnn

    x = np.random.default_rng(2).standard_normal((4, 5, 5, 1))
    net = cnn(depth=3, channels=4, out_dim=2, readout="gap", fix_first_last=True, output_scale=0.5)
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    flat, unravel = jax.flatten_util.ravel_pytree(params[1])  # the only trainable layer (GAP)

    def out(theta, xi, j):
        return net.apply_fn([params[0], unravel(theta), params[2]], xi[None])[0, j]

    # the per-output kernel: the mean over the 2 outputs of |d f_j / d theta|^2
    diag = [np.mean([float(jnp.sum(jax.grad(out)(flat, xi, j) ** 2)) for j in range(2)]) for xi in x]
    assert table1.cnn_learning_rate(net, params, x, 1.5) == pytest.approx(1.5 / np.mean(diag), rel=1e-8)


def test_centred_cnn_starts_at_zero_and_keeps_the_nets_ntk():
    from ntkrepro.empirical import empirical_ntk
    from ntkrepro.nets import cnn

    x = np.random.default_rng(3).standard_normal((3, 4, 4, 1))
    net = cnn(depth=3, channels=6, out_dim=2)
    init, apply, mask = theory.centred_cnn(net)
    pair = init(jax.random.PRNGKey(1), x.shape)
    np.testing.assert_array_equal(np.asarray(apply(pair, x)), 0.0)
    np.testing.assert_allclose(empirical_ntk(apply, pair, x, trainable=mask),
                               empirical_ntk(net.apply_fn, pair[0], x), rtol=1e-10)
    moved = [jax.tree.map(lambda w: w + 0.1, pair[0]), pair[1]]
    np.testing.assert_allclose(apply(moved, x), net.apply_fn(moved[0], x) - net.apply_fn(pair[0], x), rtol=1e-12)
