# One Snakemake job per Gram tile (see src/ntkrepro/gram.py). Plan a Gram, then ask for its tiles:
#   dir=$(python -m ntkrepro.gram plan --x1 x.npy --kernel cntk --kwargs '{"depth": 6}' --cache-root results/cache)
#   snakemake -s rules/gram.smk --cores 8 $(python -m ntkrepro.gram targets --dir $dir)
#   snakemake -s rules/gram.smk --profile profiles/slurm $(python -m ntkrepro.gram targets --dir $dir)
# Interrupted runs resume: finished tiles are files, and only missing ones are targets.


rule gram_tile:
    output:
        "{cache}/gram/{key}/tile_{i}_{j}.npz",
    wildcard_constraints:
        key="[0-9a-f]{64}",
        i="[0-9]+",
        j="[0-9]+",
    threads: 1
    shell:
        "python -m ntkrepro.gram tile --dir {wildcards.cache}/gram/{wildcards.key} "
        "--i {wildcards.i} --j {wildcards.j}"
