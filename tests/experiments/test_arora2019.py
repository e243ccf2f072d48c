"""Paper-specific math of the Arora et al. 2019 stages: downsampling, Table 1 / Table 2 summaries (checked
on the paper's own tables against hand-computed values), the kernel gradient-descent solution of the
Thm. 3.2 check, the rate metrics (fit, standard error, local slopes), the labels-and-solve accuracy, the
CNN learning-rate unit, the CNN validation split and the selection on it (never on test), and the
registry: premises, the paper's text against its own Table 1, degenerate sweeps."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import linregress

from ntkrepro.claims import evaluate, load_registry
from ntkrepro.config import premise_config, registered_config

ROOT = Path(__file__).resolve().parents[2]
from ntkrepro.stage import stage_module  # noqa: E402

STAGES = ROOT / "experiments" / "arora2019"


def _load(name):
    """A module of experiments/arora2019/ (the stage's folder importable for its sibling helpers)."""
    return stage_module(f"arora2019/{name}")


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


def test_table2_stand_in_is_the_hard_pair_and_metrics_json_records_it(monkeypatch, tmp_path):
    """Without CIFAR-10, Table 2 at smoke reads the declared stand-in pair (Fashion-MNIST T-shirt/top vs
    Shirt, not the saturated first two classes): both splits in metrics.json name it, its stored labels and
    the CIFAR-2 it stands in for, and the kernels see images of exactly those two classes (as loaded from the
    whole of Fashion-MNIST by their stored labels)."""
    import json

    from ntkrepro.data import DataUnavailable, load
    from ntkrepro.stage import execute

    seen = []

    def fake_blocks(pair, **_):  # the declared K(train, train), K(test, train): their images
        x_tr, x_te = pair[0].x1, pair[1].x1
        seen.append((np.asarray(x_tr), np.asarray(x_te)))
        # float64: a float32 BLAS x x^T is not symmetric to kernel_regression's 1e-10 on every CPU
        f_tr, f_te = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (x_tr, x_te))
        return f_tr @ f_tr.T + np.eye(len(x_tr)), f_te @ f_tr.T

    def fake_rf(net, x_all, n_train, *, key):
        f = np.asarray(x_all, np.float64).reshape(len(x_all), -1)
        gram = f @ f[:n_train].T
        return gram[:n_train] + np.eye(n_train), gram[n_train:]

    monkeypatch.setattr(table2, "cntk_blocks", fake_blocks)
    monkeypatch.setattr(table2, "random_feature_gram", fake_rf)
    cfg = _compose("table2", "tracking.enabled=false", "progress=false", f"results_root={tmp_path}",
                   f"data_cache={tmp_path / 'cache'}")
    try:
        load("cifar2", "test", n=1, cache_dir=tmp_path / "cache", allow_download=False)
        pytest.skip("CIFAR-10 is present: no stand-in is read")
    except DataUnavailable:
        pass
    record = execute(cfg, table2.run, out_dir=tmp_path / "out", params_schema=table2.Params)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for rec in (record, written):
        assert [(s["split"], s["name"], s["substituted_for"], s["source_labels"], s["class_names"])
                for s in rec["splits"]] == [
            (split, "fashion_mnist_tshirt_shirt", "cifar2", [0, 6], ["T-shirt/top", "Shirt"])
            for split in ("train", "test")]
    # every image the kernels saw is a Fashion-MNIST T-shirt/top or Shirt: its nearest raw image (pooled as
    # the stage pools; each image centred and scaled, which undoes the standardization) carries label 0 or 6
    def unit(rows):
        rows = rows.reshape(len(rows), -1).astype(np.float64)
        rows = rows - rows.mean(axis=1, keepdims=True)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    for split, x in zip(("train", "test"), seen[0], strict=True):
        raw = load("fashion_mnist", split, cache_dir=tmp_path / "cache")
        pooled = unit(common.downsample(raw.x, cfg.params.downsample))
        match = unit(x) @ pooled.T
        assert len(x) == cfg.data[f"n_{split}"] and match.max(axis=1).min() > 1 - 1e-6
        assert sorted(set(raw.y[match.argmax(axis=1)].tolist())) == [0, 6]


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
def test_rate_metrics_recover_a_power_law_with_zero_standard_error(slope, scale):
    x = np.array([8.0, 16.0, 64.0, 256.0])
    metrics, unc, fit = theory.rate_metrics(x, scale * x**slope, "r")
    assert metrics["r"] == pytest.approx(slope, abs=1e-9) and fit.intercept == pytest.approx(np.log(scale), abs=1e-8)
    assert metrics["r_local_slopes"] == pytest.approx([round(slope, 3)] * 3, abs=1e-3)
    assert unc["r"]["n"] == 4 and unc["r"]["se"] == pytest.approx(0.0, abs=1e-7) and unc["r"]["over"] == "fit points"


def test_rate_metrics_expose_a_drifting_exponent():
    # the case: local slopes -0.03, -0.25, -1.34 behind a fitted -0.51
    w = np.array([32.0, 64.0, 128.0, 256.0])
    e = 0.1 * np.exp(np.concatenate([[0.0], np.cumsum(np.array([-0.03, -0.25, -1.34]) * np.log(2.0))]))
    metrics, unc, _ = theory.rate_metrics(w, e, "init_rate_v")
    assert metrics["init_rate_v_local_slopes"] == [-0.03, -0.25, -1.34]
    ref = linregress(np.log(w), np.log(e))  # independent least squares with the slope's standard error
    assert metrics["init_rate_v"] == pytest.approx(ref.slope, rel=1e-10)
    assert unc["init_rate_v"]["se"] == pytest.approx(ref.stderr, rel=1e-8) and unc["init_rate_v"]["n"] == 4
    assert ref.stderr > 0.2  # a fitted -0.51 with this drift is far from a clean -1/2


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


# ---- Table 1: the CNN validation split and the selection on it ------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(12, 80), st.integers(1, 11), st.integers(0, 3))
def test_validation_split_is_disjoint_from_the_fit_images_and_covers_the_training_set(n, n_val, seed):
    labels = np.arange(n) % 10
    fit, val = table1.validation_split(labels, n_val, seed=seed)
    assert len(val) == n_val and len(fit) == n - n_val
    assert not set(fit) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), np.arange(n))
    again = table1.validation_split(labels, n_val, seed=seed)[1]
    np.testing.assert_array_equal(val, again)  # seeded


@pytest.mark.parametrize("n_val", [0, 20, 25, 2.5, True])
def test_validation_split_refuses_an_empty_side(n_val):
    with pytest.raises(ValueError, match="params.cnn.n_val"):
        table1.validation_split(np.zeros(20, dtype=int), n_val, seed=0)


def _grid(rows):
    import pandas as pd

    cols = ["readout", "depth", "channels", "val_acc", "test_acc", "diverged_at"]
    return pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])


GRID = [("vanilla", 3, 8, 50.0, 40.0, None), ("vanilla", 3, 16, 60.0, 30.0, None),
        ("vanilla", 3, 32, np.nan, np.nan, 7.0), ("gap", 3, 8, 55.0, 70.0, None),
        ("gap", 3, 16, 55.0, 10.0, None), ("gap", 6, 8, np.nan, np.nan, 3.0)]


def test_cnn_cells_are_the_test_accuracy_of_the_best_validation_run():
    cells, diverged, chosen = table1.select_cnn_cells(_grid(GRID))
    # vanilla d3: val 60 beats 50 -> its test accuracy 30 (not the best test accuracy, 40);
    # gap d3: a tie at val 55 -> the first in grid order (test 70); gap d6: its only run diverged
    assert cells == {("cnn_v", 3): 30.0, ("cnn_gap", 3): 70.0}
    assert diverged == {("cnn_v", 3): (1, 3), ("cnn_gap", 3): (0, 2), ("cnn_gap", 6): (1, 1)}
    assert chosen.channels.tolist() == [16, 8]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=6, max_size=6))
def test_cnn_selection_never_reads_the_test_accuracies(poison):
    """Overwrite every test accuracy (a poisoned test set): the selected runs stay the same, and each
    cell is the poisoned test accuracy of the run chosen on validation."""
    clean = table1.select_cnn_cells(_grid(GRID))[2]
    poisoned_grid = _grid([r[:4] + (p if r[5] is None else np.nan, r[5]) for r, p in zip(GRID, poison, strict=True)])
    cells, _, chosen = table1.select_cnn_cells(poisoned_grid)
    assert chosen.index.tolist() == clean.index.tolist()
    assert cells == {("cnn_v", 3): poison[1], ("cnn_gap", 3): poison[3]}


def _compose(artifact, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment=arora2019/{artifact}", "scale=smoke", *overrides])


def test_table1_stage_trains_on_fit_images_selects_on_validation_and_reports_test(monkeypatch, tmp_path):
    """The stage with the kernels and the SGD run replaced by stand-ins that record their inputs: the
    validation images are training images, none of them is trained on or is a test image, and each CNN
    cell is the test accuracy of the run with the best validation accuracy (here: the worst on test)."""
    calls = []

    def fake_blocks(pair, **_):
        x_tr, x_te = pair[0].x1, pair[1].x1
        f_tr, f_te = x_tr.reshape(len(x_tr), -1), x_te.reshape(len(x_te), -1)
        return f_tr @ f_tr.T + np.eye(len(x_tr)), f_te @ f_tr.T

    def fake_train(x_fit, t_fit, x_val, t_val, x_te, y_te, *, lr_units, **kw):
        calls.append((np.asarray(x_fit), np.asarray(x_val), np.asarray(x_te)))
        return {"readout": kw["readout"], "depth": kw["depth"], "channels": kw["channels"], "lr_units": lr_units,
                "kappa": kw["kappa"], "diverged_at": None, "val_acc": 10.0 * lr_units, "test_acc": 100.0 - lr_units,
                "loss_curve": np.ones(3)}

    monkeypatch.setattr(table1, "cntk_blocks", fake_blocks)
    monkeypatch.setattr(table1, "train_cnn", fake_train)
    cfg = _compose("table1", "params.cnn.lrs=[1.0,3.0,2.0]", f"results_root={tmp_path}", "progress=false")
    result = table1.run(cfg)
    x_tr = np.asarray(table1.load(cfg).x_train)
    rows = {r.tobytes(): i for i, r in enumerate(x_tr)}
    x_fit, x_val, x_te = calls[0]
    fit_ids = {rows[r.tobytes()] for r in x_fit}
    val_ids = {rows[r.tobytes()] for r in x_val}  # KeyError if a validation image were not a training image
    assert len(val_ids) == cfg.params.cnn.n_val and len(fit_ids) == len(x_tr) - cfg.params.cnn.n_val
    assert not fit_ids & val_ids
    assert not {r.tobytes() for r in x_te} & set(rows)
    assert result.sizes["n_cnn_val"] == cfg.params.cnn.n_val and result.sizes["n_cnn_fit"] == len(fit_ids)
    assert result.metrics["acc_cnn_v_d3"] == 97.0 and result.metrics["acc_cnn_gap_d3"] == 97.0  # lr 3: best val
    assert result.diverged["acc_cnn_v_d3"] == {"diverged": 0, "runs": 3}
    assert any("validation" in note for note in result.notes)


@pytest.mark.parametrize(("artifact", "module", "override", "message"), [
    ("table1", table1, "params.cnn.lrs=[]", "params.cnn.lrs"),
    ("table1", table1, "params.cnn.depths=[]", "params.cnn.depths"),
    ("table1", table1, "params.gap.depths=[]", "params.gap.depths"),
    ("theory_checks", theory, "params.init.widths=[32]", "params.init.widths"),
    ("theory_checks", theory, "params.trained.widths=[16,16]", "params.trained.widths"),
])
def test_stages_refuse_degenerate_sweeps_in_their_typed_params(artifact, module, override, message):
    """An empty CNTK / CNN sweep or fewer than 2 distinct theorem widths: refused by the stage's typed
    Params, which ntkrepro.stage checks before run() (tests/experiments/test_bad_input_arora2019.py)."""
    from ntkrepro.config import ConfigError, validate

    with pytest.raises(ConfigError, match=f"^error: {message}: "):
        validate(_compose(artifact, override), module.Params)


def test_table1_refuses_an_empty_training_side_before_compute(monkeypatch):
    """n_val = data.n_train (smoke: 48) leaves the CNNs no image to train on: the validation
    (Params.check_config) refuses it before loading data or computing a kernel."""
    from ntkrepro.config import validate

    with pytest.raises(ValueError, match=r"^error: params.cnn.n_val: must be in \[1, data.n_train - 1 = 47\]"):
        validate(_compose("table1", "params.cnn.n_val=48"), table1.Params)


def test_rank_correlation_claim_reads_within_each_readout():
    m = table1.summarize(_cells_t1())
    assert m["rank_corr_2k_full_within_min"] == pytest.approx(0.9)
    # give each readout's 2K values the reverse of its full-data ranking: the pooled rho stays above 0.5
    # (GAP above vanilla in both columns) while the within-readout rho is -1
    cells = _cells_t1()
    depths = np.array((3, 4, 6, 11, 21))
    for col in ("cntk_v", "cntk_gap"):
        by_full = depths[np.argsort([cells[(col, d)] for d in depths])]  # ascending full-data accuracy
        values = np.sort([cells[(col + "_2k", d)] for d in depths])[::-1]  # descending 2K accuracy
        cells.update({(col + "_2k", int(d)): float(v) for d, v in zip(by_full, values, strict=True)})
    m = table1.summarize(cells)
    assert m["rank_corr_2k_full_vanilla"] == pytest.approx(-1.0)
    assert m["rank_corr_2k_full_within_min"] == pytest.approx(-1.0)
    assert m["rank_corr_2k_full"] == pytest.approx(1 - 6 * 80 / (10 * 99))


# ---- the registry: premises, the paper against its own table ---------------------------------------------

CLAIMS = {c.id: c for c in load_registry(STAGES / "claims.yaml")}


def test_the_papers_text_against_its_own_table_1():
    assert CLAIMS["t1_gap_gain_cntk"].table_value == pytest.approx(10.326)
    assert CLAIMS["t1_gap_gain_cnn"].table_value == pytest.approx(7.308)
    assert CLAIMS["t1_cnn_minus_cntk"].table_value == pytest.approx(81.23 - 77.43)
    assert CLAIMS["t1_gap_gain_cntk_2k"].table_value == pytest.approx(8.756)
    # the same numbers as the stage's summary of the paper's table
    m = table1.summarize(_cells_t1())
    assert m["gap_gain_cntk"] == pytest.approx(CLAIMS["t1_gap_gain_cntk"].table_value)
    assert m["gap_gain_cnn"] == pytest.approx(CLAIMS["t1_gap_gain_cnn"].table_value)
    assert m["cnn_minus_cntk_best"] == pytest.approx(CLAIMS["t1_cnn_minus_cntk"].table_value)


def _record(artifact, metrics, scale="paper", uncertainty=None, **config_changes):
    paper = premise_config(registered_config(f"arora2019/{artifact}", "paper"))
    run = premise_config(registered_config(f"arora2019/{artifact}", scale))
    run.update(config_changes)
    registered = premise_config(registered_config(f"arora2019/{artifact}", scale))
    overrides = {k: {"registered": registered.get(k), "run": v} for k, v in config_changes.items()}
    splits = [{"split": s, "name": "cifar10", "n": None, "substituted_for": None} for s in ("train", "test")]
    return {"paper": "arora2019", "artifact": artifact, "scale": scale, "metrics": metrics, "config": run,
            "paper_config": paper, "overrides": overrides, "splits": splits, "uncertainty": uncertainty or {}}


def test_a_run_matching_table_1_reads_paper_inconsistent_not_deviates():
    m = table1.summarize(_cells_t1())
    for cid in ("t1_gap_gain_cntk", "t1_gap_gain_cnn", "t1_cnn_minus_cntk"):
        r = evaluate(CLAIMS[cid], _record("table1", m))
        assert r.status == "paper inconsistent" and r.verdict == "reproduced", (cid, r.status, r.detail)
    assert evaluate(CLAIMS["t1_gap_gain_cntk_2k"], _record("table1", m)).status == "reproduced"
    assert evaluate(CLAIMS["t1_rank_corr_2k_full"], _record("table1", m)).status == "reproduced"


def test_table_1_claims_need_the_papers_cifar10_setting():
    m = table1.summarize(_cells_t1())
    quick = _record("table1", m, scale="quick")
    for cid in ("t1_cntk_gap_d11", "t1_cntk_v_2k_d3", "t1_cnn_v_d21", "t1_gap_beats_vanilla_cntk",
                "t1_rank_corr_2k_full", "t1_best_kernel_is_gap"):
        assert evaluate(CLAIMS[cid], quick).status == "not run at this scale", cid
    # the 2K cells need the 2,000-image subset of at least 2,000 training images, not all 50,000
    small = _record("table1", m, **{"data.n_train": 2000})
    assert evaluate(CLAIMS["t1_cntk_v_2k_d3"], small).status == "reproduced"
    assert evaluate(CLAIMS["t1_cntk_v_d3"], small).status == "not comparable"
    # downsampled images, a smaller CNN grid or a 2K subset of another size: never reproduced
    def status(cid, **changes):
        return evaluate(CLAIMS[cid], _record("table1", m, **changes)).status

    assert status("t1_cntk_gap_d11", **{"params.downsample": 2}) == "not comparable"
    assert status("t1_cnn_gap_d21", **{"params.cnn.lrs": [1.0]}) == "not comparable"
    assert status("t1_cntk_gap_2k_d4", **{"params.subset.n_train": 1000}) == "not comparable"
    # keys a claim does not depend on: the CNN grid for a kernel cell, the subset's seed for a 2K cell
    assert status("t1_cntk_gap_d11", **{"params.cnn.lrs": [1.0]}) == "reproduced"
    assert status("t1_cntk_v_2k_d3", **{"params.subset.seed": 5}) == "reproduced"


def test_abstract_10pct_above_novak_against_the_cited_number():
    """The abstract's '10% higher than Novak et al.': the best CNTK at 67.14% (Novak et al. 2019, CNN-GP,
    cited) + 10 points; the paper's own best CNTK (77.43) agrees within the band."""
    claim = CLAIMS["t1_abstract_10pct_above_novak"]
    assert claim.paper_value == pytest.approx(67.14 + 10) and claim.table_value == pytest.approx(77.43)
    m = table1.summarize(_cells_t1())
    assert evaluate(claim, _record("table1", m)).status == "reproduced"
    assert evaluate(claim, _record("table1", {**m, "best_kernel_acc": 75.5})).status == "deviates"
    assert evaluate(claim, _record("table1", m, scale="quick")).status == "not run at this scale"


def _theory_metrics(slope, se):
    return {"init_rate_v": slope, "init_rate_gap": slope, "init_rate_v_local_slopes": [slope] * 5,
            "init_rate_gap_local_slopes": [slope] * 5, "trained_rate": -0.4,
            "trained_rate_local_slopes": [-0.4] * 6, "trained_gap_decreases": True}, \
        {"init_rate_v": {"se": se, "n": 6, "over": "fit points"}}


@pytest.mark.parametrize(("slope", "se", "scale", "status"), [
    (-0.5, 0.02, "paper", "reproduced"),
    (-0.51, 0.30, "paper", "inconclusive"),   # the drifting fit: the interval straddles the band
    (-0.9, 0.05, "paper", "deviates"),
    (-0.5, 0.02, "quick", "not run at this scale"),  # 4x4 images, 16 points, fewer widths
])
def test_theorem_3_1_rate_is_judged_with_its_standard_error_at_the_papers_setting(slope, se, scale, status):
    metrics, unc = _theory_metrics(slope, se)
    assert evaluate(CLAIMS["thm31_rate_vanilla"], _record("theory_checks", metrics, scale, unc)).status == status
    assert evaluate(CLAIMS["thm32_trained_net_approaches_kernel"],
                    _record("theory_checks", metrics, scale, unc)).status == (
        "reproduced" if scale == "paper" else "not run at this scale")


def test_theorem_checks_need_the_papers_widths():
    metrics, unc = _theory_metrics(-0.5, 0.02)
    r = evaluate(CLAIMS["thm31_rate_vanilla"], _record("theory_checks", metrics, "paper", unc,
                                                       **{"params.init.widths": [32, 64]}))
    assert r.status == "not comparable" and "params.init.widths" in r.detail
    # the trained-net check's settings do not change the check at initialization
    r = evaluate(CLAIMS["thm31_rate_vanilla"], _record("theory_checks", metrics, "paper", unc,
                                                       **{"params.trained.steps": 10}))
    assert r.status == "reproduced"
