"""Hayou et al. 2020, Fig. 1: |K^L/alpha_L - AK^inf| against depth L for (a) ReLU, ELU and Tanh on the EOC
(alpha_L = L), (b) ReLU and ELU in the ordered phase (alpha_L = 1, limit q*/(1 - chi_1)), (c) ReLU ResNets
with several sigma_w (alpha_L = L (1 + sigma_w^2/2)^(L-1)), each from one exact recursion over all depths
(``ntkrepro.kernels.deep``), with log-log (a, c) or log-linear (b) slopes fitted over the stated depth ranges.

Every fitted exponent is recorded with its standard error and number of points (``ntkrepro.stats``) and
the local slopes between consecutive decades (a log factor shows as a drift of the local slope). Panel (b)
reports the ratio of the log-linear rate over the second half of the fitted depths to the first and how
much the rate fades, max(0, 1 - ratio): 0 for an exponential (or faster) decay, ~0.7 for a power law.
The sigma_w comparison of (c) needs at least two distinct sigma_w (None otherwise); the fit range (by
default the last two decades of the depth grid) must hold at least three depths of the grid (a slope and
its standard error). Bad parameters are refused before any compute (``Params``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hayou_common import (
    EOCCase,
    Pair,
    PhaseCase,
    check_eoc_cases,
    check_phase_depth,
    depth_at_most_max,
    depth_grid,
    distinct,
    eoc_case,
    eoc_points,
    exponential_rate,
    first_layer_covariance,
    grid_estimate,
    loglog_fit,
    phase_case,
    phase_estimate,
    phase_points,
    resnet_case,
)

from ntkrepro import stats
from ntkrepro.checks import bad, increasing, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main


def _tag(value: float) -> str:
    return f"{value:g}".replace(".", "p")


@dataclass
class Params:
    """``params`` of Fig. 1 (conf/experiment/hayou2020/fig1.yaml)."""

    max_depth: int = param(ge=1, check=depth_at_most_max,
                           doc="deepest L of panels (a), (c); one recursion gives every depth below it")
    per_decade: int = param(ge=1, doc="depths per decade of the log grid (hayou_common.depth_grid)")
    pair: Pair = param(doc="the input pair")
    eoc: list[EOCCase] = param(min_len=1, doc="(a): FFNNs on the EOC (distinct activations)")
    ordered: list[PhaseCase] = param(doc="(b): FFNNs in the ordered phase (chi_1 < 1, checked before compute)")
    ordered_depth: int = param(ge=1, doc="(b): depths 1..ordered_depth")
    ordered_fit_start: int = param(ge=1, doc="(b): the log-linear rates are fitted from this depth")
    resnet_sigma_w2: list[float] = param(min_len=1, gt=0, distinct=True, doc="(c): ReLU ResNets' sigma_w2")
    fit_range: list[int] | None = param(None, min_len=2, max_len=2, ge=1, check=increasing,
                                        doc="[lo, hi], depths of the grid: the log-log fits of (a), (c); null = "
                                            "the last two decades of the grid (see fit_bounds)")

    def check(self):
        refuse_oversized([grid_estimate(self.max_depth, self.per_decade),
                          phase_estimate("params.ordered_depth", self.ordered_depth, 1)])
        fit_bounds(self, depth_grid(self.max_depth, self.per_decade))
        check_phase_depth("params.ordered_depth", self.ordered_depth, "params.ordered_fit_start",
                          self.ordered_fit_start)
        check_eoc_cases(self.eoc, "params.eoc")
        distinct("params.ordered", [c.activation for c in self.ordered], "activations",
                 "metrics are named by activation")


def fit_bounds(p, depths: np.ndarray) -> tuple[int, int]:
    """(lo, hi) of the log-log fits: ``params.fit_range``, or when it is null the last two decades of the
    grid, [the first depth >= max_depth / 100, max_depth] (max_depth = 10^k: [10^(k-2), 10^k]). Both are depths
    of the grid (the fits, the local slopes and the figure read the errors there) and hold at least 3 of
    them (a slope with a standard error); refused otherwise, before any compute."""
    top = int(depths[-1])
    if p.fit_range is None:
        lo, hi = int(depths[np.searchsorted(depths, top / 100)]), top
        path, value = "params.max_depth", p.max_depth
        what = f"gives a default fit range (the last two decades of the grid, [{lo}, {hi}]) that holds"
    else:
        lo, hi = (int(v) for v in p.fit_range)
        path, value = "params.fit_range", list(p.fit_range)
        if hi > top:
            raise bad(path, f"must lie in [1, params.max_depth = {top}]", value)
        for v in (lo, hi):
            if v not in depths:
                i = int(np.searchsorted(depths, v))
                raise bad(path, f"must be depths of the grid (params.max_depth, params.per_decade); {v} is not, "
                          f"the nearest are {int(depths[i - 1])} and {int(depths[i])}", value)
        what = "holds"
    n_fit = int(np.sum((depths >= lo) & (depths <= hi)))
    if n_fit < 3:
        raise bad(path, f"{what} {n_fit} depth(s) of the grid; a slope with a standard error needs at least 3 "
                  "(widen params.fit_range or raise params.per_decade)", value)
    return lo, hi


def _slope_metrics(metrics: dict, uncertainty: dict, name: str, depths, err, lo: int, hi: int) -> stats.LineFit:
    """The fitted log-log slope (with its standard error) and the local slopes between the decades of the fit range."""
    fit = loglog_fit(depths, err, lo, hi)
    metrics[name] = fit.slope
    uncertainty[name] = fit.slope_estimate().record()
    anchors = [d for d in depths if lo <= d <= hi and round(math.log10(d), 9).is_integer()]
    values = [err[np.flatnonzero(depths == d)[0]] for d in anchors]
    metrics[f"{name}_local"] = [float(v) for v in stats.local_slopes(anchors, values)] if len(anchors) >= 2 else []
    return fit


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    depths = depth_grid(int(p.max_depth), int(p.per_decade))
    lo, hi = fit_bounds(p, depths)
    points = eoc_points(p.eoc, "params.eoc")  # before any recursion: a case without an EOC point, refused
    phase_points(p.ordered, "params.ordered", phase="ordered")  # every case in the ordered phase
    pairs = [dict(p.pair)]
    metrics: dict = {"fit_lo": lo, "fit_hi": hi}
    uncertainty: dict = {}
    panels: dict = {"a": [], "b": [], "c": []}

    for case_cfg, point in progress(list(zip(p.eoc, points, strict=True)), desc="(a) EOC", enabled=cfg.progress):
        case = eoc_case(case_cfg.activation, sigma_b2=float(case_cfg.sigma_b2), pairs=pairs, depths=depths,
                        point=point)
        run_ = case["runs"][0]
        err = np.abs(run_["off_err"]) / run_["q_off"]
        name = f"fig1a_{case['activation']}"
        _slope_metrics(metrics, uncertainty, f"{name}_slope", depths, err, lo, hi)
        decades = [d for d in depths if round(math.log10(d), 9).is_integer()]
        metrics[f"{name}_local_by_decade"] = [  # the whole grid: where the asymptotic regime begins
            float(v) for v in stats.local_slopes(decades, [err[np.flatnonzero(depths == d)[0]] for d in decades])]
        flips = np.flatnonzero(np.diff(np.sign(run_["off_err"])) != 0)
        metrics[f"{name}_sign_change_depths"] = [int(depths[i + 1]) for i in flips]
        panels["a"].append((case["activation"], err))

    for case_cfg in p.ordered:
        case = phase_case(
            case_cfg.activation,
            sigma_w2=float(case_cfg.sigma_w2),
            sigma_b2=float(case_cfg.sigma_b2),
            pairs=pairs,
            depth=int(p.ordered_depth),
        )
        l_axis, err = case["depths"], case["err"] / case["limit"]
        end = int(l_axis[np.flatnonzero(err > 1e3 * np.finfo(float).eps)[-1]])
        start = int(p.ordered_fit_start)
        mid = (start + end) // 2
        first, second = exponential_rate(l_axis, err, start, mid), exponential_rate(l_axis, err, mid, end)
        name = f"fig1b_{case['activation']}"
        metrics[f"{name}_rate_ratio"] = second / first if first > 0 else None
        metrics[f"{name}_rate_fade"] = max(0.0, 1.0 - second / first) if first > 0 else None
        metrics[f"{name}_rate"] = second
        metrics[f"{name}_minus_log_chi1"] = -math.log(case["chi1"])
        panels["b"].append((case, err, (mid, end, second)))

    fits = {}
    for sw2 in progress(list(p.resnet_sigma_w2), desc="(c) ResNets", enabled=cfg.progress):
        case = resnet_case(sigma_w2=float(sw2), branch_scale="standard", pairs=pairs, depths=depths)
        run_ = case["runs"][0]
        err = np.abs(run_["off_err"]) / run_["q_off"]
        fits[float(sw2)] = _slope_metrics(metrics, uncertainty, f"fig1c_resnet_sw2_{_tag(float(sw2))}_slope",
                                          depths, err, lo, hi)
        panels["c"].append((float(sw2), err))
    worst = max(fits.values(), key=lambda f: abs(f.slope + 1))
    metrics["fig1c_resnet_slope_max_dev_from_minus_1"] = float(abs(worst.slope + 1))
    uncertainty["fig1c_resnet_slope_max_dev_from_minus_1"] = worst.slope_estimate().record()
    metrics["n_resnet_sigma_w2"] = len(fits)
    metrics["fig1c_resnet_sigma_w2"] = list(fits)
    metrics["fig1c_resnet_slopes"] = [f.slope for f in fits.values()]
    if len(fits) >= 2:  # a comparison over sigma_w needs two of them: one value gives no spread (None)
        steep, flat = min(fits.values(), key=lambda f: f.slope), max(fits.values(), key=lambda f: f.slope)
        metrics["fig1c_resnet_slope_spread"] = float(flat.slope - steep.slope)
        uncertainty["fig1c_resnet_slope_spread"] = stats.Estimate(
            flat.slope - steep.slope, math.hypot(flat.slope_se, steep.slope_se), min(flat.n, steep.n), "fit points"
        ).record()
    else:
        metrics["fig1c_resnet_slope_spread"] = None

    s11, s12, s22 = first_layer_covariance(pairs[0], sigma_w2=1.0, sigma_b2=0.0)
    return StageResult(
        metrics=metrics,
        uncertainty=uncertainty,
        sizes={"max_depth": int(depths[-1]), "n_depths": len(depths), "ordered_depth": int(p.ordered_depth)},
        figures={"fig1": _figure(depths, panels, lo, hi,
                                 paper_values(Path(__file__).with_name("claims.yaml"), cfg.artifact)),
                 "fig1_local_slopes": _local_slope_figure(depths, panels, lo, hi)},
        arrays={
            "depths": depths,
            **{f"a_{name}": err for name, err in panels["a"]},
            **{f"c_sw2_{_tag(sw2)}": err for sw2, err in panels["c"]},
        },
        notes=[
            f"input pair: |x|^2/d = {s11:g}, {s22:g}, cosine {s12 / math.sqrt(s11 * s22):g}; errors are "
            "relative to q (the scale of K/alpha_L)"
        ] + ([] if len(fits) >= 2 else ["one sigma_w2 only: the spread over sigma_w is not measured (None)"]),
    )


def _figure(depths, panels, lo, hi, published):
    fig, axes = figure(1, 3, height=2.6)
    ax_a, ax_b, ax_c = axes[0]
    keep = (depths >= lo) & (depths <= hi)
    for name, err in panels["a"]:
        line = ax_a.loglog(depths, err, label=name)[0]
        slope, icpt = np.polyfit(np.log(depths[keep]), np.log(err[keep]), 1)
        ax_a.loglog(
            depths[keep],
            np.exp(icpt) * depths[keep] ** slope,
            ":",
            color=line.get_color(),
            label=f"fit {slope:.2f}",
        )
    for sw2, err in panels["c"]:
        line = ax_c.loglog(depths, err, label=f"sigma_w^2={sw2:g}")[0]
        slope, icpt = np.polyfit(np.log(depths[keep]), np.log(err[keep]), 1)
        ax_c.loglog(
            depths[keep],
            np.exp(icpt) * depths[keep] ** slope,
            ":",
            color=line.get_color(),
            label=f"fit {slope:.2f}",
        )
    paper_slope = published.get("fig1a_relu_slope")
    if paper_slope is not None:
        for ax, ref in ((ax_a, panels["a"][0][1]), (ax_c, panels["c"][0][1])):
            anchor = np.flatnonzero(depths == lo)[0]
            ax.loglog(
                depths[keep],
                ref[anchor] * (depths[keep] / lo) ** paper_slope,
                "--",
                color="black",
                linewidth=0.8,
                label=f"paper: L^{paper_slope:g}",
            )
    for case, err, (mid, end, rate) in panels["b"]:
        line = ax_b.semilogy(case["depths"], err, label=f"{case['activation']} (chi1={case['chi1']:.3f})")[0]
        window = (case["depths"] >= mid) & (case["depths"] <= end)
        ax_b.semilogy(
            case["depths"][window],
            err[mid - 1] * np.exp(-rate * (case["depths"][window] - mid)),
            ":",
            color=line.get_color(),
            label=f"exp(-{rate:.3f} L)",
        )
    ax_a.set(xlabel="depth L", ylabel="|K^L/L - AK^inf| / q", title="(a) Edge of Chaos")
    ax_b.set(xlabel="depth L", ylabel="sup |K^L - lambda| / lambda", title="(b) ordered phase")
    ax_c.set(xlabel="depth L", ylabel="|K^L/alpha_L - AK^inf| / q", title="(c) ReLU ResNet")
    for ax in (ax_a, ax_b, ax_c):
        ax.legend(fontsize=5)
    return fig


def _local_slope_figure(depths, panels, lo, hi):
    """d log|e| / d log L between consecutive depths of (a) and (c), the fit range shaded: a log factor is a
    drifting local slope, a sign change of the error a spike; the claims are judged on the shaded range."""
    fig, axes = figure(1, 2, height=2.6)
    mid = np.sqrt(depths[1:] * depths[:-1].astype(float))
    for ax, curves, title in ((axes[0][0], panels["a"], "(a) Edge of Chaos"),
                              (axes[0][1], [(f"sigma_w^2={sw2:g}", e) for sw2, e in panels["c"]], "(c) ReLU ResNet")):
        for label, err in curves:
            with np.errstate(divide="ignore", invalid="ignore"):
                local = np.diff(np.log(err)) / np.diff(np.log(depths.astype(float)))
            ax.semilogx(mid, local, label=label)
        ax.axhline(-1.0, color="black", linestyle="--", linewidth=0.8, label="L^-1")
        ax.axvspan(lo, hi, color="0.9", label="fit range")
        ax.set(xlabel="depth L", ylabel="local slope d log|e| / d log L", title=title, ylim=(-2.5, 0.5))
        ax.legend(fontsize=5)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
