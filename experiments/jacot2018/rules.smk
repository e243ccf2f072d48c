# Jacot, Gabriel, Hongler (2018): Fig. 1 (NTK convergence with width), Fig. 2 (trained nets vs the
# limiting Gaussian), Fig. 3 (kernel PCA of the NTK, training along the 2nd principal component).
# Prop. 2 (positive-definiteness of the limiting NTK on the sphere, with its singular controls): ntk_pd.
# The figure stages import their sibling jacot_common.py (network, kernels, GD stepper); ntk_pd does not.
register("jacot2018", "fig1", "fig2", "fig3", "ntk_pd")


rule jacot2018_fig1:
    input:
        stage_inputs("jacot2018", "fig1"),
    output:
        out("jacot2018", "fig1"),
        out("jacot2018", "fig1", "fig1.png"),
        out("jacot2018", "fig1", "fig1_summary.md"),
    log:
        out("jacot2018", "fig1", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("jacot2018", "fig1"),
    shell:
        stage_shell("jacot2018", "fig1")


rule jacot2018_fig2:
    input:
        stage_inputs("jacot2018", "fig2"),
    output:
        out("jacot2018", "fig2"),
        out("jacot2018", "fig2", "fig2.png"),
        out("jacot2018", "fig2", "fig2_summary.md"),
    log:
        out("jacot2018", "fig2", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("jacot2018", "fig2"),
    shell:
        stage_shell("jacot2018", "fig2")


rule jacot2018_fig3:
    input:
        stage_inputs("jacot2018", "fig3"),
    output:
        out("jacot2018", "fig3"),
        out("jacot2018", "fig3", "fig3.png"),
        out("jacot2018", "fig3", "fig3_eigenvalues.md"),
    log:
        out("jacot2018", "fig3", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("jacot2018", "fig3"),
    shell:
        stage_shell("jacot2018", "fig3")


rule jacot2018_ntk_pd:
    input:
        stage_inputs("jacot2018", "ntk_pd"),
    output:
        out("jacot2018", "ntk_pd"),
        out("jacot2018", "ntk_pd", "ntk_pd.png"),
        out("jacot2018", "ntk_pd", "ntk_pd_eigenvalues.md"),
    log:
        out("jacot2018", "ntk_pd", "stage.log"),
    threads: 1
    resources:
        mem_mb=stage_mem_mb("jacot2018", "ntk_pd"),
    shell:
        stage_shell("jacot2018", "ntk_pd")
