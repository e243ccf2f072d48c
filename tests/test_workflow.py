"""The Snakemake rules' inputs come from the stage scripts themselves (scripts/workflow_rules.py): editing a
stage's config, its paper's claims registry or a helper module it imports reruns exactly the stages
that use it, and editing a paper's cost model reruns none (checked with ``snakemake -n`` on a copy of the
workflow whose outputs are all up to date). A stage's cluster job asks for the memory the stage's own
checks estimate, the peak the cost table shows; the ``--config`` keys are checked against the workflow's
schema with a one-line error."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ntkrepro import config as config_mod
from ntkrepro.checks import ConfigError, array_bytes
from ntkrepro.cost import MEM_BASE_MB, MEM_SAFETY
from ntkrepro.stage import stage_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the workflow's edge code, as the Snakefile imports it

from cost_table import main as cost_table_main  # noqa: E402
from cost_table import memory_estimates  # noqa: E402
from workflow_rules import config_error, local_imports, stage_inputs, stage_mem_mb  # noqa: E402

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
    for name in ("Snakefile", "rules", "schemas", "scripts", "experiments", "conf", "environment.yml"):
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
            if out.endswith("/gram_requests.json"):  # a stage's Gram requests, all of whose tiles are done
                (tree / out).write_text('{"requests": []}')
            os.utime(tree / out, (newer, newer))
    assert _jobs(tree) == set()
    return tree


@pytest.mark.e2e
@pytest.mark.parametrize("edited,expected", [
    ("conf/experiment/jacot2018/fig2.yaml", {"jacot2018_fig2"}),
    ("experiments/jacot2018/jacot_common.py", {"jacot2018_fig1", "jacot2018_fig2", "jacot2018_fig3"}),
    ("experiments/hayou2020/cifar_resnet.py", {"hayou2020_table2"}),
    ("experiments/feng2020_deq/claims.yaml",  # every stage of the paper reads its registry
     {f"feng2020_deq_{p.stem}" for p in (ROOT / "conf/experiment/feng2020_deq").glob("*.yaml")}),
    ("experiments/hayou2020/cnn_kernels.py", {"hayou2020_cnn_checks"}),
    ("experiments/arora2019/cost.py", set()),  # a paper's cost model: only the cost table reads it
    ("scripts/cost_table.py", set()),
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
    # and the paper-scale cost table the report quotes, which reads every stage's checks and cost model
    assert {j for j in jobs if not j.startswith("jacot2018_ntk")} == expected | {"paper_cost"}


# ---- cluster memory from the stage's own estimate ------------------------------------------------------

STAGES = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "conf" / "experiment").glob("*/*.yaml"))


def _arrays(stage: str, scale: str) -> list[tuple[str, float]]:
    """(parameter path, bytes) of each array the stage's checks estimate."""
    return [(path, array_bytes(value, unit, power)) for path, value, unit, power, _ in memory_estimates(stage, scale)]


@pytest.mark.parametrize("stage", STAGES)
def test_memory_estimate_is_where_the_stage_refuses(stage, monkeypatch):
    """The largest recorded array (at the largest scale that has one) is the stage's own refusal threshold:
    its checks pass with exactly that much memory and refuse, naming that array's parameter, with one
    byte less. A stage that estimates nothing asks for the floor."""
    scale = next((s for s in ("paper", "quick", "smoke") if memory_estimates(stage, s)), None)
    if scale is None:
        assert stage_mem_mb(stage, "paper") == MEM_BASE_MB
        return
    estimates = _arrays(stage, scale)
    largest = max(nbytes for _, nbytes in estimates)
    cfg = config_mod.compose(stage, [f"scale={scale}"])
    params = stage_module(stage).Params
    monkeypatch.setattr("ntkrepro.checks.physical_memory", lambda: math.ceil(largest))
    config_mod.validate(cfg, params)
    monkeypatch.setattr("ntkrepro.checks.physical_memory", lambda: math.ceil(largest) - 1)
    with pytest.raises(ConfigError) as refused:
        config_mod.validate(cfg, params)
    assert str(refused.value).split(":")[1].strip() in {path for path, nbytes in estimates if nbytes == largest}


def test_every_stage_rule_asks_for_its_own_memory():
    rules = "\n".join(p.read_text() for p in ROOT.glob("experiments/*/rules.smk"))
    blocks = re.split(r"^rule ", rules, flags=re.M)[1:]
    shells = [re.search(r'stage_shell\(("\w+", "\w+")\)', b).group(1) for b in blocks if "stage_shell(" in b]
    mems = [re.search(r'mem_mb=stage_mem_mb\(("\w+", "\w+")\)', b) for b in blocks if "stage_shell(" in b]
    assert len(shells) == len(STAGES) and [m and m.group(1) for m in mems] == shells


def test_stage_memory_follows_scale_and_attempt():
    smoke, paper = (stage_mem_mb("arora2019/table1", s) for s in ("smoke", "paper"))
    need = sum(nbytes for _, nbytes in _arrays("arora2019/table1", "paper"))
    assert need >= 4 * 50_000**2  # at least the training CNTK Gram of 50,000 images in float32
    assert paper == math.ceil(MEM_BASE_MB + MEM_SAFETY * need / 2**20)
    assert MEM_BASE_MB <= smoke < MEM_BASE_MB + 10
    assert stage_mem_mb("arora2019/table1", "paper", attempt=2) == 2 * paper
    assert memory_estimates("golikov2022/printed_formulas", "paper") == ()  # no estimate: the floor
    assert stage_mem_mb("golikov2022/printed_formulas", "paper") == MEM_BASE_MB
    (_, n_train, itemsize, power, _), = memory_estimates("feng2020_deq/table1", "paper")  # n_train null: the split
    assert (n_train, itemsize, power) == (60_000, 4, 2)  # the whole split's Gram in float32 at paper scale
    (_, _, itemsize, _, _), = memory_estimates("feng2020_deq/table1", "quick")
    assert itemsize == 8  # float64 at the reduced scales


def test_slurm_dry_run_shows_each_stage_memory(tmp_path, capsys):
    """What a SLURM run asks for is what the cost table shows for the same stages (one estimate)."""
    proc = subprocess.run([SNAKEMAKE, "-n", "--profile", "profiles/slurm", "arora2019_table1", "jacot2018_fig3",
                           "report", "--config", "scale=paper", f"results={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: .*?mem_mb=(\d+)", proc.stdout, flags=re.M))
    assert int(shown["arora2019_table1"]) == stage_mem_mb("arora2019/table1", "paper")
    assert int(shown["jacot2018_fig3"]) == stage_mem_mb("jacot2018/fig3", "paper")
    assert cost_table_main(["--json", "--scale", "paper", "--stage", "arora2019/table1",
                            "--stage", "jacot2018/fig3"]) == 0
    table = {row["stage"].replace("/", "_"): row for row in json.loads(capsys.readouterr().out)}
    for rule in ("arora2019_table1", "jacot2018_fig3"):
        assert table[rule]["mem_mb"] == int(shown[rule])
        need = sum(nbytes for _, nbytes in _arrays(rule.replace("_", "/", 1), "paper"))
        assert table[rule]["peak_bytes"] == pytest.approx(need, rel=1e-12)
    default = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["default-resources"]["mem_mb"]
    assert int(shown["report"]) == eval(default, {"max": max}, {"threads": 1, "attempt": 1})  # no estimate


# ---- the --config schema -------------------------------------------------------------------------------

SCHEMA = ROOT / "schemas" / "config.schema.yaml"


def test_schema_lists_exactly_the_config_keys_the_workflow_reads():
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *ROOT.glob("rules/*.smk"),
                                              *ROOT.glob("experiments/*/rules.smk")])
    read = set(re.findall(r"config(?:\.get\(|\[)[\"'](\w+)[\"']", text)) - {"gram_root"}  # set by the Snakefile
    assert read == set(yaml.safe_load(SCHEMA.read_text())["properties"])


def test_min_version_matches_the_declared_dependency():
    (declared,) = re.findall(r'"snakemake>=([\d.]+)', (ROOT / "pyproject.toml").read_text())
    (required,) = re.findall(r'^min_version\("([\d.]+)"\)', (ROOT / "Snakefile").read_text(), flags=re.M)
    assert [int(x) for x in required.split(".")][: len(declared.split("."))] == [int(x) for x in declared.split(".")]


@pytest.mark.parametrize("config,line", [
    ({"scale": "huge"}, "error: --config scale='huge': must be one of smoke, quick, paper, rehearsal"),
    ({"sclae": "paper", "scale": "smoke"}, "error: --config sclae: unknown key (keys: scale, results, data_cache, "
                                           "tracking, tracking_uri, mlflow_ui, gram_jobs, "
                                           "gram_threads)"),
    ({"gram_threads": 0}, "error: --config gram_threads=0: must be >= 1"),
    ({"gram_threads": "4x"}, "error: --config gram_threads='4x': must be an integer"),
    ({"results": ""}, "error: --config results='': must not be empty"),
    ({"tracking": "nfs"}, "error: --config tracking='nfs': must be one of sqlite, server, disabled"),
    ({"gram_jobs": "gram"}, "error: --config gram_jobs='gram': must be one of tile, stage"),
])
def test_config_error_is_one_line_naming_the_key(config, line):
    assert config_error(config, SCHEMA) == line


def test_config_error_accepts_every_key():
    good = {"scale": "paper", "results": "r", "data_cache": "d", "tracking": "server", "tracking_uri": "http://h:5000",
            "mlflow_ui": "http://h:5000", "gram_jobs": "tile", "gram_threads": 4}
    assert config_error(good, SCHEMA) is None


@pytest.mark.parametrize("args,line", [
    (["scale=huge"], "error: --config scale='huge': must be one of smoke, quick, paper, rehearsal"),
    (["gram_threads=0"], "error: --config gram_threads=0: must be >= 1"),
])
def test_snakemake_refuses_a_bad_config_in_one_line(args, line, tmp_path):
    proc = subprocess.run([SNAKEMAKE, "-n", "reproduce-all", "--config", f"results={tmp_path}", *args],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0 and proc.stdout.strip() == ""
    assert proc.stderr.strip().splitlines() == [line]


# ---- paper-scale target sets (rules/paper.smk) ---------------------------------------------------------
def _dry_run(target, tmp_path, *config):
    return subprocess.run([SNAKEMAKE, "-n", target, "--config", f"results={tmp_path}", *config],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)


@pytest.mark.parametrize("target,scale", [("paper-fits", "paper"), ("rehearsal", "rehearsal")])
def test_a_target_set_at_another_scale_is_refused_in_one_line(target, scale, tmp_path):
    proc = _dry_run(target, tmp_path)
    assert proc.returncode != 0
    line = f"error: {target} runs at --config scale={scale} (this run: scale=quick)"
    assert proc.stderr.strip().splitlines()[-1] == line


def test_each_target_set_runs_exactly_its_stages_and_the_cost_table(tmp_path):
    """paper-fits and rehearsal plan their stages' jobs, the paper-scale cost table their report quotes, and
    nothing else (the sets are rules/paper.smk's PAPER_FITS and REHEARSAL_STAGES)."""
    text = (ROOT / "rules/paper.smk").read_text()
    sets = {}
    for name in ("PAPER_FITS", "REHEARSAL_STAGES"):
        block = re.search(rf"^{name} = (\{{.*?\}})$", text, re.S | re.M).group(1)
        sets[name] = {f"{p}_{a}" for p, arts in eval(block).items() for a in arts}  # a literal dict
    for target, scale, name in (("paper-fits", "paper", "PAPER_FITS"), ("rehearsal", "rehearsal", "REHEARSAL_STAGES")):
        proc = _dry_run(target, tmp_path, f"scale={scale}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        stats = proc.stdout.split("Job stats:")[1].split("total")[0]  # the job table: "<rule>  <count>" lines
        jobs = {m.group(1) for m in re.finditer(r"^([\w-]+)\s+\d+$", stats, re.M)}
        grams = {"gram_stage_requests", "gram_stage_tiles"}  # the tiles of the stages that declare Grams
        assert jobs - {target, target.replace("-", "_")} - grams == sets[name] | {"paper_cost"}, proc.stdout[-3000:]
        assert (grams <= jobs) == (name == "REHEARSAL_STAGES")  # the DEQ tables declare Grams; paper-fits none
