"""What the DEQ-NTK stages (Feng & Kolter) compute, as workloads for ``ntkrepro.cost``."""

from ntkrepro.cost import cdeq_gram, cntk_gram, depth_iteration, deq_gram, image_side, solve, split_size


def fig1(cfg):
    """Per draw, panel and model (NTK, DEQ iteration): one all-depths iteration of (train + test) x train
    to the deepest depth, every depth kept (``deq_kernels(..., all_depths=True)``), then a kernel regression
    per depth."""
    p = cfg["params"]
    jobs = p["n_draws"] * len(p["panels"]) * 2
    rows = p["n_train"] + p["n_test"]
    return [depth_iteration(rows, p["n_train"], depth=max(p["depths"]), precision=cfg["precision"], count=jobs),
            solve(p["n_train"], targets=10, n_test=p["n_test"], precision=cfg["precision"],
                  count=jobs * len(p["depths"]))]


def _deq_rows(cfg, settings: int):
    n_tr, n_te = split_size(cfg["data"], "train"), split_size(cfg["data"], "test")
    return [deq_gram(n_tr, count=settings),
            deq_gram(n_te, n_tr, count=settings),
            solve(n_tr, targets=10, n_test=n_te, precision=cfg["precision"], count=settings)]


def table1(cfg):
    return _deq_rows(cfg, len(cfg["params"]["settings"]))


def table2(cfg):
    c = cfg["params"]["cdeq"]
    side, _ = image_side(cfg["data"])
    return [*_deq_rows(cfg, len(cfg["params"]["settings"])),
            cdeq_gram(c["n_train"], side=side, what="CDEQ-NTK train Gram"),
            cdeq_gram(c["n_test"], c["n_train"], side=side, what="CDEQ-NTK test x train Gram"),
            solve(c["n_train"], targets=10, n_test=c["n_test"])]


def cdeq_cost(cfg):
    """One CDEQ-NTK block and one CNTK-V block of n_images^2 pairs, each timed ``repeats`` times."""
    p = cfg["params"]
    side, _ = image_side(cfg["data"])
    n = p["n_images"]
    return [cdeq_gram(n, n, side=side, count=p["repeats"], what=f"CDEQ-NTK block {n} x {n}"),
            cntk_gram(n, n, side=side, depth=p["cntk_depth"], readout="vanilla", count=p["repeats"])]


WORKLOADS = {"fig1": fig1, "table1": table1, "table2": table2, "cdeq_cost": cdeq_cost}
