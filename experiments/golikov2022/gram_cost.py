"""Golikov et al. 2022, sec. 9 (Figs. 5-8) and sec. 5.1: Gram-construction time of this project's exact
kernels on this machine against the number of inputs m and the image side d, with fitted exponents.

Expected: 2 in m for every kernel (all pairs); in d, 4 for CNTK-GAP (the d^2 x d^2 pixel covariance of
every pair, O(m^2 d^4)) and 2 for CNTK-vanilla (without pooling only the d^2 diagonal pixel blocks are
needed, O(m^2 d^2), sec. 5.1). Each time is the best of ``repeats`` calls after one warm-up call that
compiles the computation for those shapes, so compilation is excluded. The exponent is the least-squares
slope of log time against log size over the ``fit_top`` largest sizes (fixed per-call costs bend the
smallest sizes). Inputs are synthetic N(0, 1) vectors / images: the cost does not depend on the values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np
import pandas as pd

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.plotting import figure, loglog_with_fit
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main
from ntkrepro.stats import LineFit, local_slopes, loglog_fit

KERNELS = ("fc", "cntk_v", "cntk_gap")
AXES = ("m", "d")
TIME = "cpu_seconds"  # fitted and plotted: the process's CPU time, robust to other jobs on the machine
COLORS = {"fc": "C0", "cntk_v": "C1", "cntk_gap": "C2"}


def gram_fn(kernel: str, *, depth: int, dtype=jnp.float32, batch_size: int | None = None) -> Callable:
    """x -> the NTK Gram of x for ``kernel`` (FC on (m, d) vectors, CNTK on (m, H, W, C) images).
    ``batch_size``: CNTK pairs per compiled call (fixed, so that the block structure does not change with
    the memory other processes happen to use; None = the kernel's memory-based default)."""
    if kernel == "fc":
        return lambda x: fc_kernels(x, depth=depth, dtype=dtype).ntk
    if kernel in ("cntk_v", "cntk_gap"):
        readout = "vanilla" if kernel == "cntk_v" else "gap"
        return lambda x: cntk(x, depth=depth, readout=readout, dtype=dtype, batch_size=batch_size).ntk
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def time_compiled(fn: Callable, x, *, repeats: int,
                  clocks: tuple[Callable[[], float], ...] = (time.perf_counter, time.process_time)
                  ) -> tuple[float, ...]:
    """Best time of ``repeats`` calls of ``fn(x)`` after one untimed warm-up call (compilation), for each
    clock (default: wall time and the process's CPU time)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    jax.block_until_ready(fn(x))
    best = [np.inf] * len(clocks)
    for _ in range(repeats):
        starts = [clock() for clock in clocks]
        jax.block_until_ready(fn(x))
        best = [min(b, clock() - start) for b, clock, start in zip(best, clocks, starts, strict=True)]
    return tuple(float(b) for b in best)


def fit_power_law(sizes, seconds, *, top: int) -> tuple[LineFit, np.ndarray]:
    """(fit, sizes used) of seconds ~ exp(intercept) size^slope, fitted by least squares in log-log over the
    ``top`` largest sizes (``ntkrepro.stats.loglog_fit``: the slope's standard error over ``top`` points,
    nan with two)."""
    order = np.argsort(np.asarray(sizes, dtype=float))
    sizes = np.asarray(sizes, dtype=float)[order]
    seconds = np.asarray(seconds, dtype=float)[order]
    if top < 2 or len(sizes) < top:
        raise ValueError(f"a power-law fit over the top {top} sizes needs top >= 2 and at most "
                         f"{len(sizes)} (the number of sizes)")
    used = sizes[-top:]
    return loglog_fit(used, seconds[-top:]), used


def timing_jobs(p) -> list[dict]:
    """Every (kernel, axis, size) to time, with its input shape."""
    jobs = [{"kernel": "fc", "axis": "m", "size": m, "shape": (m, p.fc_input_dim)} for m in p.fc.m_values]
    for kernel in ("cntk_v", "cntk_gap"):
        q = p[kernel]
        side = q.side_for_m
        jobs += [{"kernel": kernel, "axis": "m", "size": m, "shape": (m, side, side, p.channels)}
                 for m in q.m_values]
        jobs += [{"kernel": kernel, "axis": "d", "size": side, "shape": (q.m_for_d, side, side, p.channels)}
                 for side in q.d_values]
    return jobs


FLOAT32_BYTES = 4  # the typed params do not see `precision`: their estimates use the smallest float


@dataclass
class FcSweep:
    """The FC kernel's sweep over the number of inputs m."""

    m_values: list[int] = param(min_len=2, ge=1, distinct=True)


@dataclass
class CntkSweep:
    """A CNTK's sweeps: m at image side ``side_for_m``, the side d at ``m_for_d`` images."""

    batch_size_m: int | None = param(ge=1, doc="pairs per compiled call (null: from free memory)")
    batch_size_d: int | None = param(ge=1)
    side_for_m: int = param(ge=1)
    m_values: list[int] = param(min_len=2, ge=1, distinct=True)
    m_for_d: int = param(ge=1)
    d_values: list[int] = param(min_len=2, ge=1, distinct=True)


@dataclass
class Extrapolate:
    """The survey's sec. 9 extrapolation target."""

    m: int = param(ge=1)
    side: int = param(ge=1)


@dataclass
class Params:
    """``params`` of conf/experiment/golikov2022/gram_cost.yaml."""

    depth: int = param(ge=2, doc="the CNTK needs a convolution layer and the readout")
    fc_input_dim: int = param(ge=1)
    channels: int = param(ge=1)
    repeats: int = param(ge=1)
    fit_top: int = param(ge=2, doc="a slope needs two sizes")
    fc: FcSweep = param()
    cntk_v: CntkSweep = param()
    cntk_gap: CntkSweep = param()
    extrapolate: Extrapolate = param()

    def check(self):
        for kernel in KERNELS:
            for key in ("m_values", "d_values"):
                values = getattr(getattr(self, kernel), key, None)
                if values is not None and len(values) < self.fit_top:
                    raise bad(f"params.{kernel}.{key}", f"needs at least params.fit_top = {self.fit_top} sizes "
                              "(the exponent is fitted over the largest fit_top)", values)
        refuse_oversized(self.memory_estimates())

    def memory_estimates(self) -> list[tuple]:
        """(path, value, unit_bytes, power, what): the largest arrays of each sweep, each alone (float32, a
        lower bound whatever the precision): only absurd sizes are refused."""
        m_fc = max(self.fc.m_values)
        out = [("params.fc.m_values", m_fc, FLOAT32_BYTES, 2, "the FC Gram of the largest m (m x m, float32)"),
               ("params.fc_input_dim", self.fc_input_dim, FLOAT32_BYTES * m_fc, 1,
                "the FC inputs (largest m x fc_input_dim, float32)")]
        for kernel in ("cntk_v", "cntk_gap"):
            q = getattr(self, kernel)
            image = FLOAT32_BYTES * self.channels
            out += [(f"params.{kernel}.m_values", max(q.m_values), FLOAT32_BYTES, 2,
                     f"the {kernel} Gram of the largest m (m x m, float32)"),
                    (f"params.{kernel}.side_for_m", q.side_for_m, image * max(q.m_values), 2,
                     "the images of the m sweep (largest m x side^2 x channels, float32)"),
                    (f"params.{kernel}.d_values", max(q.d_values), image * q.m_for_d, 2,
                     "the images of the d sweep (m_for_d x largest side^2 x channels, float32)"),
                    (f"params.{kernel}.m_for_d", q.m_for_d, FLOAT32_BYTES, 2,
                     f"the {kernel} Gram of the d sweep (m_for_d x m_for_d, float32)")]
        return out


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    rng = np.random.default_rng(cfg.seed)
    dtype = jnp.float32 if cfg.precision == "float32" else jnp.float64
    rows = []
    for job in progress(timing_jobs(p), desc="gram timings", enabled=cfg.progress):
        x = rng.standard_normal(job["shape"]).astype(dtype)
        fn = gram_fn(job["kernel"], depth=p.depth, dtype=dtype,
                     batch_size=p[job["kernel"]].get(f"batch_size_{job['axis']}"))
        wall, cpu = time_compiled(fn, x, repeats=p.repeats)
        rows.append({"kernel": job["kernel"], "axis": job["axis"], "size": job["size"],
                     "shape": "x".join(map(str, job["shape"])), "wall_seconds": wall, "cpu_seconds": cpu})
    timings = pd.DataFrame(rows)

    metrics, fits, uncertainty = {}, [], {}
    published = paper_values(Path(__file__).with_name("claims.yaml"), "gram_cost")
    fig, axes = figure(1, 2, height=2.8)
    for ax, axis in zip(axes.reshape(-1), AXES, strict=True):
        marked = False
        for kernel, group in timings[timings.axis == axis].groupby("kernel", sort=False):
            fit, used = fit_power_law(group["size"], group[TIME], top=p.fit_top)
            exponent, log_prefactor = fit.slope, fit.intercept
            metrics[f"{kernel}_exponent_{axis}"] = exponent
            uncertainty[f"{kernel}_exponent_{axis}"] = fit.slope_estimate().record()
            ordered = group.sort_values("size")
            drift = local_slopes(ordered["size"], ordered[TIME])
            metrics[f"{kernel}_local_slopes_{axis}"] = [round(float(v), 3) for v in drift]
            fits.append({"kernel": kernel, "axis": axis, "exponent": exponent, "exponent_se": fit.slope_se,
                         "fit_points": fit.n, "fit_sizes": ",".join(f"{s:g}" for s in used),
                         "local_slopes": ",".join(f"{v:.3f}" for v in drift)})
            loglog_with_fit(ax, group["size"], group[TIME], slope=exponent, intercept=log_prefactor,
                            label=kernel, fit_label=f"fit {exponent:.2f}", marker="o", markersize=3,
                            color=COLORS[kernel])
            expected = published.get(f"{kernel}_exponent_{axis}")
            if expected is not None:  # the paper's growth rate through the largest measurement
                top = group.sort_values("size").iloc[-1]
                sizes = group["size"].to_numpy(float)
                ax.loglog(sizes, top[TIME] * (sizes / top["size"]) ** expected, "--", color="black",
                          linewidth=0.7, label=None if marked else "paper's rate")
                ax.annotate(f"{expected:g}", (sizes[0], top[TIME] * (sizes[0] / top["size"]) ** expected),
                            fontsize=6)
                marked = True
        ax.set_xlabel("number of inputs m" if axis == "m" else "image side d")
        ax.set_ylabel("Gram CPU time (s)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=5, ncols=2, loc="upper left")
    axes.reshape(-1)[0].set_title("time vs m (CNTK images side " +
                                  "/".join(str(p[k].side_for_m) for k in ("cntk_v", "cntk_gap")) + ")")
    axes.reshape(-1)[1].set_title("time vs image side d (fixed m)")
    metrics.update(extrapolations(timings, metrics, p))
    return StageResult(
        metrics=metrics,
        data={"name": "gaussian (synthetic timing inputs)", "source": "synthetic", "sha256": None,
              "substituted_for": None},
        sizes={"depth": p.depth, "fc_input_dim": p.fc_input_dim, "channels": p.channels,
               "repeats": p.repeats, "fit_top": p.fit_top, "backend": jax.default_backend(),
               "threads": cfg.threads},
        seeds=[cfg.seed],
        tables={"timings": timings, "exponents": pd.DataFrame(fits)},
        figures={"gram_cost": fig},
        uncertainty=uncertainty,
        notes=["times: best of repeats after a warm-up (compile) call; exponents from the process CPU time "
               "(wall time in timings.csv); threads as in sizes (0 = all cores)"],
    )


def extrapolations(timings: pd.DataFrame, metrics: dict, p) -> dict:
    """CNTK-GAP CPU time extrapolated from the largest measurement with the fitted exponents to
    m = ``p.extrapolate.m`` images of side ``p.extrapolate.side`` (the survey's sec. 9 extrapolation
    to ImageNet-sized m; not comparable in absolute terms: other net, other device)."""
    g = timings[(timings.kernel == "cntk_gap") & (timings.axis == "d")].sort_values("size").iloc[-1]
    m0, side0 = p.cntk_gap.m_for_d, float(g["size"])
    seconds = g[TIME] * (p.extrapolate.m / m0) ** metrics["cntk_gap_exponent_m"] * (
        p.extrapolate.side / side0) ** metrics["cntk_gap_exponent_d"]
    return {"cntk_gap_extrapolated_cpu_seconds": float(seconds)}


if __name__ == "__main__":
    main(run, params=Params)
