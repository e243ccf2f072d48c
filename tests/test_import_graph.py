"""The library (src/ntkrepro) knows no paper: no module but ``ntkrepro.stage`` (the Hydra stage runner, which
loads stage scripts by design) imports the stage code or any code under experiments/. The workflow's edge
code that does (the cost table, the Gram request files, the Snakefile's helpers) lives in scripts/.

Checked twice: each module imported alone in a fresh interpreter leaves neither ``ntkrepro.stage`` nor a module
from experiments/ in ``sys.modules``; and, for the imports a function makes only when called, the source of
every module names neither ``ntkrepro.stage`` (in any import form, or as a module name string) nor a Python
file under experiments/, and loads no code by file path. Data under experiments/ (the claims registries and
READMEs the report reads) is not code and stays allowed."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ntkrepro"
EXPERIMENTS = ROOT / "experiments"
STAGE = "ntkrepro.stage"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py"))
LIBRARY = [m for m in MODULES if m != STAGE]

PROBE = """
import importlib, json, sys
from pathlib import Path
importlib.import_module(sys.argv[1])
experiments = Path(sys.argv[2]).resolve()
loaded = sorted(name for name, module in list(sys.modules.items())
                if name == "ntkrepro.stage" or name.startswith("ntkrepro.stage.")
                or experiments in Path(getattr(module, "__file__", None) or "/").resolve().parents)
print(json.dumps(loaded))
"""


@pytest.mark.parametrize("module", LIBRARY)
def test_importing_a_library_module_loads_no_stage_or_experiment_code(module):
    proc = subprocess.run([sys.executable, "-c", PROBE, module, str(EXPERIMENTS)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------- the source

PATH_LOADERS = {"spec_from_file_location", "SourceFileLoader", "run_path", "exec", "execfile"}
EXPERIMENT_CODE = re.compile(r"experiments[/\\].*\.py\b")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".")
    base = package if is_package else package[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_stage(name: str) -> bool:
    return name == STAGE or name.startswith(STAGE + ".")


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Where ``source``, the code of library module ``module``, reaches stage or experiment code
    (``<line>: what``)."""
    tree = ast.parse(source)
    docstrings, found = _docstrings(tree), []
    for node in ast.walk(tree):
        where = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _is_stage(a.name)]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            found += [f"{where}: from {target} import {a.name}" for a in node.names
                      if _is_stage(target) or _is_stage(f"{target}.{a.name}")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _is_stage(node.value) or EXPERIMENT_CODE.search(node.value):
                found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            if EXPERIMENT_CODE.search(text):
                found.append(f"{where}: f{text!r}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in PATH_LOADERS:
                found.append(f"{where}: {name}(...) loads code by path")
            elif (isinstance(func, ast.Attribute) and func.attr in ("insert", "append")
                  and isinstance(func.value, ast.Attribute) and func.value.attr == "path"
                  and getattr(func.value.value, "id", "") == "sys"):
                found.append(f"{where}: sys.path.{func.attr}(...) makes a folder importable")
    return found


@pytest.mark.parametrize("module", LIBRARY)
def test_library_source_names_no_stage_or_experiment_code(module):
    path = PACKAGE.parent.joinpath(*module.split("."))
    is_package = path.is_dir()
    path = path / "__init__.py" if is_package else path.with_suffix(".py")
    assert violations(path.read_text(), module, is_package) == []


@pytest.mark.parametrize("source,expected", [
    ("import ntkrepro.stage\n", ["import ntkrepro.stage"]),
    ("def f():\n    from ntkrepro.stage import stage_module\n", ["from ntkrepro.stage import stage_module"]),
    ("from ntkrepro import stage\n", ["from ntkrepro import stage"]),
    ("from .stage import main\n", ["from ntkrepro.stage import main"]),
    ("from . import stage as s\n", ["from ntkrepro import stage"]),
    ("import importlib\nm = importlib.import_module('ntkrepro.stage')\n", ["'ntkrepro.stage'"]),
    ("p = 'experiments/jacot2018/fig1.py'\n", ["'experiments/jacot2018/fig1.py'"]),
    ("p = f'experiments/{paper}/cost.py'\n", ["f'experiments/{}/cost.py'"]),
    ("import importlib.util\ns = importlib.util.spec_from_file_location('x', path)\n",
     ["spec_from_file_location(...) loads code by path"]),
    ("import sys\nsys.path.insert(0, folder)\n", ["sys.path.insert(...) makes a folder importable"]),
    ('"""Reads experiments/<paper>/cost.py? No: a docstring."""\nfrom ntkrepro.stages import x\n', []),
    ("r = root / 'experiments' / paper / 'claims.yaml'\nimport ntkrepro.stats\n", []),  # data, not code
])
def test_the_source_check_finds_each_way_in(source, expected):
    """The static check against hand-written modules (as if at ntkrepro/probe.py): each way of reaching stage
    or experiment code is reported, data paths and look-alike names are not."""
    assert [v.split(": ", 1)[1] for v in violations(source, "ntkrepro.probe")] == expected
