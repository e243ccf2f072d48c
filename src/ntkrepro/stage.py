"""The one wrapper every stage uses: Hydra config -> ``run(cfg)`` -> files on disk + an MLflow run.

A stage script is a few lines::

    from ntkrepro.stage import StageResult, main

    def run(cfg) -> StageResult:
        ...  # pure apart from reading data

    if __name__ == "__main__":
        main(run, params=Params)

``main`` composes ``conf/`` (``experiment=<paper>/<artifact>`` is preset: the script's location,
``experiments/<paper>/<artifact>.py``, is the one place the id is spelled; the choice sets ``paper`` and
``artifact``, which no override may change: ``config.id_override_error``), validates it (one-line error
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
from ntkrepro import set_cpu_threads
from ntkrepro.io import atomic_save_npz, atomic_savefig, atomic_write_json, atomic_write_text

CONF_DIR = config_mod.CONF_DIR
EXPERIMENTS_DIR = CONF_DIR.parent / "experiments"  # the claims registries (data, never imported)
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


class StageInterrupted(BaseException):
    """SIGTERM during a stage (a cluster's time limit, a cancelled job): its MLflow run ends KILLED."""


def _one_line(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


class _Tracker:
    """The MLflow run of one stage execution: started before the compute (true duration), ended after it
    FINISHED, or FAILED / KILLED with the one-line error. A run left RUNNING by a killed attempt is
    closed (KILLED) by the next attempt and linked from its metrics.json. Tracking failures are reported
    and recorded, never raised: they cannot lose a computed result."""

    def __init__(self, cfg, out_dir: Path, sweep):
        self.cfg, self.out_dir, self.sweep = cfg, out_dir, sweep
        self.enabled = bool(cfg.tracking.enabled)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.previous_run_id: str | None = None
        self.error: str | None = None
        self.marker = out_dir / ".mlflow_run_id"

    def _guard(self, fn):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - tracking must never lose a computed result
            self.error = self.error or _one_line(err)
            print(f"WARNING: MLflow tracking failed ({self.error}); results are safe in {self.out_dir}",
                  file=sys.stderr)
            return None

    def start(self, params: dict, tags: dict) -> None:
        from ntkrepro import tracking

        if not self.enabled:
            return
        cfg = self.cfg
        if self.marker.exists():
            previous = self.marker.read_text().strip()
            note = "its process ended without closing the run (killed?); closed by a later attempt"
            if self._guard(lambda: tracking.close_if_running(cfg.tracking.uri, previous, note=note)):
                self.previous_run_id = previous
        parent, run_name = None, f"{cfg.artifact} [{cfg.scale.name}]"
        if self.sweep is not None:
            key_file, job_name = self.sweep
            parent = self._guard(lambda: tracking.parent_run_id(
                cfg.tracking.uri, cfg.tracking.artifact_root, experiment=cfg.paper, key_file=key_file,
                name=f"{cfg.artifact} [{cfg.scale.name}] sweep",
                tags={**tags, "sweep": True, "out_dir": str(key_file.parent)}))
            run_name = f"{run_name} {job_name}"
        if self.previous_run_id:
            tags = {**tags, "previous_attempt_run_id": self.previous_run_id}
        self.run_id = self._guard(lambda: tracking.start_run(
            uri=cfg.tracking.uri, artifact_root=cfg.tracking.artifact_root, experiment=cfg.paper,
            run_name=run_name, params=params, tags=tags, parent_run_id=parent,
            description=experiment_description(cfg.paper)))
        if self.run_id:
            atomic_write_text(self.marker, self.run_id)
            self.experiment_id = self._guard(lambda: tracking.experiment_id(cfg.tracking.uri, cfg.paper))

    def end(self, status: str, **logged) -> None:
        from ntkrepro import tracking

        if self.run_id is None:
            return
        run_id = self.run_id
        if self._guard(lambda: tracking.end_run(uri=self.cfg.tracking.uri, run_id=run_id, status=status, **logged)) \
                is None and self.error is None:
            self.marker.unlink(missing_ok=True)  # closed: nothing left for a later attempt to close


def experiment_description(paper: str) -> str:
    """The MLflow experiment's description: the paper (title line of its README) and its artifacts, each
    with the first comment line of its config."""
    readme = EXPERIMENTS_DIR / paper / "README.md"
    title = readme.read_text().splitlines()[0].lstrip("# ").strip() if readme.is_file() else paper
    lines = [f"{title} — reproduced by ntkrepro (experiments/{paper}/, claims in claims.yaml).", ""]
    for conf in sorted((CONF_DIR / "experiment" / paper).glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in conf.read_text().splitlines()
                      if ln.startswith("#") and "@package" not in ln), "")
        lines.append(f"- {conf.stem}: {first}")
    return "\n".join(lines)


def _artifact_verdicts(cfg, record: dict) -> list:
    """This artifact's claims judged on this run (None-safe: no registry, or a metric it lacks)."""
    from ntkrepro.claims import ClaimError, evaluate, load_registry

    registry = EXPERIMENTS_DIR / cfg.paper / "claims.yaml"
    if not registry.is_file():
        return []
    try:
        return [evaluate(c, record) for c in load_registry(registry) if c.artifact == cfg.artifact]
    except ClaimError as err:
        print(f"WARNING: claims of {cfg.paper}/{cfg.artifact} not evaluated: {err}", file=sys.stderr)
        return []


def _verdicts_table(verdicts: list):
    import pandas as pd

    return pd.DataFrame([{"claim": r.claim.id, "status": r.status, "paper": r.claim.paper_value,
                          "measured": r.measured, "verdict": r.verdict, "detail": r.detail} for r in verdicts])


def _tracking_params(record: dict) -> dict:
    """Run params: the requested config (``cfg.*``) and the data each split actually used (``data.used.*``)."""
    params = {f"cfg.{k}": v for k, v in record["config"].items()}
    for s in record["splits"]:
        for field_ in ("name", "n", "source", "sha256", "substituted_for"):
            params[f"data.used.{s['split']}.{s.get('requested')}.{field_}"] = s.get(field_)
    return params


def _tracking_tags(cfg, record: dict, out_dir: Path) -> dict:
    data = record["data"]
    substituted = [s for s in record["splits"] if s.get("substituted_for")]
    return {
        "paper": cfg.paper,
        "artifact": cfg.artifact,
        "scale": cfg.scale.name,
        "precision": cfg.precision,
        "git_commit": record["git_commit"],
        "git_dirty": record["git_dirty"],
        "data.name": data.get("name"),
        "data.source": data.get("source"),
        "data.sha256": data.get("sha256"),
        "data.substituted": bool(data.get("substituted_for")) or bool(substituted),
        "data.substituted_for": data.get("substituted_for")
        or ", ".join(sorted({s["substituted_for"] for s in substituted})) or None,
        "overrides": ", ".join(f"{k}={v['run']}" for k, v in (record["overrides"] or {}).items()) or "none",
        "out_dir": str(out_dir),
        "mlflow.source.name": f"experiments/{cfg.paper}/{cfg.artifact}.py",
        "mlflow.source.type": "LOCAL",
        **({"mlflow.source.git.commit": record["git_commit"]} if record["git_commit"] else {}),
        **record["runtime"],
    }


def execute(cfg, run_fn: Callable[[Any], StageResult], *, out_dir: Path, sweep: Any = None,
            params_schema: type | None = None) -> dict:
    """Run one stage for a composed config; return the metrics.json record. (No Hydra needed.)
    ``params_schema``: the stage's typed params (``ntkrepro.checks``), checked before anything else."""
    global _loaded_splits
    import signal

    from omegaconf import OmegaConf

    config_mod.validate(cfg, params_schema)
    premise = premise_record(cfg)
    premise["config"]["out_dir"] = str(out_dir)  # a sweep job's own folder, not the single-run one
    set_cpu_threads(cfg.threads)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing noise in every stage log
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    commit, dirty = git_state()
    record = {
        "paper": cfg.paper, "artifact": cfg.artifact, "scale": cfg.scale.name, "metrics": {},
        "data": data_record(None), "splits": [], "git_commit": commit, "git_dirty": dirty,
        "runtime": _runtime_info(), **premise,
    }
    overrides = ", ".join(f"{k}={_short(v['run'])}" for k, v in (premise["overrides"] or {}).items())
    print(f"[stage] {cfg.paper}/{cfg.artifact} at scale {cfg.scale.name}; overrides of the registered config: "
          f"{overrides or 'none'}; output {out_dir}", flush=True)
    tracker = _Tracker(cfg, out_dir, sweep)
    tracker.start(_tracking_params(record), _tracking_tags(cfg, record, out_dir))

    def _terminate(signum, frame):
        raise StageInterrupted(f"signal {signum}")

    try:
        previous_handler = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (a launcher's worker): no handler
        previous_handler = None
    start = time.perf_counter()
    _loaded_splits = []
    try:
        result = run_fn(cfg)
        if not isinstance(result, StageResult):
            raise TypeError(f"run(cfg) must return a StageResult, got {type(result).__name__}")
        splits = _collected_splits(_loaded_splits)
    except (KeyboardInterrupt, StageInterrupted) as err:
        tracker.end("KILLED", tags={"error": f"interrupted ({_one_line(err)})"})
        raise
    except BaseException as err:
        tracker.end("FAILED", tags={"error": _one_line(err)})
        raise
    finally:
        _loaded_splits = None
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    runtime = time.perf_counter() - start
    for s in splits:
        stand_in = f" (stand-in for {s['substituted_for']})" if s.get("substituted_for") else ""
        print(f"[stage] data {s['split']}: {s['name']}{stand_in}, n = {s['n']}, source {s['source']}", flush=True)
    print(f"[stage] computed in {runtime:.1f} s", flush=True)

    written = _write_outputs(out_dir, result)
    record.update({
        "metrics": result.metrics,
        "data": data_record(result.data),
        "splits": splits,
        "sizes": result.sizes,
        "seeds": result.seeds,
        "precision": cfg.precision,
        "runtime_s": round(runtime, 3),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "figures": sorted(result.figures),
        "tables": sorted(result.tables),
        "notes": result.notes,
        "uncertainty": result.uncertainty,
        "diverged": result.diverged,
        "unstated_settings": config_mod.flatten(resolved.get("unstated", {})),
        "mlflow_run_id": tracker.run_id,
        "mlflow_experiment_id": tracker.experiment_id,
        "mlflow_previous_run_id": tracker.previous_run_id,
        "tracking_error": tracker.error,
    })
    metrics_path = atomic_write_json(out_dir / "metrics.json", record)

    verdicts = _artifact_verdicts(cfg, record)
    if verdicts:
        table = _verdicts_table(verdicts)
        written.append(atomic_write_text(out_dir / "verdicts.csv", table.to_csv(index=False)))
        counts = table["status"].value_counts()
        print("[stage] verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
        for r in verdicts:
            print(f"[stage]   {r.claim.id}: {r.status}" + (f" — {r.detail}" if r.detail else ""), flush=True)
    if tracker.run_id:
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics["runtime_s"] = record["runtime_s"]
        tracker.end("FINISHED", metrics=metrics, step_metrics=result.step_metrics,
                    artifacts=[*written, out_dir / "config.yaml", metrics_path, out_dir / "stage.log"],
                    tags={**_tracking_tags(cfg, record, out_dir),
                          **{f"claim.{r.claim.id}": r.status for r in verdicts}})
        if tracker.error:
            record["tracking_error"] = tracker.error
            atomic_write_json(metrics_path, record)
    return record


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def stage_module(experiment: str):
    """Import the stage script ``experiments/<paper>/<artifact>.py`` as a module (its folder importable,
    for sibling helpers): for tests and tools that need a stage's ``Params`` or ``run``."""
    import importlib.util

    path = EXPERIMENTS_DIR / f"{experiment}.py"
    if not path.is_file():
        raise ValueError(f"error: experiment: no stage {experiment!r} (no {path})")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = "ntkrepro_stage_" + experiment.replace("/", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _data_unavailable() -> type:
    from ntkrepro.data import DataUnavailable

    return DataUnavailable


def _importable_by_name(run_fn) -> None:
    """Make a stage script that runs as ``__main__`` importable under its file name, its functions and
    classes pointing there: a launcher that pickles the job (submitit on SLURM) then imports the script
    by name in the job (its folder is on the job's path), where the typed Params' annotations resolve."""
    import types

    module = sys.modules.get(run_fn.__module__)
    if run_fn.__module__ != "__main__" or module is None or not getattr(module, "__file__", None):
        return
    name = Path(module.__file__).stem
    sys.modules.setdefault(name, module)
    folder = str(Path(module.__file__).resolve().parent)  # for worker processes (joblib, submitit)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [folder, *paths] if p)
    for obj in list(vars(module).values()):
        if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
            obj.__module__ = name


def command_line_error(experiment: str, argv: list[str]) -> str | None:
    """One line for overrides Hydra cannot compose (an unknown scale or key, a bad value type), or None.
    Sweeps (``-m``) and Hydra's own flags are left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return None
    overrides = [a for a in argv if "=" in a and not a.startswith(("experiment=", "hydra", "+hydra"))]
    try:
        cfg = config_mod.compose(experiment, overrides)
    except Exception as err:  # noqa: BLE001 - Hydra raises several kinds, all with a multi-line message
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = lines[0] if lines else type(err).__name__
        options = []
        if any(ln.startswith("Available options") for ln in lines):
            i = next(i for i, ln in enumerate(lines) if ln.startswith("Available options"))
            options = [ln for ln in lines[i + 1:] if not ln.startswith(("Config search path", "provider="))]
        accepted = f" (available: {', '.join(options)})" if options else ""
        if first.startswith("Could not override"):  # a key the config does not have
            key = first.split("'")[1] if "'" in first else first
            return f"error: {key}: unknown key (a typo? keys are listed in conf/; to add one use +{key}=...)"
        cause = getattr(err, "__cause__", None)
        detail = f": {str(cause).splitlines()[0]}" if cause is not None and str(cause).strip() else ""
        return f"error: {first}{accepted}{detail}"
    return _unwritable(Path(str(cfg.out_dir)))


def _unwritable(folder: Path) -> str | None:
    """One line when the stage's output folder cannot be created or written (a read-only or full results
    root, a file in the way), before Hydra or the stage touch it."""
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:  # create nothing: probe the nearest
        existing = existing.parent                                  # existing ancestor
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        return (f"error: results_root: cannot write the output folder {folder} ({err.strerror or err}); "
                "choose another results_root=")
    return None


DISK_ERRNOS = (28, 30, 13, 122)  # ENOSPC, EROFS, EACCES, EDQUOT: the results cannot be written


def failure_line(err: BaseException, experiment: str) -> tuple[str, bool]:
    """The one line a failed stage prints, and whether its traceback goes first (only for a bug)."""
    if isinstance(err, config_mod.ConfigError):
        return str(err), False
    if isinstance(err, (KeyboardInterrupt, StageInterrupted)):
        return f"error: {experiment} interrupted", False
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        where = f" {err.filename}" if err.filename else ""
        return (f"error: results_root: cannot write{where} ({err.strerror}); free space or choose another "
                "results_root= (a finished tile or result already written is kept)"), False
    if isinstance(err, (ValueError, _data_unavailable())):
        return (str(err) if str(err).startswith("error: ") else f"error: {err}"), False
    return (f"error: internal error in {experiment} (a bug in ntkrepro, not in your input; please report it "
            f"with the traceback above): {_one_line(err)}"), True


def main(run_fn: Callable[[Any], StageResult], *, params: type | None = None) -> None:
    """Hydra entry point of a stage script (supports ``-m`` sweeps and every Hydra override); the experiment
    is the script's ``<paper>/<artifact>`` (``config.experiment_of``). ``params``: the stage's typed
    parameters (a dataclass, ``ntkrepro.checks``), checked before any data or compute."""
    import inspect

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    experiment = config_mod.experiment_of(inspect.getsourcefile(run_fn))
    _importable_by_name(run_fn)
    problem = config_mod.id_override_error(experiment, sys.argv[1:])
    if problem is None:
        if f"experiment={experiment}" not in sys.argv[1:]:
            sys.argv.append(f"experiment={experiment}")
        problem = command_line_error(experiment, sys.argv[1:])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)

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
            execute(cfg, run_fn, out_dir=out_dir, sweep=sweep, params_schema=params)
        except (Exception, KeyboardInterrupt, StageInterrupted) as err:  # noqa: BLE001 - one error path
            message, bug = failure_line(err, experiment)
            if bug or os.environ.get("NTKREPRO_TRACEBACK"):
                traceback.print_exc()
            fail(message)

    _app()
