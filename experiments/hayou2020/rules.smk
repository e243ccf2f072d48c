# Hayou et al. 2020: EOC curves, Fig. 1 (convergence rates), the theorem checks (exact recursions to depth
# 1e6-1e7, no data), the CNN results (Prop. 1, Lemma 4, Thms. 1-2 for CNNs: exact recursions to 1e5-1e6 and
# Monte Carlo of finite CNNs), Table 1 (deep FFNNs, 7 activations) and Table 2 (standard vs scaled ResNets).
register("hayou2020", "eoc_curves", "fig1", "theorem_checks", "cnn_checks", "table1", "table2")

rule hayou2020_eoc_curves:
    input:
        stage_inputs("hayou2020", "eoc_curves"),
    output:
        out("hayou2020", "eoc_curves"),
        out("hayou2020", "eoc_curves", "eoc_curves.png"),
        out("hayou2020", "eoc_curves", "eoc_points.md"),
    log:
        out("hayou2020", "eoc_curves", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "eoc_curves"),
    shell:
        stage_shell("hayou2020", "eoc_curves")


rule hayou2020_fig1:
    input:
        stage_inputs("hayou2020", "fig1"),
    output:
        out("hayou2020", "fig1"),
        out("hayou2020", "fig1", "fig1.png"),
    log:
        out("hayou2020", "fig1", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "fig1"),
    shell:
        stage_shell("hayou2020", "fig1")


rule hayou2020_theorem_checks:
    input:
        stage_inputs("hayou2020", "theorem_checks"),
        "experiments/hayou2020/claims.yaml",
    output:
        out("hayou2020", "theorem_checks"),
        out("hayou2020", "theorem_checks", "theorem_checks.md"),
        out("hayou2020", "theorem_checks", "theorem_checks_scaled_errors.png"),
    log:
        out("hayou2020", "theorem_checks", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "theorem_checks"),
    shell:
        stage_shell("hayou2020", "theorem_checks")


rule hayou2020_cnn_checks:
    input:
        stage_inputs("hayou2020", "cnn_checks"),
    output:
        out("hayou2020", "cnn_checks"),
        out("hayou2020", "cnn_checks", "cnn_checks.md"),
        out("hayou2020", "cnn_checks", "cnn_checks_scaled_errors.png"),
    log:
        out("hayou2020", "cnn_checks", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "cnn_checks"),
    shell:
        stage_shell("hayou2020", "cnn_checks")


rule hayou2020_table1:
    input:
        stage_inputs("hayou2020", "table1"),
    output:
        out("hayou2020", "table1"),
        out("hayou2020", "table1", "table1.md"),
        out("hayou2020", "table1", "table1.png"),
    log:
        out("hayou2020", "table1", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "table1"),
    shell:
        stage_shell("hayou2020", "table1")


rule hayou2020_table2:
    input:
        stage_inputs("hayou2020", "table2"),
    output:
        out("hayou2020", "table2"),
        out("hayou2020", "table2", "table2.md"),
        out("hayou2020", "table2", "table2.png"),
    log:
        out("hayou2020", "table2", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("hayou2020", "table2"),
    shell:
        stage_shell("hayou2020", "table2")
