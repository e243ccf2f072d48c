# ntkrepro pipeline. Snakemake owns the DAG and the paths; every value lives in conf/ (Hydra).
#
#   snakemake reproduce-all --cores all                      # quick scale (the default)
#   snakemake reproduce-all --cores all --config scale=smoke
#   snakemake jacot2018 --cores 2                             # one paper
#   snakemake -n reproduce-all --config scale=paper           # the full paper-scale DAG
#   snakemake cost --cores 1 --config scale=paper              # what it costs: CPU-h, GPU-h, memory
#   python scripts/cost_table.py --scale paper --detail        # the same table, each workload
#
#   snakemake --profile profiles/slurm arora2019_table1_grams --config scale=paper   # Gram tiles as jobs
#
# config keys (command line only, checked against schemas/config.schema.yaml, one line for a bad one):
# scale (smoke|quick|paper|rehearsal, default quick; rehearsal: the paper's sizes on declared stand-ins, results in
# <results>/rehearsal), results (root folder, default "results"), data_cache
# (download cache, default "data_cache"); tracking (sqlite|server|disabled) and tracking_uri (MLflow, see
# below); mlflow_ui (the MLflow UI the report links to); gram_jobs (tile|stage, below); gram_threads (rules/gram.smk).
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# The workflow's edge code (scripts/): what the rules read from the tree, the cost table
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

CONFIG_SCHEMA = "schemas/config.schema.yaml"
try:
    validate(config, CONFIG_SCHEMA)  # sets the schema's defaults
except WorkflowError as err:
    from workflow_rules import config_error

    sys.exit(config_error(config, Path(workflow.basedir) / CONFIG_SCHEMA) or str(err))
SCALE = config["scale"]
RESULTS_ROOT = config["results"]
DATA_CACHE = config["data_cache"]
RESULTS = f"{RESULTS_ROOT}/{SCALE}"
PAPER_SIZED = SCALE in ("paper", "rehearsal")  # the papers' sizes (rehearsal: on stand-ins)
PAPERS = ["jacot2018", "hayou2020", "arora2019", "feng2020_deq", "golikov2022"]

# Each experiments/<paper>/rules.smk appends its artifacts here: ARTIFACTS[paper] = [names].
ARTIFACTS = {paper: [] for paper in PAPERS}


def out(paper, artifact, name="metrics.json"):
    """A stage's output: <results>/<scale>/<paper>/<artifact>/<name> (ntkrepro.config.stage_dir, as Hydra's out_dir)."""
    from ntkrepro.config import stage_dir

    return f"{stage_dir(RESULTS_ROOT, SCALE, paper, artifact)}/{name}"


def stage_files(paper, artifact):
    """A stage re-runs when its script, config, claims registry or an imported sibling module changes."""
    from workflow_rules import stage_inputs as inputs

    return inputs(paper, artifact)


from gram_requests import gram_stages

STAGES_WITH_GRAMS = gram_stages()  # <paper>/<artifact> of every stage script with a top-level grams(cfg, data)


# How the tiles of a stage's declared Grams run (--config gram_jobs): "tile", one job per tile before the
# stage (rules/gram_stages.smk: a cluster fans them out; the default at paper and rehearsal scale), or
# "stage", in the stage's own job (the default at smoke and quick, whose ~40 small Grams would otherwise
# cost one JAX start and compilation per tile). Both fill the same cache, and every tile records its seconds.
GRAM_JOBS = config.get("gram_jobs") or ("tile" if PAPER_SIZED else "stage")


def stage_inputs(paper, artifact):
    """A stage rule's inputs: its files (stage_files), and with gram_jobs=tile, for a stage that declares Grams,
    every tile of them, computed first as one job per tile, so the stage reads them from the cache."""
    tiled = GRAM_JOBS == "tile" and f"{paper}/{artifact}" in STAGES_WITH_GRAMS
    return stage_files(paper, artifact) + ([out(paper, artifact, "gram_tiles.done")] if tiled else [])


def stage_mem_mb(paper, artifact):
    """The memory (MiB) of a stage's cluster job: from the peak of the workloads its paper's cost model
    declares at this scale, the peak `snakemake cost` shows (scripts/cost_table.py), times the attempt (a
    retry asks for more). Evaluated only for the jobs a run needs."""

    def mem_mb(wildcards, attempt):
        from workflow_rules import stage_mem_mb as mem

        return mem(f"{paper}/{artifact}", SCALE, attempt)

    return mem_mb


# MLflow tracking of the stages (conf/tracking/): --config tracking=server tracking_uri=http://host:5000
# (a cluster: one server for the whole workflow, profiles/slurm/mlflow-server.sh); default: the stages'
# own default (SQLite under <results>/mlflow).
TRACKING = config.get("tracking")
TRACKING_URI = config.get("tracking_uri")
TRACKING_OVERRIDES = (f" tracking={TRACKING}" if TRACKING else "") + (
    f" tracking.uri={shlex.quote(str(TRACKING_URI))}" if TRACKING_URI else ""
)
# The MLflow UI the report links each run to (default http://127.0.0.1:5000; a run logged to a tracking
# server links there): --config mlflow_ui=http://host:5000
MLFLOW_UI_ARG = f" --mlflow-ui {shlex.quote(str(config['mlflow_ui']))}" if config.get("mlflow_ui") else ""


def stage_shell(paper, artifact):
    """The command every stage rule runs (Hydra overrides only; values live in conf/)."""
    return (
        f"PYTHONUNBUFFERED=1 python experiments/{paper}/{artifact}.py scale={SCALE} results_root={RESULTS_ROOT} "
        f"data_cache={DATA_CACHE} threads={{threads}}{TRACKING_OVERRIDES} 2>&1 | tee {{log}} | "
        f"{console_filter(paper, artifact)} "
        "|| (tail -n 1 {log} >&2; exit 1)"  # a failed stage's one-line error reaches the console
    )


def console_filter(paper, artifact):
    """The stage's whole output goes to its log; its phase lines ([stage] ...) and progress lines with ETA
    ([<what>] 3/10 (30%) elapsed .. eta ..) also reach the console, prefixed with the artifact."""
    return f"sed -un '/^\\[stage\\]   /d; s|^\\[|[{paper}/{artifact}] [|p'"


def register(paper, *artifacts):
    ARTIFACTS[paper].extend(artifacts)


for _paper in PAPERS:
    if Path(f"experiments/{_paper}/rules.smk").exists():

        include: f"experiments/{_paper}/rules.smk"


# Gram tiles as jobs (rules/gram.smk), in the cache the stages' compute_gram reads: <results>/cache.
from ntkrepro.config import gram_cache_root

config["gram_root"] = gram_cache_root(RESULTS_ROOT)


include: "rules/gram.smk"


def all_metrics(paper=None):
    papers = [paper] if paper else PAPERS
    return [out(p, a) for p in papers for a in ARTIFACTS[p]]


rule reproduce_all:
    """Every artifact of every paper at the chosen scale, and the report."""
    input:
        f"{RESULTS}/report.md",
    default_target: True


rule:
    name:
        "reproduce-all"
    input:
        rules.reproduce_all.input,


rule paper_cost:
    """The paper-scale cost table the report quotes for the claims not run at this scale (every stage: CPU-h,
    GPU-h, the memory its checks estimate): from the papers' cost models, the stages' checks, the benchmarks."""
    input:
        "scripts/cost_table.py",
        sorted(Path("benchmarks/results").glob("*.json")),
        sorted(Path("experiments").glob("*/cost.py")),
        sorted({path for p in PAPERS for a in ARTIFACTS[p] for path in stage_files(p, a)}),
    output:
        f"{RESULTS_ROOT}/paper_cost.json",
    localrule: True
    shell:
        "python scripts/cost_table.py --scale paper --json > {output}"


rule report:
    """The report: metrics.json files + claims registries (+ the paper-scale cost table) -> report.md / .html."""
    input:
        metrics=all_metrics(),
        claims=expand("experiments/{paper}/claims.yaml", paper=[p for p in PAPERS if ARTIFACTS[p]]),
        costs=rules.paper_cost.output[0],
    output:
        md=f"{RESULTS}/report.md",
        html=f"{RESULTS}/report.html",
    params:
        results=RESULTS,
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "environment.yml"
    shell:
        f"python -m ntkrepro.report --results {{params.results}} --experiments experiments --costs {{input.costs}}"
        f"{MLFLOW_UI_ARG} > {{log}} 2>&1"


rule cost:
    """Estimated CPU-hours, GPU-hours, peak memory and cluster job memory of every stage at this scale
    (scripts/cost_table.py: the papers' cost models, calibrated by benchmarks/results): what a run costs
    before booking it. Runs nothing else."""
    localrule: True
    shell:
        f"python scripts/cost_table.py --scale {SCALE}"


def report_requested():
    """Whether this invocation asked for the report (the default target, reproduce-all, report, report.*)."""
    targets = {str(t) for t in (getattr(workflow.dag_settings, "targets", None) or ())}
    return not targets or bool(targets & {"reproduce-all", "reproduce_all", "report"}) or any(
        t.endswith(("report.md", "report.html")) for t in targets
    )


onsuccess:
    # the pipeline ends by printing the scoreboard and the report's path
    if report_requested() and Path(f"{RESULTS}/report.md").exists():
        shell(
            f"python -m ntkrepro.report --results {shlex.quote(RESULTS)} --experiments experiments "
            "--scoreboard-only"
        )


for _paper in PAPERS:

    rule:
        name:
            _paper
        input:
            all_metrics(_paper),


# The workflow's other rule files (rules/*.smk besides gram.smk), in name order: the stages' Gram tile
# targets (gram_stages.smk) and any target sets.
for _rules in sorted(Path(workflow.basedir, "rules").glob("*.smk")):
    if _rules.name != "gram.smk":

        include: str(_rules)
