# Arora et al. 2019: Table 1 (CIFAR-10 CNN / CNTK), Table 2 (CIFAR-2 random features vs exact CNTK),
# numerical checks of Theorems 3.1 / 3.2. The CNTK Gram matrices are cached by ntkrepro.gram under
# results/cache/gram/ (one Gram per kernel and data; Table 1's "-2K" columns read the same Gram).
register("arora2019", "table1", "table2", "theory_checks")


rule arora2019_table1:
    input:
        stage_inputs("arora2019", "table1"),
    output:
        out("arora2019", "table1"),
        out("arora2019", "table1", "table1.md"),
        out("arora2019", "table1", "table1.png"),
    log:
        out("arora2019", "table1", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("arora2019", "table1"),
    shell:
        stage_shell("arora2019", "table1")


rule arora2019_table2:
    input:
        stage_inputs("arora2019", "table2"),
    output:
        out("arora2019", "table2"),
        out("arora2019", "table2", "table2.md"),
        out("arora2019", "table2", "table2.png"),
    log:
        out("arora2019", "table2", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("arora2019", "table2"),
    shell:
        stage_shell("arora2019", "table2")


rule arora2019_theory_checks:
    input:
        stage_inputs("arora2019", "theory_checks"),
    output:
        out("arora2019", "theory_checks"),
        out("arora2019", "theory_checks", "theory_checks.png"),
    log:
        out("arora2019", "theory_checks", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("arora2019", "theory_checks"),
    shell:
        stage_shell("arora2019", "theory_checks")
