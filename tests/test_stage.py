"""The stage wrapper: files written atomically, metrics.json schema, MLflow run, tracking failure."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from ntkrepro import tracking  # noqa: E402
from ntkrepro.config import ConfigError, experiments  # noqa: E402
from ntkrepro.stage import CONF_DIR, StageResult, execute  # noqa: E402


def _cfg(tmp_path, *extra):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "paper=testpaper", "artifact=demo", "scale=smoke", f"results_root={tmp_path}/results",
            "+params.depth=2", "+unstated.n_points=4", *extra])


def _run(cfg):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, cfg.params.depth])
    return StageResult(
        metrics={"value": 2.0 * cfg.params.depth, "flag": True, "missing": None},
        data={"name": "circle", "source": "synthetic", "sha256": None, "substituted_for": None},
        sizes={"n": 4}, seeds=[0], figures={"demo": fig},
        tables={"demo_table": pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]})},
        arrays={"k": np.eye(2)}, step_metrics={"loss": [(0, 1.0), (5, 0.1)]},
    )


def test_execute_writes_everything_and_tracks(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "results" / "smoke" / "testpaper" / "demo"
    record = execute(cfg, _run, out_dir=out)
    for name in ["demo.png", "demo.pdf", "demo_table.csv", "demo_table.md", "arrays.npz", "config.yaml"]:
        assert (out / name).exists(), name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["metrics"]["value"] == 4.0
    assert on_disk["scale"] == "smoke" and on_disk["paper"] == "testpaper"
    assert on_disk["unstated_settings"] == {"n_points": 4}
    assert on_disk["mlflow_run_id"] == record["mlflow_run_id"] is not None
    assert not list(out.glob("*.tmp"))
    runs = tracking.search_runs(cfg.tracking.uri, "testpaper", "tags.scale = 'smoke'")
    (run,) = runs
    assert run.data.metrics["value"] == 4.0
    assert run.data.params["cfg.params.depth"] == "2"
    assert run.info.run_name == "demo [smoke]" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == "experiments/testpaper/demo.py"
    assert run.data.tags["data.name"] == "circle" and run.data.tags["data.substituted"] == "False"
    assert run.data.tags["git_commit"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.normalize_uri(cfg.tracking.uri))
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"demo.png", "demo_table.csv", "config.yaml", "metrics.json"} <= names
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 5]


def test_tracking_failure_keeps_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = _cfg(tmp_path, "tracking=server", "tracking.uri=http://127.0.0.1:9")
    out = tmp_path / "out"
    record = execute(cfg, _run, out_dir=out)
    assert record["mlflow_run_id"] is None and record["tracking_error"]
    assert json.loads((out / "metrics.json").read_text())["tracking_error"]
    assert (out / "demo.png").exists()
    assert "tracking failed" in capsys.readouterr().err


def test_bad_value_fails_before_compute(tmp_path):
    cfg = _cfg(tmp_path, "params.depth=0")
    called = []
    with pytest.raises(ConfigError):
        execute(cfg, lambda c: called.append(1), out_dir=tmp_path / "x")
    assert not called


def test_every_split_read_and_the_premise_are_recorded(tmp_path):
    """A registered experiment run with a command-line override: metrics.json holds the resolved config,
    the paper-scale premise, the override against the registered config, and both splits read."""
    from ntkrepro.stage import load_split

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=jacot2018/fig3", "scale=smoke", f"results_root={tmp_path}/results", "tracking.enabled=false",
            "data=digits", "data.n_train=20", "+data.n_test=10", "params.widths=[50]", "seed=3"])

    def run(c):
        train, test = load_split(c, "train"), load_split(c, "test")
        load_split(c, "train")  # read twice: recorded once
        return StageResult(metrics={"n": len(train.x) + len(test.x)}, data=train.provenance)

    record = execute(cfg, run, out_dir=tmp_path / "out")
    assert [(s["split"], s["name"], s["n"], s["requested"]) for s in record["splits"]] == [
        ("train", "digits", 20, "digits"), ("test", "digits", 10, "digits")]
    assert record["config"]["params.widths"] == [50] and record["config"]["seed"] == 3
    assert record["overrides"]["params.widths"] == {"registered": [50, 200], "run": [50]}
    assert record["overrides"]["data.name"] == {"registered": "mnist", "run": "digits"}
    assert record["overrides"]["seed"] == {"registered": 0, "run": 3}
    assert not any(k.startswith(("tracking.", "results_root", "out_dir")) for k in record["overrides"])
    assert record["paper_config"]["params.widths"] == [100, 1000, 10000]
    assert record["paper_config"]["data.n_train"] == 512 and "seed" not in record["paper_config"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["splits"] == record["splits"]


def test_unregistered_experiment_records_no_premise(tmp_path):
    record = execute(_cfg(tmp_path, "tracking.enabled=false"), _run, out_dir=tmp_path / "out")
    assert record["overrides"] is None and record["paper_config"] is None and record["splits"] == []


def _client(cfg):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking.normalize_uri(cfg.tracking.uri))


def test_run_spans_the_compute_and_carries_the_claim_verdicts(tmp_path, monkeypatch):
    import time

    import yaml

    from ntkrepro import stage

    reg = tmp_path / "experiments" / "testpaper" / "claims.yaml"
    reg.parent.mkdir(parents=True)
    reg.write_text(yaml.safe_dump({"paper": "testpaper", "claims": [
        {"id": "c_value", "artifact": "demo", "metric": "value", "paper_value": 4.0, "where": "Fig. 1",
         "kind": "value", "tolerance": {"abs": 0.1}, "tolerance_reason": "r"}]}))
    monkeypatch.setattr(stage, "EXPERIMENTS_DIR", tmp_path / "experiments")
    cfg = _cfg(tmp_path)

    def slow(c):
        time.sleep(1.5)
        return _run(c)

    record = execute(cfg, slow, out_dir=tmp_path / "out")
    run = _client(cfg).get_run(record["mlflow_run_id"])
    assert run.info.end_time - run.info.start_time >= 1500  # the run started before the compute
    # an unregistered experiment has no paper config: its claims are not comparable, and the tag says so
    assert run.data.tags["claim.c_value"] == "not comparable"
    exp = _client(cfg).get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {a.path for a in _client(cfg).list_artifacts(run.info.run_id)}
    assert "verdicts.csv" in names and (tmp_path / "out" / "verdicts.csv").exists()


@pytest.mark.parametrize("exc,status", [(ZeroDivisionError("division by zero"), "FAILED"),
                                        (KeyboardInterrupt(), "KILLED")])
def test_a_failing_or_interrupted_stage_ends_its_run(tmp_path, exc, status):
    cfg = _cfg(tmp_path)

    def boom(c):
        raise exc

    with pytest.raises(type(exc)):
        execute(cfg, boom, out_dir=tmp_path / "out")
    (run,) = tracking.search_runs(cfg.tracking.uri, "testpaper")
    assert run.info.status == status
    assert type(exc).__name__ in run.data.tags["error"]
    assert not (tmp_path / "out" / ".mlflow_run_id").exists()  # closed: nothing left to close later


def test_a_run_left_running_by_a_killed_attempt_is_closed_and_linked(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = tracking.start_run(uri=cfg.tracking.uri, artifact_root=None, experiment="testpaper",
                               run_name="demo [smoke]", params={}, tags={})
    (out / ".mlflow_run_id").write_text(stale)  # what a kill -9 during the compute leaves behind
    record = execute(cfg, _run, out_dir=out)
    assert record["mlflow_previous_run_id"] == stale
    assert _client(cfg).get_run(stale).info.status == "KILLED"
    assert _client(cfg).get_run(record["mlflow_run_id"]).data.tags["previous_attempt_run_id"] == stale


EXPERIMENTS = experiments()
SCALES = ", ".join(sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml")))  # Hydra lists them sorted


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("args,fragment", [
    (["scale=huge"], f"error: In 'config': Could not find 'scale/huge' (available: {SCALES})"),
    (["sclae=paper"], "error: sclae: unknown key"),
    (["seed=abc"], "could not be converted to Integer"),
    (["data=nope"], "Could not find 'data/nope' (available: cifar10"),
])
def test_every_stage_refuses_what_hydra_cannot_compose_in_one_line(experiment, args, fragment):
    from ntkrepro.stage import command_line_error

    message = command_line_error(experiment, args)
    assert message is not None and fragment in message and "\n" not in message, message
    assert command_line_error(experiment, ["seed=1"]) is None
    assert command_line_error(experiment, ["-m", "seed=1,2"]) is None  # sweeps are Hydra's to parse


def test_a_stage_refuses_a_sweep_over_its_id_in_one_line(tmp_path):
    """paper= / artifact= would give a run a second id: the stage script refuses it (exit 2, one line)
    before Hydra runs anything, a sweep's ``-m`` included (config.id_override_error)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "experiments/hayou2020/fig1.py", "-m", "paper=a,b", "scale=smoke",
                           f"results_root={tmp_path}"], cwd=CONF_DIR.parent, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: this stage runs experiment=hayou2020/fig1 (paper and artifact come from it); got paper=a,b")
    assert not any(tmp_path.iterdir())


def test_an_unwritable_results_root_is_one_line_before_anything_runs(tmp_path):
    from ntkrepro.stage import command_line_error

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = command_line_error("jacot2018/fig2", [f"results_root={blocker}"])
    assert message.startswith("error: results_root: cannot write the output folder") and "file is in the way" in message
    assert command_line_error("jacot2018/fig2", [f"results_root={tmp_path / 'new'}"]) is None
    assert not (tmp_path / "new").exists()  # the probe creates nothing


@pytest.mark.parametrize("err,line,bug", [
    (OSError(28, "No space left on device", "/r/quick/p/a/metrics.json"),
     "error: results_root: cannot write /r/quick/p/a/metrics.json (No space left on device)", False),
    (OSError(30, "Read-only file system", "/r"), "error: results_root: cannot write /r (Read-only file system)", False),
    (ValueError("x1 contains NaN or inf"), "error: x1 contains NaN or inf", False),
    (ConfigError("error: params.depth: must be >= 1 (got 0)"), "error: params.depth: must be >= 1 (got 0)", False),
    (KeyboardInterrupt(), "error: p/a interrupted", False),
    (TypeError("unsupported operand"), "error: internal error in p/a (a bug in ntkrepro", True),
])
def test_one_error_path(err, line, bug):
    from ntkrepro.stage import failure_line

    message, traceback_first = failure_line(err, "p/a")
    assert message.startswith(line) and "\n" not in message and traceback_first == bug
