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


def test_sweep_parent_ends_failed_with_the_count_once_every_job_reported(tmp_path):
    """The sweep callback as Hydra calls it: start, then one on_job_end per job (any process), the last
    of which ends the parent; a failed job makes it FAILED with the count."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from ntkrepro.sweep import MlflowSweepCallback, job_count

    assert job_count(["seed=0,1,2", "params.x=a,b", "scale=smoke"]) == 6
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = OmegaConf.create({
        "paper": "p", "artifact": "a", "scale": {"name": "smoke"},
        "tracking": {"enabled": True, "uri": uri, "artifact_root": None},
        "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}, "overrides": {"task": ["seed=0,1,2"]},
                  "job": {"num": 0}}})
    cb = MlflowSweepCallback()
    cb.on_multirun_start(cfg)
    (tmp_path / "sweep" / "multirun.yaml").write_text("seed: 0,1,2\n")
    for num, status in enumerate([JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]):
        job = OmegaConf.merge(cfg, {"hydra": {"job": {"num": num}}})
        ret = JobReturn()
        ret.status = status
        (parent,) = tracking.search_runs(uri, "p")
        assert parent.info.status == "RUNNING"  # until the last job reports
        cb.on_job_end(job, ret)
    (parent,) = tracking.search_runs(uri, "p")
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "1"
    assert parent.data.params["sweep.seed"] == "0,1,2"
    cb.on_multirun_end(cfg)  # idempotent
    assert (tmp_path / "sweep" / ".sweep_closed").read_text() == "2 of 3 jobs completed"
