# Golikov et al. 2022 (NTK survey): Gram-construction cost (sec. 9, 5.1), Gram vs integration and NNGP vs
# NTK cost (sec. 9), Monte Carlo vs exact kernels (sec. 4.3). Every stage computes its own kernels
# (timings must not come from a cache; the Monte Carlo draws are the measurement), so no shared Gram rule.
register("golikov2022", "gram_cost", "training_costs", "mc_vs_exact", "printed_formulas")


rule golikov2022_gram_cost:
    input:
        stage_inputs("golikov2022", "gram_cost"),
        "experiments/golikov2022/claims.yaml",  # the figure marks the paper's rates
    output:
        out("golikov2022", "gram_cost"),
        out("golikov2022", "gram_cost", "gram_cost.png"),
        out("golikov2022", "gram_cost", "timings.csv"),
    log:
        out("golikov2022", "gram_cost", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("golikov2022", "gram_cost"),
    shell:
        stage_shell("golikov2022", "gram_cost")


rule golikov2022_training_costs:
    input:
        stage_inputs("golikov2022", "training_costs"),
    output:
        out("golikov2022", "training_costs"),
        out("golikov2022", "training_costs", "training_costs.png"),
        out("golikov2022", "training_costs", "per_repeat.csv"),
    log:
        out("golikov2022", "training_costs", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("golikov2022", "training_costs"),
    shell:
        stage_shell("golikov2022", "training_costs")


rule golikov2022_mc_vs_exact:
    input:
        stage_inputs("golikov2022", "mc_vs_exact"),
        "experiments/golikov2022/claims.yaml",
    output:
        out("golikov2022", "mc_vs_exact"),
        out("golikov2022", "mc_vs_exact", "mc_error_vs_width.png"),
        out("golikov2022", "mc_vs_exact", "mc_error_vs_samples.png"),
        out("golikov2022", "mc_vs_exact", "mc_accuracy_vs_width.png"),
        out("golikov2022", "mc_vs_exact", "mc_bias.png"),
        out("golikov2022", "mc_vs_exact", "mc_bias.csv"),
    log:
        out("golikov2022", "mc_vs_exact", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("golikov2022", "mc_vs_exact"),
    shell:
        stage_shell("golikov2022", "mc_vs_exact")


rule golikov2022_printed_formulas:
    input:
        stage_inputs("golikov2022", "printed_formulas"),
    output:
        out("golikov2022", "printed_formulas"),
        out("golikov2022", "printed_formulas", "relu_expectations.csv"),
        out("golikov2022", "printed_formulas", "printed_kernels.csv"),
    log:
        out("golikov2022", "printed_formulas", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("golikov2022", "printed_formulas"),
    shell:
        stage_shell("golikov2022", "printed_formulas")
