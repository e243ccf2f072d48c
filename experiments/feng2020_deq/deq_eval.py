"""Shared by Tables 1 and 2 of Feng & Kolter: the data a table reads, its equilibrium-kernel Grams declared
once (``deq_grams``: what the table computes and what its Gram tile jobs compute), kernel regression on
them with the paper's labels (one-hot shifted to 0.9 / -0.1, no ridge; a large Gram solved in place),
timings (wall and CPU), and the extrapolation of the cost to a full data set (Gram entries scale as
n_train^2/2 + n_test*n_train, the Cholesky solve as n_train^3)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.config import gram_cache_root
from ntkrepro.data.registry import get_spec
from ntkrepro.gram import GramRequest, regression_requests
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted, predict_in_blocks, solve
from ntkrepro.stage import load_split

# ---------------------------------------------------------------- typed params (checked before any data)

SUM_TOL = 1e-9  # the kernels' tolerance on the DEQ-NTK initialization sum (deq_ntk, cdeq_ntk)
FLOAT32_BYTES = 4  # the typed params do not see `precision`: their estimates use the smallest float


def itemsize(precision: str) -> int:
    """Bytes of one float at the run's ``precision``."""
    return 4 if precision == "float32" else 8


def check_initialization(path: str, **variances: float) -> None:
    """The DEQ-NTK / CDEQ-NTK initialization: the variances sum to 1 (Thm. 2 / Thm. 3) within the kernels'
    ``SUM_TOL`` (sigma_w2 < 1, Lemma 1, is a bound of the schema)."""
    total = sum(variances.values())
    if abs(total - 1.0) > SUM_TOL:
        raise bad(path, f"the DEQ-NTK initialization needs {' + '.join(variances)} = 1, got the sum {total:.10g}",
                  variances)


@dataclass
class Setting:
    """One DEQ-NTK variance setting of Tables 1 and 2."""

    sigma_w2: float = param(ge=0, lt=1, doc="< 1: the fixed point exists (Lemma 1)")
    sigma_u2: float = param(ge=0)
    sigma_b2: float = param(ge=0)


@dataclass
class FullSplits:
    """The full data set the measured cost is extrapolated to."""

    n_train: int = param(ge=1)
    n_test: int = param(ge=1)


@dataclass
class TableParams:
    """``params`` of Table 1 (Table 2 adds the CDEQ-NTK row)."""

    settings: list[Setting] = param(min_len=1, distinct=True)
    ridge: float = param(ge=0)
    label_pos: float = param()
    label_neg: float = param()
    tile: int = param(ge=1)
    solve_warmup_max_n: int = param(ge=0)
    extrapolate_to: FullSplits = param()

    def check(self):
        for i, s in enumerate(self.settings):
            check_initialization(f"params.settings[{i}]", sigma_w2=s.sigma_w2, sigma_u2=s.sigma_u2,
                                 sigma_b2=s.sigma_b2)
        if not self.label_pos > self.label_neg:
            raise bad("params.label_pos", f"must be > params.label_neg = {self.label_neg:g} (the one-hot "
                      "target of the true class)", self.label_pos)

    def check_config(self, cfg) -> None:
        check_table_data(cfg)


def check_unit_norm(cfg) -> None:
    """Thm. 2's DEQ-NTK fixed point is defined on the unit sphere: ``data.preprocess`` must be unit_norm."""
    if cfg.data.preprocess != "unit_norm":
        raise bad("data.preprocess", "must be 'unit_norm': the DEQ-NTK fixed point (Thm. 2) takes unit-norm "
                  "inputs", cfg.data.preprocess)


def check_table_data(cfg) -> None:
    """``data`` of Tables 1 and 2, before it is loaded (the typed params cannot see it): unit-norm inputs,
    and a DEQ-NTK train Gram (data.n_train^2 floats) no larger than this machine's memory (null = the whole
    split, its size from the data registry)."""
    check_unit_norm(cfg)
    n_train = cfg.data.n_train if cfg.data.n_train is not None else get_spec(cfg.data.name).sizes["train"]
    refuse_oversized([("data.n_train", n_train, itemsize(cfg.precision), 2,
                       f"the DEQ-NTK train Gram (n_train x n_train, {cfg.precision})")])


# ---------------------------------------------------------------- evaluation


def setting_tag(*, sigma_w2: float, sigma_u2: float, sigma_b2: float | None = None) -> str:
    """Metric-name-safe label of a variance setting: (0.25, 0.25, 0.5) -> 'w25_u25_b50'."""
    tag = f"w{round(100 * sigma_w2)}_u{round(100 * sigma_u2)}"
    return tag if sigma_b2 is None else f"{tag}_b{round(100 * sigma_b2)}"


def percent(fraction) -> float:
    """A fraction as a percentage rounded to 1e-4 (``accuracy`` is a float32 mean: 0.7 -> 69.9999988;
    1e-4 pp still separates every count of up to 10^6 test points)."""
    return round(100 * float(fraction), 4)


def gram_entries(n_train: int, n_test: int) -> int:
    """Kernel evaluations for a regression: the symmetric train Gram's upper triangle plus test x train."""
    return n_train * (n_train + 1) // 2 + n_test * n_train


def extrapolate_cpu_hours(*, gram_cpu_s: float | None, solve_cpu_s: float, n_train: int, n_test: int,
                          full_n_train: int, full_n_test: int) -> dict:
    """Scale measured CPU seconds to the full data set: Gram by kernel entries, solve by n_train^3
    (all None when the Gram's time is unknown)."""
    if gram_cpu_s is None:
        return {"gram_cpu_hours_full": None, "solve_cpu_hours_full": None, "train_cpu_hours_full": None}
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


def deq_vectors(train, test):
    """The DEQ-NTK's inputs: every image flattened to a vector (Sec. 3)."""
    return tuple(np.asarray(d.x).reshape(len(d.x), -1) for d in (train, test))


def deq_variances(setting) -> dict:
    return dict(sigma_w2=float(setting.sigma_w2), sigma_u2=float(setting.sigma_u2),
                sigma_b2=float(setting.sigma_b2))


def cdeq_kwargs(c) -> dict:
    """The CDEQ-NTK's kernel arguments from ``params.cdeq``."""
    return dict(sigma_w2=float(c.sigma_w2), sigma_u2=float(c.sigma_u2), tol=c.tol, max_iter=c.max_iter)


@dataclass(frozen=True)
class TableData:
    """The splits a table reads: the DEQ-NTK's train and test sets (and Table 2's CDEQ-NTK images)."""

    train: object
    test: object
    img_train: object = None
    img_test: object = None


def deq_grams(cfg, train, test) -> dict[str, tuple[GramRequest, GramRequest]]:
    """The DEQ-NTK's K(train, train) and K(test, train) of each setting of ``params.settings`` (keyed by its
    :func:`setting_tag`, in order), in ``cfg.precision``: the Grams a table computes (its ``grams``)."""
    p = cfg.params
    x_tr, x_te = deq_vectors(train, test)
    return {setting_tag(**deq_variances(s)): regression_requests(
                x_tr, x_te, kernel="deq", kernel_kwargs=deq_variances(s), tile=p.tile, dtype=np.dtype(cfg.precision),
                precision=cfg.precision)
            for s in p.settings}


def gram_regression(pair: tuple[GramRequest, GramRequest], y_tr, y_te, *, num_classes: int, cfg, ridge: float,
                    label_pos: float, label_neg: float, warmup_max_n: int) -> dict:
    """The cached Grams ``pair`` (train x train, test x train, as :func:`deq_grams`) and the kernel-regression
    test accuracy. A large pair (``into``): K(train, train) is factored in place (``overwrite_k``) and freed
    before K(test, train) is computed, one Gram alive at a time (the path ``benchmarks/run.py large``
    measures); else both are assembled and solved in float64.

    Returns the accuracy (percent), the Grams' wall/CPU seconds (the sum of their tiles' recorded compute
    times, ``ntkrepro.gram.Gram.seconds``, wherever the tiles were computed: in this process or by the
    workflow's tile jobs; None if unknown) and the solve's wall/CPU seconds (factor and predictions). The
    Gram timings include JAX compilation (once per process and tile shape: negligible at scale, a few
    seconds per tile job at small sizes); the assembled path's solve is timed after one untimed warm-up
    solve when n_train <= ``warmup_max_n`` (above it compilation is negligible next to the O(n^3) solve)."""
    cache_root = Path(gram_cache_root(cfg.results_root))
    targets = one_hot_shifted(np.asarray(y_tr), num_classes, pos=label_pos, neg=label_neg)
    n_train, n_test = len(pair[0].x1), len(pair[1].x1)

    def gram(request: GramRequest):
        """(ntk, (wall, CPU) seconds) of one Gram."""
        g = request.compute(str(cache_root), progress=cfg.progress)
        return g.ntk, g.seconds or (None, None)

    k_train, train_time = gram(pair[0])
    if pair[0].into is None:
        k_test, test_time = gram(pair[1])
        predict = lambda: np.asarray(kernel_regression(k_train, targets, k_test, ridge=ridge))
        if n_train <= warmup_max_n:
            predict()  # compile for these shapes first: at small n compilation would dominate the timing
        steps = [timed(predict)]
    else:
        steps = [timed(solve, k_train, targets, ridge=ridge, overwrite_k=True, progress=cfg.progress)]
        del k_train  # factored: freed before K(test, train) exists
        k_test, test_time = gram(pair[1])
        steps.append(timed(predict_in_blocks, k_test, steps[0].value))
    walls, cpus = zip(train_time, test_time, strict=True)
    known = None not in walls
    return {
        "acc_pct": percent(accuracy(steps[-1].value, np.asarray(y_te))),
        "gram_wall_s": sum(walls) if known else None,
        "gram_cpu_s": sum(cpus) if known else None,
        "solve_wall_s": sum(t.wall_s for t in steps),
        "solve_cpu_s": sum(t.cpu_s for t in steps),
        "n_train": n_train,
        "n_test": n_test,
    }


def evaluate_deq_settings(cfg, train, test, grams: dict) -> tuple[pd.DataFrame, dict]:
    """Every DEQ-NTK setting of ``cfg.params.settings`` (its Grams ``grams``, from :func:`deq_grams`):
    accuracy, Gram time, cost extrapolated to ``cfg.params.extrapolate_to``. Metrics: ``acc_pct_deq_<tag>``,
    ``gram_seconds_deq_<tag>``, ``train_cpu_hours_full_deq_<tag>``, and over the settings ``gram_seconds``
    (mean) and ``train_cpu_hours_full_log10`` (log10 of the mean)."""
    p, full = cfg.params, cfg.params.extrapolate_to
    rows, metrics = [], {}
    for s, pair in zip(p.settings, grams.values(), strict=True):
        variances = deq_variances(s)
        r = gram_regression(pair, train.y, test.y, num_classes=train.num_classes, cfg=cfg, ridge=p.ridge,
                            label_pos=p.label_pos, label_neg=p.label_neg, warmup_max_n=p.solve_warmup_max_n)
        cost = extrapolate_cpu_hours(gram_cpu_s=r["gram_cpu_s"], solve_cpu_s=r["solve_cpu_s"],
                                     n_train=r["n_train"], n_test=r["n_test"],
                                     full_n_train=full.n_train, full_n_test=full.n_test)
        rows.append(result_row("DEQ-NTK", variances, r, cost))
        tag = setting_tag(**variances)
        metrics[f"acc_pct_deq_{tag}"] = r["acc_pct"]
        metrics[f"gram_seconds_deq_{tag}"] = r["gram_wall_s"]
        metrics[f"train_cpu_hours_full_deq_{tag}"] = cost["train_cpu_hours_full"]
    table = pd.DataFrame(rows)
    hours = [h for h in table.train_cpu_hours_full if h is not None]
    seconds = [t for t in table.gram_seconds if t is not None]
    metrics["gram_seconds"] = float(np.mean(seconds)) if len(seconds) == len(table) else None
    metrics["train_cpu_hours_full_log10"] = math.log10(np.mean(hours)) if len(hours) == len(table) else None
    return table, metrics


def result_row(method: str, variances: dict, r: dict, cost: dict) -> dict:
    return {"method": method, **variances, "test_acc_pct": r["acc_pct"], "n_train": r["n_train"],
            "n_test": r["n_test"], "gram_seconds": r["gram_wall_s"], "solve_seconds": r["solve_wall_s"],
            **cost}
