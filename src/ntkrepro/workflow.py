"""What a stage's result depends on, for the Snakemake rules (one source: the stage script itself).

``stage_inputs(paper, artifact)``: the stage script, its experiment config, the paper's claims registry
(the stage judges its own claims at the end of a run) and every sibling module the script imports,
followed transitively through the paper folder (read from the import statements, so that the list cannot
drift from the code). Editing any of them reruns exactly the stages that use it.
"""

from __future__ import annotations

import ast
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
