"""The Snakemake rules' inputs come from the stage scripts themselves (ntkrepro.workflow): editing a
stage's config, its paper's claims registry or a helper module it imports reruns exactly the stages
that use it (checked with ``snakemake -n`` on a copy of the workflow whose outputs are all up to date)."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ntkrepro.workflow import local_imports, stage_inputs

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_local_imports_follow_sibling_modules_transitively(tmp_path):
    (tmp_path / "stage.py").write_text("import numpy\nfrom helper_a import f\n")
    (tmp_path / "helper_a.py").write_text("import helper_b\n")
    (tmp_path / "helper_b.py").write_text("from os import path\n")
    (tmp_path / "unused.py").write_text("")
    assert [p.name for p in local_imports(tmp_path / "stage.py")] == ["helper_a.py", "helper_b.py"]


def test_stage_inputs_name_config_registry_and_helpers():
    assert stage_inputs("hayou2020", "table2", ROOT) == [
        "experiments/hayou2020/table2.py", "conf/experiment/hayou2020/table2.yaml",
        "experiments/hayou2020/claims.yaml", "experiments/hayou2020/cifar_resnet.py",
        *[p for p in ("experiments/hayou2020/deep_kernels.py",)
          if "deep_kernels" in (ROOT / "experiments/hayou2020/hayou_common.py").read_text()],
        "experiments/hayou2020/hayou_common.py"]


def _jobs(tree: Path) -> set[str]:
    proc = subprocess.run([SNAKEMAKE, "-n", "--rerun-triggers", "mtime", "--config", "scale=smoke", "results=R"],
                          cwd=tree, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = proc.stdout[proc.stdout.find("Job stats"):]
    return set(re.findall(r"^(\w+)\s+\d+$", stats, flags=re.M)) - {"total", "report", "reproduce_all"}


@pytest.fixture(scope="module")
def up_to_date_tree(tmp_path_factory):
    """A copy of the workflow whose every output exists and is newer than its inputs."""
    tree = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "rules", "experiments", "conf", "environment.yml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tree / name)
    summary = subprocess.run([SNAKEMAKE, "--summary", "--config", "scale=smoke", "results=R"], cwd=tree,
                             capture_output=True, text=True, env=ENV).stdout
    newer = time.time() + 3600  # every output newer than every input
    for line in summary.splitlines()[1:]:
        out = line.split("\t")[0]
        if out.startswith("R/"):
            (tree / out).parent.mkdir(parents=True, exist_ok=True)
            (tree / out).touch()
            os.utime(tree / out, (newer, newer))
    assert _jobs(tree) == set()
    return tree


@pytest.mark.e2e
@pytest.mark.parametrize("edited,expected", [
    ("conf/experiment/jacot2018/fig2.yaml", {"jacot2018_fig2"}),
    ("experiments/jacot2018/jacot_common.py", {"jacot2018_fig1", "jacot2018_fig2", "jacot2018_fig3"}),
    ("experiments/hayou2020/cifar_resnet.py", {"hayou2020_table2"}),
    ("experiments/feng2020_deq/claims.yaml", {"feng2020_deq_fig1", "feng2020_deq_table1", "feng2020_deq_table2"}),
])
def test_an_edit_reruns_exactly_the_stages_that_use_it(up_to_date_tree, edited, expected):
    path = up_to_date_tree / edited
    before = path.stat()
    later = time.time() + 7200  # edited after the outputs were made
    os.utime(path, (later, later))
    try:
        jobs = _jobs(up_to_date_tree)
    finally:
        os.utime(path, (before.st_atime, before.st_mtime))
    assert {j for j in jobs if not j.startswith("jacot2018_ntk")} == expected
