"""MLflow tracking: the only module that imports mlflow.

One MLflow experiment per paper, one run per stage execution. A run carries the flattened resolved
config as params, the stage's metrics (and per-step curves), its figures/tables/config as artifacts,
and searchable tags (paper, artifact, scale, data, git commit, host, JAX backend). Hydra sweeps get
a parent run; each sweep child points at it with the ``mlflow.parentRunId`` tag.

Concurrency: with a SQLite store, every write happens under an exclusive file lock next to the
database (several Snakemake jobs finishing together queue for a second instead of hitting
"database is locked"), and transient errors are retried with backoff. For many parallel or cluster
jobs, run ``mlflow server`` and set ``tracking=server``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# An unreachable tracking server must fail in seconds, not minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

MAX_PARAM_LEN = 6000


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def normalize_uri(uri: str) -> str:
    """Make a relative ``sqlite:///rel/path.db`` absolute (stable across working directories)."""
    path = _sqlite_path(uri)
    if path is not None and not path.is_absolute():
        return "sqlite:///" + str(path.resolve())
    return uri


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(fn, *, attempts: int = 6, first_wait: float = 0.5):
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; retry the transient ones
            msg = str(err).lower()
            transient = "locked" in msg or "busy" in msg or "temporarily" in msg
            if not transient or i == attempts - 1:
                raise
            time.sleep(first_wait * 2**i)
    raise AssertionError("unreachable")


# The experiment's kind for MLflow 3's UI: a model-training experiment opens on its runs table where the UI reads
# this tag. MLflow 3.17's UI does not: its global GenAI / Model training switch decides for every experiment
# (URL ?workflowType=..., else the browser's choice, else GenAI), so links into the UI carry
# ?workflowType=machine_learning (ntkrepro.report.ML_MODE).
EXPERIMENT_KIND = "custom_model_development"


def _experiment_id(client: MlflowClient, name: str, artifact_root: str | None, description: str | None = None) -> str:
    """The id of experiment ``name`` (created if missing) as a model-training experiment with a description."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if artifact_root:
            location = Path(artifact_root, name).resolve().as_uri()
        try:
            client.create_experiment(name, artifact_location=location,
                                     tags={"mlflow.experimentKind": EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - created concurrently by another process
            pass
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise RuntimeError(f"MLflow experiment {name!r} could not be created")
    if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    if description and exp.tags.get("mlflow.note.content") != description:
        client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", description)
    return exp.experiment_id


def init_store(uri: str, artifact_root: str | None, experiments: Iterable[str]) -> None:
    """Create the store and the experiments once, before parallel jobs start."""
    uri = normalize_uri(uri)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        for name in experiments:
            _retry(lambda n=name: _experiment_id(client, n, artifact_root))


def parent_run_id(
    uri: str, artifact_root: str | None, *, experiment: str, key_file: Path, name: str, tags: dict
) -> str:
    """The parent run of a sweep, created once per ``key_file`` (shared by all sweep children)."""
    uri = normalize_uri(uri)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    with open(key_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key_file.exists():
            return key_file.read_text().strip()
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp_id = _retry(lambda: _experiment_id(client, experiment, artifact_root))
            run = _retry(lambda: client.create_run(exp_id, run_name=name, tags=_str_tags(tags)))
        key_file.write_text(run.info.run_id)
        return run.info.run_id


def _str_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in tags.items()}


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Params in batches of 100 (MLflow's limit), values cut at MAX_PARAM_LEN (the caller holds the lock)."""
    param_list = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in sorted(params.items())]
    for chunk in _chunks(param_list, 100):
        _retry(lambda c=chunk: client.log_batch(run_id, params=c))


def start_run(
    *,
    uri: str,
    artifact_root: str | None,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, Any],
    parent_run_id: str | None = None,
    description: str | None = None,
) -> str:
    """Create a RUNNING run with its params and tags (before the compute, so the UI shows the true
    duration); return its id. Raises on failure (the caller reports it)."""
    uri = normalize_uri(uri)
    all_tags = _str_tags(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp_id = _retry(lambda: _experiment_id(client, experiment, artifact_root, description))
        run = _retry(lambda: client.create_run(exp_id, run_name=run_name, tags=all_tags))
        _log_params(client, run.info.run_id, params)
    return run.info.run_id


def end_run(
    *,
    uri: str,
    run_id: str,
    status: str = "FINISHED",
    metrics: dict[str, float] | None = None,
    step_metrics: dict[str, list[tuple[int, float]]] | None = None,
    artifacts: Iterable[Path] = (),
    tags: dict[str, Any] | None = None,
) -> None:
    """Log a run's metrics, artifacts and tags, then end it with ``status`` (FINISHED, FAILED, KILLED)."""
    uri = normalize_uri(uri)
    now = int(time.time() * 1000)
    metric_list = [
        Metric(k, float(v), now, 0)
        for k, v in sorted((metrics or {}).items())
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    for name, curve in (step_metrics or {}).items():
        metric_list += [Metric(name, float(v), now, int(s)) for s, v in curve]
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        tag_list = [RunTag(k, v[:5000]) for k, v in _str_tags(tags or {}).items()]
        for chunk in _chunks(tag_list, 100):
            _retry(lambda c=chunk: client.log_batch(run_id, tags=c))
        for chunk in _chunks(metric_list, 1000):
            _retry(lambda c=chunk: client.log_batch(run_id, metrics=c))
        for path in artifacts:
            path = Path(path)
            if path.exists():
                _retry(lambda p=path: client.log_artifact(run_id, str(p)))
        _retry(lambda: client.set_terminated(run_id, status=status))


def close_if_running(uri: str, run_id: str, *, status: str = "KILLED", note: str = "") -> bool:
    """End a run left RUNNING by a process that died (kill -9, lost node); True if it was RUNNING."""
    uri = normalize_uri(uri)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a run id from another store, or deleted
            return False
        if run.info.status != "RUNNING":
            return False
        if note:
            _retry(lambda: client.set_tag(run_id, "error", note))
        _retry(lambda: client.set_terminated(run_id, status=status))
    return True


def log_run(
    *,
    uri: str,
    artifact_root: str | None,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, Any],
    artifacts: Iterable[Path] = (),
    step_metrics: dict[str, list[tuple[int, float]]] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Log one finished run in one go (start + end); return its run id."""
    run_id = start_run(uri=uri, artifact_root=artifact_root, experiment=experiment, run_name=run_name,
                       params=params, tags=tags, parent_run_id=parent_run_id)
    end_run(uri=uri, run_id=run_id, metrics=metrics, step_metrics=step_metrics, artifacts=artifacts)
    return run_id


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Add params to an existing run (a sweep parent's parameter space)."""
    uri = normalize_uri(uri)
    with _store_lock(uri):
        _log_params(MlflowClient(tracking_uri=uri), run_id, params)


def child_statuses(uri: str, experiment: str, parent_run_id: str) -> list[str]:
    """Statuses of the child runs of a sweep's parent run."""
    runs = search_runs(uri, experiment, f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return [r.info.status for r in runs]


def experiment_id(uri: str, name: str) -> str | None:
    """The id of MLflow experiment ``name`` (None if it does not exist): for links into the UI."""
    exp = MlflowClient(tracking_uri=normalize_uri(uri)).get_experiment_by_name(name)
    return None if exp is None else exp.experiment_id


def search_runs(uri: str, experiment: str, filter_string: str = "") -> list:
    """Runs of one experiment matching an MLflow filter string (for tests and notebooks)."""
    client = MlflowClient(tracking_uri=normalize_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=10000)


__all__ = ["init_store", "start_run", "end_run", "close_if_running", "log_run", "parent_run_id", "log_params",
           "child_statuses",
           "search_runs", "normalize_uri", "mlflow"]
