"""What the survey's stages (Golikov et al. 2022) compute, as workloads for ``ntkrepro.cost``."""

from ntkrepro.cost import cnn_macs, cntk_gram, empirical_ntk, fc_gram, fc_macs, image_side, split_size, unrated


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
    """Empirical NTKs of the survey's nets (net 13, FC net 53 and its wide first layer, the 1-D CNN 62) over
    their draws; the scalar Monte Carlo of eqs. 79-86 is not rated."""
    p = cfg["params"]
    s, f, c = p["scalar"], p["fc"], p["cnn"]
    taps = c["channels"] * c["width"] + (c["convs"] - 1) * c["width"] ** 2  # 3-tap filters of every conv layer
    conv_macs = 3 * c["pixels"] * taps + c["width"] * c["pixels"]
    return [unrated(f"ReLU Monte Carlo of eqs. 79-86: {p['relu']['mc_samples']:,} samples per case"),
            empirical_ntk(len(s["inputs"]), arch="fc", macs=fc_macs(d=1, width=s["width"], depth=2), count=s["draws"],
                          what=f"net 13: width {s['width']}, {s['draws']} draws"),
            empirical_ntk(f["n_points"], arch="fc", macs=fc_macs(d=f["input_dim"], width=f["width"], depth=f["depth"]),
                          count=f["draws"], what=f"net 53: width {f['width']}, {f['draws']} draws"),
            empirical_ntk(f["n_points"], arch="fc", count=f["draws"],
                          macs=fc_macs(d=f["input_dim"], width=f["first_layer_width"], depth=2),
                          what=f"net 53's first layer: width {f['first_layer_width']}, {f['draws']} draws"),
            empirical_ntk(c["n_points"], arch="cnn", macs=conv_macs, count=c["draws"],
                          what=f"net 62 (1-D CNN): {c['width']} channels, {c['draws']} draws")]


def training_costs(cfg):
    """The timed Grams (FC at fc_m points; CNTK-V and CNTK-GAP blocks of block x block images) and the timed
    Euler steps (a matrix-vector product with the integration_m Gram each), ``repeats`` times."""
    p = cfg["params"]
    b, calls = p["block"], p["repeats"] + 1
    return [fc_gram(p["fc_m"], d=p["fc_input_dim"], depth=p["depth"], precision=cfg["precision"], count=calls),
            *[cntk_gram(b, b, side=p["side"], depth=p["depth"], readout=r, count=calls)
              for r in ("vanilla", "gap")],
            unrated(f"{p['timed_steps']} Euler steps on the {p['integration_m']:,}-point Gram, x {calls} "
                    "(matrix-vector products: no benchmark rates them)")]


WORKLOADS = {"gram_cost": gram_cost, "mc_vs_exact": mc_vs_exact, "printed_formulas": printed_formulas,
             "training_costs": training_costs}
