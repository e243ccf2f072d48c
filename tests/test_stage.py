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
from ntkrepro.config import ConfigError  # noqa: E402
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
    assert run.data.params["params.depth"] == "2"
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
