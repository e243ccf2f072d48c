"""Paper-specific math of the Golikov et al. 2022 stages: Monte Carlo vs exact kernel metrics (errors,
groups, kernel shape, U-statistic bias, t-statistic, slopes, the streamed bias probe, the batched draws),
the Gram-cost timing and exponent fit, and training_costs' counting, extrapolation and timed computations."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from scipy import stats

from ntkrepro.empirical import empirical_ntk, monte_carlo_kernel
from ntkrepro.stats import relative_error

STAGES = Path(__file__).resolve().parents[2] / "experiments" / "golikov2022"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"golikov2022_{name}", STAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (the typed Params) look their module up
    spec.loader.exec_module(module)
    return module


mc = _load("mc_vs_exact")
gram_cost = _load("gram_cost")
tc = _load("training_costs")

finite = st.floats(-10, 10, allow_nan=False, allow_subnormal=False)


# ---------------------------------------------------------------- mc_vs_exact: metrics


def test_group_means_are_disjoint_consecutive_groups():
    samples = np.arange(10.0)[:, None] * np.ones((1, 2))
    np.testing.assert_allclose(mc.group_means(samples, 3), [[1.0, 1.0], [4.0, 4.0], [7.0, 7.0]])
    np.testing.assert_allclose(mc.group_means(samples, 10), [[4.5, 4.5]])
    with pytest.raises(ValueError, match="group size"):
        mc.group_means(samples, 11)


def test_kernel_shape_known_value():
    k = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    # off-diagonal mean 4/6, diagonal mean 2
    assert mc.kernel_shape(k) == pytest.approx((4 / 6) / 2)
    with pytest.raises(ValueError, match="square"):
        mc.kernel_shape(np.ones((2, 3)))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.floats(0.01, 100.0), st.integers(0, 2**31 - 1))
def test_kernel_shape_is_scale_invariant(n, scale, seed):
    a = np.random.default_rng(seed).standard_normal((n, n + 1))
    k = a @ a.T + np.eye(n)
    assert mc.kernel_shape(scale * k) == pytest.approx(mc.kernel_shape(k), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 7), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_squared_bias_estimate_is_the_pairwise_u_statistic(count, size, seed):
    rng = np.random.default_rng(seed)
    dev = rng.standard_normal((count, size, size))
    brute = np.mean([np.sum(dev[i] * dev[j]) for i in range(count) for j in range(count) if i != j])
    estimate = mc.squared_bias_estimate(dev.sum(0), float(np.sum(dev**2)), count)
    assert estimate == pytest.approx(brute, rel=1e-9, abs=1e-12)


def test_squared_bias_estimate_is_unbiased_where_the_plug_in_is_not():
    rng = np.random.default_rng(0)
    bias = np.array([0.3, -0.4])  # ||b||^2 = 0.25
    estimates, plug_in = [], []
    for _ in range(4000):
        dev = bias + rng.standard_normal((5, 2))
        estimates.append(mc.squared_bias_estimate(dev.sum(0), float(np.sum(dev**2)), 5))
        plug_in.append(float(np.sum(dev.mean(0) ** 2)))
    se = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - 0.25) < 4 * se
    assert np.mean(plug_in) == pytest.approx(0.25 + 2 / 5, abs=0.05)  # + tr(Cov)/N
    with pytest.raises(ValueError, match="2 draws"):
        mc.squared_bias_estimate(np.zeros(2), 0.0, 1)


@settings(max_examples=30, deadline=None)
@given(st.lists(finite, min_size=2, max_size=12).filter(lambda v: np.std(v) > 1e-3))
def test_t_statistic_matches_scipy(values):
    assert mc.t_statistic(values) == pytest.approx(stats.ttest_1samp(values, 0.0).statistic, rel=1e-9)


def test_t_statistic_of_identical_values_and_bad_input():
    assert mc.t_statistic([2.0, 2.0, 2.0]) == math.inf
    with pytest.raises(ValueError, match="2 replicates"):
        mc.t_statistic([1.0])


def test_c_sigma_keeps_the_second_moment():
    assert mc.c_sigma("relu") == pytest.approx(2.0)
    assert mc.c_sigma("erf") == pytest.approx(1.0 / ((2 / np.pi) * np.arcsin(2 / 3)))


def test_powers_of_two_end_at_the_limit():
    assert mc._powers_of_two(8) == [1, 2, 4, 8]
    assert mc._powers_of_two(12) == [1, 2, 4, 8, 12]


# ---------------------------------------------------------------- mc_vs_exact: draws and the bias probe


def _tiny(arch, depth=3):
    net = mc.make_network(arch, depth=depth, width=3, activation="relu", readout="gap", dtype=np.float32)
    shape = (5, 3) if arch == "fc" else (4, 3, 3, 1)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return net, x


@pytest.mark.parametrize("arch", ["fc", "cnn"])
def test_ntk_draws_equal_the_library_monte_carlo_draws(arch):
    net, x = _tiny(arch)
    key = jax.random.PRNGKey(3)
    draws = mc.ntk_draws(net, jax.random.split(key, 4), x)
    library = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=4, keep_samples=True,
                                 implementation="ntvp")
    np.testing.assert_allclose(draws, np.asarray(library.samples), rtol=2e-4, atol=2e-5)
    params = net.init_fn(jax.random.split(key, 4)[1], x.shape)
    np.testing.assert_allclose(draws[1], np.asarray(empirical_ntk(net.apply_fn, params, x)), rtol=2e-4,
                               atol=2e-5)


def test_bias_probe_streaming_equals_the_direct_computation():
    net, x = _tiny("fc")
    exact = np.eye(5) + 0.5
    key = jax.random.PRNGKey(7)
    n_groups, group_size, checkpoints = 2, 6, [1, 2, 4, 6]
    probe = mc.bias_probe(net, key, x, exact, n_groups=n_groups, group_size=group_size, batch=4,
                          checkpoints=checkpoints)
    keys = jax.random.split(key, n_groups * group_size)
    draws = mc.ntk_draws(net, keys, x).reshape(n_groups, group_size, 5, 5)
    norm = np.linalg.norm(exact)
    for g in range(n_groups):
        for c, m in enumerate(checkpoints):
            mean = draws[g, :m].mean(0)
            assert probe["error"][g, c] == pytest.approx(np.linalg.norm(mean - exact) / norm, rel=1e-9)
            assert probe["shape"][g, c] == pytest.approx(mc.kernel_shape(mean), rel=1e-9)
        assert probe["group_shapes"][g] == pytest.approx(mc.kernel_shape(draws[g].mean(0)), rel=1e-9)
    flat = draws.reshape(-1, 5, 5)
    dev = flat - exact
    assert probe["pooled_shape"] == pytest.approx(mc.kernel_shape(flat.mean(0)), rel=1e-9)
    assert probe["bias2"] == pytest.approx(
        mc.squared_bias_estimate(dev.sum(0), float(np.sum(dev**2)), len(flat)) / norm**2, rel=1e-9)
    assert probe["mse1"] == pytest.approx(np.mean(np.sum(dev**2, axis=(1, 2))) / norm**2, rel=1e-9)


def test_summarize_probe():
    probe = {"group_shapes": np.array([0.9, 1.1, 1.0, 1.2]), "pooled_shape": 1.05, "bias2": 0.04,
             "mse1": 0.5}
    s = mc.summarize_probe(probe, exact_shape=1.0)
    deltas = np.array([-0.1, 0.1, 0.0, 0.2])
    assert s["shape_bias"] == pytest.approx(0.05)
    assert s["shape_bias_se"] == pytest.approx(deltas.std(ddof=1) / 2)
    assert s["shape_bias_t"] == pytest.approx(stats.ttest_1samp(deltas, 0.0).statistic)
    assert s["frobenius_bias"] == pytest.approx(0.2)
    assert s["bias_share_m1"] == pytest.approx(0.08)
    assert mc.summarize_probe({**probe, "bias2": -0.01}, 1.0)["bias_share_m1"] == 0.0


@pytest.mark.parametrize(("arch", "shape", "draws"), [("fc", (4, 3), 20000), ("cnn", (3, 3, 3, 1), 8000)])
def test_one_hidden_layer_mean_kernel_is_the_limit(arch, shape, draws):
    """The control's premise (survey eqs. 56-58): at depth 2, E Theta_hat = Theta at any width (width 3)."""
    x = np.random.default_rng(2).standard_normal(shape)
    net = mc.make_network(arch, depth=2, width=3, activation="erf", readout="gap", dtype=np.float64)
    samples = mc.ntk_draws(net, jax.random.split(jax.random.PRNGKey(0), draws), x)
    exact = mc.exact_ntks(arch, x, depths=(2,), activation="erf", readout="gap")[2]
    se = samples.std(0) / math.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(0) - exact) < 4.5 * se)


def test_exact_ntks_match_single_depth_calls():
    from ntkrepro.kernels.conv import cntk
    from ntkrepro.kernels.fc import fc_kernels

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5))
    both = mc.exact_ntks("fc", x, x[:2], depths=(2, 3), activation="relu", readout="gap")
    for d in (2, 3):
        np.testing.assert_allclose(both[d], fc_kernels(x, x[:2], depth=d, sigma_w2=2.0).ntk, rtol=1e-12)
    images = rng.standard_normal((2, 4, 4, 1))
    both = mc.exact_ntks("cnn", images, depths=(2, 3), activation="relu", readout="vanilla")
    for d in (2, 3):
        np.testing.assert_allclose(both[d], cntk(images, depth=d, readout="vanilla", dtype=np.float64).ntk,
                                   rtol=1e-12)


# ---------------------------------------------------------------- mc_vs_exact: grid summaries and claims


def _synthetic_grid(error_of):
    rows = []
    for arch, act in (("fc", "relu"), ("cnn", "erf")):
        for width in (8, 16, 32):
            for m in (1, 2, 4):
                for g in range(12 // m):  # 12 draws, split into consecutive groups of M
                    rows.append({"arch": arch, "activation": act, "width": width, "M": m, "group": g,
                                 "error": error_of(width, m), "accuracy": 0.9 - 0.1 / m})
    return pd.DataFrame(rows), {("fc", "relu"): 0.9, ("cnn", "erf"): 0.9}


def test_summarize_grid_slopes_and_orderings():
    grid, exact_acc = _synthetic_grid(lambda n, m: (n * m) ** -0.5)
    summary, metrics, uncertainty = mc.summarize_grid(grid, exact_acc)
    assert metrics["err_slope_width_m1_fc_relu"] == pytest.approx(-0.5)
    assert uncertainty["err_slope_width_m1_fc_relu"]["n"] == 3  # widths
    assert uncertainty["err_slope_width_m1_fc_relu"]["se"] == pytest.approx(0.0, abs=1e-12)  # no spread
    assert metrics["err_local_slopes_width_m1_cnn_erf"] == [-0.5, -0.5]
    assert metrics["err_slope_width_m4_cnn_erf"] == pytest.approx(-0.5)
    assert metrics["err_slope_samples_max_fc_relu"] == pytest.approx(-0.5)
    assert metrics["error_decreases_with_width"] and metrics["error_decreases_with_samples"]
    assert metrics["acc_gap_m1_fc_relu"] == pytest.approx(0.1)
    assert metrics["acc_gap_m4_fc_relu"] == pytest.approx(0.025)
    assert metrics["acc_gap_reduction_fc_relu"] == pytest.approx(0.1 - 0.025)
    assert uncertainty["acc_gap_reduction_fc_relu"]["n"] == 3  # groups of M_max = 4 draws
    assert metrics["accuracy_gap_shrinks_with_samples"]
    assert set(summary.groups) == {12, 6, 3}


def test_summarize_grid_detects_a_width_floor():
    grid, exact_acc = _synthetic_grid(lambda n, m: 0.1 * m**-0.5 if n < 32 else 0.2)
    _, metrics, _ = mc.summarize_grid(grid, exact_acc)
    assert not metrics["error_decreases_with_width"]
    assert metrics["error_decreases_with_samples"] is False  # width 32 does not improve with M


def test_bias_metrics_are_raw_measurements():
    bias = pd.DataFrame([
        {"arch": "fc", "activation": "relu", "depth": 2, "shape_bias": 0.001, "shape_bias_se": 0.002,
         "shape_bias_t": 0.5, "n_groups": 16, "frobenius_bias": 0.0, "bias_share_m1": 0.0},
        {"arch": "fc", "activation": "relu", "depth": 3, "shape_bias": 0.03, "shape_bias_se": 0.0075,
         "shape_bias_t": 4.0, "n_groups": 16, "frobenius_bias": 0.02, "bias_share_m1": 0.01},
        {"arch": "fc", "activation": "erf", "depth": 2, "shape_bias": -0.01, "shape_bias_se": 0.003,
         "shape_bias_t": -3.5, "n_groups": 16, "frobenius_bias": 0.0, "bias_share_m1": 0.0},
        {"arch": "fc", "activation": "erf", "depth": 3, "shape_bias": -0.01, "shape_bias_se": 0.005,
         "shape_bias_t": -2.0, "n_groups": 16, "frobenius_bias": 0.01, "bias_share_m1": 0.6},
    ])
    m, u = mc.bias_metrics(bias, depth=3, control_depth=2)
    assert m["shape_bias_abs_t_fc_relu"] == pytest.approx(4.0)
    assert m["shape_bias_abs_t_fc_erf"] == pytest.approx(2.0)  # a negative bias, not resolved
    assert m["control_shape_bias_abs_t_max"] == pytest.approx(3.5)  # the largest |t| at depth 2
    assert m["bias_share_m1_max"] == pytest.approx(0.6)
    assert m["shape_bias_t_fc_relu_depth3"] == 4.0
    assert u["shape_bias_fc_relu_depth3"] == {"se": 0.0075, "n": 16, "over": "groups of draws"}
    assert not any("detected" in k or "dominates" in k for k in m)  # no verdicts in the stage


def test_bias_verdicts_come_from_the_registry():
    """The registry's bounds and band on the raw metrics: |t| > 3 resolves a bias, |t| < 3 passes the control,
    a bias share above 1/2 fails 'variance dominates'."""
    from ntkrepro.claims import compare, load_registry

    claims = {c.id: c for c in load_registry(STAGES / "claims.yaml")}
    bias, control, share = (claims["mc_bias_persists_fc_relu"], claims["mc_one_hidden_layer_unbiased"],
                            claims["mc_variance_dominates"])
    assert compare(bias, 4.0, bias.paper_value, None) == "reproduced"
    assert compare(bias, 2.5, bias.paper_value, None) == "deviates"
    assert compare(control, 2.9, control.paper_value, None) == "reproduced"
    assert compare(control, 3.2, control.paper_value, None) == "deviates"
    assert compare(share, 0.001, share.paper_value, None) == "reproduced"
    assert compare(share, 0.6, share.paper_value, None) == "deviates"


def test_the_accuracy_gain_must_be_resolved_from_zero():
    """mc_accuracy_drop_is_variance_*: the paired reduction's whole 2-se interval above 0 (quick: FC ReLU
    0.096 +- 0.006, CNN ReLU 0.021 +- 0.006); an interval across 0 is inconclusive, a loss deviates."""
    from ntkrepro.claims import compare, load_registry

    claim = {c.id: c for c in load_registry(STAGES / "claims.yaml")}["mc_accuracy_drop_is_variance_cnn_relu"]
    assert compare(claim, 0.021, claim.paper_value, {"se": 0.006, "n": 6}) == "reproduced"
    assert compare(claim, 0.010, claim.paper_value, {"se": 0.006, "n": 6}) == "inconclusive"
    assert compare(claim, -0.02, claim.paper_value, {"se": 0.006, "n": 6}) == "deviates"


def test_survey_exponent_tolerance_fails_a_cubic_looking_fit():
    """Issue 14: the d^4 claim must not pass 3.41. A fit of 3.41 +- 0.05 deviates; 3.8 +- 0.05 passes;
    3.6 +- 0.1 straddles the band (inconclusive)."""
    from ntkrepro.claims import compare, load_registry

    claim = {c.id: c for c in load_registry(STAGES / "claims.yaml")}["gram_quartic_in_side_gap"]
    assert compare(claim, 3.41, 4.0, {"se": 0.02, "n": 5}) == "deviates"
    assert compare(claim, 3.8, 4.0, {"se": 0.05, "n": 5}) == "reproduced"
    assert compare(claim, 3.6, 4.0, {"se": 0.1, "n": 5}) == "inconclusive"


def test_paired_accuracy_gain_by_brute_force():
    rng = np.random.default_rng(5)
    acc1 = rng.uniform(0.5, 0.9, 12)  # 12 single draws
    acc4 = rng.uniform(0.5, 0.9, 3)  # 3 groups of 4 consecutive draws
    cells = pd.DataFrame([{"M": 1, "group": g, "accuracy": a} for g, a in enumerate(acc1)]
                         + [{"M": 4, "group": g, "accuracy": a} for g, a in enumerate(acc4)])
    gain = mc.paired_accuracy_gain(cells, 1, 4)
    diffs = acc4 - acc1.reshape(3, 4).mean(axis=1)
    assert gain.value == pytest.approx(diffs.mean()) == pytest.approx(acc4.mean() - acc1.mean())
    assert gain.se == pytest.approx(stats.sem(diffs)) and gain.n == 3


def test_summarize_grid_orderings_need_two_widths_and_two_sample_counts():
    grid, exact_acc = _synthetic_grid(lambda n, m: (n * m) ** -0.5)
    _, metrics, _ = mc.summarize_grid(grid[grid.width == 8], exact_acc)
    assert metrics["error_decreases_with_width"] is None  # one width: no slope to order
    assert math.isnan(metrics["err_slope_width_m1_fc_relu"])
    _, metrics, _ = mc.summarize_grid(grid[grid.M == 1], exact_acc)
    assert metrics["error_decreases_with_samples"] is None
    assert metrics["accuracy_gap_shrinks_with_samples"] is None


# ---------------------------------------------------------------- gram_cost


def test_time_compiled_excludes_the_warm_up_call():
    """An injected clock that the function itself advances: the warm-up (compile) call costs 100 units,
    each timed call 2 and 3 units on the two clocks; the clocks are read around the timed calls only."""
    now = {"wall": 0.0, "cpu": 0.0}
    calls = []

    def fn(x):
        calls.append(x)
        step = 100.0 if len(calls) == 1 else 1.0
        now["wall"] += 2 * step
        now["cpu"] += 3 * step
        return np.zeros(1)

    wall, cpu = gram_cost.time_compiled(fn, 1, repeats=2, clocks=(lambda: now["wall"], lambda: now["cpu"]))
    assert len(calls) == 3  # one warm-up and two timed calls
    assert (wall, cpu) == (2.0, 3.0)  # the warm-up's 200 / 300 units are not in any timed interval


def test_time_compiled_takes_the_best_repeat_per_clock():
    wall = iter([0.0, 5.0, 10.0, 12.0, 20.0, 23.0])  # repeats of 5, 2, 3 seconds
    cpu = iter([0.0, 1.0, 1.0, 4.0, 4.0, 5.5])  # repeats of 1, 3, 1.5 seconds
    best = gram_cost.time_compiled(lambda x: x, np.zeros(1), repeats=3,
                                   clocks=(lambda: next(wall), lambda: next(cpu)))
    assert best == (2.0, 1.0)
    with pytest.raises(ValueError, match="repeats"):
        gram_cost.time_compiled(lambda x: x, 0, repeats=0)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5, 5.0), st.floats(1e-6, 1.0))
def test_fit_power_law_uses_the_largest_sizes(exponent, prefactor):
    sizes = np.array([64.0, 8.0, 16.0, 32.0])  # unsorted on purpose
    seconds = prefactor * sizes**exponent
    seconds[sizes == 8.0] = 1.0  # a fixed overhead at the smallest size must not enter the fit
    fit, used = gram_cost.fit_power_law(sizes, seconds, top=3)
    assert fit.slope == pytest.approx(exponent, rel=1e-9)
    assert fit.intercept == pytest.approx(math.log(prefactor), abs=1e-8)
    assert fit.n == 3 and fit.slope_se == pytest.approx(0.0, abs=1e-9)  # an exact power law
    np.testing.assert_array_equal(used, [16.0, 32.0, 64.0])
    with pytest.raises(ValueError, match="top"):
        gram_cost.fit_power_law(sizes, seconds, top=5)


def test_fit_power_law_standard_error_matches_scipy():
    sizes = np.array([16.0, 24.0, 32.0, 40.0, 48.0])
    seconds = np.array([0.11, 0.52, 1.9, 4.1, 9.3])  # a noisy power law
    fit, used = gram_cost.fit_power_law(sizes, seconds, top=4)
    ref = stats.linregress(np.log(sizes[1:]), np.log(seconds[1:]))
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.slope_se == pytest.approx(ref.stderr, rel=1e-9)
    assert fit.n == 4


def _gram_params(**changes):
    base = {"depth": 2, "fc_input_dim": 5, "channels": 1, "repeats": 1, "fit_top": 2,
            "fc": {"m_values": [3, 4]},
            "cntk_v": {"side_for_m": 4, "m_values": [2, 3], "m_for_d": 2, "d_values": [3, 4]},
            "cntk_gap": {"side_for_m": 3, "m_values": [2, 3], "m_for_d": 1, "d_values": [3, 5]},
            "extrapolate": {"m": 100, "side": 10}}
    base.update(changes)
    return OmegaConf.create(base)


def test_timing_jobs_shapes():
    jobs = gram_cost.timing_jobs(_gram_params())
    shapes = {(j["kernel"], j["axis"], j["size"]): j["shape"] for j in jobs}
    assert shapes[("fc", "m", 4)] == (4, 5)
    assert shapes[("cntk_v", "m", 3)] == (3, 4, 4, 1)
    assert shapes[("cntk_gap", "d", 5)] == (1, 5, 5, 1)
    assert len(jobs) == 2 + 4 + 4


def test_gram_fn_fc_is_the_fc_ntk():
    x = np.random.default_rng(0).standard_normal((3, 4))
    from ntkrepro.kernels.fc import fc_kernels

    np.testing.assert_allclose(gram_cost.gram_fn("fc", depth=2, dtype=np.float64)(x), fc_kernels(x, depth=2).ntk,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="kernel"):
        gram_cost.gram_fn("rbf", depth=2)


def test_extrapolation_uses_both_exponents():
    timings = pd.DataFrame([{"kernel": "cntk_gap", "axis": "d", "size": 5, "cpu_seconds": 2.0},
                            {"kernel": "cntk_gap", "axis": "d", "size": 3, "cpu_seconds": 1.0}])
    out = gram_cost.extrapolations(timings, {"cntk_gap_exponent_m": 2.0, "cntk_gap_exponent_d": 4.0},
                                   _gram_params())
    assert out["cntk_gap_extrapolated_cpu_seconds"] == pytest.approx(2.0 * (100 / 1) ** 2 * (10 / 5) ** 4)


def test_paired_accuracy_gain_refuses_inconsistent_groups():
    cells = pd.DataFrame([{"M": 1, "group": g, "accuracy": 0.5} for g in range(3)]
                         + [{"M": 2, "group": g, "accuracy": 0.6} for g in range(2)])
    with pytest.raises(ValueError, match="groups of M = 2"):
        mc.paired_accuracy_gain(cells, 1, 2)


# ---------------------------------------------------------------- printed_formulas: the survey's formulas as printed

pf = _load("printed_formulas")
LAMBDAS = [-0.9, -0.4, 0.0, 0.35, 0.8]


def arc_cosine(lam):
    """Cho & Saul's first-order arc-cosine kernel / 2: (sin t + (pi - t) cos t) / (2 pi), t = arccos(lam)."""
    t = np.arccos(lam)
    return (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_printed_relu_unit_forms_match_known_closed_forms(lam):
    assert pf.printed_relu_unit(lam) == pytest.approx(arc_cosine(lam), abs=1e-14)
    assert pf.printed_decomposition(lam) == pytest.approx(arc_cosine(lam), abs=1e-14)
    # Sheppard's orthant probability
    assert pf.printed_step_unit(lam) == pytest.approx(0.25 + np.arcsin(lam) / (2 * np.pi), abs=1e-14)
    assert pf.printed_c(lam) == pytest.approx(np.arcsin(lam) / np.pi, abs=1e-14)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_quadrature_references_match_closed_forms_and_the_printed_integrals(lam):
    assert pf.quad_c(lam) == pytest.approx(np.arcsin(lam) / np.pi, abs=1e-10)
    assert pf.quad_b(lam) == pytest.approx(pf.printed_b(lam), abs=1e-10)
    assert pf.quad_a(lam) == pytest.approx(pf.printed_a(lam), abs=1e-10)
    assert pf.quad_quadrant(1.0, lam, 1.0, step=False) == pytest.approx(arc_cosine(lam), abs=1e-9)
    assert pf.quad_quadrant(1.0, lam, 1.0, step=True) == pytest.approx(0.25 + np.arcsin(lam) / (2 * np.pi), abs=1e-9)


@pytest.mark.parametrize(("q11", "q22", "lam"), [(0.5, 2.0, 0.3), (3.0, 0.25, -0.7), (1.0, 1.0, 0.9)])
def test_printed_general_relu_forms_against_monte_carlo_and_quadrature(q11, q22, lam):
    q12 = lam * math.sqrt(q11 * q22)
    mc_ = pf.monte_carlo_quadrant(q11, q12, q22, samples=400_000, seed=1)
    assert abs(pf.printed_relu_general(q11, q12, q22) - mc_["relu"]) < 5 * mc_["relu_se"]
    assert abs(pf.printed_step_general(q11, q12, q22) - mc_["step"]) < 5 * mc_["step_se"]
    assert pf.printed_relu_general(q11, q12, q22) == pytest.approx(pf.quad_quadrant(q11, q12, q22, step=False),
                                                                   abs=1e-9)


def test_the_relu_references_catch_a_wrong_formula():
    """Mutations a misprint could make: arcsin for (pi - arccos) without the pi/2, a missing sqrt term, a
    missing sqrt(q11 q22) factor: the quadrature misses each by far more than the claims' 1e-9."""
    lam, q11, q22 = 0.35, 0.5, 3.0
    q12 = lam * math.sqrt(q11 * q22)
    reference = pf.quad_quadrant(1.0, lam, 1.0, step=False)
    assert abs((lam * np.arcsin(lam) + math.sqrt(1 - lam**2)) / (2 * np.pi) - reference) > 1e-2
    assert abs(lam * (np.pi - np.arccos(lam)) / (2 * np.pi) - reference) > 1e-2
    general = pf.quad_quadrant(q11, q12, q22, step=False)
    assert abs((lam * (np.pi - np.arccos(lam)) + math.sqrt(q11 * q22 - q12**2)) / (2 * np.pi) - general) > 1e-2
    table = pf.relu_expectation_table([lam], [(q11, q22)], mc_samples=1000, seed=0)
    assert table.abs_error.max() < 1e-9


def test_printed_scalar_ntk_is_the_relu_closed_form():
    """Net 13 with ReLU: E relu(wx) relu(wx') = E 1(wx > 0) 1(wx' > 0) x x' = x x' / 2 for inputs of one sign,
    0 otherwise, so Theta(x, x') = x x' 1[same sign]."""
    xs = np.array([-1.5, -0.5, 0.7, 2.0])
    same = np.sign(xs)[:, None] == np.sign(xs)[None, :]
    np.testing.assert_allclose(pf.printed_scalar_ntk(xs, "relu"), np.outer(xs, xs) * same, atol=1e-10)


def test_printed_scalar_ntk_erf_against_monte_carlo_of_net_13():
    xs = np.array([-1.0, 0.5, 1.5])
    printed = pf.printed_scalar_ntk(xs, "erf")
    w = np.random.default_rng(3).standard_normal(400_000)
    dphi = pf.PHI["erf"][1]
    terms = (pf.PHI["erf"][0](w[:, None, None] * xs[:, None]) * pf.PHI["erf"][0](w[:, None, None] * xs)
                             + dphi(w[:, None, None] * xs[:, None]) * dphi(w[:, None, None] * xs) * np.outer(xs, xs))
    se = terms.std(axis=0) / math.sqrt(len(w))
    assert np.all(np.abs(printed - terms.mean(axis=0)) < 5 * se + 1e-12)


def test_printed_fc_relu_is_n0_times_the_exact_kernel_and_the_correction_is_exact():
    """ReLU is homogeneous: q_1 = x^T x' instead of x^T x' / n0 scales every q_l and the NTK by n0. The depth-2
    reference is the arc-cosine closed form written here: Theta = q1 E[step] + q2 (net 53, sigma_w2 = 1)."""
    x = np.random.default_rng(0).standard_normal((4, 5))
    n0 = x.shape[1]
    printed = pf.printed_fc(x, depth=3, activation="relu")
    corrected = pf.printed_fc(x, depth=3, activation="relu", first_layer="over_n0")
    nngp, ntk = pf.exact_fc(x, depth=3, activation="relu")
    np.testing.assert_allclose(corrected.ntk_backward, ntk, rtol=1e-12)
    np.testing.assert_allclose(corrected.ntk_forward, ntk, rtol=1e-12)
    np.testing.assert_allclose(corrected.nngp, nngp, rtol=1e-12)
    for got in (printed.ntk_backward, printed.ntk_forward):
        np.testing.assert_allclose(got, n0 * ntk, rtol=1e-12)
    q1 = x @ x.T / n0
    norms = np.sqrt(np.diag(q1))
    lam = np.clip(q1 / np.outer(norms, norms), -1, 1)
    q2 = np.outer(norms, norms) * arc_cosine(lam)
    two = pf.printed_fc(x, depth=2, activation="relu", first_layer="over_n0")
    np.testing.assert_allclose(two.ntk_backward, q2 + q1 * (0.25 + np.arcsin(lam) / (2 * np.pi)),
                               rtol=1e-7)  # arccos near lambda = 1 (the diagonal) loses digits


def test_printed_fc_erf_is_not_a_rescaling_and_a_dropped_layer_is_caught():
    x = np.random.default_rng(1).standard_normal((4, 8))
    _, ntk = pf.exact_fc(x, depth=3, activation="erf")
    printed = pf.printed_fc(x, depth=3, activation="erf")
    ratio = printed.ntk_backward / ntk
    assert np.ptp(ratio) > 0.05  # no single factor fixes erf
    corrected = pf.printed_fc(x, depth=3, activation="erf", first_layer="over_n0")
    assert relative_error(corrected.ntk_backward, ntk) < 1e-12
    shallower = pf.printed_fc(x, depth=2, activation="erf", first_layer="over_n0")  # a layer's term lost
    assert relative_error(shallower.ntk_backward, ntk) > 1e-2


def test_printed_fc_matches_monte_carlo_of_net_53_only_when_corrected():
    x = np.random.default_rng(2).standard_normal((3, 4))
    net = pf.fc(depth=2, width=512, activation="relu", sigma_w2=1.0)
    mc_ = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), x, n_samples=16)
    mean = np.asarray(mc_.mean)
    assert relative_error(pf.printed_fc(x, depth=2, activation="relu", first_layer="over_n0").ntk_backward,
                             mean) < 0.1
    assert relative_error(pf.printed_fc(x, depth=2, activation="relu").ntk_backward, mean) > 2.0


def test_first_layer_covariance_mc_estimates_x_x_over_n0():
    x = np.random.default_rng(4).standard_normal((3, 6))
    cov = pf.first_layer_covariance_mc(x, width=200_000, seed=0)
    np.testing.assert_allclose(cov, x @ x.T / 6, atol=0.03)


def test_shift_sum_is_the_sum_over_the_filter_with_zero_padding():
    m = np.random.default_rng(5).standard_normal((2, 3, 5, 5))
    brute = np.zeros_like(m)
    for s in range(5):
        for t in range(5):
            for r in pf.KER:
                if 0 <= s + r < 5 and 0 <= t + r < 5:
                    brute[..., s, t] += m[..., s + r, t + r]
    np.testing.assert_allclose(pf.shift_sum(m), brute)


def test_cnn62_forward_against_explicit_loops():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5))
    params = pf.cnn62_init(jax.random.PRNGKey(1), n0=3, width=4, convs=2)
    got = np.asarray(pf.cnn62_apply(params, x, "relu"))
    w1, w2 = (np.asarray(w) for w in params)

    def conv(inp, w):
        out = np.zeros((w.shape[0], inp.shape[1]))
        for i in range(w.shape[0]):
            for s in range(inp.shape[1]):
                for k, r in enumerate(pf.KER):
                    if 0 <= s + r < inp.shape[1]:
                        out[i, s] += w[i, :, k] @ inp[:, s + r]
        return out / math.sqrt(inp.shape[0])

    want = [np.mean(np.maximum(conv(np.maximum(conv(xi, w1), 0), w2)[0], 0)) for xi in x]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cnn62_ntk_draws_match_the_library_empirical_ntk():
    x = jax.numpy.asarray(np.random.default_rng(7).standard_normal((3, 2, 4)))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    draws = np.asarray(pf.cnn62_ntk_draws(keys, x, n0=2, width=5, convs=2, activation="erf"))
    for key, draw in zip(keys, draws, strict=True):
        params = pf.cnn62_init(key, n0=2, width=5, convs=2)
        want = empirical_ntk(lambda p, xb: pf.cnn62_apply(p, xb, "erf")[:, None], params, x)
        np.testing.assert_allclose(draw, np.asarray(want).reshape(3, 3), rtol=1e-10)


def test_printed_cnn_backward_is_the_project_cntk_and_the_printed_forward_is_not():
    x = np.random.default_rng(8).standard_normal((3, 2, 5))
    printed = pf.printed_cnn(x, convs=3, activation="relu")
    exact = pf.exact_cnn_relu(x, convs=3)
    np.testing.assert_allclose(printed.ntk_backward, exact, rtol=1e-10)
    np.testing.assert_allclose(printed.ntk_forward_corrected, exact, rtol=1e-10)
    assert relative_error(printed.ntk_forward, exact) > 0.5


def test_printed_cnn_erf_against_monte_carlo_of_net_62():
    x = np.random.default_rng(9).standard_normal((3, 2, 4))
    printed = pf.printed_cnn(x, convs=2, activation="erf")
    keys = jax.random.split(jax.random.PRNGKey(3), 256)
    draws = np.asarray(pf.cnn62_ntk_draws(keys, jax.numpy.asarray(x), n0=2, width=64, convs=2, activation="erf"))
    mean, se = pf.mc_mean_se(draws)
    assert pf.max_abs_z(printed.ntk_backward, mean, se) < 4.5
    assert pf.max_abs_z(printed.ntk_forward, mean, se) > 10


def test_printed_eq78_sum_against_explicit_loops():
    """Eq. 78 as printed: sum_{r, r'} Theta^{s+r, s'+r'} E phi'(z^{s+r}) phi'(z'^{s+r'}) (zero out of range)."""
    rng = np.random.default_rng(10)
    theta, edot = rng.random((1, 1, 4, 4)), rng.random((1, 1, 4, 4))
    brute = np.zeros((4, 4))
    for s in range(4):
        for t in range(4):
            for r in pf.KER:
                for r2 in pf.KER:
                    if 0 <= s + r < 4 and 0 <= t + r2 < 4 and 0 <= s + r2 < 4:
                        brute[s, t] += theta[0, 0, s + r, t + r2] * edot[0, 0, s + r, s + r2]
    np.testing.assert_allclose(pf._printed_eq78_sum(theta, edot)[0, 0], brute)


def test_max_abs_z_handles_entries_every_draw_gives_exactly():
    assert pf.max_abs_z(np.array([0.0, 1.0]), np.array([0.0, 1.2]), np.array([0.0, 0.1])) == pytest.approx(2.0)
    assert pf.max_abs_z(np.array([0.5]), np.array([0.0]), np.array([0.0])) == math.inf


# ---------------------------------------------------------------- training_costs: counting and the timed pieces


@pytest.mark.parametrize(("m", "block"), [(1, 16), (16, 16), (17, 16), (100, 16), (64, 32), (10, 3)])
def test_symmetric_blocks_counts_the_blocks_the_gram_evaluates(m, block):
    from ntkrepro.blocks import blockwise_on_host

    calls = []

    def block_fn(r0, c0):
        calls.append((r0, c0))
        return (np.zeros((block, block), np.float32),)

    blockwise_on_host(block_fn, m, m, block, block, symmetric=True)
    assert tc.symmetric_blocks(m, block) == len(calls)


def test_symmetric_blocks_at_the_survey_size():
    # 10^4 images in blocks of 16: 625 block rows, 625 * 626 / 2 upper blocks (diagonal included)
    assert tc.symmetric_blocks(10_000, 16) == 195_625


def test_extrapolated_times():
    assert tc.gram_seconds(2.0, 0.5, m=10_000, block=16) == pytest.approx(2.0 * 195_625 + 0.5 * 625)
    # 20 steps on 1,000 points in 0.4 s -> 10^4 steps on 10^4 points: x 500 (steps) x 100 (m^2)
    assert tc.integration_seconds(0.4, timed_steps=20, steps=10_000, measured_m=1000, m=10_000) == pytest.approx(
        0.4 * 500 * 100)


def test_integrate_bce_is_explicit_euler_on_the_cross_entropy():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((6, 6))
    theta, y, f = g @ g.T, rng.integers(0, 2, 6).astype(float), rng.standard_normal(6)
    expected = f.copy()
    for _ in range(7):  # gradient of sum BCE(sigmoid(f), y) in f is sigmoid(f) - y
        expected = expected - 0.05 * theta @ (1 / (1 + np.exp(-expected)) - y)
    as32 = lambda v: jax.numpy.asarray(v, jax.numpy.float32)
    got = tc.integrate_bce(as32(theta), as32(f), as32(y), as32(0.05), steps=7)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("readout", tc.READOUTS)
def test_timed_cntk_block_is_a_block_of_the_library_gram(readout):
    """The timed block computation gives cntk's own Gram of the block's images, and the NNGP-only
    version its NNGP."""
    from ntkrepro.kernels.conv import cntk

    block, side = 16, 4
    x = np.random.default_rng(1).standard_normal((block, side, side, 3)).astype(np.float32)
    gram = cntk(x, depth=3, readout=readout, batch_size=block**2)
    d = tc.conv.cntk_diagonals(x, depth=3)
    args = (x, x, d, d)
    nngp, ntk = tc.cntk_block_fn(side=side, depth=3, readout=readout, block=block, nngp_only=False)(*args)
    np.testing.assert_allclose(np.asarray(ntk), np.asarray(gram.ntk), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(nngp), np.asarray(gram.nngp), rtol=1e-5)
    only = tc.cntk_block_fn(side=side, depth=3, readout=readout, block=block, nngp_only=True)(*args)
    np.testing.assert_allclose(np.asarray(only), np.asarray(gram.nngp), rtol=1e-5)


def _optimized_ops(fn, *args) -> int:
    return sum(1 for line in fn.lower(*args).compile().as_text().splitlines() if " = " in line)


def _multiplies_and_compiled_text(fn, *args) -> tuple[int, str]:
    jaxpr = str(jax.make_jaxpr(fn)(*args))
    return sum(line.count(" mul ") for line in jaxpr.splitlines()), fn.lower(*args).compile().as_text()


def test_nngp_only_computations_drop_the_ntk_part():
    """What the NNGP-only timing measures: the NTK recursion is not computed (CNTK-GAP carries (nngp, ntk) as
    one complex plane state nngp + i ntk, the NNGP alone as a real one: no complex array in the compiled
    NNGP-only block, and fewer multiplications in its program), so the NNGP time is that of the NNGP alone, not
    of both kernels.
    (The program before XLA is compared: XLA's FLOP count includes the elementwise producers it copies into
    several fusions, which differs between the two programs.)"""
    block, side = 16, 4
    x = np.random.default_rng(2).standard_normal((block, side, side, 3)).astype(np.float32)
    d = np.ones((block, 2, side, side), np.float32)
    both = tc.cntk_block_fn(side=side, depth=3, readout="gap", block=block, nngp_only=False)
    only = tc.cntk_block_fn(side=side, depth=3, readout="gap", block=block, nngp_only=True)
    (mul_both, text_both), (mul_only, text_only) = (_multiplies_and_compiled_text(f, x, x, d, d) for f in (both, only))
    two_parts = re.compile(r"c64\[\d+,\d+,\d+,\d+\]")  # (rows, P, Q, lanes), nngp + i ntk
    assert two_parts.search(text_both) and not two_parts.search(text_only) and mul_only < mul_both
    from ntkrepro.kernels.fc import fc_kernels

    v = np.random.default_rng(3).standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(tc.fc_fn(depth=3, nngp_only=True)(v)),
                               np.asarray(fc_kernels(v, depth=3, dtype=np.float32).nngp), rtol=1e-6)
    assert _optimized_ops(tc.fc_fn(depth=3, nngp_only=True), v) < _optimized_ops(tc.fc_fn(depth=3, nngp_only=False), v)


def test_block_must_be_how_cntk_blocks_the_gram():
    with pytest.raises(ValueError, match="multiple of"):
        tc.cntk_block_fn(side=4, depth=3, readout="gap", block=24, nngp_only=False)


def test_summarize_ratios_per_repeat_and_their_standard_error():
    p = OmegaConf.create({"m": 64, "block": 16, "steps": 100, "timed_steps": 10, "integration_m": 32, "fc_m": 32})
    rows = []
    for r, k in enumerate((1.0, 2.0, 4.0)):
        times = {"integration": 0.1 * k, "diagonals": 0.0, "fc_nngp": 0.9 * k, "fc_both": 1.0 * k,
                 "cntk_gap_nngp": 0.5 * k * (1 + r), "cntk_gap_both": 1.0 * k, "cntk_vanilla_nngp": 0.25,
                 "cntk_vanilla_both": 0.5}
        rows += [{"repeat": r, "computation": c, "cpu_seconds": t} for c, t in times.items()]
    metrics, uncertainty, per = tc.summarize(pd.DataFrame(rows), p)
    # Gram: 10 blocks (4 block rows); integration: x 10 steps x 4 (m^2)
    np.testing.assert_allclose(per["cntk_gap_gram_over_integration"], [10 / 4] * 3)
    assert metrics["fc_nngp_over_ntk_time"] == pytest.approx(0.9)
    ratios = [0.5, 1.0, 1.5]
    assert metrics["cntk_gap_nngp_over_ntk_time"] == pytest.approx(1.0)
    assert uncertainty["cntk_gap_nngp_over_ntk_time"]["se"] == pytest.approx(np.std(ratios, ddof=1) / np.sqrt(3))
    assert uncertainty["cntk_gap_nngp_over_ntk_time"]["n"] == 3
    assert metrics["integration_step_seconds"] == pytest.approx(0.1 * 7 / 3 / 10)
