"""The shipped cluster configuration, checked without a cluster (tests/cluster/slurm_loopback.sh runs it on
one): the SLURM profile has no site placeholders, polls with squeue, sizes jobs from the rule's threads and
fits a small node; the Hydra SLURM launcher fits a small node and puts each stage's own folder (its
sibling helper modules) on the job's PYTHONPATH, for every stage; Snakemake passes the tracking config
through to every stage command."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from ntkrepro.stage import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]
STAGES = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "conf" / "experiment").glob("*/*.yaml"))


def test_slurm_profile_works_as_shipped():
    text = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    for line in text.splitlines():
        assert "<partition>" not in line and "<account>" not in line
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # sacct fails without slurmdbd
    resources = profile["default-resources"]
    assert not {"slurm_partition", "slurm_account", "cpus_per_task"} & set(resources)  # CPUs = rule threads
    assert "__default__" not in profile.get("set-threads", {})  # matches no rule
    mem = {(t, a): eval(str(resources["mem_mb"]), {"max": max}, {"threads": t, "attempt": a})
           for t in (1, 2, 4) for a in (1, 2)}
    assert mem[1, 1] <= 4000 and mem[1, 2] == 2 * mem[1, 1] and mem[4, 1] > mem[1, 1]  # a small node
    site = yaml.safe_load((ROOT / "profiles" / "slurm-site" / "config.yaml").read_text())
    assert site["default-resources"]["mem_mb"] == resources["mem_mb"]  # repeats the list it replaces
    assert site["default-resources"]["runtime"] == resources["runtime"]


@pytest.mark.parametrize("stage", STAGES)
def test_hydra_slurm_launcher_makes_the_stage_folder_importable(stage):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={stage}", "hydra/launcher=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.cpus_per_task == 1 and launcher.mem_gb <= 4 and launcher.partition is None
    (setup,) = list(launcher.setup)
    folder = Path(setup.removeprefix("export PYTHONPATH=").split(":")[0])
    assert folder == ROOT / "experiments" / stage.split("/")[0]
    assert (folder / f"{stage.split('/')[1]}.py").exists()


def test_snakemake_passes_tracking_through(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "hayou2020", "--config", "scale=smoke",
         f"results={tmp_path}", "tracking=server", "tracking_uri=http://node1:5000"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = [line for line in out.stdout.splitlines() if "python experiments/hayou2020/" in line]
    assert len(commands) == len(list((ROOT / "conf/experiment/hayou2020").glob("*.yaml")))  # every hayou stage
    assert all("tracking=server tracking.uri=http://node1:5000" in c for c in commands)
    bad = subprocess.run([sys.executable, "-m", "snakemake", "-n", "hayou2020", "--config", "tracking=nfs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "tracking='nfs'" in bad.stdout + bad.stderr
