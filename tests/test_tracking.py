"""Real MLflow (SQLite store): concurrent writers lose nothing; parent/child sweep runs."""

import multiprocessing as mp

from ntkrepro import tracking


def _writer(uri, root, k):
    for i in range(3):
        tracking.log_run(uri=uri, artifact_root=root, experiment="concurrency", run_name=f"w{k}-{i}",
                         params={"k": k, "i": i}, metrics={"value": k * 10 + i},
                         tags={"paper": "concurrency", "writer": k})


def test_concurrent_processes_lose_no_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    root = str(tmp_path / "artifacts")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, root, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    runs = tracking.search_runs(uri, "concurrency")
    assert len(runs) == 12
    assert sorted(r.data.metrics["value"] for r in runs) == sorted(k * 10 + i for k in range(4) for i in range(3))
    assert all(r.info.status == "FINISHED" for r in runs)


def test_parent_run_shared_by_sweep_children(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    key = tmp_path / "sweep" / "parent"
    a = tracking.parent_run_id(uri, None, experiment="e", key_file=key, name="sweep", tags={})
    b = tracking.parent_run_id(uri, None, experiment="e", key_file=key, name="sweep", tags={})
    assert a == b
    child = tracking.log_run(uri=uri, artifact_root=None, experiment="e", run_name="c", params={},
                             metrics={"x": 1.0}, tags={}, parent_run_id=a,
                             step_metrics={"loss": [(0, 1.0), (1, 0.5)]})
    runs = tracking.search_runs(uri, "e", f"tags.mlflow.parentRunId = '{a}'")
    assert [r.info.run_id for r in runs] == [child]
    from mlflow.tracking import MlflowClient

    hist = MlflowClient(tracking.normalize_uri(uri)).get_metric_history(child, "loss")
    assert [(m.step, m.value) for m in hist] == [(0, 1.0), (1, 0.5)]
