"""Gram tiles as Snakemake jobs of the main pipeline: one job per tile into the cache the stages read, a re-run
computes only the missing tile, and a stage's Gram requests (``python -m ntkrepro.gram requests``) have the
hashes of the Grams the stage computes, so the stage finds every tile cached."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from hydra import compose, initialize_config_dir

from ntkrepro import gram
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.stage import CONF_DIR

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
    name = gram.request_gram(cache, x, **FC).stem
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


def test_requests_command_composes_the_stage_config(tmp_path):
    stage = tmp_path / "stage_grams.py"
    stage.write_text(
        "import numpy as np\n\n\n"
        "def gram_requests(cfg):\n"
        "    x = np.random.default_rng(cfg.seed).standard_normal((4, 3))\n"
        "    return [dict(x1=x, kernel='fc', kernel_kwargs={'depth': 2}, tile=2),\n"
        "            dict(x1=x[:3], x2=x, kernel='fc', kernel_kwargs={'depth': 1}, tile=2, dtype='float32')]\n")
    out, cache = tmp_path / "requests.json", tmp_path / "cache"
    assert gram.main(["requests", "--stage", str(stage), "--cache-root", str(cache), "--out", str(out),
                      "experiment=jacot2018/fig1", "seed=5"]) == 0
    x = np.random.default_rng(5).standard_normal((4, 3))
    expected = [gram.make_spec(x, kernel="fc", kernel_kwargs={"depth": 2}, tile=2).hash,
                gram.make_spec(x[:3], x, kernel="fc", kernel_kwargs={"depth": 1}, tile=2, dtype="float32").hash]
    assert json.loads(out.read_text())["requests"] == expected
    for name in expected:  # planned from the request files: the same hash, so the same cache folder
        assert gram.main(["plan", "--request", str(cache / "gram_requests" / f"{name}.json"),
                          "--cache-root", str(cache)]) == 0
        assert gram.read_manifest(cache / "gram" / name / "manifest.json")["hash"] == name


def _load_stage(paper, name):
    folder = ROOT / "experiments" / paper
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the stages import their siblings
    spec = importlib.util.spec_from_file_location(f"{paper}_{name}_workflow", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_deq_stage_finds_every_tile_its_requests_computed(tmp_path, monkeypatch):
    """feng2020_deq/table1 on small stand-in data: the tiles of its requests, computed by the tile command,
    are every tile the stage needs."""
    table1 = _load_stage("feng2020_deq", "table1")
    deq_eval = sys.modules["deq_eval"]  # the module the stage calls
    rng = np.random.default_rng(1)

    def fake_split(cfg, split, n=None):
        x = rng.standard_normal((8 if split == "train" else 5, 3, 2, 1))
        return SimpleNamespace(x=x / np.linalg.norm(x.reshape(len(x), -1), axis=1)[:, None, None, None],
                               y=np.arange(len(x)) % 2, num_classes=2, provenance=f"fake {split}")

    splits = {s: fake_split(None, s) for s in ("train", "test")}
    for module in (deq_eval, table1):
        monkeypatch.setattr(module, "load_split", lambda cfg, split, n=None: splits[split])
    grams = []

    def recording_compute_gram(*args, **kwargs):
        grams.append(gram.compute_gram(*args, **kwargs))
        return grams[-1]

    monkeypatch.setattr(deq_eval, "compute_gram", recording_compute_gram)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=feng2020_deq/table1", "scale=smoke",
                                                       f"results_root={tmp_path}", "params.tile=4",
                                                       "progress=false"])
    cache = tmp_path / "cache"
    requests = deq_eval.gram_requests(cfg)
    assert len(requests) == 2 * len(cfg.params.settings)
    names = [gram.request_gram(cache, **args).stem for args in requests]
    for name in names:
        assert gram.main(["plan", "--request", str(cache / "gram_requests" / f"{name}.json"),
                          "--cache-root", str(cache)]) == 0
        manifest = cache / "gram" / name / "manifest.json"
        for i, j in json.loads(manifest.read_text())["grid"]["tiles"]:
            assert gram.main(["tile", "--manifest", str(manifest), "--i", str(i), "--j", str(j)]) == 0
    tag = deq_eval.setting_tag(**deq_eval.deq_variances(cfg.params.settings[0]))
    metrics = table1.run(cfg).metrics
    assert [g.hash for g in grams] == names
    assert [g.computed_tiles for g in grams] == [0] * len(names) and all(g.cached_tiles for g in grams)
    assert metrics[f"gram_seconds_deq_{tag}"] is None  # no tile computed in the stage, so no timing
    assert 0 <= metrics[f"acc_pct_deq_{tag}"] <= 100
