# Paper-scale target sets (issue 15, item 3), included by the Snakefile's loop over rules/*.smk:
#
#   snakemake paper-fits --cores all --config scale=paper          # every stage that fits one machine at paper scale
#   snakemake rehearsal --cores all --config scale=rehearsal       # DEQ-NTK Tables 1-2 and the CDEQ cost on stand-ins
#
# Each target runs its stages, then writes the report over what its results folder holds (<results>/paper/ or
# <results>/rehearsal/; the stages outside the set are "not run at this scale", with their estimated cost).
# A target asked for at another scale is refused in one line before any job.
#
# paper-fits: the stages that need no unavailable data and fit this machine at the papers' own settings.
# Measured at scale=paper (rehearsal: scale=rehearsal) on 2026-12-06, one process per stage, threads=1,
# nice 10, tracking off, on this 2-core 24 GB machine while other agents loaded it (1-minute load average
# 9-14 for most runs: a stage got 10-20% of a core, so wall times were 3-10x the CPU times). CPU seconds
# (user + sys) are what an idle machine needs (threads=1: wall ~ CPU); wall and load as measured:
#   stage                          CPU s   wall      load (start -> end)   peak RSS
#   hayou2020/eoc_curves              8      0:21      0.6 -> 2.0            0.52 GB
#   hayou2020/fig1                   16      0:46      2.0 -> 4.3            0.63 GB
#   hayou2020/theorem_checks         55      5:46      4.3 -> 11.6           0.66 GB
#   hayou2020/cnn_checks            605     52:25     11.6 -> 4.9            1.51 GB
#   jacot2018/ntk_pd                  8      0:21      0.6 -> 2.0            0.54 GB
#   jacot2018/fig2                   69      3:25      2.0 -> 9.1            0.80 GB
#   golikov2022/printed_formulas     75      6:15      9.1 -> 10.2           1.34 GB
#   golikov2022/training_costs      307     37:10     10.2 -> 13.7           (not recorded)
#   jacot2018/fig1               ~4,500   not run to the end (extrapolated), load 11.4 -> 2.0, peak >= 5.8 GB
#     the 10 width-500 nets took 30 CPU s in all, the width-10,000 ones ~450 CPU s each (two measured: 465 with
#     compilation, ~440); it uses ~1.9 cores despite threads=1 (4.3 min wall per wide net at load 3-5). The cost
#     table said 9 min for the whole stage (its model underestimated the wide nets' training ~8x); recalibrated
#     (training = GEMM FLOPs + weight traffic at the measured peaks) it says 31 min of wall on 2 cores.
# Sum of CPU times: ~1,140 CPU s measured + ~4,500 extrapolated (jacot2018/fig1) = ~1.6 CPU-h, so paper-fits
# with --cores 2 needs about 50-80 min on an idle machine (jacot2018/fig1 ~45 min on both cores; the other
# stages ~19 CPU-min). Under this session's load (9-14) cnn_checks alone took 52 min wall.
#
# Not in paper-fits, and why (estimates: scripts/cost_table.py --scale paper, rates from benchmarks/results):
#   hayou2020/table1 (~79 CPU-h) and table2 (~900 CPU-h): Monte Carlo / training of deep nets at the papers'
#     widths and depths; jacot2018/fig3: MNIST is not on this machine (and ~6.5 CPU-h);
#   golikov2022/mc_vs_exact: ~16 CPU-h (Monte Carlo NTKs to width 1024, 4096-draw groups);
#   arora2019/theory_checks (~23 CPU-h), table1 (~410,000 CPU-h), table2 (~47,000 CPU-h): CIFAR-10 is not on
#     this machine (theory_checks is refused at paper scale before any compute: 5 CPU s);
#   feng2020_deq/fig1, cdeq_cost, table1, table2: CIFAR-10 / MNIST are not on this machine (fig1 and cdeq_cost
#     are refused at paper scale before any compute): the rehearsal runs them on stand-ins.
#   golikov2022/gram_cost needs no unavailable data but was not measured to the end: 9 of 29 timing points in
#     442 CPU s, the larger Grams still to come (the cost table said 7 min, now 11 min with the
#     measured cost of each CNTK block call; peak RSS >= 5.0 GB so far). Its
#     numbers are timing ratios: measure it on an unloaded machine before adding it.
#
# rehearsal: the DEQ-NTK stages that need unavailable data, at the paper's sizes on declared stand-ins
# (conf/scale/rehearsal.yaml; Fashion-MNIST 60,000/10,000 for MNIST, cifar10_shaped 50,000/10,000 for CIFAR-10).
#   stage                          CPU s   wall      load (start -> end)   peak RSS
#   feng2020_deq/cdeq_cost           26      4:37     11.7 -> 13.4           0.85 GB
#   feng2020_deq/table1 (stop 16, fresh clone of eea4607, float32, threads=2, load ~5): 60,000/10,000 Fashion-MNIST
#     in 9.9 min wall (866 CPU s user), peak RSS 14.8 GB: Gram 248 s (sum of its tiles' records), in-place Cholesky
#     of the 60,000^2 float32 K + predictions 441 s (run as the stage after 35 of its 165 tiles came from tile jobs).
#   feng2020_deq/table2 (stop 16, fresh clone of 030f655, float32, load 5-17): the three DEQ-NTK rows at
#     50,000/10,000 cifar10_shaped in 84 min wall (train Grams 1.8 / 4.5 / 6.6 min, test Grams 0.9-1.7 min, peak
#     RSS ~11.5 GB); the CDEQ-NTK row stopped then (old layout: ~90 CPU-min for its Grams).
#   The whole `snakemake rehearsal` (stop 17, fresh clone, e0cb895 then 24bee38, load 5-9 beside CI and make
#     reproduce): 101 min wall in two invocations, exit 0, peak RSS 14.2 GB, DEQ-NTK Gram tiles resumed from stop
#     16's caches. table1 22.7 min (its 60,000^2 Cholesky under load); table2 58 min: three 50,000^2 Choleskys
#     13.0 / 12.5 / 8.8 min, the CDEQ-NTK test Gram (10,000 x 2,000, 80 tiles; 71 computed in the stage's own
#     process, see below) 20.0 min on ~1 core. Its report: 9 claims data unavailable, none reproduced.
#     Seen once on resuming: the gram_tiles rule of two Grams whose tile jobs the first invocation had left
#     unfinished ran at once with its input "<TBD>" (Snakemake's checkpoint), marking them done; the stage then
#     computed the missing tiles itself (compute_gram: values and tile records as from tile jobs, one process).
#     Not reproduced by a killed-and-rerun small Gram; the cause is not known.
#   feng2020_deq/fig1 is not in the rehearsal: 3 of 120 (draw, panel, model) units took 115 CPU s (22-45 s
#     each), i.e. ~0.75-1.5 CPU-h in all (the cost table said 6 min; now 21 min, with the
#     measured all-depths iteration and solve rates).

PAPER_FITS = {
    "hayou2020": ["eoc_curves", "fig1", "theorem_checks", "cnn_checks"],
    "jacot2018": ["ntk_pd", "fig2", "fig1"],
    "golikov2022": ["printed_formulas", "training_costs"],
}
REHEARSAL_STAGES = {"feng2020_deq": ["cdeq_cost", "table1", "table2"]}
TARGET_SETS = {"paper-fits": ("paper", PAPER_FITS), "rehearsal": ("rehearsal", REHEARSAL_STAGES)}


def _check_target_sets():
    """Every stage of a set is a registered artifact (a typo fails when the workflow is read)."""
    for target, (_, stages) in TARGET_SETS.items():
        unknown = [f"{p}/{a}" for p, arts in stages.items() for a in arts if a not in ARTIFACTS.get(p, [])]
        if unknown:
            sys.exit(f"error: rules/paper.smk: {target} names unregistered stages: {', '.join(unknown)}")


_check_target_sets()


def stage_set(target):
    """The metrics.json of a target's stages; the target asked for at another scale exits with one line
    before any job runs (the targets are only known once the DAG is built, hence an input function)."""
    scale, stages = TARGET_SETS[target]

    def metrics(wildcards):
        if SCALE != scale:
            sys.exit(f"error: {target} runs at --config scale={scale} (this run: scale={SCALE})")
        return [out(p, a) for p, arts in stages.items() for a in arts]

    return metrics


def _set_report_shell():
    return (f"python -m ntkrepro.report --results {shlex.quote(RESULTS)} --experiments experiments "
            f"--costs {{input.costs}}{MLFLOW_UI_ARG}")


rule paper_fits:
    """Every stage that fits this machine at paper scale (PAPER_FITS), then the paper-scale report."""
    input:
        metrics=stage_set("paper-fits"),
        costs=rules.paper_cost.output[0],
    localrule: True
    shell:
        _set_report_shell()


rule:
    name:
        "paper-fits"
    input:
        metrics=stage_set("paper-fits"),
        costs=rules.paper_cost.output[0],
    localrule: True
    shell:
        _set_report_shell()


rule rehearsal:
    """DEQ-NTK Tables 1-2 at the paper's sizes on stand-ins (scale rehearsal), then the rehearsal report."""
    input:
        metrics=stage_set("rehearsal"),
        costs=rules.paper_cost.output[0],
    localrule: True
    shell:
        _set_report_shell()
