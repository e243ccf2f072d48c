"""What Jacot et al. 2018's stages compute, as workloads for ``ntkrepro.cost``."""

from ntkrepro.cost import empirical_ntk, fc_gram, fc_macs, image_side, split_size, train


def fig1(cfg):
    """Per width and init: full-batch GD (dominant at width 10,000: two 10,000^2 weight matrices moved and
    multiplied per step on 50 points) and two rows Theta(x0, grid)."""
    p, n = cfg["params"], split_size(cfg["data"], "train")
    d = cfg["data"]["options"]["dim"]
    work = [fc_gram(1, p["n_grid"], d=d, depth=p["depth"], what="the limiting NTK on the grid")]
    for w in p["widths"]:
        macs = fc_macs(d=d, width=w, depth=p["depth"])
        work += [train(p["steps"] * n, arch="fc", macs=macs, params=macs, batch=n, precision=cfg["precision"],
                       count=p["n_inits"], what=f"width {w}: {p['steps']} full-batch GD steps on {n} points"),
                 empirical_ntk(1, p["n_grid"], arch="fc", macs=macs, count=2 * p["n_inits"],
                               what=f"width {w}: Theta(x0, grid) at t = 0 and trained")]
    return work


def fig2(cfg):
    p, n = cfg["params"], len(cfg["params"]["train_angles"])
    work = [fc_gram(p["n_grid"] + n, n, d=2, depth=p["depth"], what="the limiting kernels")]
    for w in p["widths"]:
        macs = fc_macs(d=2, width=w, depth=p["depth"])
        work.append(train(p["steps"] * n, arch="fc", macs=macs, params=macs, batch=n, precision=cfg["precision"],
                          count=p["n_inits"], what=f"width {w}: {p['steps']} GD steps on {n} points"))
    return work


def fig3(cfg):
    p, n = cfg["params"], split_size(cfg["data"], "train")
    side, c = image_side(cfg["data"])
    d = side * side * c
    work = [fc_gram(n, d=d, depth=p["max_depth_table"], count=2, what="exact NTK (beta and the footnote's beta)")]
    for w in p["widths"]:
        macs = fc_macs(d=d, width=w, depth=p["depth"])
        work.append(train(p["steps"] * n, arch="fc", macs=macs, params=macs, batch=n, precision=cfg["precision"],
                          count=p["n_trials"], what=f"width {w}: {p['steps']} full-batch GD steps on {n} digits"))
    return work


def ntk_pd(cfg):
    p = cfg["params"]
    acts = len(p["activations"]) + len(p["polynomial_activations"])
    return [fc_gram(max(p["n_points"]), d=p["input_dim"], depth=p["max_depth"], count=acts,
                    what="exact NTK on the sphere (quadrature kernels cost more than the arc-cosine rate)")]


WORKLOADS = {"fig1": fig1, "fig2": fig2, "fig3": fig3, "ntk_pd": ntk_pd}
