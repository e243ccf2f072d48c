"""What the survey's stages (Golikov et al. 2022) compute, as workloads for ``ntkrepro.cost``."""

from ntkrepro.cost import (
    cnn_macs,
    cntk_gram,
    empirical_ntk,
    fc_gram,
    fc_macs,
    image_side,
    matvec,
    split_size,
    stage_run,
)


def gram_cost(cfg):
    """Every timed Gram, ``repeats`` times after one warm-up call; the CNTKs in the config's fixed blocks of
    ``batch_size_m`` / ``batch_size_d`` pairs per call (smaller than the kernel's default: more call costs)."""
    p = cfg["params"]
    calls = p["repeats"] + 1
    work = [fc_gram(m, d=p["fc_input_dim"], depth=p["depth"], precision=cfg["precision"], count=calls)
            for m in p["fc"]["m_values"]]
    for readout, key in (("vanilla", "cntk_v"), ("gap", "cntk_gap")):
        q = p[key]
        work += [cntk_gram(m, side=q["side_for_m"], depth=p["depth"], readout=readout, batch_size=q["batch_size_m"],
                           count=calls) for m in q["m_values"]]
        work += [cntk_gram(q["m_for_d"], side=d, depth=p["depth"], readout=readout, batch_size=q["batch_size_d"],
                           count=calls) for d in q["d_values"]]
    return work


def mc_vs_exact(cfg):
    """Per architecture, activation and width: n_reps x max(M) empirical NTKs on the train + test points;
    the bias probe's n_groups x group_size draws on its points."""
    p, data = cfg["params"], cfg["data"]
    n = split_size(data, "train") + split_size(data, "test")
    side, c_in = image_side(data)
    draws = max(p["n_samples"])
    work = []
    for arch in p["archs"]:
        g = p[arch]

        def macs(width, arch=arch):
            return (fc_macs(d=side * side * c_in, width=width, depth=p["depth"], out=10) if arch == "fc" else
                    cnn_macs(side=side, channels=width, depth=p["depth"], c_in=c_in, out=10))

        for width, reps in zip(g["widths"], g["n_reps"], strict=True):
            work.append(empirical_ntk(n, arch=arch, macs=macs(width), count=len(p["activations"]) * reps * draws,
                                      what=f"{arch} width {width}: {reps} x {draws} draws per activation"))
        b = g["bias_probe"]
        work.append(empirical_ntk(b["n_points"], arch=arch, macs=macs(b["width"]),
                                  count=len(p["activations"]) * b["n_groups"] * b["group_size"],
                                  what=f"{arch} bias probe: {b['n_groups']} x {b['group_size']} draws per activation"))
    return work


def printed_formulas(cfg):
    """The whole stage, timed at smaller settings (benchmarks/stages.py): its time is the scalar Monte Carlo
    of eqs. 79-86 (samples x cases), the empirical NTKs of the survey's nets over their draws (draws x
    points^2 x weights: net 13, FC net 53 and its wide first layer, the 1-D CNN 62), quadratures and
    compilation, which no single kernel benchmark rates."""
    p = cfg["params"]
    s, f, c, r = p["scalar"], p["fc"], p["cnn"], p["relu"]
    taps = c["channels"] * c["width"] + (c["convs"] - 1) * c["width"] ** 2  # 3-tap filters of every conv layer
    nets = [(s["draws"], len(s["inputs"]), fc_macs(d=1, width=s["width"], depth=2)),
            (f["draws"], f["n_points"], fc_macs(d=f["input_dim"], width=f["width"], depth=f["depth"])),
            (f["draws"], f["n_points"], fc_macs(d=f["input_dim"], width=f["first_layer_width"], depth=2)),
            (c["draws"], c["n_points"], 3 * taps + c["width"])]
    cases = len(r["lambdas"]) + len(r["variances"])
    return [stage_run("golikov2022/printed_formulas",
                      {"mc_samples": r["mc_samples"] * cases,
                       "ntk_weight_entries": sum(draws * n * n * w for draws, n, w in nets)},
                      what=f"ReLU Monte Carlo of eqs. 79-86 ({r['mc_samples']:,} samples x {cases} cases) and the "
                           f"empirical NTKs of nets 13, 53 and 62 ({s['draws']}, {f['draws']}, {c['draws']} draws)")]


def training_costs(cfg):
    """The timed Grams (FC at fc_m points; CNTK-V and CNTK-GAP blocks of block x block images), each timed for
    the NNGP alone and for both kernels, and the timed Euler steps (a matrix-vector product with the
    integration_m Gram each), ``repeats`` times after a compiling call."""
    p = cfg["params"]
    b, calls = p["block"], p["repeats"] + 1
    return [fc_gram(p["fc_m"], d=p["fc_input_dim"], depth=p["depth"], precision=cfg["precision"], count=2 * calls),
            *[cntk_gram(b, b, side=p["side"], depth=p["depth"], readout=r, count=2 * calls)
              for r in ("vanilla", "gap")],
            matvec(p["integration_m"], steps=p["timed_steps"], precision=cfg["precision"], count=calls,
                   what=f"{p['timed_steps']} Euler steps on the {p['integration_m']:,}-point Gram")]


WORKLOADS = {"gram_cost": gram_cost, "mc_vs_exact": mc_vs_exact, "printed_formulas": printed_formulas,
             "training_costs": training_costs}
