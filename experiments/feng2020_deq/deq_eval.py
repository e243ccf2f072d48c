"""Shared by Tables 1 and 2 of Feng & Kolter: a cached equilibrium-kernel Gram, kernel regression on
it with the paper's labels (one-hot shifted to 0.9 / -0.1, no ridge), timings (wall and CPU), and
the extrapolation of the cost to a full data set (Gram entries scale as n_train^2/2 + n_test*n_train,
the Cholesky solve as n_train^3)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from ntkrepro.claims import load_registry
from ntkrepro.gram import compute_gram
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted
from ntkrepro.stage import load_split


def setting_tag(*, sigma_w2: float, sigma_u2: float, sigma_b2: float | None = None) -> str:
    """Metric-name-safe label of a variance setting: (0.25, 0.25, 0.5) -> 'w25_u25_b50'."""
    tag = f"w{round(100 * sigma_w2)}_u{round(100 * sigma_u2)}"
    return tag if sigma_b2 is None else f"{tag}_b{round(100 * sigma_b2)}"


def gram_entries(n_train: int, n_test: int) -> int:
    """Kernel evaluations for a regression: the symmetric train Gram's upper triangle plus test x train."""
    return n_train * (n_train + 1) // 2 + n_test * n_train


def extrapolate_cpu_hours(*, gram_cpu_s: float, solve_cpu_s: float, n_train: int, n_test: int,
                          full_n_train: int, full_n_test: int) -> dict:
    """Scale measured CPU seconds to the full data set: Gram by kernel entries, solve by n_train^3."""
    gram = gram_cpu_s * gram_entries(full_n_train, full_n_test) / gram_entries(n_train, n_test)
    solve = solve_cpu_s * (full_n_train / n_train) ** 3
    return {"gram_cpu_hours_full": gram / 3600, "solve_cpu_hours_full": solve / 3600,
            "train_cpu_hours_full": (gram + solve) / 3600}


@dataclass(frozen=True)
class Timed:
    value: object
    wall_s: float
    cpu_s: float


def timed(fn, *args, **kwargs) -> Timed:
    """Run ``fn`` and measure wall time and the process's CPU time (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return Timed(value, time.perf_counter() - wall, time.process_time() - cpu)


def load_with(cfg, split: str, *, preprocess: str | None, n: int | None = None):
    """``load_split`` with another preprocessing than ``cfg.data.preprocess`` (provenance recorded)."""
    sub = OmegaConf.merge(cfg, {"data": {"preprocess": preprocess}})
    return load_split(sub, split, n=n)


def gram_regression(kernel: str, kernel_kwargs: dict, train, test, *, cfg, tile: int, ridge: float,
                    label_pos: float, label_neg: float) -> dict:
    """Cached Gram (train x train, test x train) of ``kernel`` and the kernel-regression test accuracy.

    Returns accuracy (percent), the Gram's wall/CPU seconds (0 for tiles found in the cache: see
    ``gram_computed``) and the solve's wall/CPU seconds."""
    x_tr, x_te = np.asarray(train.x), np.asarray(test.x)
    common = dict(kernel=kernel, kernel_kwargs=kernel_kwargs, cache_root=cfg.results_root + "/cache",
                  tile=tile, progress=cfg.progress)
    g_train = timed(compute_gram, x_tr, **common)
    g_test = timed(compute_gram, x_te, x_tr, **common)
    targets = one_hot_shifted(np.asarray(train.y), train.num_classes, pos=label_pos, neg=label_neg)
    solve = timed(lambda: np.asarray(kernel_regression(np.asarray(g_train.value.ntk), targets,
                                                       np.asarray(g_test.value.ntk), ridge=ridge)))
    return {
        "acc_pct": 100 * float(accuracy(solve.value, np.asarray(test.y))),
        "gram_wall_s": g_train.wall_s + g_test.wall_s,
        "gram_cpu_s": g_train.cpu_s + g_test.cpu_s,
        "gram_computed": bool(g_train.value.computed_tiles or g_test.value.computed_tiles),
        "solve_wall_s": solve.wall_s,
        "solve_cpu_s": solve.cpu_s,
        "n_train": len(x_tr),
        "n_test": len(x_te),
    }


def paper_values(paper: str, artifact: str) -> dict:
    """The published value of each metric of ``artifact`` (read from claims.yaml, for figure markers)."""
    from pathlib import Path

    path = Path(__file__).with_name("claims.yaml")
    return {c.metric: c.paper_value for c in load_registry(path)
            if c.paper == paper and c.artifact == artifact and c.kind == "value"}
