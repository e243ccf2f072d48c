"""Shared by the Arora et al. 2019 stages: image downsampling for the reduced scales, the cached CNTK
Gram of a training + test set (and the list of a stage's Grams, for tile jobs), kernel regression with
the paper's labels (Sec. 5.1: one-hot shifted to 0.9 / -0.1, exact solve, argmax)."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from ntkrepro.gram import compute_gram
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted
from ntkrepro.stage import load_split

READOUTS = ("vanilla", "gap")


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool images (n, H, W, C) over non-overlapping ``factor`` x ``factor`` windows."""
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"downsample factor must be a positive integer, got {factor!r}")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"downsample expects images (n, H, W, C), got shape {x.shape}")
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"downsample factor {factor} does not divide the image size {h}x{w}")
    if factor == 1:
        return x
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4)).astype(x.dtype)


def kernel_kwargs(*, depth: int, readout: str, filter_size: int, dtype: str) -> dict:
    """The CNTK of Table 1: vanilla as Sec. 4.1, GAP with the first and last layer fixed (Sec. 4.2)."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return {"depth": int(depth), "readout": readout, "fix_first_last": readout == "gap",
            "filter_size": int(filter_size), "dtype": str(dtype)}


def cntk_gram_args(x_train, x_test, *, cfg, depth: int, readout: str, filter_size: int, tile: int) -> list[dict]:
    """compute_gram's arguments (no cache) of the CNTK's K(train, train) and K(test, train)."""
    kw = kernel_kwargs(depth=depth, readout=readout, filter_size=filter_size, dtype=cfg.precision)
    common = dict(kernel="cntk", kernel_kwargs=kw, tile=tile)
    return [dict(x1=np.asarray(x_train), **common), dict(x1=np.asarray(x_test), x2=np.asarray(x_train), **common)]


def cntk_blocks(x_train, x_test, *, cfg, depth: int, readout: str, filter_size: int, tile: int):
    """(K(train, train), K(test, train)) of the CNTK (computed in ``cfg.precision``, returned as
    float64) via the cached tiled Gram engine."""
    args = cntk_gram_args(x_train, x_test, cfg=cfg, depth=depth, readout=readout, filter_size=filter_size,
                          tile=tile)
    k_train, k_test = (compute_gram(**a, cache_root=f"{cfg.results_root}/cache", progress=cfg.progress).ntk
                       for a in args)
    return np.asarray(k_train, dtype=np.float64), np.asarray(k_test, dtype=np.float64)


def gram_requests(cfg) -> list[dict]:
    """compute_gram's arguments of every CNTK Gram stage ``cfg.artifact`` (table1 / table2) computes, in its
    order (``python -m ntkrepro.gram requests`` turns them into tile jobs)."""
    p = cfg.params
    x_tr, x_te = (downsample(load_split(cfg, split).x, p.downsample) for split in ("train", "test"))
    if cfg.artifact == "table1":
        jobs = [(readout, d) for readout in READOUTS for d in p[readout].depths]
    elif cfg.artifact == "table2":
        jobs = [(readout, d) for d in p.depths for readout in READOUTS]
    else:
        raise ValueError(f"arora2019/{cfg.artifact} computes no cached Gram")
    return [a for readout, depth in jobs
            for a in cntk_gram_args(x_tr, x_te, cfg=cfg, depth=depth, readout=readout,
                                    filter_size=p.filter_size, tile=p.gram_tile)]


def regression_accuracy(k_train, k_test, y_train, y_test, *, num_classes: int, ridge: float,
                        label_pos: float, label_neg: float) -> float:
    """Test accuracy (percent) of kernel regression on one-hot targets shifted to (label_pos, label_neg)."""
    targets = one_hot_shifted(np.asarray(y_train), num_classes, pos=label_pos, neg=label_neg)
    pred = kernel_regression(np.asarray(k_train, dtype=np.float64), targets,
                             np.asarray(k_test, dtype=np.float64), ridge=ridge)
    return 100.0 * float(accuracy(np.asarray(pred), np.asarray(y_test)))


def log_axis_with_ticks(ax, ticks, *, label: str) -> None:
    """A logarithmic x axis labelled at ``ticks`` only (no minor-tick labels)."""
    ax.set_xscale("log")
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
