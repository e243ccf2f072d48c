"""What Hayou et al. 2020's stages compute, as workloads for ``ntkrepro.cost``."""

from ntkrepro.cost import fc_macs, image_side, split_size, stage_run, train


def eoc_curves(cfg):
    """One fixed-point variance q* per grid point and activation (Gauss quadrature of each)."""
    p = cfg["params"]
    return [stage_run("hayou2020/eoc_curves", {"q_points": p["n_q"] * len(p["activations"])},
                      what=f"EOC curves: {p['n_q']} fixed-point variances x {len(p['activations'])} activations")]


def fig1(cfg):
    """One sequential recursion to max_depth per EOC and ResNet curve (the ordered phase's 200 depths are
    part of the fixed cost)."""
    p = cfg["params"]
    curves = len(p["eoc"]) + len(p["resnet_sigma_w2"])
    return [stage_run("hayou2020/fig1", {"recursion_steps": p["max_depth"] * curves},
                      what=f"Fig. 1: {curves} recursions to depth {p['max_depth']:,}")]


def theorem_checks(cfg):
    """One recursion to max_depth per input pair and EOC / ResNet case (the phase recursions to
    phase_depth are part of the fixed cost)."""
    p = cfg["params"]
    cases = len(p["pairs"]) * (len(p["eoc"]) + len(p["resnet_sigma_w2"]))
    return [stage_run("hayou2020/theorem_checks", {"recursion_steps": p["max_depth"] * cases},
                      what=f"theorem checks: {cases} recursions to depth {p['max_depth']:,}")]


def cnn_checks(cfg):
    """The infinite-channel CNN recursions to max_depth (every input and position pair at once, per EOC /
    ResNet case) and the Monte Carlo nets (weights of each net x nets)."""
    p = cfg["params"]
    cases = len(p["eoc"]) + len(p["resnet_sigma_w2"])
    entries = (p["n_inputs"] * p["positions"]) ** 2
    nets = p["mc_samples"] * len(p["mc"])
    weights = p["mc_depth"] * (2 * p["half_width"] + 1) * p["mc_channels"] ** 2
    return [stage_run("hayou2020/cnn_checks", {"recursion_entry_steps": p["max_depth"] * cases * entries,
                                               "mc_net_weights": nets * weights},
                      what=f"CNN checks: {cases} recursions to depth {p['max_depth']:,} over {entries} position "
                           f"pairs; {nets} Monte Carlo nets of {p['mc_channels']} channels")]


def table1(cfg):
    """Every model x dataset x seed trained for the late epoch count (the early one is a checkpoint)."""
    p = cfg["params"]
    work = []
    for name in p["run_datasets"]:
        data = p["datasets"][name]
        side, c = image_side(data)
        macs = fc_macs(d=side * side * c, width=p["width"], depth=p["depth"], out=10)
        work.append(train(p["epochs"]["late"] * split_size(data, "train"), arch="fc", macs=macs, params=macs,
                          batch=p["batch_size"], precision=cfg["precision"], count=len(p["models"]) * p["n_seeds"],
                          what=f"{name}: {len(p['models'])} FFNNs x {p['n_seeds']} seeds, width {p['width']}, "
                               f"depth {p['depth']}, {p['epochs']['late']} epochs"))
    return work


def resnet_params(depth: int, c_in: int = 3, out: int = 100) -> int:
    """Weights of a CIFAR ResNet-(6n+2) (:func:`resnet_macs`' convolutions, each counted once, without the
    1x1 shortcut projections)."""
    n = (depth - 2) // 6
    return 9 * c_in * 16 + sum(9 * c * c * 2 * n for c in (16, 32, 64)) + 64 * out


def resnet_macs(depth: int, side: int = 32, c_in: int = 3, out: int = 100) -> int:
    """Forward multiply-adds of a CIFAR ResNet-(6n+2) (He et al. 2016: 16/32/64 channels on 32/16/8-pixel
    maps, 2n 3x3 convolutions per stage: each stage costs the same 9 x 16^2 x 32^2 per convolution)."""
    n = (depth - 2) // 6
    per_conv = 9 * 16 * 16 * side * side
    return 9 * c_in * 16 * side * side + 3 * 2 * n * per_conv + 64 * out


def table2(cfg):
    p, data = cfg["params"], cfg["data"]
    m = p["model"]
    examples = p["epochs"]["late"] * split_size(data, "train")
    side, c = image_side(data)
    work = []
    for depth in p["depths"]:
        if m["kind"] == "cifar_resnet":
            arch, macs, params = "cnn", resnet_macs(depth), resnet_params(depth)
        else:
            arch = "fc"
            macs = params = fc_macs(d=side * side * c, width=m["width"], depth=depth, out=10)
        work.append(train(examples, arch=arch, macs=macs, params=params, batch=p["batch_size"],
                          precision=cfg["precision"], count=2 * p["n_seeds"],
                          what=f"{m['name']}{depth} standard and scaled x {p['n_seeds']} seeds, "
                               f"{p['epochs']['late']} epochs"))
    return work


WORKLOADS = {"table1": table1, "table2": table2, "eoc_curves": eoc_curves, "fig1": fig1,
             "theorem_checks": theorem_checks, "cnn_checks": cnn_checks}
