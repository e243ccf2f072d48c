"""What a stage's result depends on, for the Snakemake rules (one source: the stage script itself).

``stage_inputs(paper, artifact)``: the stage script, its experiment config, the paper's claims registry
(the stage judges its own claims at the end of a run) and every sibling module the script imports,
followed transitively through the paper folder (read from the import statements, so that the list cannot
drift from the code). Editing any of them reruns exactly the stages that use it.

``stage_mem_mb(experiment, scale)``: the memory a stage's cluster job asks for, from the arrays the
stage's own checks estimate before allocating (``ntkrepro.checks.refuse_oversized`` in its typed
``Params``) at that scale: ``MEM_BASE_MB + MEM_SAFETY * (their sum)``.

``config_error(config, schema)``: the one line for a ``--config`` the workflow's schema refuses.

This is the Snakemake side (an edge): it loads the stage scripts under ``experiments/``.
"""

from __future__ import annotations

import ast
import math
from functools import cache
from pathlib import Path


def local_imports(script: Path) -> list[Path]:
    """The sibling modules (same folder) a script imports, transitively, in a stable order."""
    folder, seen, todo = script.parent, [], [script]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            for name in names:
                path = folder / f"{name}.py"
                if path.is_file() and path != script and path not in seen:
                    seen.append(path)
                    todo.append(path)
    return sorted(seen)


def stage_inputs(paper: str, artifact: str, root: Path | str = ".") -> list[str]:
    """Paths (relative to ``root``) whose change must rerun stage ``<paper>/<artifact>``."""
    root = Path(root)
    script = root / "experiments" / paper / f"{artifact}.py"
    inputs = [script, root / "conf" / "experiment" / paper / f"{artifact}.yaml"]
    registry = root / "experiments" / paper / "claims.yaml"
    if registry.is_file():
        inputs.append(registry)
    inputs += local_imports(script)
    return [str(p.relative_to(root)) for p in inputs]


# ---- cluster memory of a stage job, from the stage's own estimate --------------------------------------

MEM_BASE_MB = 2000  # interpreter, JAX, libraries and data (~0.6 GB peak at smoke): also the floor
MEM_SAFETY = 1.5    # temporaries beside the estimated arrays (the estimates count the largest arrays only)


@cache
def memory_estimates(experiment: str, scale: str) -> tuple[tuple[str, float, str], ...]:
    """The arrays stage ``experiment`` (``<paper>/<artifact>``) estimates before allocating, at ``scale`` as
    registered in ``conf/``: ``(parameter path, bytes, what)``, the numbers its ``refuse_oversized`` checks
    compare with the machine's memory (none refused here: the job may run on a larger node)."""
    from ntkrepro import config
    from ntkrepro.checks import recording_estimates
    from ntkrepro.stage import stage_module

    params = stage_module(experiment).Params
    cfg = config.compose(experiment, [f"scale={scale}"])
    with recording_estimates() as found:
        config.validate(cfg, params)
    return tuple((path, float(unit) * float(value) ** power, what) for path, value, unit, power, what in found)


def stage_mem_mb(experiment: str, scale: str, attempt: int = 1) -> int:
    """Memory (MiB) of the cluster job of a stage at ``scale``: ``MEM_BASE_MB + MEM_SAFETY *`` the sum of its
    estimated arrays, times ``attempt`` (a retry after running out of memory asks for more)."""
    need = sum(nbytes for _, nbytes, _ in memory_estimates(experiment, scale))
    return math.ceil(MEM_BASE_MB + MEM_SAFETY * need / 2**20) * attempt


# ---- the --config schema -------------------------------------------------------------------------------

def config_error(config: dict, schema_path: Path | str) -> str | None:
    """The one line for the first ``--config`` value the schema refuses (None when it accepts them all)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if err is None:
        return None
    if err.validator == "additionalProperties":
        unknown = sorted(set(config) - set(schema["properties"]))
        return f"error: --config {', '.join(unknown)}: unknown key (keys: {', '.join(schema['properties'])})"
    key, rule, value = ".".join(str(k) for k in err.absolute_path), err.validator, err.validator_value
    if rule == "enum":
        what = f"must be one of {', '.join(map(str, value))}"
    elif rule == "type":
        what = f"must be {'an' if str(value)[:1] in tuple('aeiou') else 'a'} {value}"
    elif rule == "minimum":
        what = f"must be >= {value}"
    elif rule == "minLength":
        what = "must not be empty"
    else:
        what = err.message
    return f"error: --config {key}={err.instance!r}: {what}"
