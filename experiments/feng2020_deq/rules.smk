# Feng & Kolter (DEQ-NTK): Fig. 1 (depth sweep), Table 1 (MNIST), Table 2 (CIFAR-10, CDEQ-NTK), the
# CDEQ-NTK's cost against the CNTK's (Sec. 5). The Gram matrices of the tables are cached by ntkrepro.gram
# under results/cache/gram/ (shared by any stage asking for the same kernel on the same data); cdeq_cost
# times its own kernels (a timing must not come from a cache).
register("feng2020_deq", "fig1", "table1", "table2", "cdeq_cost")

# The tables' whole-split Grams (paper, rehearsal: 50,000-60,000 points, 10-14 GB each) compute on every core a
# job gets; locally Snakemake caps threads at --cores, so on a machine of up to 8 cores the two tables never
# run side by side (their memory would add up); at smaller scales one thread, as every stage.
LARGE_GRAM_THREADS = 8 if PAPER_SIZED else 1


rule feng2020_deq_fig1:
    input:
        stage_inputs("feng2020_deq", "fig1"),
    output:
        out("feng2020_deq", "fig1"),
        out("feng2020_deq", "fig1", "fig1.png"),
        out("feng2020_deq", "fig1", "fig1_freeze.png"),
    log:
        out("feng2020_deq", "fig1", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("feng2020_deq", "fig1"),
    shell:
        stage_shell("feng2020_deq", "fig1")


rule feng2020_deq_table1:
    input:
        stage_inputs("feng2020_deq", "table1"),
    output:
        out("feng2020_deq", "table1"),
        out("feng2020_deq", "table1", "table1.md"),
    log:
        out("feng2020_deq", "table1", "stage.log"),
    threads: LARGE_GRAM_THREADS
    resources:
        mem_mb=stage_mem_mb("feng2020_deq", "table1"),
    shell:
        stage_shell("feng2020_deq", "table1")


rule feng2020_deq_table2:
    input:
        stage_inputs("feng2020_deq", "table2"),
    output:
        out("feng2020_deq", "table2"),
        out("feng2020_deq", "table2", "table2.md"),
    log:
        out("feng2020_deq", "table2", "stage.log"),
    threads: LARGE_GRAM_THREADS
    resources:
        mem_mb=stage_mem_mb("feng2020_deq", "table2"),
    shell:
        stage_shell("feng2020_deq", "table2")


rule feng2020_deq_cdeq_cost:
    input:
        stage_inputs("feng2020_deq", "cdeq_cost"),
    output:
        out("feng2020_deq", "cdeq_cost"),
        out("feng2020_deq", "cdeq_cost", "timings.csv"),
    log:
        out("feng2020_deq", "cdeq_cost", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("feng2020_deq", "cdeq_cost"),
    shell:
        stage_shell("feng2020_deq", "cdeq_cost")
