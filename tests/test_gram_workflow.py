"""Gram tiles as Snakemake jobs of the main pipeline: one job per tile into the cache the stages read, a re-run
computes only the missing tile, and the stages whose Gram tile targets exist are those that declare their Grams
(scripts/gram_requests.py): the tile jobs of those declarations fill every tile a stage computes, and a stage
computes exactly the Grams it declares (none in-process after its ``<stage>_grams`` target)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ntkrepro import config as config_mod
from ntkrepro import gram
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.stage import stage_module

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
FC = dict(kernel="fc", kernel_kwargs={"depth": 2}, tile=3)


def _snakemake(results: Path, target: str) -> Counter:
    """Run the main Snakefile on ``target``; the number of jobs of each rule it ran."""
    run = subprocess.run([str(BIN / "snakemake"), "--cores", "2", target, "--config", "scale=smoke",
                          f"results={results}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return _jobs(run)


def _jobs(run) -> Counter:
    """The jobs of each rule Snakemake ran (or, with -n, would run)."""
    return Counter(re.findall(r"^(?:localrule|rule|checkpoint|localcheckpoint) (\w+):$", run.stdout + run.stderr,
                              re.MULTILINE))


def test_main_pipeline_runs_one_job_per_tile_and_reruns_only_a_missing_tile(tmp_path):
    results = tmp_path / "results"
    cache = results / "cache"
    x = np.random.default_rng(0).standard_normal((5, 3))
    name = gram.request_gram(cache, gram.GramRequest(x, None, **FC)).stem
    plan = cache / "gram_plans" / name
    reference = fc_kernels(x, depth=2).ntk

    jobs = _snakemake(results, str(plan / "gram.npz"))
    assert jobs["gram_plan"] == 1 and jobs["gram_tile"] == 3  # 5 rows, tile 3: upper triangle of a 2 x 2 grid
    np.testing.assert_allclose(np.load(plan / "gram.npz")["ntk"], reference, rtol=1e-12)
    tiles = {p.name: p.stat().st_mtime_ns for p in (cache / "gram" / name).glob("tile_*.npz")}
    assert sorted(tiles) == ["tile_0_0.npz", "tile_0_1.npz", "tile_1_1.npz"]

    for path in (cache / "gram" / name / "tile_0_1.npz", plan / "tiles" / "0_1.done", plan / "gram.npz"):
        path.unlink()  # an interrupted run: one tile job never finished, so nothing was assembled
    jobs = _snakemake(results, str(plan / "gram.npz"))
    assert jobs["gram_tile"] == 1 and "gram_plan" not in jobs
    after = {p.name: p.stat().st_mtime_ns for p in (cache / "gram" / name).glob("tile_*.npz")}
    assert sorted(after) == sorted(tiles)  # tile (0, 1) is back, the two finished tiles were not rewritten
    assert after["tile_0_0.npz"] == tiles["tile_0_0.npz"] and after["tile_1_1.npz"] == tiles["tile_1_1.npz"]
    np.testing.assert_allclose(np.load(plan / "gram.npz")["ntk"], reference, rtol=1e-12)

    again = gram.compute_gram(x, cache_root=cache, progress=False, **FC)  # what a stage calls
    assert (again.hash, again.computed_tiles, again.cached_tiles) == (name, 0, 3)
    np.testing.assert_allclose(again.ntk, reference, rtol=1e-12)


def test_stage_gram_targets_write_the_requests_first(tmp_path):
    """``<paper>_<artifact>_grams``: the stage's requests (a local checkpoint), then its tiles; nothing else."""
    targets = ["arora2019_table1_grams", "arora2019_table2_grams", "feng2020_deq_table1_grams",
               "feng2020_deq_table2_grams"]
    run = subprocess.run([str(BIN / "snakemake"), "-n", *targets, "--config", "scale=paper", f"results={tmp_path}"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = _jobs(run)
    assert jobs["gram_stage_requests"] == 4 and jobs["gram_stage_tiles"] == 4
    assert not {"arora2019_table1", "feng2020_deq_table1", "report"} & set(jobs)  # the stages do not run
    for stage in ("arora2019/table1", "feng2020_deq/table2"):
        assert f"{tmp_path}/paper/{stage}/gram_requests.json" in run.stdout


def _edge():
    """scripts/gram_requests.py, the workflow's edge (not a package)."""
    spec = importlib.util.spec_from_file_location("gram_requests_edge", ROOT / "scripts" / "gram_requests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stages_with_gram_targets_are_those_that_declare_grams(tmp_path):
    """A stage has Gram tile targets iff its script defines ``grams`` at top level (read, not imported)."""
    for paper, artifact, source in [("p", "declares", "raise SystemExit('imported')\n\n\ndef grams(cfg, data):\n"
                                                      "    return {}\n"),
                                    ("p", "nested", "def run(cfg):\n    def grams(cfg, data):\n        pass\n"),
                                    ("p", "mentions", "grams = None  # def grams(cfg, data)\n"),
                                    ("q", "no_config", "def grams(cfg, data):\n    return {}\n")]:
        (tmp_path / "experiments" / paper).mkdir(parents=True, exist_ok=True)
        (tmp_path / "experiments" / paper / f"{artifact}.py").write_text(source)
        if artifact != "no_config":
            (tmp_path / "conf" / "experiment" / paper).mkdir(parents=True, exist_ok=True)
            (tmp_path / "conf" / "experiment" / paper / f"{artifact}.yaml").write_text("")
    edge = _edge()
    assert edge.gram_stages(tmp_path) == ["p/declares"]
    assert edge.gram_stages() == ["arora2019/table1", "arora2019/table2", "feng2020_deq/table1",
                                  "feng2020_deq/table2"]


def test_requests_of_a_stage_without_grams_are_refused_in_one_line(tmp_path, capsys):
    edge = _edge()
    assert edge.main(["--cache-root", str(tmp_path), "--out", str(tmp_path / "r.json"),
                      "experiment=jacot2018/fig1", "scale=smoke"]) == 2
    assert capsys.readouterr().err.strip() == "error: experiment: jacot2018/fig1 declares no Grams (no top-level " \
        "load and grams)"
    assert edge.main(["--out", str(tmp_path / "r.json"), "experiment=feng2020_deq/table1"]) == 2
    assert "--cache-root" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _fill_tiles(cache: Path, names: list[str]) -> None:
    """Plan and compute every tile of the requests ``names`` with the tile command (as the tile jobs do)."""
    for name in names:
        assert gram.main(["plan", "--request", str(cache / "gram_requests" / f"{name}.json"),
                          "--cache-root", str(cache)]) == 0
        manifest = cache / "gram" / name / "manifest.json"
        for i, j in json.loads(manifest.read_text())["grid"]["tiles"]:
            assert gram.main(["tile", "--manifest", str(manifest), "--i", str(i), "--j", str(j)]) == 0


def _run_without_computing_tiles(monkeypatch, stage: str, results: Path) -> list[str]:
    """Run ``stage`` at smoke with every in-process tile computation refused; the hashes of the Grams it
    looked up, in order."""
    looked_up = []
    write_manifest = gram.write_manifest

    def recording_write_manifest(spec, cache_root, **kw):
        looked_up.append(spec.hash)
        return write_manifest(spec, cache_root, **kw)

    def no_tile(spec, *args, **kwargs):
        raise AssertionError(f"{stage} computed a tile of {spec.hash} in-process: a Gram it did not declare")

    monkeypatch.setattr(gram, "write_manifest", recording_write_manifest)
    monkeypatch.setattr(gram, "compute_tile", no_tile)
    cfg = config_mod.compose(stage, ["scale=smoke", f"results_root={results}", f"data_cache={ROOT / 'data_cache'}",
                                     "progress=false", "tracking.enabled=false"])
    stage_module(stage).run(cfg)
    return looked_up


def test_grams_target_fills_the_cache_the_stage_reads(tmp_path, monkeypatch):
    """``feng2020_deq_table1_grams`` at smoke (the stage's requests, then one job per tile): the stage then looks
    up exactly the Grams its requests name, in order, and computes no tile."""
    results = tmp_path / "results"
    jobs = _snakemake(results, "feng2020_deq_table1_grams")
    assert jobs["gram_stage_requests"] == 1 and jobs["gram_tile"] >= 2 and "feng2020_deq_table1" not in jobs
    names = json.loads((results / "smoke" / "feng2020_deq" / "table1" / "gram_requests.json").read_text())["requests"]
    assert _run_without_computing_tiles(monkeypatch, "feng2020_deq/table1", results) == names


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["arora2019/table1", "arora2019/table2", "feng2020_deq/table2"])
def test_stage_computes_exactly_the_grams_it_declares(tmp_path, monkeypatch, stage):
    """The requests the edge writes from a stage's declaration, computed by the tile command into a cold cache,
    are every Gram the stage then looks up, in order (no tile computed in-process), and nothing more."""
    results, cache = tmp_path / "results", tmp_path / "results" / "cache"
    out = tmp_path / "requests.json"
    assert _edge().main(["--cache-root", str(cache), "--out", str(out), f"experiment={stage}", "scale=smoke",
                         f"results_root={results}", f"data_cache={ROOT / 'data_cache'}"]) == 0
    names = json.loads(out.read_text())["requests"]
    _fill_tiles(cache, names)
    assert _run_without_computing_tiles(monkeypatch, stage, results) == names


def _stub_cnn(x_fit, t_fit, x_val, t_val, x_te, y_te, *, lr_units, **kw):
    """arora2019/table1's SGD run replaced (this test is about its kernels)."""
    return {"readout": kw["readout"], "depth": kw["depth"], "channels": kw["channels"], "lr_units": lr_units,
            "kappa": kw["kappa"], "diverged_at": None, "val_acc": 50.0, "test_acc": 50.0, "loss_curve": np.ones(3)}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["feng2020_deq/table1", "arora2019/table1"])
def test_large_gram_path_gives_the_stage_the_same_results(tmp_path, monkeypatch, stage):
    """Every Gram taken as large (compute_gram_into, in-place solve; arora2019: its "-2K" subset read off the
    mirrored Gram first): the stage's accuracies equal those of the assembled path at smoke (both float64)."""
    module = stage_module(stage)
    if stage == "arora2019/table1":
        monkeypatch.setattr(module, "train_cnn", _stub_cnn)
    runs, default = {}, gram.LARGE_GRAM_BYTES
    for threshold in (default, 0):
        monkeypatch.setattr(gram, "LARGE_GRAM_BYTES", threshold)
        cfg = config_mod.compose(stage, ["scale=smoke", f"results_root={tmp_path / str(threshold)}",
                                         f"data_cache={ROOT / 'data_cache'}", "progress=false", "precision=float64"])
        data = module.load(cfg)
        assert {r.into for pair in module.grams(cfg, data).values() for r in pair} == {None if threshold else "float64"}
        runs[threshold] = {k: v for k, v in module.run(cfg).metrics.items() if k.startswith(("acc", "best", "gap"))}
    assert runs[0] and runs[0] == runs[default]


@pytest.mark.parametrize("gram_jobs", [None, "tile", "stage"])
def test_stage_rules_wait_for_their_declared_tiles(tmp_path, gram_jobs):
    """With gram_jobs=tile, a stage that declares Grams runs after its requests and tiles (rules/gram_stages.smk);
    one that declares none does not wait for any. With gram_jobs=stage (smoke's default) the stage computes its
    tiles in its own job: no request or tile job."""
    extra = [f"gram_jobs={gram_jobs}"] if gram_jobs else []
    run = subprocess.run([str(BIN / "snakemake"), "-n", "feng2020_deq_table1", "jacot2018_ntk_pd", "--config",
                          "scale=smoke", f"results={tmp_path}", *extra], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = _jobs(run)
    assert jobs["feng2020_deq_table1"] == 1 and jobs["jacot2018_ntk_pd"] == 1
    tiled = gram_jobs == "tile"
    assert jobs.get("gram_stage_requests", 0) == jobs.get("gram_stage_tiles", 0) == int(tiled)
    waits = f"{tmp_path}/smoke/feng2020_deq/table1/gram_tiles.done" in run.stdout.split("rule feng2020_deq_table1:")[1]
    assert waits == tiled
