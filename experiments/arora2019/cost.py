"""What Arora et al. 2019's stages compute, as workloads for ``ntkrepro.cost`` (sizes from the resolved config)."""

from ntkrepro.cost import cnn_macs, cnn_params, cntk_gram, empirical_ntk, image_side, solve, split_size, train

READOUTS = ("vanilla", "gap")


def _kernel_regressions(cfg, jobs, n_tr, n_te, side, classes):
    """Per (readout, depth): K(train, train), K(test, train) and the solve on them."""
    out = []
    for readout, depth in jobs:
        out += [cntk_gram(n_tr, side=side, depth=depth, readout=readout),
                cntk_gram(n_te, n_tr, side=side, depth=depth, readout=readout),
                solve(n_tr, targets=classes, n_test=n_te)]
    return out


def table1(cfg):
    p, data = cfg["params"], cfg["data"]
    n_tr, n_te = split_size(data, "train"), split_size(data, "test")
    side, c_in = image_side(data, p["downsample"])
    jobs = [(r, d) for r in READOUTS for d in p[r]["depths"]]
    work = _kernel_regressions(cfg, jobs, n_tr, n_te, side, 10)
    work.append(solve(p["subset"]["n_train"], targets=10, n_test=n_te, count=len(jobs), what="the '-2K' solves"))
    c = p["cnn"]
    runs = len(c["lrs"]) * len(c["kappa"])
    for readout in READOUTS:
        for depth in c["depths"]:
            for channels in c["channels"]:
                shape = dict(side=side, channels=channels, depth=depth, c_in=c_in, out=10, readout=readout)
                work.append(train(c["epochs"] * (n_tr - c["n_val"]), arch="cnn", macs=cnn_macs(**shape),
                                  params=cnn_params(**shape), batch=c["batch_size"], precision=cfg["precision"],
                                  count=runs,
                                  what=f"CNN-{readout} depth {depth}, {channels} channels, {c['epochs']} epochs "
                                       f"({runs} lr x kappa runs)"))
    return work


def table2(cfg):
    p, data = cfg["params"], cfg["data"]
    n_tr, n_te = split_size(data, "train"), split_size(data, "test")
    side, c_in = image_side(data, p["downsample"])
    jobs = [(r, d) for d in p["depths"] for r in READOUTS]
    work = _kernel_regressions(cfg, jobs, n_tr, n_te, side, 2)
    for readout, depth in jobs:
        macs = cnn_macs(side=side, channels=p["channels"], depth=depth, c_in=c_in, out=1, readout=readout)
        what = f"random features: CNN-{readout} depth {depth}, {p['channels']} channels, {p['n_draws']} draws"
        work += [empirical_ntk(n_tr, arch="cnn", macs=macs, count=p["n_draws"], what=what + " (train)"),
                 empirical_ntk(n_te, n_tr, arch="cnn", macs=macs, count=p["n_draws"], what=what + " (test)"),
                 solve(n_tr, targets=2, n_test=n_te, count=p["n_draws"])]
    return work


def theory_checks(cfg):
    p, data = cfg["params"], cfg["data"]
    n_tr, n_te = split_size(data, "train"), split_size(data, "test")
    side, c_in = image_side(data, p["downsample"])
    init, tr = p["init"], p["trained"]
    work = [cntk_gram(n_tr, side=side, depth=init["depth"], readout=r) for r in READOUTS]
    work += [empirical_ntk(n_tr, arch="cnn", count=init["n_seeds"],
                           macs=cnn_macs(side=side, channels=w, depth=init["depth"], c_in=c_in, readout=r))
             for w in init["widths"] for r in READOUTS]
    work += [cntk_gram(n_te + n_tr, side=side, depth=tr["depth"], readout="vanilla")]
    for w in tr["widths"]:
        shape = {"side": side, "channels": w, "depth": tr["depth"], "c_in": c_in, "out": 10}
        work.append(train(tr["steps"] * n_tr, arch="cnn", macs=cnn_macs(**shape), params=cnn_params(**shape),
                          batch=n_tr, precision=cfg["precision"], count=tr["n_seeds"]))
    return work


WORKLOADS = {"table1": table1, "table2": table2, "theory_checks": theory_checks}
