"""What the Snakefile's rules read from the tree (the workflow's edge, beside the Snakefile).

``stage_inputs(paper, artifact)``: the stage script, its experiment config, the paper's claims registry
(the stage judges its own claims at the end of a run) and every sibling module the script imports,
followed transitively through the paper folder (read from the import statements, so that the list cannot
drift from the code). Editing any of them reruns exactly the stages that use it.

``stage_mem_mb`` (``cost_table.stage_mem_mb``): the memory a stage's cluster job asks for, from the peak of
the workloads its paper's cost model declares (the peak ``snakemake cost`` shows).

``config_error(config, schema)``: the one line for a ``--config`` the workflow's schema refuses.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cost_table import stage_mem_mb

__all__ = ["config_error", "local_imports", "stage_inputs", "stage_mem_mb"]


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
