# Tiled Gram matrices as Snakemake jobs: one job per tile (ntkrepro.gram's command line).
#
# Included by the main Snakefile (gram_root = <results>/cache, the cache the stages' compute_gram reads).
# A producer rule (or a person) writes a request, a JSON object made by ntkrepro.gram.write_request:
#     {GRAM_ROOT}/gram_requests/{name}.json = {"x1": "data/x.npy", "x2": null, "kernel": "cntk",
#                                              "kwargs": {"depth": 6, "readout": "gap"}, "tile": 256,
#                                              "dtype": "float32"}          (optional: "fields": ["ntk"])
# and asks for {GRAM_ROOT}/gram_plans/{name}/gram.npz. The checkpoint plans the tile grid (the manifest
# lives in the content-addressed cache {GRAM_ROOT}/gram/<hash>/, a copy in gram_plans/{name}/), then one
# gram_tile job per tile computes it into the cache unless a valid tile is there already (tiles
# computed in-process by compute_gram count), then gram_assemble checks every tile and writes the .npz
# (gram_tiles instead only marks every tile done: the cache without a full copy of the matrix).
# Interrupted runs resume: a tile job that did not finish left no .done marker and runs again, the
# others do not (a finished tile whose job is asked again finds it in the cache and ends at once).
#   snakemake --cores 8 results/cache/gram_plans/cifar_gap6/gram.npz
#   snakemake --profile profiles/slurm results/cache/gram_plans/cifar_gap6/tiles.done   # a cluster
# Config: gram_root (default "results/cache"), gram_threads (XLA CPU threads per tile job, default 1).

GRAM_ROOT = config.get("gram_root", "results/cache")
GRAM_THREADS = int(config.get("gram_threads", 1))


localrules:
    gram_plan,
    gram_tiles,


checkpoint gram_plan:
    input:
        request=f"{GRAM_ROOT}/gram_requests/{{name}}.json",
    output:
        f"{GRAM_ROOT}/gram_plans/{{name}}/manifest.json",
    log:
        f"{GRAM_ROOT}/logs/gram_plan/{{name}}.log",
    shell:
        f"python -m ntkrepro.gram plan --request {{input.request}} --cache-root {GRAM_ROOT} "
        "--plan-out {output} > {log} 2>&1"


rule gram_tile:
    input:
        manifest=f"{GRAM_ROOT}/gram_plans/{{name}}/manifest.json",
    output:
        f"{GRAM_ROOT}/gram_plans/{{name}}/tiles/{{i}}_{{j}}.done",
    wildcard_constraints:
        i=r"\d+",
        j=r"\d+",
    threads: GRAM_THREADS
    log:
        f"{GRAM_ROOT}/logs/gram_tile/{{name}}/{{i}}_{{j}}.log",
    shell:
        "python -m ntkrepro.gram tile --manifest {input.manifest} --i {wildcards.i} --j {wildcards.j} "
        "--threads {threads} --done {output} > {log} 2>&1"


def gram_tile_markers(wildcards):
    """The .done marker of every tile of the planned grid (known once the checkpoint has run)."""
    import json

    manifest = checkpoints.gram_plan.get(name=wildcards.name).output[0]
    with open(manifest) as fh:
        tiles = json.load(fh)["grid"]["tiles"]
    return [f"{GRAM_ROOT}/gram_plans/{wildcards.name}/tiles/{i}_{j}.done" for i, j in tiles]


rule gram_assemble:
    input:
        manifest=f"{GRAM_ROOT}/gram_plans/{{name}}/manifest.json",
        tiles=gram_tile_markers,
    output:
        f"{GRAM_ROOT}/gram_plans/{{name}}/gram.npz",
    log:
        f"{GRAM_ROOT}/logs/gram_assemble/{{name}}.log",
    shell:
        "python -m ntkrepro.gram assemble --manifest {input.manifest} --out {output} > {log} 2>&1"


rule gram_tiles:
    """Every tile of the grid in the cache (no assembled copy)."""
    input:
        gram_tile_markers,
    output:
        touch(f"{GRAM_ROOT}/gram_plans/{{name}}/tiles.done"),
