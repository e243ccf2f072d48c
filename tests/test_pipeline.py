"""End-to-end: the whole Snakemake pipeline at smoke scale into a temporary folder; DAG checks;
a Hydra multirun sweep with MLflow parent/child runs; the command-line error paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntkrepro import tracking

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
DECLARED = sorted(
    (p.parent.name, p.stem) for p in (ROOT / "conf" / "experiment").glob("*/*.yaml")
)


def _run(args, **kw):
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, **kw)


def _snakemake(*args):
    return _run([str(BIN / "snakemake"), *args])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole pipeline at smoke scale, once per test module, into a temporary folder."""
    assert DECLARED, "no experiment configs found"
    tmp = tmp_path_factory.mktemp("smoke")
    results = tmp / "results"
    proc = _snakemake("reproduce-all", "--cores", "2", "--config", "scale=smoke",
                      f"results={results}", f"data_cache={tmp / 'data'}")
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(results.glob("smoke/**/*.log")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    return results


@pytest.mark.e2e
def test_every_declared_artifact_is_produced_and_tracked(smoke_run):
    results = smoke_run
    uri = f"sqlite:///{results}/mlflow/mlflow.db"
    for paper, artifact in DECLARED:
        metrics = results / "smoke" / paper / artifact / "metrics.json"
        assert metrics.exists(), f"{paper}/{artifact} produced no metrics.json"
        record = json.loads(metrics.read_text())
        assert record["scale"] == "smoke" and record["mlflow_run_id"], (paper, artifact)
        for fig in record["figures"]:
            assert (metrics.parent / f"{fig}.png").exists() and (metrics.parent / f"{fig}.pdf").exists()
        runs = tracking.search_runs(uri, paper, f"tags.artifact = '{artifact}' and tags.scale = 'smoke'")
        assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]], (paper, artifact)


@pytest.mark.e2e
def test_report_built_from_smoke_results(smoke_run):
    report = (smoke_run / "smoke" / "report.md").read_text()
    assert "## Verdict summary" in report
    for paper in {p for p, _ in DECLARED}:
        assert f"## {paper}" in report
    assert (smoke_run / "smoke" / "report.html").read_text().startswith("<!doctype html>")


@pytest.mark.e2e
@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.stem)
def test_notebooks_execute_on_smoke_outputs(smoke_run, notebook, tmp_path):
    env = {**ENV, "NTKREPRO_RESULTS": str(smoke_run / "smoke"),
           "NTKREPRO_MLFLOW_URI": f"sqlite:///{smoke_run}/mlflow/mlflow.db"}
    proc = subprocess.run([str(BIN / "jupytext"), "--to", "ipynb", "--execute", "--run-path", str(notebook.parent),
                           "--output",
                           str(tmp_path / f"{notebook.stem}.ipynb"), str(notebook)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_dry_run_lists_every_declared_artifact_at_paper_scale(tmp_path):
    proc = _snakemake("-n", "reproduce-all", "--config", "scale=paper", f"results={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for paper, artifact in DECLARED:
        assert f"{paper}/{artifact}/metrics.json" in proc.stdout, (paper, artifact)


def test_hyphenated_target_and_bad_scale(tmp_path):
    assert _snakemake("-n", "reproduce-all", "--config", f"results={tmp_path}").returncode == 0
    bad = _snakemake("-n", "reproduce-all", "--config", "scale=huge")
    assert bad.returncode != 0 and "scale='huge'" in (bad.stdout + bad.stderr)


STAGE = ROOT / "experiments" / "hayou2020" / "eoc_curves.py"


def _stage(*args):
    return _run([sys.executable, str(STAGE), *args])


def test_hydra_multirun_makes_a_parent_run_with_children(tmp_path):
    proc = _stage("-m", "scale=smoke", f"results_root={tmp_path}", "progress=false", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    runs = tracking.search_runs(uri, "hayou2020")
    parents = [r for r in runs if r.data.tags.get("sweep") == "True"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["cfg.seed"] for c in children) == ["0", "1"]
    jobs = sorted(tmp_path.glob("smoke/hayou2020/eoc_curves/multirun/*/*/metrics.json"))
    assert len(jobs) == 2
    # the parent ends with the sweep, carries its parameter space and multirun.yaml
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.seed"] == "0,1"
    assert parent.data.tags["failed_jobs"] == "0" and parent.info.run_name == "eoc_curves [smoke] sweep"
    client = tracking.mlflow.tracking.MlflowClient(tracking.normalize_uri(uri))
    assert "multirun.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # each child's out_dir is its own job folder, its name the swept keys only
    assert sorted(c.data.params["cfg.out_dir"] for c in children) == sorted(str(j.parent) for j in jobs)
    assert sorted(c.info.run_name for c in children) == ["eoc_curves [smoke] seed=0", "eoc_curves [smoke] seed=1"]
    # judged against its own config: a seed is a replication, so only the seed is listed as an override
    assert [json.loads(j.read_text())["overrides"] for j in jobs] == [{}, {"seed": {"registered": 0, "run": 1}}]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["params.no_such_key=1"], "no_such_key"),
        (["experiment=hayou2020/nope"], "this stage runs experiment=hayou2020/eoc_curves"),
        (["params.activations=[relu,swishy]"], "error: params.activations[1]: must be a registered activation"),
        (["precision=float16"], "precision"),
        (["scale=huge"], "huge"),
    ],
)
def test_bad_command_line_fails_before_compute(tmp_path, args, fragment):
    scale = [] if any(a.startswith("scale=") for a in args) else ["scale=smoke"]
    proc = _stage(*args, *scale, f"results_root={tmp_path}")
    assert proc.returncode != 0
    assert fragment in proc.stderr
    assert not list(tmp_path.glob("*/hayou2020/eoc_curves/metrics.json"))
