"""The MLflow parent run of a Hydra sweep (a Hydra callback, registered in ``conf/config.yaml``).

At the sweep's start the parent run is created with the sweep's parameter space as params; each job's
run is its child (``ntkrepro.stage``). Each job's outcome is written next to the parent's key file, so
whichever process ends the last job (local, joblib or SLURM) ends the parent: FINISHED, or FAILED with
the count of failed jobs, with ``multirun.yaml`` as an artifact. A sweep never leaves its parent RUNNING.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

PARENT_KEY = "mlflow_parent_run"


def job_count(task_overrides: list[str]) -> int:
    """Number of jobs of a basic sweep: the product of the sizes of its discrete sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    count = 1
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        if override.is_sweep_override() and override.is_discrete_sweep():
            count *= len(list(override.sweep_string_iterator()))
    return count


def _enabled(config) -> bool:
    return bool(config.get("tracking") and config.tracking.enabled and config.get("paper"))


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config, **kwargs: Any) -> None:
        from ntkrepro import tracking

        if not _enabled(config):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        task = list(config.hydra.overrides.task)
        (sweep_dir / ".sweep_jobs").write_text(str(job_count(task)))
        try:
            parent = tracking.parent_run_id(
                config.tracking.uri, config.tracking.artifact_root, experiment=config.paper,
                key_file=sweep_dir / PARENT_KEY, name=f"{config.artifact} [{config.scale.name}] sweep",
                tags={"paper": config.paper, "artifact": config.artifact, "scale": config.scale.name,
                      "sweep": True, "out_dir": str(sweep_dir)})
            tracking.log_params(config.tracking.uri, parent,
                                {f"sweep.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in task if "=" in o})
        except Exception as err:  # noqa: BLE001 - tracking never stops a sweep
            print(f"WARNING: MLflow sweep parent run not created ({type(err).__name__}: {err})")

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        single = HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN
        if single or not _enabled(config):  # a single run has no sweep
            return
        from hydra.core.utils import JobStatus

        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sweep_dir / ".jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        ok = job_return.status == JobStatus.COMPLETED
        (jobs / str(config.hydra.job.num)).write_text("COMPLETED" if ok else "FAILED")
        self._close_if_done(config)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if _enabled(config):
            self._close_if_done(config)

    @staticmethod
    def _close_if_done(config) -> None:
        from ntkrepro import tracking

        sweep_dir = Path(config.hydra.sweep.dir)
        key, total_file = sweep_dir / PARENT_KEY, sweep_dir / ".sweep_jobs"
        if not key.exists() or not total_file.exists():
            return
        with open(sweep_dir / ".sweep_close.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = sweep_dir / ".sweep_closed"
            outcomes = [p.read_text() for p in (sweep_dir / ".jobs").glob("*")]
            total = int(total_file.read_text())
            if done.exists() or len(outcomes) < total:
                return
            failed = outcomes.count("FAILED")
            try:
                tracking.end_run(uri=config.tracking.uri, run_id=key.read_text().strip(),
                                 status="FAILED" if failed else "FINISHED",
                                 tags={"jobs": total, "failed_jobs": failed},
                                 artifacts=[sweep_dir / "multirun.yaml"])
                done.write_text(f"{total - failed} of {total} jobs completed")
            except Exception as err:  # noqa: BLE001
                print(f"WARNING: MLflow sweep parent run not closed ({type(err).__name__}: {err})")
