# Stage Gram matrices as tile jobs: <stage>_grams targets (included by the main Snakefile after rules/gram.smk).

# Stages whose Gram matrices can run as tile jobs -> the module whose gram_requests(cfg) lists them.
GRAM_STAGES = {
    "arora2019/table1": "experiments/arora2019/arora_common.py",
    "arora2019/table2": "experiments/arora2019/arora_common.py",
    "feng2020_deq/table1": "experiments/feng2020_deq/deq_eval.py",
    "feng2020_deq/table2": "experiments/feng2020_deq/deq_eval.py",
}


checkpoint gram_stage_requests:
    """The request of every Gram a stage computes (ntkrepro.gram requests): data + request JSONs."""
    input:
        lambda wc: [GRAM_STAGES[wc.stage], f"conf/experiment/{wc.stage}.yaml"],
    output:
        f"{RESULTS}/{{stage}}/gram_requests.json",
    wildcard_constraints:
        stage="|".join(GRAM_STAGES),
    params:
        module=lambda wc: GRAM_STAGES[wc.stage],
    log:
        f"{RESULTS}/logs/gram_stage_requests/{{stage}}.log",
    shell:
        f"python -m ntkrepro.gram requests --stage {{params.module}} --cache-root {GRAM_ROOT} --out {{output}} "
        f"experiment={{wildcards.stage}} scale={SCALE} results_root={RESULTS_ROOT} data_cache={DATA_CACHE} "
        "> {log} 2>&1"


def stage_gram_tiles(wildcards):
    """Every request's tiles.done (known once the stage's requests are written)."""
    import json

    with open(checkpoints.gram_stage_requests.get(stage=wildcards.stage).output[0]) as fh:
        names = json.load(fh)["requests"]
    return [f"{GRAM_ROOT}/gram_plans/{name}/tiles.done" for name in names]


rule gram_stage_tiles:
    """Every tile of every Gram of a stage in the cache: the stage then computes none."""
    input:
        stage_gram_tiles,
    output:
        touch(f"{RESULTS}/{{stage}}/gram_tiles.done"),
    wildcard_constraints:
        stage="|".join(GRAM_STAGES),


localrules:
    gram_stage_requests,
    gram_stage_tiles,


for _stage in GRAM_STAGES:

    rule:
        name:
            _stage.replace("/", "_") + "_grams"
        input:
            f"{RESULTS}/{_stage}/gram_tiles.done",
