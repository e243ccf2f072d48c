"""benchmarks/run.py at tiny sizes without the peer: the studies run, check their variants against each
other and write their JSON (so that benchmarks/device.sh does not meet a broken script on a device).
No timing is asserted."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [
    ["trace", "--n-trace", "1"],
    ["table", "--n", "6", "--n-vanilla", "3", "--n-gap", "1", "--n-deq", "6", "--gemm-n", "64"],
    ["large", "--n-train", "40", "--n-test", "9", "--dim", "16", "--tile", "16", "--baseline",
     "--compare-n-train", "30", "--compare-n-test", "9"],
])
def test_study_runs_without_the_peer_and_writes_json(run, tmp_path, args):
    run.main([*args, "--repeats", "1", "--no-peer", "--results-dir", str(tmp_path)])
    (out,) = tmp_path.glob(f"*-{args[0]}.json")
    result = json.loads(out.read_text())
    assert result["study"] == args[0]
    assert result["machine"]["backend"] == "cpu" and result["machine"]["devices"]
    assert isinstance(result["machine"]["git_uncommitted_changes"], bool)
    if args[0] == "trace":
        assert [r["variant"] for r in result["rows"]] == ["shifted_adds_q2", "shifted_adds_separable",
                                                          "convolution", "offset_planes_masked_separable"]
        assert all(r["seconds"] > 0 for r in result["rows"])
    if args[0] == "table":
        rows = {r["case"]: r for r in result["rows"]}
        kinds = ("fc-float32", "fc-float64", "cntk-vanilla-float32", "cntk-gap-float32", "deq-float64")
        assert sorted(rows) == sorted(f"{k}-{p}" for k in kinds for p in ("sym", "cross"))  # both paths of each
        assert all(r["peer"] == "peer skipped (--no-peer)" and r["speedup"] is None
                   for r in rows.values() if r["kernel"] != "deq")
        assert all(r["speedup"] > 0 for r in rows.values() if r["kernel"] == "deq")  # the per-entry solver
        assert all(0 < r["fraction_of_gemm_peak"] and 0 < r["fraction_of_copy_bound"] for r in rows.values())
        assert all(r["ours_over_input_gemm"] > 0 for r in rows.values() if r["kernel"] == "fc")
        assert all(r["cifar10_full_gram_depth21_cpu_hours_extrapolated"] > 0 for r in rows.values()
                   if r["kernel"] == "cntk")
        assert result["peak"]["gemm_peak_float64_gflops"] > 0 and result["peak"]["copy_gbs"] > 0
        assert len(result["loadavg_rounds"]) == 2  # before the rounds and after the one round
        assert (tmp_path / out.name.replace(".json", ".md")).read_text() == result["markdown"]

    if args[0] == "large":
        assert [p["phase"] for p in result["phases"]] == ["train_gram", "factor_solve", "test_gram", "predict"]
        assert all(p["seconds"] > 0 and p["peak_rss_gb"] > 0 for p in result["phases"])
        compare = result["precision_comparison"]
        assert compare["n_train"] == 30 and 0 <= compare["argmax_agreement"] <= 1
        assert 0 < compare["relative_frobenius_diff"] < 1e-3  # float32 differs from float64, by rounding only
        baseline = result["baseline_in_memory"]
        assert baseline["phase"] == "baseline_in_memory" and baseline["max_abs_diff_over_max_abs"] < 1e-3


def test_large_study_regression_equals_the_in_memory_one(run, tmp_path):
    """The study's pipeline (Gram tiles into one array, in-place solve, test Gram, blocked predictions) gives
    the in-memory kernel_regression of the one-shot deq_ntk Grams, in float64 to rounding."""
    from ntkrepro.kernels.deq import deq_ntk
    from ntkrepro.regression import kernel_regression, one_hot_shifted

    x, labels = run.synthetic_cifar_shaped(30, 12, 10, 0, 0.5)
    x, y = x.astype(np.float64), np.asarray(one_hot_shifted(labels, 10))
    ours = run._deq_regression(x[:25], y[:25], x[25:], dtype="float64", tile=7, ridge=1e-3, cache_root=tmp_path,
                               progress=False)
    kw = run.DEQ_TABLE2_VARIANCES
    expected = kernel_regression(deq_ntk(x[:25], **kw).ntk, y[:25], deq_ntk(x[25:], x[:25], **kw).ntk, ridge=1e-3)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


def test_table_cases_share_inputs_with_the_peer(run):
    """The cases module both sides import: Y is a second draw (not X) on the cross path, DEQ rows unit norm."""
    from types import SimpleNamespace

    a = SimpleNamespace(only="fc,deq", n=5, fc_dtypes="float64", n_vanilla=2, n_gap=1, n_deq=4)
    cases = run.table_cases(a)
    assert [run.case_name(c) for c in cases] == ["fc-float64-sym", "fc-float64-cross", "deq-float64-sym",
                                                 "deq-float64-cross"]
    x, y = run.case_inputs(cases[1], 0)
    x_sym, none = run.case_inputs(cases[0], 0)
    assert none is None and np.array_equal(x, x_sym) and y.shape == x.shape and not np.allclose(x, y)
    assert x.dtype == np.float64 and np.allclose(np.linalg.norm(run.case_inputs(cases[3], 0)[1], axis=1), 1)
    assert run.distinct_pairs(cases[0]) == 15 and run.distinct_pairs(cases[1]) == 25
    assert run.case_flops(cases[0]) == 5 * 6 * 3072 and run.case_flops(cases[1]) == 2 * 25 * 3072
