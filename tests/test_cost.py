"""ntkrepro.cost (the cost model) and scripts/cost_table.py (its table of every stage, from the papers'
cost models): the model against the benchmarks' recorded rows, its counts against brute force, every stage's
declared workloads against what the stage computes, a stage's memory from its own checks, and bad input."""

from __future__ import annotations

import json
import math
import shutil
import sys
from itertools import product
from pathlib import Path

import jax
import pytest

from ntkrepro import cost
from ntkrepro.blocks import block_grid, tile_index

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the cost table, as the Snakefile runs it
import cost_table  # noqa: E402

RECORDS = sorted(cost.BENCHMARKS.glob("*.json"))


def _record(name):
    return json.loads((cost.BENCHMARKS / name.split(" ")[0]).read_text())


@pytest.fixture(scope="module")
def rates():
    return cost.load_rates()


# ---------------------------------------------------------------- against the recorded benchmarks


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_cntk_full_cifar_gram_matches_the_benchmarks_own_extrapolation(rates, readout):
    """benchmarks/run.py extrapolates the full CIFAR-10 Gram (60,000^2 / 2 pairs, 20 conv layers) from its
    measured rate with its own formula; the model, calibrated on the same row, must agree (the only
    difference: 60,000 x 60,001 / 2 distinct pairs against 60,000^2 / 2)."""
    rate = rates["cpu"][f"cntk:{readout}"]
    row = next(r for r in _record(rate.source)["rows"] if r["readout"] == readout)
    hours = cost.seconds(cost.cntk_gram(60000, side=32, depth=21, readout=readout), rates["cpu"]) / 3600
    assert hours == pytest.approx(row["cifar10_full_gram_depth21_cpu_hours_extrapolated"], rel=1e-4)


def _same_code_rows(study, commit):
    for path in RECORDS:
        rec = json.loads(path.read_text())
        if rec["study"] == study and rec["machine"].get("git_commit") == commit:
            yield path.name, rec


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_cntk_model_against_smaller_recorded_grams(rates, readout):
    """Every CNTK Gram the benchmarks recorded with the calibration's code (same commit), at other sizes:
    the model (distinct pairs at the largest Gram's rate) predicts at most the measured time and at least a
    fifth of it (smaller Grams amortize less: 128 vs 512 vanilla images measured 0.26 of the model's
    speed-up, 6 vs 16 GAP images 0.31)."""
    rate = rates["cpu"][f"cntk:{readout}"]
    commit = _record(rate.source)["machine"]["git_commit"]
    checked = 0
    for name, rec in _same_code_rows("cntk", commit):
        for row in rec["rows"]:
            if row["readout"] != readout:
                continue
            measured = row["n"] ** 2 / row["ours_pairs_per_s"]
            predicted = cost.seconds(cost.cntk_gram(row["n"], side=rec["image"][0], depth=rec["depth"],
                                                    readout=readout), rates["cpu"])
            assert 0.2 * measured <= predicted <= measured, (name, row["n"])
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("kind,study", [("fc_gram:float32", "fc"), ("fc_gram:float64", "fc"),
                                        ("deq_gram", "deq")])
def test_fc_and_deq_model_reproduce_their_calibration_run(rates, kind, study):
    """The FC/DEQ Gram's recorded time is its upper tiles' entries at the rate: the model, counting distinct
    pairs, predicts the same run within the tiles' diagonal waste (<= 20% at the recorded sizes)."""
    rate = rates["cpu"][kind]
    rec = _record(rate.source)
    if study == "fc":
        row = next(r for r in rec["rows"] if r["dtype"] == kind.split(":")[1])
        measured = row["ours_s"]
        w = cost.fc_gram(rec["n"], d=rec["d"], depth=rec["depth"], precision=row["dtype"])
    else:
        measured, w = rec["ours_s"], cost.deq_gram(rec["n"])
    assert 0.8 * measured <= cost.seconds(w, rates["cpu"]) <= measured


def test_calibration_takes_the_largest_recorded_size_then_the_newest(rates):
    for key, rate in rates["cpu"].items():
        study = {"fc_gram": "fc", "cntk": "cntk", "deq_gram": "deq", "empirical_ntk": "empirical",
                 "train": "empirical"}[key.split(":")[0]]
        sizes = []
        for path in RECORDS:
            rec = json.loads(path.read_text())
            if rec["study"] != study:
                continue
            rows = rec.get("rows") or [rec]
            label = key.split(":")[1] if ":" in key else None
            for row in rows:
                if label in (None, row.get("dtype"), row.get("readout"), row.get("arch")):
                    sizes.append((row.get("n", rec.get("n")), path.name))
        assert rate.source.split(" ")[0] == max(sizes)[1], key


def test_gpu_rows_are_kept_apart(tmp_path, rates):
    """A record from a GPU machine rates the GPU column only; without one, GPU hours are None."""
    src = cost.BENCHMARKS / rates["cpu"]["cntk:gap"].source.split(" ")[0]
    rec = json.loads(src.read_text())
    rec["machine"] = {**rec["machine"], "backend": "gpu", "devices": ["NVIDIA H100"]}
    for row in rec["rows"]:
        row["ours_pairs_per_s"] *= 100
    shutil.copy(src, tmp_path / src.name)
    (tmp_path / "20990101-0000-cntk.json").write_text(json.dumps(rec))
    both = cost.load_rates(tmp_path)
    w = [cost.cntk_gram(1000, side=32, depth=21, readout="gap")]
    c = cost.stage_cost("x/y", w, both)
    assert c.gpu_hours == pytest.approx(c.cpu_hours / 100)
    assert "≈ 14 GPU-min" in c.summary() and "≈ 23 CPU-h" in c.summary()
    cpu_only = cost.stage_cost("x/y", w, cost.load_rates(cost.BENCHMARKS))
    assert cpu_only.gpu_hours is None and "no GPU rate measured" in cpu_only.summary()


# ---------------------------------------------------------------- counts against brute force


@pytest.mark.parametrize("n1,n2", [(1, None), (7, None), (64, None), (5, 3), (1, 9)])
def test_distinct_pairs_brute_force(n1, n2):
    pairs = {(min(i, j), max(i, j)) for i in range(n1) for j in range(n1)} if n2 is None else \
        set(product(range(n1), range(n2)))
    assert cost.distinct_pairs(n1, n2) == len(pairs)


@pytest.mark.parametrize("n,itemsize", [(100, 8), (1000, 8), (4000, 4), (3001, 4)])
def test_evaluated_pairs_counts_the_upper_tiles(n, itemsize):
    count, b = block_grid(n, itemsize)
    rows, cols = tile_index(count, count, True)
    assert cost.evaluated_pairs(n, itemsize) == len(rows) * b * b
    assert cost.distinct_pairs(n) <= cost.evaluated_pairs(n, itemsize)


def test_fc_macs_is_the_nets_weight_count():
    """A dense layer does one multiply-add per weight per example."""
    from ntkrepro.nets import fc

    for depth, width, d in ((2, 16, 5), (4, 32, 7)):
        net = fc(depth=depth, width=width)
        params = net.init_fn(jax.random.PRNGKey(0), (1, d))
        weights = sum(leaf.size for leaf in jax.tree.leaves(params) if leaf.ndim == 2)
        assert cost.fc_macs(d=d, width=width, depth=depth) == weights


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_cnn_macs_counts_every_filter_tap_at_every_pixel(readout):
    from ntkrepro.nets import cnn

    side, c_in, channels, depth = 6, 3, 4, 4
    net = cnn(depth=depth, channels=channels, readout=readout)
    params = net.init_fn(jax.random.PRNGKey(0), (1, side, side, c_in))
    *filters, readout_weights = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim >= 2]
    assert all(f.shape[:2] == (3, 3) for f in filters) and len(filters) == depth - 1
    convs = sum(f.size * side * side for f in filters)  # same padding: every tap at every output pixel
    dense = readout_weights.size  # vanilla: (side, side, channels, out); GAP: (channels, out)
    assert cost.cnn_macs(side=side, channels=channels, depth=depth, c_in=c_in, readout=readout) == convs + dense


def test_solve_macs():
    w = cost.solve(300, targets=10, n_test=50)
    assert w.size["macs"] == 300**3 / 3 + 300 * 300 * 10 + 50 * 300 * 10


# ---------------------------------------------------------------- the papers' workloads


@pytest.mark.parametrize("stage,kinds", [
    ("arora2019/table1", ("cntk",)),
    ("arora2019/table2", ("cntk",)),
    ("feng2020_deq/table1", ("deq_gram",)),
    ("feng2020_deq/table2", ("deq_gram", "cdeq_gram")),
])
def test_gram_workloads_are_the_grams_the_stage_declares(stage, kinds):
    """The Gram workloads a paper's cost model lists at smoke (pair counts) equal those of the Grams the stage
    itself declares (its ``grams(cfg, load(cfg))``, what scripts/gram_requests.py turns into tile jobs)."""
    import gram_requests

    declared = gram_requests.declared_requests(stage, ["scale=smoke", f"data_cache={ROOT / 'data_cache'}"])
    requested = sorted(cost.distinct_pairs(len(r.x1), None if r.x2 is None else len(r.x2)) for r in declared)
    modelled = sorted(w.size["pairs"] for w in cost_table.estimate(stage, "smoke").workloads if w.kind in kinds
                      for _ in range(w.count))
    assert modelled == requested


@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_every_stage_has_a_cost_model(rates, scale):
    for stage in cost_table.stages():
        c = cost_table.estimate(stage, scale, rates=rates)
        assert c.workloads, stage
        assert c.cpu_hours is None or (math.isfinite(c.cpu_hours) and c.cpu_hours > 0), stage
        assert c.cpu_hours is not None or c.unrated, stage
        assert c.gpu_hours is None  # no GPU benchmark recorded yet


def test_paper_scale_is_dearer_than_smoke(rates):
    for stage in ("arora2019/table1", "feng2020_deq/table1", "golikov2022/gram_cost", "jacot2018/fig3"):
        assert cost_table.estimate(stage, "paper", rates=rates).cpu_hours > \
            100 * cost_table.estimate(stage, "smoke", rates=rates).cpu_hours, stage


def test_memory_need_sums_the_checked_arrays_and_the_job_adds_base_and_safety():
    estimates = [("params.n", 1000, 8, 2, "a float64 Gram"), ("data.n_train", 10, 4, 1, "a float32 vector")]
    assert cost.memory_need(estimates) == 8 * 1000**2 + 4 * 10
    assert cost.memory_need([]) == 0 and cost.memory_need([("params.n", 10**400, 1, 1, "beyond floats")]) == math.inf
    assert cost.job_mem_mb(0) == cost.MEM_BASE_MB == 2000
    assert cost.job_mem_mb(2**30) == 2000 + 1536 and cost.job_mem_mb(2**30, attempt=3) == 3 * 3536
    assert cost.job_mem_mb(1) == 2001  # rounded up


def test_cdeq_is_a_cntk_of_its_iterations(rates):
    a = cost.cdeq_gram(100, side=32, iterations=15)
    b = cost.cntk_gram(100, side=32, depth=16, readout="vanilla")
    assert cost.seconds(a, rates["cpu"]) == cost.seconds(b, rates["cpu"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("build,match", [
    (lambda: cost.fc_gram(0, d=3, depth=2), "n1 must be an integer >= 1"),
    (lambda: cost.fc_gram(10, d=3, depth=2.5), "depth must be an integer"),
    (lambda: cost.fc_gram(10, d=3, depth=2, precision="float16"), "precision must be one of"),
    (lambda: cost.cntk_gram(10, side=32, depth=3, readout="max"), "readout must be"),
    (lambda: cost.cntk_gram(10, side=32, depth=1, readout="gap"), "depth must be an integer >= 2"),
    (lambda: cost.train(True, arch="fc", macs=3), "examples must be an integer"),
    (lambda: cost.empirical_ntk(3, arch="rnn", macs=3), "arch must be"),
    (lambda: cost.solve(10, targets=0), "targets must be"),
    (lambda: cost_table.estimate("jacot2018", "paper"), "stage must be '<paper>/<artifact>'"),
    (lambda: cost_table.estimate("jacot2018/nope", "paper"), "no cost model for jacot2018/nope"),
    (lambda: cost_table.estimate("jacot2018/fig1", "huge"), "scale must be one of"),
    (lambda: cost.load_rates("/nonexistent"), "no benchmark results in"),
])
def test_bad_input_is_one_line(build, match):
    with pytest.raises(cost.CostError, match=match) as err:
        build()
    assert "\n" not in str(err.value)


def test_cli(capsys, tmp_path):
    assert cost_table.main(["--scale", "paper", "--stage", "arora2019/table1", "--detail"]) == 0
    out = capsys.readouterr().out
    assert "arora2019/table1" in out and "no GPU rate measured" in out and "CNTK-GAP Gram 50000 x 50000" in out
    for path, value, unit, power, what in cost_table.memory_estimates("arora2019/table1", "paper"):  # the stage's
        assert f"memory: {cost.gigabytes(unit * value**power):>8s}  {what} ({path})" in out            # own checks
    row = next(line for line in out.splitlines() if line.startswith("arora2019/table1 "))
    assert row.split()[-2:] == ["GB", f"{cost_table.stage_mem_mb('arora2019/table1', 'paper'):,}"]
    assert cost_table.main(["--stage", "nope/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no cost model for nope/x") and err.count("\n") == 1
    (tmp_path / "bad.json").write_text("{")
    assert cost_table.main(["--benchmarks", str(tmp_path)]) == 2
    assert "unreadable benchmark file" in capsys.readouterr().err
    assert cost_table.main(["--json", "--stage", "feng2020_deq/table1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["stage"] == "feng2020_deq/table1" and rows[0]["cpu_hours"] > 0
