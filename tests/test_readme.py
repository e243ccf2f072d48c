"""Every command in the README's code blocks runs as written: stages and Hydra sweeps at smoke scale into a
temporary results folder, Snakemake commands as dry runs, the notebook commands on those results. A command
that cannot run here (the test suite itself, long-running servers, SLURM) must be listed with the reason."""

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

NOT_RUN_HERE = {  # a command starting with this -> why this test does not run it
    "make ": "the test suite / the whole pipeline: `make test` is CI itself, the pipeline runs in test_pipeline",
    "mlflow ": "a long-running server (docs/screenshots.sh runs `mlflow ui` and stops it)",
    "uri=$(": "starts an MLflow server on a cluster (tests/cluster)",
    "profiles/slurm/": "SLURM (tests/cluster)",
    "--artifacts-destination": "continuation of the `mlflow server` line",
}


def readme_commands() -> list[str]:
    """The commands of the README's ```bash blocks, comments stripped."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            cmd = re.sub(r"(^|\s+)#\s.*$", "", line).strip().rstrip("\\").strip()
            if cmd:
                out.append(cmd)
    return out


def kind(cmd: str) -> str:
    if cmd.startswith(tuple(NOT_RUN_HERE)) or "slurm" in cmd or "<" in cmd:
        return "skip"
    words = shlex.split(cmd)
    env = [w for w in itertools.takewhile(lambda w: re.match(r"^[A-Z_]+=", w), words)]
    program = words[len(env)]
    if program == "python" and words[len(env) + 1].startswith("scripts/"):
        return "script"  # the workflow's edge scripts take their own arguments, not Hydra overrides
    return {"python": "python", "snakemake": "snakemake", "jupytext": "jupytext"}.get(program, "unknown")


COMMANDS = readme_commands()


def test_every_readme_command_is_run_or_has_a_reason():
    assert COMMANDS, "no commands found in the README's code blocks"
    unknown = [c for c in COMMANDS if kind(c) == "unknown"]
    assert not unknown, f"README commands this test neither runs nor explains: {unknown}"
    # the examples this issue is about are among those run
    run = [c for c in COMMANDS if kind(c) != "skip"]
    assert any(" -m " in c for c in run) and any(c.startswith("python experiments/") for c in run)
    assert sum(kind(c) == "jupytext" for c in run) == len(list((ROOT / "notebooks").glob("*.py")))


def _run(words, **kw):
    return subprocess.run(words, cwd=ROOT, env={**ENV, **kw.pop("env", {})}, capture_output=True, text=True,
                          **kw)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "snakemake"])
def test_snakemake_commands_build_their_dag(cmd, tmp_path):
    words = shlex.split(cmd)
    if "-n" not in words:
        words.insert(1, "-n")
    if "--config" in words:
        words.insert(words.index("--config") + 1, f"results={tmp_path}")
    else:
        words += ["--config", f"results={tmp_path}"]
    proc = _run([str(BIN / "snakemake"), *words[1:]])
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "script"])
def test_script_commands_run_as_written(cmd):
    proc = _run([sys.executable, *shlex.split(cmd)[1:]])
    assert proc.returncode == 0 and proc.stdout.strip(), f"{cmd}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def _smoke(words: list[str], results: Path) -> list[str]:
    """A stage command at smoke scale into ``results`` (any scale= in the command replaced)."""
    words = [w for w in words if not w.startswith(("scale=", "results_root="))]
    return [*words, "scale=smoke", f"results_root={results}"]


def _sweep_size(words: list[str]) -> int:
    """The number of jobs of a Hydra multirun: the product of the comma-separated values of its overrides."""
    size = 1
    for w in words[words.index("-m") + 1:]:
        if "=" in w and not w.split("=", 1)[1].startswith("["):
            size *= len(w.split("=", 1)[1].split(","))
    return size


def _swept(words: list[str]) -> dict[str, list[str]]:
    return {w.split("=", 1)[0]: w.split("=", 1)[1].split(",") for w in words[words.index("-m") + 1:]
            if "=" in w and "," in w.split("=", 1)[1] and not w.split("=", 1)[1].startswith("[")}


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Every stage and sweep command of the README, at smoke scale into one temporary results folder."""
    results = tmp_path_factory.mktemp("readme") / "results"
    ran = []
    for cmd in [c for c in COMMANDS if kind(c) == "python"]:
        words = shlex.split(cmd)
        proc = _run([sys.executable, *_smoke(words, results)[1:], "progress=false"])
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        ran.append((cmd, words, proc))
    return results, ran


@pytest.mark.slow
def test_stage_and_sweep_examples_run_at_smoke(readme_runs):
    results, ran = readme_runs
    for cmd, words, proc in ran:
        script = Path(words[1])
        paper, artifact = script.parent.name, script.stem
        folder = results / "smoke" / paper / artifact
        if "-m" in words:
            jobs = [json.loads(j.read_text()) for j in sorted(folder.glob("multirun/*/*/metrics.json"))]
            assert len(jobs) == _sweep_size(words), (cmd, len(jobs), proc.stderr[-2000:])
            for key, values in _swept(words).items():  # each job records the value it ran with
                assert sorted(str(job["config"][key]) for job in jobs) == sorted(values), key
        else:
            assert (folder / "metrics.json").exists(), cmd


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "jupytext"])
def test_notebook_commands_execute(readme_runs, cmd, tmp_path):
    """The README's notebook command, on the stage and sweep results above (its env vars pointed at them),
    run on a copy of the notebook so that the .ipynb lands in the test's folder."""
    results, _ = readme_runs
    words = shlex.split(cmd)
    env = dict(w.split("=", 1) for w in itertools.takewhile(lambda w: re.match(r"^[A-Z_]+=", w), words))
    words = words[len(env):]
    env = {k: (str(results / "smoke") if k == "NTKREPRO_RESULTS" else f"sqlite:///{results}/mlflow/mlflow.db")
           for k in env}
    notebook = next(w for w in words if w.startswith("notebooks/"))
    copy = tmp_path / notebook
    copy.parent.mkdir(parents=True)
    shutil.copy(ROOT / notebook, copy)
    words[words.index(notebook)] = str(copy)
    proc = _run([str(BIN / "jupytext"), *words[1:]], env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-3000:]}"
    executed = json.loads(copy.with_suffix(".ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = json.dumps(executed)
    if "mlflow_runs" in notebook:
        assert "scale smoke" in text  # runs listed per scale
    else:
        for paper in ("arora2019", "feng2020_deq", "golikov2022", "hayou2020", "jacot2018"):
            assert paper in text  # every paper, also those without results here
