"""Shared by the Arora et al. 2019 stages: image downsampling for the reduced scales, the images a table
reads, its CNTK Grams declared once (``cntk_grams``: what the table computes and what its Gram tile jobs
compute), kernel regression with the paper's labels (Sec. 5.1: one-hot shifted to 0.9 / -0.1, exact
solve, argmax; a large Gram solved in place), and the checks the
stages' typed ``Params`` (and their ``check_config``) share (odd filters, label order, memory estimates,
the image size and split sizes a config asks for, read off the dataset registry before any data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import NullFormatter

from ntkrepro.checks import bad
from ntkrepro.config import gram_cache_root
from ntkrepro.data import REGISTRY
from ntkrepro.gram import LARGE_GRAM_BYTES, GramRequest, regression_requests
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted
from ntkrepro.stage import load_split

READOUTS = ("vanilla", "gap")
FLOAT32_BYTES = 4  # the typed params do not see `precision`: their estimates use the smallest float
FLOAT64_BYTES = 8  # Grams are solved in float64 whatever their precision (but large ones: in place)


# ---- checks shared by the stages' typed Params and check_config (before any data or compute) -------------

def odd(value) -> str | None:
    """A filter side: odd (zero 'same' padding keeps the image size)."""
    return None if value % 2 == 1 else "must be odd (zero 'same' padding keeps the image size)"


def check_labels(label_pos: float, label_neg: float) -> None:
    """The true class's target must exceed the others' (the prediction is the argmax)."""
    if not label_pos > label_neg:
        raise bad("params.label_pos", f"must be > params.label_neg = {label_neg:g} (the prediction is the "
                  "argmax: the true class's target must be the largest)", label_pos)


def itemsize(precision: str) -> int:
    """Bytes of one float at the run's ``precision``."""
    return 4 if precision == "float32" else 8


def cnn_weight_estimate(path: str, channels, *, depth: int, filter_size: int, what: str) -> tuple:
    """The convolution weights of the deepest, widest CNN: (depth - 2) hidden-to-hidden layers of
    filter_size^2 x channels^2 floats (float32: a lower bound whatever the precision), driven
    quadratically by the widest channel count."""
    c = max(channels)
    return (path, c, FLOAT32_BYTES * max(depth - 2, 1) * filter_size**2, 2,
            f"{what} (the {max(depth - 2, 1)} hidden convolutions of depth {depth}: "
            f"{filter_size}^2 x channels^2 each, float32)")


def _candidates(cfg) -> list[tuple[str, str]]:
    """(config path, dataset name) of the datasets a run may read: ``data.name`` and, where the scale
    allows a stand-in, ``data.substitute``."""
    out = [("data.name", cfg.data.name)]
    if cfg.data.get("substitute") and cfg.scale.allow_substitute:
        out.append(("data.substitute", cfg.data.substitute))
    return out


def image_pixels(cfg, factor: int) -> int:
    """Pixels per channel of the downsampled images a run may read (the largest over ``data.name`` and an
    allowed stand-in). Refuses a factor that divides the image sides of none of them."""
    sides = {}
    for path, name in _candidates(cfg):
        if not REGISTRY[name].is_image:
            raise bad(path, "must be an image dataset (the CNTK convolves images)", name)
        h, w, _ = REGISTRY[name].image_shape
        sides[(path, name)] = (h, w)
    fit = [(h // factor) * (w // factor) for h, w in sides.values() if h % factor == 0 and w % factor == 0]
    if not fit:
        shown = " or ".join(f"{h}x{w} ({path} = {name})" for (path, name), (h, w) in sides.items())
        raise bad("params.downsample", f"must divide the image sides of {shown}", factor)
    return max(fit)


def split_size(cfg, split: str) -> int:
    """The number of ``split`` examples a run reads: ``data.n_<split>``, or (null) the whole split of
    ``data.name`` (the registry's size)."""
    n = cfg.data.get(f"n_{split}")
    return int(n) if n is not None else int(REGISTRY[cfg.data.name].sizes[split])


def gram_estimates(cfg, *, large_path: bool = False) -> list[tuple]:
    """The CNTK Grams of a training + test set: K(train, train) driven by data.n_train (quadratically),
    K(test, train) by data.n_test; solved in float64, or (``large_path``: the tables, through
    ``regression_requests``) in ``cfg.precision`` in place when the float64 train Gram would exceed
    ``LARGE_GRAM_BYTES``."""
    n_tr, n_te = split_size(cfg, "train"), split_size(cfg, "test")
    large = large_path and FLOAT64_BYTES * n_tr**2 > LARGE_GRAM_BYTES
    size, dtype = (itemsize(cfg.precision), cfg.precision) if large else (FLOAT64_BYTES, "float64")
    return [("data.n_train", n_tr, size, 2, f"the training CNTK Gram (n_train x n_train, {dtype})"),
            ("data.n_test", n_te, size * n_tr, 1, f"the test-train CNTK Gram (n_test x n_train = {n_tr}, {dtype})")]


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


@dataclass(frozen=True)
class Images:
    """A table's training and test sets and their images average-pooled by ``params.downsample``."""

    train: object
    test: object
    x_train: np.ndarray
    x_test: np.ndarray


def load_images(cfg) -> Images:
    """The data a table reads (``load_split`` of train, then test), downsampled."""
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    factor = cfg.params.downsample
    return Images(train, test, downsample(train.x, factor), downsample(test.x, factor))


def cntk_grams(cfg, images: Images, jobs) -> dict[tuple[str, int], tuple[GramRequest, GramRequest]]:
    """The CNTK's K(train, train) and K(test, train) of each (readout, depth) of ``jobs``, in that order: the
    Grams a table computes (its ``grams``), in ``cfg.precision``."""
    p = cfg.params
    return {(readout, depth): regression_requests(
                np.asarray(images.x_train), np.asarray(images.x_test), kernel="cntk", tile=p.gram_tile,
                kernel_kwargs=kernel_kwargs(depth=depth, readout=readout, filter_size=p.filter_size,
                                            dtype=cfg.precision), precision=cfg.precision)
            for readout, depth in jobs}


def cntk_blocks(pair: tuple[GramRequest, GramRequest], *, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(K(train, train), K(test, train)) of a pair of :func:`cntk_grams` from the cached tiled Gram engine:
    float64, or (a large pair) the ``cfg.precision`` arrays K(train, train) mirrored, for an in-place solve."""
    k_train, k_test = (r.compute(gram_cache_root(cfg.results_root), progress=cfg.progress, mirror=True).ntk
                       for r in pair)
    if pair[0].into:
        return k_train, k_test
    return np.asarray(k_train, dtype=np.float64), np.asarray(k_test, dtype=np.float64)


def regression_accuracy(k_train, k_test, y_train, y_test, *, num_classes: int, ridge: float,
                        label_pos: float, label_neg: float, overwrite_k: bool = False) -> float:
    """Test accuracy (percent) of kernel regression on one-hot targets shifted to (label_pos, label_neg);
    ``overwrite_k``: K(train, train) is factored in place (in its own dtype) and destroyed."""
    targets = one_hot_shifted(np.asarray(y_train), num_classes, pos=label_pos, neg=label_neg)
    if overwrite_k:
        pred = kernel_regression(k_train, targets, k_test, ridge=ridge, overwrite_k=True)
    else:
        pred = kernel_regression(np.asarray(k_train, dtype=np.float64), targets,
                                 np.asarray(k_test, dtype=np.float64), ridge=ridge)
    return 100.0 * float(accuracy(np.asarray(pred), np.asarray(y_test)))


def log_axis_with_ticks(ax, ticks, *, label: str) -> None:
    """A logarithmic x axis labelled at ``ticks`` only (no minor-tick labels)."""
    ax.set_xscale("log")
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
