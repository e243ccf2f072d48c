# Jacot, Gabriel, Hongler (2018): Fig. 1 (NTK convergence with width), Fig. 2 (trained nets vs the
# limiting Gaussian), Fig. 3 (kernel PCA of the NTK, training along the 2nd principal component).
# The stages import their sibling jacot_common.py (network, kernels, GD stepper).
register("jacot2018", "fig1", "fig2", "fig3")


rule jacot2018_fig1:
    input:
        stage_inputs("jacot2018", "fig1"),
        "experiments/jacot2018/jacot_common.py",
    output:
        out("jacot2018", "fig1"),
        out("jacot2018", "fig1", "fig1.png"),
        out("jacot2018", "fig1", "fig1_summary.md"),
    log:
        out("jacot2018", "fig1", "stage.log"),
    threads: 1
    shell:
        stage_shell("jacot2018", "fig1")


rule jacot2018_fig2:
    input:
        stage_inputs("jacot2018", "fig2"),
        "experiments/jacot2018/jacot_common.py",
    output:
        out("jacot2018", "fig2"),
        out("jacot2018", "fig2", "fig2.png"),
        out("jacot2018", "fig2", "fig2_summary.md"),
    log:
        out("jacot2018", "fig2", "stage.log"),
    threads: 1
    shell:
        stage_shell("jacot2018", "fig2")


rule jacot2018_fig3:
    input:
        stage_inputs("jacot2018", "fig3"),
        "experiments/jacot2018/jacot_common.py",
    output:
        out("jacot2018", "fig3"),
        out("jacot2018", "fig3", "fig3.png"),
        out("jacot2018", "fig3", "fig3_eigenvalues.md"),
    log:
        out("jacot2018", "fig3", "stage.log"),
    threads: 1
    shell:
        stage_shell("jacot2018", "fig3")
