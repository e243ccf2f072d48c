"""The one wrapper every stage uses: Hydra config -> ``run(cfg)`` -> files on disk + an MLflow run.

A stage script is a few lines::

    from ntkrepro.stage import StageResult, main

    def run(cfg) -> StageResult:
        ...  # pure apart from reading data

    if __name__ == "__main__":
        main(run, experiment="jacot2018/fig1")

``main`` composes ``conf/`` (``experiment=<paper>/<artifact>`` is preset), validates it (one-line error
and exit status 2 on a bad value, before any compute), runs the stage, then writes into ``out_dir``:
each figure as PNG and PDF, each table as CSV and Markdown, arrays as ``arrays.npz``, the resolved
``config.yaml`` and ``metrics.json`` (schema in design.md section 4), all atomically. Only then is the
run logged to MLflow; if tracking fails the results stay on disk and the failure is reported on
stderr and in ``metrics.json`` (``tracking_error``).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ntkrepro import config as config_mod
from ntkrepro.io import atomic_save_npz, atomic_savefig, atomic_write_json, atomic_write_text

CONF_DIR = config_mod.CONF_DIR
FIGURE_FORMATS = ("png", "pdf")


@dataclass
class StageResult:
    """What a stage's ``run(cfg)`` returns. Only ``metrics`` is required.

    ``data``: the provenance of the data actually used (``ntkrepro.data.Provenance`` or a dict with
    name, source, sha256, substituted_for); ``None`` for analytic stages. Every split read through
    :func:`load_split` is recorded as well (``metrics.json["splits"]``). ``sizes``/``seeds``: what the
    numbers were computed on. ``step_metrics``: curves as ``{name: [(step, value), ...]}``.
    ``uncertainty``: ``{metric: Estimate.record()}`` (``ntkrepro.stats``) for a metric that is a mean
    over seeds or a fitted slope; ``diverged``: ``{metric: {"diverged": k, "runs": n}}`` for a metric
    aggregated over runs of which k diverged (and were left out of it).
    """

    metrics: dict[str, Any]
    data: Any = None
    sizes: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    step_metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    uncertainty: dict[str, dict] = field(default_factory=dict)
    diverged: dict[str, dict] = field(default_factory=dict)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=CONF_DIR.parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the code runs from; (None, None) outside git."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def data_record(data: Any) -> dict[str, Any]:
    """Normalize a provenance object (dataclass, dict or None) to the metrics.json ``data`` dict."""
    if data is None:
        return {"name": "none (analytic computation)", "source": None, "sha256": None,
                "substituted_for": None}
    if hasattr(data, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(data)
    return dict(data)


# Provenance of every split read through load_split during one stage run (set by execute).
_loaded_splits: list[dict] | None = None


def load_split(cfg, split: str, *, n: int | None = None):
    """Load ``split`` ("train"/"test") of the experiment's dataset (``cfg.data``): the one way stages
    read data. Stand-ins (``cfg.data.substitute``) are used only where the scale allows them; the
    returned dataset's provenance records any substitution, and every split read during a stage run
    lands in its ``metrics.json["splits"]``."""
    from ntkrepro import data as data_mod

    d = cfg.data
    if d is None:
        raise ValueError(f"experiment {cfg.paper}/{cfg.artifact} declares no data")
    size = n if n is not None else d.get(f"n_{split}")
    dataset = data_mod.load(
        d.name,
        split,
        n=size,
        seed=cfg.seed,
        preprocess=d.get("preprocess"),
        classes=list(d.classes) if d.get("classes") is not None else None,
        balanced=bool(d.get("balanced", False)),
        cache_dir=cfg.data_cache,
        substitute=d.get("substitute"),
        allow_substitute=cfg.scale.allow_substitute,
        options=d.get("options"),
        dtype=np.float32 if cfg.precision == "float32" else np.float64,
    )
    if _loaded_splits is not None:
        _loaded_splits.append({"requested": d.name, **data_record(dataset.provenance)})
    return dataset


def _set_threads(threads: int) -> None:
    """Cap XLA's CPU threads (must run before the first JAX computation)."""
    if threads > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
        os.environ["XLA_FLAGS"] = f"{flags} {extra} intra_op_parallelism_threads={threads}".strip()


def _runtime_info() -> dict[str, Any]:
    import jax

    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": ", ".join(str(d) for d in jax.devices()),
    }


def _write_outputs(out_dir: Path, result: StageResult) -> list[Path]:
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for name, fig in result.figures.items():
        for fmt in FIGURE_FORMATS:
            written.append(atomic_savefig(fig, out_dir / f"{name}.{fmt}", bbox_inches="tight"))
        plt.close(fig)
    for name, table in result.tables.items():
        written.append(atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False)))
        written.append(atomic_write_text(out_dir / f"{name}.md", table.to_markdown(index=False)))
    if result.arrays:
        written.append(atomic_save_npz(out_dir / "arrays.npz", **result.arrays))
    return written


def premise_record(cfg) -> dict[str, Any]:
    """What the claims are judged against: the run's flattened ``config``, the paper-scale registered
    ``paper_config`` (premise keys only) and the run's ``overrides`` against the registered config of its
    scale (both None for an experiment not registered in conf/)."""
    run = config_mod.flatten(cfg)
    experiment = f"{cfg.paper}/{cfg.artifact}"
    registered = config_mod.registered_config(experiment, cfg.scale.name)
    paper = config_mod.registered_config(experiment, "paper")
    return {
        "config": run,
        "overrides": None if registered is None else config_mod.overrides(run, registered),
        "paper_config": None if paper is None else config_mod.premise_config(paper),
    }


def _collected_splits(splits: list[dict]) -> list[dict]:
    """One entry per distinct split read (a stage may read the same split twice)."""
    out, seen = [], set()
    for s in splits:
        key = (s.get("requested"), s.get("name"), s.get("split"), s.get("n"), s.get("indices_sha256"),
               s.get("preprocess"))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def execute(cfg, run_fn: Callable[[Any], StageResult], *, out_dir: Path, sweep: Any = None) -> dict:
    """Run one stage for a composed config; return the metrics.json record. (No Hydra needed.)"""
    global _loaded_splits
    from omegaconf import OmegaConf

    config_mod.validate(cfg)
    premise = premise_record(cfg)
    _set_threads(cfg.threads)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing noise in every stage log
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))

    start = time.perf_counter()
    _loaded_splits = []
    try:
        result = run_fn(cfg)
        splits = _collected_splits(_loaded_splits)
    finally:
        _loaded_splits = None
    runtime = time.perf_counter() - start
    if not isinstance(result, StageResult):
        raise TypeError(f"run(cfg) must return a StageResult, got {type(result).__name__}")

    written = _write_outputs(out_dir, result)
    commit, dirty = git_state()
    info = _runtime_info()
    record = {
        "paper": cfg.paper,
        "artifact": cfg.artifact,
        "scale": cfg.scale.name,
        "metrics": result.metrics,
        "data": data_record(result.data),
        "splits": splits,
        "sizes": result.sizes,
        "seeds": result.seeds,
        "precision": cfg.precision,
        "runtime_s": round(runtime, 3),
        "git_commit": commit,
        "git_dirty": dirty,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime": info,
        "figures": sorted(result.figures),
        "tables": sorted(result.tables),
        "notes": result.notes,
        "uncertainty": result.uncertainty,
        "diverged": result.diverged,
        **premise,
        "unstated_settings": config_mod.flatten(resolved.get("unstated", {})),
        "mlflow_run_id": None,
        "tracking_error": None,
    }
    metrics_path = atomic_write_json(out_dir / "metrics.json", record)

    if cfg.tracking.enabled:
        try:
            record["mlflow_run_id"] = _track(
                cfg, resolved, record, written, out_dir, sweep, result.step_metrics
            )
        except Exception as err:  # noqa: BLE001 - tracking must never lose a computed result
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            record["tracking_error"] = f"{type(err).__name__}: {first}"
            print(
                f"WARNING: MLflow tracking failed ({record['tracking_error']}); "
                f"results are safe in {out_dir}",
                file=sys.stderr,
            )
        atomic_write_json(metrics_path, record)
    return record


def _track(cfg, resolved, record, written, out_dir: Path, sweep, step_metrics) -> str:
    from ntkrepro import tracking

    data = record["data"]
    tags = {
        "paper": cfg.paper,
        "artifact": cfg.artifact,
        "scale": cfg.scale.name,
        "precision": cfg.precision,
        "git_commit": record["git_commit"],
        "git_dirty": record["git_dirty"],
        "data.name": data.get("name"),
        "data.source": data.get("source"),
        "data.sha256": data.get("sha256"),
        "data.substituted": data.get("substituted_for") is not None
        or any(s.get("substituted_for") for s in record["splits"]),
        "data.substituted_for": data.get("substituted_for"),
        "overrides": ", ".join(f"{k}={v['run']}" for k, v in (record["overrides"] or {}).items()) or "none",
        "out_dir": str(out_dir),
        **{k: v for k, v in record["runtime"].items()},
    }
    parent = None
    run_name = cfg.artifact
    if sweep is not None:
        key_file, job_name = sweep
        parent = tracking.parent_run_id(
            cfg.tracking.uri, cfg.tracking.artifact_root, experiment=cfg.paper,
            key_file=key_file, name=f"{cfg.artifact} sweep",
            tags={**tags, "sweep": True, "out_dir": str(key_file.parent)},
        )
        run_name = f"{cfg.artifact} {job_name}"
    metrics = {
        k: v for k, v in record["metrics"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    metrics["runtime_s"] = record["runtime_s"]
    return tracking.log_run(
        uri=cfg.tracking.uri,
        artifact_root=cfg.tracking.artifact_root,
        experiment=cfg.paper,
        run_name=run_name,
        params=config_mod.flatten(resolved),
        metrics=metrics,
        tags=tags,
        artifacts=[*written, out_dir / "config.yaml", out_dir / "metrics.json"],
        step_metrics=step_metrics,
        parent_run_id=parent,
    )


def _data_unavailable() -> type:
    from ntkrepro.data import DataUnavailable

    return DataUnavailable


def main(run_fn: Callable[[Any], StageResult], *, experiment: str) -> None:
    """Hydra entry point of a stage script (supports ``-m`` sweeps and every Hydra override)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    given = [a for a in sys.argv[1:] if a.split("=", 1)[0].lstrip("+~") == "experiment"]
    if any(a.split("=", 1)[1] != experiment for a in given if "=" in a):
        print(f"error: this stage runs experiment={experiment}; got {given[0]}", file=sys.stderr)
        sys.exit(2)
    if not given:
        sys.argv.append(f"experiment={experiment}")

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _app(cfg) -> None:
        hc = HydraConfig.get()
        sweep = None
        out_dir = Path(cfg.out_dir)
        if hc.mode == RunMode.MULTIRUN:
            out_dir = Path(hc.runtime.output_dir)
            sweep = (Path(hc.sweep.dir) / "mlflow_parent_run", hc.job.override_dirname or hc.job.num)

        def fail(message: str):
            print(message, file=sys.stderr)
            if hc.mode == RunMode.MULTIRUN:
                # A sweep job (local or submitit): an exception is returned to the launcher as a failed
                # job, which Hydra prints as this one line (sys.exit would kill a submitit job silently).
                from hydra.errors import CompactHydraException

                raise CompactHydraException(message) from None
            sys.exit(2)

        try:
            execute(cfg, run_fn, out_dir=out_dir, sweep=sweep)
        except config_mod.ConfigError as err:
            fail(str(err))
        except (ValueError, _data_unavailable()) as err:
            # Bad input detected by the library before compute: one line, non-zero exit.
            if os.environ.get("NTKREPRO_TRACEBACK"):
                traceback.print_exc()
            fail(f"error: {err}")

    _app()
