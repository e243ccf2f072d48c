"""Structured config schema and value validation for every stage.

The schema (registered in Hydra's ConfigStore as ``base_schema``) fixes the top-level keys and their
types, so a typo such as ``sclae=paper`` or ``params.dpeth=3`` fails before any compute. Experiment
parameters live under ``params``; their values are checked by :func:`validate` with one rule per key
name (documented in ``RULES``), which keeps each experiment config free of boilerplate.

Scale-dependent values are written ``${by_scale:<smoke>,<quick>,<paper>}`` in the YAML files. The scale
``rehearsal`` takes the paper's values on declared stand-in data (``allow_substitute``; a value that differs
there, such as a stand-in's name, is a fourth argument ``${by_scale:<smoke>,<quick>,<paper>,<rehearsal>}``);
its runs carry the scale name ``rehearsal`` (metrics.json, MLflow, report), write under
``<results_root>/rehearsal/`` and never count as a reproduction (``ntkrepro.claims``).

The experiment id ``<paper>/<artifact>`` is the location of ``conf/experiment/<paper>/<artifact>.yaml`` (and of
the stage script, :func:`experiment_of`): the ``experiment=<paper>/<artifact>`` choice sets ``paper`` and
``artifact`` (:func:`register`), which no config file and no override states.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ntkrepro.checks import ConfigError, bad, build, dataset, param
from ntkrepro.claims import REHEARSAL

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SIZE_LEVELS = ("smoke", "quick", "paper")  # the columns of ``by_scale``
SCALES = (*SIZE_LEVELS, REHEARSAL)
PRECISIONS = ("float32", "float64")


__all__ = ["ConfigError", "DataSchema", "validate", "flatten", "compose", "registered_config", "overrides"]


def _dataset_or_none(value) -> str | None:
    return None if value is None else dataset(value)


@dataclass
class DataSchema:
    """``data``: the dataset a stage reads (``conf/data/<name>.yaml``, sizes set by the experiment)."""

    name: str = param(check=dataset)
    substitute: str | None = param(None, check=_dataset_or_none)
    preprocess: Literal["scale01", "standardize", "unit_norm", "pixel_unit_norm"] | None = None
    classes: list[int] | None = param(None, ge=0, min_len=2, distinct=True)
    n_train: int | None = param(None, ge=1)
    n_test: int | None = param(None, ge=1)
    balanced: bool = False
    options: dict | None = None

    def check(self):
        from ntkrepro.data.registry import REGISTRY

        count = REGISTRY[self.name].num_classes
        if self.classes and count is not None and max(self.classes) >= count:
            raise bad("data.classes", f"must be labels 0..{count - 1} of {self.name}", list(self.classes))


@dataclass
class ScaleConfig:
    name: str = MISSING
    allow_substitute: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Any = None
    artifact_root: Any = None


@dataclass
class BaseConfig:
    paper: str = MISSING      # set from the experiment id (register), never stated
    artifact: str = MISSING
    seed: int = 0
    precision: str = "float64"
    results_root: str = "results"
    out_dir: str = MISSING
    data_cache: str = "data_cache"
    threads: int = 0
    progress: bool = True
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    unstated: dict[str, Any] = field(default_factory=dict)


_UNSET = object()


def _by_scale(smoke, quick, paper, rehearsal=_UNSET, *, _root_):
    """``${by_scale:a,b,c[,d]}``: the value for the active ``scale.name``; the rehearsal takes ``d`` when
    given, else the paper's value ``c``."""
    return {"smoke": smoke, "quick": quick, "paper": paper,
            REHEARSAL: paper if rehearsal is _UNSET else rehearsal}[_root_.scale.name]


def stage_dir(results_root, scale: str, paper: str, artifact: str) -> str:
    """Where a stage writes: ``<results_root>/<scale>/<paper>/<artifact>`` (Snakemake's ``out()`` and
    Hydra's ``out_dir`` / sweep folder both come from here)."""
    return f"{results_root}/{scale}/{paper}/{artifact}"


def gram_cache_root(results_root) -> str:
    """The Gram tile cache shared by every stage and scale: ``<results_root>/cache`` (``ntkrepro.gram``)."""
    return f"{results_root}/cache"


def experiment_of(stage_file) -> str:
    """The experiment id ``<paper>/<artifact>`` of a stage script ``experiments/<paper>/<artifact>.py``:
    the one place it is spelled is the file's location."""
    path = Path(stage_file).resolve()
    return f"{path.parent.name}/{path.stem}"


def experiments() -> list[str]:
    """Every experiment id: ``<paper>/<artifact>`` of each ``conf/experiment/<paper>/<artifact>.yaml``."""
    return sorted(f"{p.parent.name}/{p.stem}" for p in (CONF_DIR / "experiment").glob("*/*.yaml"))


ID_KEYS = ("paper", "artifact", "experiment_id")  # set by the experiment choice, never by an override


def id_override_error(experiment: str, overrides) -> str | None:
    """One line for an override that would give a run of ``experiment`` another id (another or no
    ``experiment=``, or ``paper=`` / ``artifact=`` / ``experiment_id=`` of its own), else None."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if (key == "experiment" and value != experiment) or key in ID_KEYS:
            return (f"error: this stage runs experiment={experiment} (paper and artifact come from it); "
                    f"got {override}")
    return None


def register() -> None:
    """Register the schema, the ``by_scale`` / ``stage_dir`` / ``chosen`` resolvers and, per experiment id
    ``<paper>/<artifact>``, the option ``experiment_id=<paper>/<artifact>`` setting ``paper`` and
    ``artifact``: ``conf/config.yaml`` selects it from the ``experiment`` choice, so every way of composing
    (``compose``, a stage's Hydra app, a sweep job, Hydra's compose API) takes both from the one id
    (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="base_schema", node=BaseConfig)
    for experiment in experiments():
        paper, artifact = experiment.split("/")
        store.store(group=f"experiment_id/{paper}", name=artifact, package="_global_",
                    node={"paper": paper, "artifact": artifact})
    if not OmegaConf.has_resolver("by_scale"):
        OmegaConf.register_new_resolver("by_scale", _by_scale)
    if not OmegaConf.has_resolver("stage_dir"):
        OmegaConf.register_new_resolver("stage_dir", stage_dir)
    if not OmegaConf.has_resolver("chosen"):  # the defaults list's ${chosen:${experiment}}: none -> no option
        OmegaConf.register_new_resolver("chosen", lambda choice: "none" if choice is None else choice)


register()


def _nonneg(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _pos(v):
    return _nonneg(v) and v > 0


def _pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _activation(v):
    from ntkrepro.kernels.gaussian import get_activation

    try:
        get_activation(v)
    except ValueError:
        return False
    return True


# (pattern on the key name, check, what the value must be)
RULES: list[tuple[str, Any, str]] = [
    (r"^sigma_\w*2$|^ridge$|^beta$|^kappa$", _nonneg, "a finite number >= 0 (a variance)"),
    (r"^(lr|learning_rate|lrs)$", _pos, "a positive number"),
    (
        r"^(depth|depths|width|widths|channels|n_train|n_test|steps|epochs|n_seeds|n_inits|"
        r"n_samples|batch_size|n_draws|max_depth|filter_size|tile)$",
        _pos_int,
        "an integer >= 1",
    ),
    (r"^(activation|activations)$", _activation, "a registered activation"),
]


def _check(path: str, key: str, value) -> None:
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    for pattern, check, what in RULES:
        if re.search(pattern, key):
            for v in values:
                if v is None:
                    continue
                if not check(v):
                    raise bad(path, f"must be {what}", v)
            return


def _walk(node, path: str) -> None:
    if isinstance(node, (dict, DictConfig)):
        for key, value in node.items():
            sub = f"{path}.{key}"
            if isinstance(value, (dict, DictConfig)):
                _walk(value, sub)
            else:
                _check(sub, str(key), value)


def validate(cfg: DictConfig, params_schema: type | None = None) -> None:
    """Check a composed config before any data or compute; raise :class:`ConfigError` (one line naming
    the parameter) on the first bad value. ``params_schema``: the stage's typed ``params`` (a dataclass,
    see ``ntkrepro.checks``); without one, values are checked by key name (``RULES``)."""
    if OmegaConf.is_missing(cfg, "paper") or OmegaConf.is_missing(cfg, "artifact"):
        raise ConfigError("error: experiment: no experiment id (compose with experiment=<paper>/<artifact>, "
                          "which sets paper and artifact)")
    if cfg.scale.name not in SCALES:
        raise bad("scale", f"must be one of {', '.join(SCALES)}", cfg.scale.name)
    if cfg.precision not in PRECISIONS:
        raise bad("precision", f"must be one of {', '.join(PRECISIONS)}", cfg.precision)
    if cfg.threads < 0:
        raise bad("threads", "must be >= 0 (0 = all cores)", cfg.threads)
    if cfg.data is not None:
        build(DataSchema, cfg.data, "data")
    if params_schema is not None:
        params = build(params_schema, cfg.params, "params")
        if hasattr(params, "check_config"):  # constraints across params, data.* and precision (memory)
            params.check_config(cfg)
    else:
        _walk(cfg.params, "params")


# Keys that say where and how a run executes, not what it computes: never an override of the premise.
INFRA_KEYS = ("out_dir", "results_root", "data_cache", "threads", "progress")
INFRA_PREFIXES = ("tracking.",)


def compose(experiment: str, overrides: list[str] = ()) -> DictConfig:
    """The composed (unresolved) config of ``experiment`` (``<paper>/<artifact>``) with Hydra overrides;
    :class:`ConfigError` (one line) for an override that would change its id (``id_override_error``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    problem = id_override_error(experiment, overrides)
    if problem:
        raise ConfigError(problem)
    overrides = [f"experiment={experiment}", *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path is conf/
        return hydra_compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def registered_config(experiment: str, scale: str) -> dict[str, Any] | None:
    """The flattened resolved config of ``experiment`` (``<paper>/<artifact>``) at ``scale`` as registered in
    ``conf/`` (no command-line overrides); None when no such experiment config exists."""
    if scale not in SCALES or not (CONF_DIR / "experiment" / f"{experiment}.yaml").is_file():
        return None
    return flatten(compose(experiment, [f"scale={scale}"]))


def overrides(run: dict[str, Any], registered: dict[str, Any]) -> dict[str, dict]:
    """``{key: {"registered": value, "run": value}}`` for every key where a run's flattened config differs
    from the registered one (execution-only keys such as out_dir, threads, tracking.* left out)."""
    from ntkrepro.claims import _same

    out = {}
    for key in sorted(set(run) | set(registered)):
        if key in INFRA_KEYS or key.startswith(INFRA_PREFIXES):
            continue
        a, b = registered.get(key, "<absent>"), run.get(key, "<absent>")
        if not _same(a, b):
            out[key] = {"registered": a, "run": b}
    return out


def premise_config(flat: dict[str, Any]) -> dict[str, Any]:
    """The premise keys of a flattened config (what a claim's statement can depend on)."""
    from ntkrepro.claims import is_premise_key

    return {k: v for k, v in flat.items() if is_premise_key(k)}


def checkable(paper: str, experiments_dir: Path | str = "experiments") -> list[tuple[str, str, list[str], str]]:
    """Per claim of ``experiments/<paper>/claims.yaml``: (id, artifact, the scales whose registered config
    meets its premise, the violations at the first scale that does not)."""
    from ntkrepro.claims import load_registry, premise_violations

    rows = []
    configs: dict[tuple[str, str], dict | None] = {}
    for claim in load_registry(Path(experiments_dir) / paper / "claims.yaml"):
        for scale in SIZE_LEVELS:
            if (claim.artifact, scale) not in configs:
                configs[(claim.artifact, scale)] = registered_config(f"{paper}/{claim.artifact}", scale)
        paper_cfg = configs[(claim.artifact, "paper")]
        if paper_cfg is None:
            rows.append((claim.id, claim.artifact, [], f"no conf/experiment/{paper}/{claim.artifact}.yaml"))
            continue
        ok, why = [], ""
        for scale in SIZE_LEVELS:
            violations = premise_violations(claim, configs[(claim.artifact, scale)], premise_config(paper_cfg), {})
            if violations:
                why = f"{scale}: " + "; ".join(str(v) for v in violations)  # the largest failing scale
            else:
                ok.append(scale)
        rows.append((claim.id, claim.artifact, ok, why))
    return rows


def _cli(argv: list[str]) -> int:
    """``python -m ntkrepro.config checkable <paper>``: where each claim's premise is met."""
    if len(argv) != 2 or argv[0] != "checkable":
        print("usage: python -m ntkrepro.config checkable <paper>", file=sys.stderr)
        return 2
    for cid, artifact, ok, why in checkable(argv[1]):
        print(f"{cid:40s} {artifact:16s} checkable at: {', '.join(ok) or 'NONE'}" + (f"   [{why}]" if why else ""))
    return 0


def flatten(cfg, prefix: str = "") -> dict[str, Any]:
    """Flatten a (resolved) config into ``{"a.b.c": value}`` (lists kept as values)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
