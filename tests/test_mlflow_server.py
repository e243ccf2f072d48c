"""A real MLflow tracking server on a loopback port: a stage logs over HTTP, and its run, metrics,
tags and artifacts are found through the REST API."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ntkrepro.stage import CONF_DIR, StageResult, execute


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_stage_logs_to_server_and_rest_api_finds_it(server, tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "paper=serverpaper", "artifact=demo", "scale=smoke", f"results_root={tmp_path}/r",
            "tracking=server", f"tracking.uri={server}"])

    def run(cfg):
        return StageResult(metrics={"kernel_error": 0.125}, sizes={"n": 3}, seeds=[0],
                           data={"name": "circle", "source": "synthetic", "sha256": None,
                                 "substituted_for": None})

    record = execute(cfg, run, out_dir=tmp_path / "out")
    assert record["tracking_error"] is None
    exp = _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=serverpaper")
    exp_id = exp["experiment"]["experiment_id"]
    found = _get(f"{server}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id],
        "filter": "tags.artifact = 'demo' and tags.scale = 'smoke' and tags.`data.name` = 'circle'"})
    (run,) = found["runs"]
    assert run["info"]["run_id"] == record["mlflow_run_id"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["kernel_error"] == 0.125
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["paper"] == "serverpaper" and tags["git_commit"]
    arts = _get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
    assert {"metrics.json", "config.yaml"} <= {f["path"] for f in arts["files"]}
