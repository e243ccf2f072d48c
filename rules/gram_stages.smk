# Stage Gram matrices as tile jobs: <stage>_grams targets (included by the main Snakefile after rules/gram.smk).
#
# The stages come from the stages themselves: every stage script that declares its Grams (a top-level
# grams(cfg, data), read from the source by scripts/gram_requests.py, nothing imported: the Snakefile's
# STAGES_WITH_GRAMS). Its requests are written by that script from the stage's own declaration, the list its
# run computes, so the tile jobs fill exactly the cache the stage reads. With gram_jobs=tile (the default at
# paper and rehearsal scale) the stage rule depends on its gram_tiles.done (the Snakefile's stage_inputs):
# every tile is one job (locally or on a cluster), each tile records its compute seconds (ntkrepro.gram),
# and the stage assembles its Grams from the cache and reports their cost from those records. With
# gram_jobs=stage (smoke, quick), and whenever a stage runs outside Snakemake, the stage computes its
# missing tiles itself, recording the same seconds. `<stage>_grams` fills the cache alone.


checkpoint gram_stage_requests:
    """The request of every Gram a stage declares (scripts/gram_requests.py): data + request JSONs."""
    input:
        "scripts/gram_requests.py",
        lambda wc: [f for f in stage_files(*wc.stage.split("/")) if not f.endswith("claims.yaml")],  # not its claims
    output:
        f"{RESULTS}/{{stage}}/gram_requests.json",
    wildcard_constraints:
        stage="|".join(STAGES_WITH_GRAMS),
    log:
        f"{RESULTS}/logs/gram_stage_requests/{{stage}}.log",
    shell:
        f"python scripts/gram_requests.py --cache-root {GRAM_ROOT} --out {{output}} experiment={{wildcards.stage}} "
        f"scale={SCALE} results_root={RESULTS_ROOT} data_cache={DATA_CACHE} > {{log}} 2>&1"


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
        stage="|".join(STAGES_WITH_GRAMS),


localrules:
    gram_stage_requests,
    gram_stage_tiles,


for _stage in STAGES_WITH_GRAMS:

    rule:
        name:
            _stage.replace("/", "_") + "_grams"
        input:
            f"{RESULTS}/{_stage}/gram_tiles.done",
