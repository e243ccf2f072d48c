"""Hayou et al. 2020, Sec. 4.1 and 6.2: Edge-of-Chaos curves (sigma_b, sigma_w) of ReLU, leaky ReLU,
Tanh and ELU, whether Softplus and Sigmoid have one, and chi_1 at every (sigma_b, sigma_w) the paper
uses (are they on the EOC?).

The curve is parameterized by the fixed-point variance q > 0 (Sec. 4.1): sigma_w^2 = 1 / E[phi'(sqrt(q) Z)^2],
sigma_b^2 = q - sigma_w^2 E[phi(sqrt(q) Z)^2], kept where sigma_b^2 >= 0. At a given (sigma_b, sigma_w): q*
is the fixed point of the variance map (from q = 1), chi_1 = sigma_w^2 E[phi'(sqrt(q*) Z)^2], and the depth
scale of the ordered/chaotic behaviour is xi = 1 / |log chi_1|. The stage reports chi_1 and |chi_1 - 1| at
each point; whether that is "on the EOC" is the claims registry's tolerance, not a stage setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from hayou_common import distinct, eoc_problem
from scipy import optimize

from ntkrepro.checks import activation, bad, param, refuse_oversized
from ntkrepro.kernels import meanfield
from ntkrepro.kernels.deep import eoc_point, relu_like_rho
from ntkrepro.plotting import figure
from ntkrepro.stage import StageResult, main


def eoc_curve(activation: str, q_grid: np.ndarray) -> pd.DataFrame:
    """(q, sigma_b, sigma_w) on the EOC for the q of ``q_grid`` with sigma_b^2 >= 0 (``meanfield.eoc_curve``)."""
    curve = meanfield.eoc_curve(activation, q_values=np.asarray(q_grid, dtype=float))
    return pd.DataFrame({"activation": activation, "q": curve.q, "sigma_b": curve.sigma_b, "sigma_w": curve.sigma_w})


def curve_start(activation: str, q_grid: np.ndarray) -> tuple[float, float] | None:
    """(q, sigma_w) where the EOC curve begins, sigma_b = 0: the root of sigma_b^2(q) = 0 between the last
    grid q with sigma_b^2 < 0 and the first with sigma_b^2 >= 0 (brentq to round-off, so the value does not
    depend on the grid). None when the curve has no such end on the grid (empty, or kept from q_min on)."""
    sigma_b2 = np.array([meanfield.eoc_point_from_q(activation, float(q))[0] for q in q_grid])
    kept = np.flatnonzero(sigma_b2 >= 0)
    if kept.size == 0 or kept[0] == 0:
        return None
    lo, hi = float(q_grid[kept[0] - 1]), float(q_grid[kept[0]])
    q = optimize.brentq(lambda v: meanfield.eoc_point_from_q(activation, v)[0], lo, hi,
                        xtol=1e-13, rtol=4 * np.finfo(float).eps)
    return q, math.sqrt(meanfield.eoc_point_from_q(activation, q)[1])


def _tag(name: str) -> str:
    return name.replace(":", "_").replace(".", "p")


QUADRATURE_NODES = 64  # ntkrepro.kernels.gaussian.gaussian_mean: the Gauss nodes of every q


@dataclass
class PaperPoint:
    """A (sigma_b, sigma_w) the paper uses; sigma_w null = the EOC value at this sigma_b."""

    name: str = param(check=lambda v: None if v else "must be a non-empty name (metrics are named by it)")
    activation: str = param(check=activation)
    sigma_b: float = param(ge=0)
    sigma_w: float | None = param(None, gt=0)


@dataclass
class Params:
    """``params`` of the EOC curves (conf/experiment/hayou2020/eoc_curves.yaml)."""

    activations: list[str] = param(min_len=1, distinct=True, doc="activations whose EOC curve is traced")
    q_min: float = param(gt=0, doc="smallest fixed-point variance q of the curves")
    q_max: float = param(gt=0, doc="largest q (> q_min)")
    n_q: int = param(ge=2, doc="log-spaced values of q (a curve needs two)")
    paper_points: list[PaperPoint] = param(doc="the points chi_1 is computed at (distinct names)")

    def check(self):
        for i, name in enumerate(self.activations):
            what = activation(name)
            if what:
                raise bad(f"params.activations[{i}]", what, name)
        if not self.q_min < self.q_max:
            raise bad("params.q_max", f"must be > params.q_min = {self.q_min:g}", self.q_max)
        refuse_oversized([("params.n_q", self.n_q, 8 * QUADRATURE_NODES, 1,
                           f"the quadrature of one EOC curve (n_q x {QUADRATURE_NODES} Gauss nodes, float64)")])
        distinct("params.paper_points", [pt.name for pt in self.paper_points], "names", "metrics are named by them")
        for i, pt in enumerate(self.paper_points):
            what = eoc_problem(pt.activation, pt.sigma_b**2) if pt.sigma_w is None else None
            if what:
                raise bad(f"params.paper_points[{i}].sigma_w", f"null (the EOC value) needs an EOC point: {what}",
                          pt.sigma_w)


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    q_grid = np.logspace(math.log10(p.q_min), math.log10(p.q_max), int(p.n_q))
    metrics: dict = {}
    curves = []
    for act in p.activations:
        if relu_like_rho(act) is not None:
            point = eoc_point(act, sigma_b2=0.0)
            curves.append(
                pd.DataFrame(
                    [
                        {
                            "activation": act,
                            "q": float("nan"),
                            "sigma_b": 0.0,
                            "sigma_w": math.sqrt(point.sigma_w2),
                        }
                    ]
                )
            )
            metrics[f"eoc_{_tag(act)}_sigma_w"] = math.sqrt(point.sigma_w2)
            continue
        curve = eoc_curve(act, q_grid)
        curves.append(curve)
        metrics[f"eoc_{_tag(act)}_exists"] = bool(len(curve) > 0)
        start = curve_start(act, q_grid)
        if start is not None:
            metrics[f"eoc_{_tag(act)}_start_q"], metrics[f"eoc_{_tag(act)}_start_sigma_w"] = start
    curve_table = pd.concat(curves, ignore_index=True)

    rows = []
    for i, pt in enumerate(p.paper_points):
        act, sb = pt.activation, float(pt.sigma_b)
        if pt.sigma_w is None:  # the EOC value: a smooth activation at sigma_b > 0 may have none
            try:
                sw = math.sqrt(eoc_point(act, sigma_b2=sb**2).sigma_w2)
            except ValueError as err:
                raise bad(f"params.paper_points[{i}].sigma_w", f"null (the EOC value), but there is no EOC point "
                          f"at sigma_b = {sb:g}: {err}", None) from None
        else:
            sw = float(pt.sigma_w)
        q = meanfield.q_star(act, sigma_w2=sw**2, sigma_b2=sb**2)  # inf: the variance grows with depth
        chi = meanfield.chi1(act, sigma_w2=sw**2, sigma_b2=sb**2, q=q) if math.isfinite(q) else float("nan")
        if not math.isfinite(q):
            phase = "no fixed point (variance grows with depth)"
        elif abs(chi - 1) <= 1e-12:  # chi_1 = 1 to round-off
            phase = "EOC"
        else:
            phase = "ordered (chi_1 < 1)" if chi < 1 else "chaotic (chi_1 > 1)"
        depth_scale = 1.0 / abs(math.log(chi)) if math.isfinite(chi) and abs(chi - 1) > 1e-12 else float("inf")
        row = {
            "name": pt.name,
            "activation": act,
            "sigma_b": sb,
            "sigma_w": sw,
            "q_star": q,
            "chi1": chi,
            "abs_chi1_minus_1": abs(chi - 1) if math.isfinite(chi) else float("nan"),
            "phase": phase,
            "depth_scale": depth_scale,
        }
        if relu_like_rho(act) is None:
            try:  # the EOC point at this sigma_b, and the sigma_b whose EOC point has this sigma_w
                row["eoc_sigma_w_at_this_sigma_b"] = math.sqrt(eoc_point(act, sigma_b2=sb**2).sigma_w2)
                row["eoc_sigma_b_for_this_sigma_w"] = _eoc_sigma_b_for(act, sw)
            except ValueError:  # phi(0) != 0: no EOC point at sigma_b = 0
                pass
        rows.append(row)
        metrics[f"chi1_{pt.name}"] = chi if math.isfinite(chi) else None
        metrics[f"depth_scale_{pt.name}"] = row["depth_scale"] if math.isfinite(row["depth_scale"]) else None
        for key in ("eoc_sigma_w_at_this_sigma_b", "eoc_sigma_b_for_this_sigma_w"):
            if key in row:
                metrics[f"{key}_{pt.name}"] = row[key]
    points = pd.DataFrame(rows)
    return StageResult(
        metrics=metrics,
        sizes={"n_q": int(p.n_q), "q_range": [float(p.q_min), float(p.q_max)]},
        tables={"eoc_points": points, "eoc_curves": curve_table},
        figures={"eoc_curves": _figure(curve_table, points)},
    )


def _eoc_sigma_b_for(activation: str, sigma_w: float) -> float:
    """The sigma_b whose EOC point has this sigma_w (nan if none with sigma_b^2 in [0, 4])."""

    def gap(sb2):
        return eoc_point(activation, sigma_b2=sb2).sigma_w2 - sigma_w**2

    if gap(0.0) > 0 or gap(4.0) < 0:
        return float("nan")
    return math.sqrt(optimize.brentq(gap, 0.0, 4.0, xtol=1e-14))


def _figure(curves: pd.DataFrame, points: pd.DataFrame):
    fig, axes = figure(1, 2, height=2.6)
    ax, ax_wide = axes[0]
    for act, curve in curves.groupby("activation", sort=False):
        style = {"marker": "o", "linestyle": "none"} if len(curve) == 1 else {}
        for target in (ax, ax_wide):
            target.plot(curve.sigma_b, curve.sigma_w, label=act, **style)
    for r in points.itertuples():
        for target in (ax, ax_wide):
            target.plot(r.sigma_b, r.sigma_w, marker="x", color="black", linestyle="none")
        ax.annotate(
            f"{r.name}: chi1={r.chi1:.4f}",
            (r.sigma_b, r.sigma_w),
            fontsize=5,
            xytext=(3, -8),
            textcoords="offset points",
        )
    ax.set(
        xlim=(-0.02, 0.5),
        ylim=(0.9, 1.6),
        xlabel="sigma_b",
        ylabel="sigma_w",
        title="EOC near the paper's points (x)",
    )
    ax_wide.set(xscale="symlog", yscale="log", xlabel="sigma_b", ylabel="sigma_w", title="whole range")
    ax.legend(fontsize=6)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
