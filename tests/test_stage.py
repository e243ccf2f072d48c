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
