"""Jacot et al. 2018, Fig. 1: convergence of the NTK with width, at initialization and after training.

Depth-4 ReLU nets (beta = 0.1, n_0 = 2) at two widths, several independent inits each. For each net the
empirical NTK Theta(4)(x_0, x), x_0 = (1, 0), x = (cos g, sin g) on a grid of g in [-pi, pi], is computed
at t = 0 and after t full-batch GD steps (lr 1.0, mean square loss) on f*(x) = x_1 x_2 with N(0, I)
inputs; the analytic limit (Sec. 4 recursion) is overlaid. Wider nets should spread less, their mean
should sit on the limit, and training should move ("inflate") the kernel less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from jacot_common import (
    FLOAT32_BYTES,
    activation_estimate,
    circle_points,
    decreasing,
    gd_stepper,
    init_key,
    jackknife,
    jacot_net,
    ntk_row_fn,
    width_estimates,
)

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.kernels.fc import jacot_fc_kernels
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, load_split, main


@dataclass
class Params:
    """``params`` of Fig. 1 (conf/experiment/jacot2018/fig1.yaml)."""

    depth: int = param(ge=2, doc="L weight layers; >= 2: the widths compared are those of hidden layers")
    beta: float = param(ge=0, doc="bias scale beta (Sec. 2)")
    lr: float = param(gt=0, doc="GD learning rate on the mean square loss")
    steps: int = param(ge=1, doc="GD steps before the trained kernel")
    widths: list[int] = param(min_len=2, ge=1, distinct=True, doc="hidden widths compared (any order)")
    n_inits: int = param(ge=2, doc="inits per width (a spread needs two)")
    x0: list[float] = param(min_len=2, max_len=2, doc="the point x_0 of the plane in Theta(x_0, x)")
    n_grid: int = param(ge=2, doc="angles g in [-pi, pi], endpoints included")

    def check(self):
        if self.beta == 0 and not any(self.x0):
            raise bad("params.x0", "must not be the origin when params.beta = 0 (the limiting kernel "
                      "Theta(x_0, x) would vanish and every relative metric divide by zero)", self.x0)
        refuse_oversized([
            *width_estimates(self.widths, depth=self.depth),
            ("params.n_grid", self.n_grid, FLOAT32_BYTES * max(self.widths), 1,
             "the activations of the grid (n_grid x widest width, float32)"),
            ("params.n_inits", self.n_inits, FLOAT32_BYTES * self.n_grid, 1,
             "the kernel rows of one width (n_inits x n_grid, float32)"),
        ])

    def check_config(self, cfg) -> None:
        """Refuse a training set whose full-batch training could not fit in memory, before loading it (the
        typed params cannot see ``data``)."""
        p = cfg.params
        if cfg.data.n_train is not None:
            refuse_oversized(activation_estimate("data.n_train", cfg.data.n_train, widths=p.widths, depth=p.depth,
                                                 precision=cfg.precision, batch="n_train"))


def relative_spread(samples: np.ndarray, limit: np.ndarray) -> float:
    """Std over inits (ddof=1), averaged over the grid, relative to the grid mean of |limit|."""
    return float(np.asarray(samples).std(axis=0, ddof=1).mean() / np.abs(limit).mean())


def inflation(before: np.ndarray, after: np.ndarray, limit: np.ndarray) -> float:
    """Mean signed change of the kernel during training (over inits and grid), relative to the grid
    mean of |limit|: > 0 when training inflates the kernel."""
    return float((np.asarray(after) - np.asarray(before)).mean() / np.abs(limit).mean())


def mean_relative_error(samples: np.ndarray, limit: np.ndarray) -> float:
    """||mean over inits - limit||_2 / ||limit||_2 over the grid."""
    return float(np.linalg.norm(np.asarray(samples).mean(axis=0) - limit) / np.linalg.norm(limit))


def mean_z_score(samples: np.ndarray, limit: np.ndarray) -> float:
    """Largest |mean - limit| over the grid in units of the standard error of the mean over inits."""
    s = np.asarray(samples)
    sem = s.std(axis=0, ddof=1) / np.sqrt(s.shape[0])
    return float(np.max(np.abs(s.mean(axis=0) - limit) / np.maximum(sem, np.finfo(float).tiny)))


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    widths = sorted(p.widths)
    dtype = np.float32 if cfg.precision == "float32" else np.float64
    train = load_split(cfg, "train")
    x_train = np.asarray(train.x, dtype=dtype)
    y_train = np.asarray(train.y, dtype=dtype)[:, None]
    if x_train.shape[1] != 2:
        raise ValueError(f"Fig. 1 needs 2-d inputs (data.options.dim = 2), got dimension {x_train.shape[1]}")
    angles = np.linspace(-np.pi, np.pi, p.n_grid)
    x0 = np.asarray([p.x0], dtype=dtype)
    grid = circle_points(angles).astype(dtype)
    limit = np.asarray(jacot_fc_kernels(x0, grid, depth=p.depth, beta=p.beta).ntk)[0]

    nets = {w: jacot_net(depth=p.depth, width=w, beta=p.beta, dtype=dtype) for w in widths}
    steppers = {w: gd_stepper(net.apply_fn, learning_rate=p.lr, steps=p.steps) for w, net in nets.items()}

    ntk_rows = {w: ntk_row_fn(net.apply_fn) for w, net in nets.items()}  # Theta(x_0, grid)
    kernels = {w: {"t0": [], "trained": []} for w in widths}
    jobs = [(w, i) for w in widths for i in range(p.n_inits)]
    for w, i in progress(jobs, desc="fig1 widths x inits", enabled=cfg.progress):
        params = nets[w].init_fn(init_key(cfg.seed, w, i), x0.shape)
        kernels[w]["t0"].append(np.asarray(ntk_rows[w](params, x0, grid)))
        params = steppers[w](params, x_train, y_train)
        kernels[w]["trained"].append(np.asarray(ntk_rows[w](params, x0, grid)))
    kernels = {w: {t: np.stack(v) for t, v in d.items()} for w, d in kernels.items()}

    rows, metrics, uncertainty = [], {}, {}
    for w in widths:
        k0, kt = kernels[w]["t0"], kernels[w]["trained"]
        # each metric with its standard error over the inits (a jackknife; a plain mean for inflation)
        est = {"spread_t0": jackknife(k0, lambda s: relative_spread(s, limit)),
               "spread_trained": jackknife(kt, lambda s: relative_spread(s, limit)),
               "inflation": jackknife(kt - k0, lambda d: inflation(np.zeros_like(d), d, limit)),
               "mean_rel_err_t0": jackknife(k0, lambda s: mean_relative_error(s, limit)),
               "mean_rel_err_trained": jackknife(kt, lambda s: mean_relative_error(s, limit))}
        row = {"width": w, "n_inits": p.n_inits, **{k: e.value for k, e in est.items()},
               "mean_z_t0": mean_z_score(k0, limit)}
        rows.append(row)
        metrics.update({f"{k}_w{w}": v for k, v in row.items() if k not in ("width", "n_inits")})
        uncertainty.update({f"{k}_w{w}": e.record() for k, e in est.items()})
    small, large = rows[0], rows[-1]
    for key in ("spread_t0", "spread_trained", "inflation", "mean_rel_err_t0", "mean_rel_err_trained"):
        metrics[f"{key}_smallest_width"] = small[key]
        metrics[f"{key}_largest_width"] = large[key]
        uncertainty[f"{key}_smallest_width"] = uncertainty[f"{key}_w{small['width']}"]
        uncertainty[f"{key}_largest_width"] = uncertainty[f"{key}_w{large['width']}"]
    metrics["spread_t0_ratio_small_over_large"] = small["spread_t0"] / large["spread_t0"]
    metrics["sqrt_width_ratio"] = float(np.sqrt(large["width"] / small["width"]))
    metrics["inflation_ratio_small_over_large"] = small["inflation"] / large["inflation"]
    metrics["spread_decreases_with_width"] = decreasing(r["spread_t0"] for r in rows)
    ordered = decreasing(r["inflation"] for r in rows)
    metrics["inflation_decreases_with_width"] = None if ordered is None else bool(small["inflation"] > 0 and ordered)
    worst = max(rows, key=lambda r: r["mean_rel_err_t0"])
    metrics["mean_rel_err_t0_max"] = worst["mean_rel_err_t0"]
    metrics["mean_rel_err_t0_max_width"] = worst["width"]
    uncertainty["mean_rel_err_t0_max"] = uncertainty[f"mean_rel_err_t0_w{worst['width']}"]

    curves = {"angle": angles, "limit": limit}
    for w in widths:
        for t, k in kernels[w].items():
            curves.update({f"w{w}_{t}_mean": k.mean(axis=0), f"w{w}_{t}_std": k.std(axis=0, ddof=1)})
    return StageResult(
        metrics=metrics,
        data=train.provenance,
        sizes={"n_train": int(x_train.shape[0]), "widths": widths, "n_inits": int(p.n_inits),
               "n_grid": int(p.n_grid), "depth": int(p.depth), "steps": int(p.steps)},
        seeds=[int(cfg.seed)],
        uncertainty=uncertainty,
        tables={"fig1_summary": pd.DataFrame(rows), "fig1_curves": pd.DataFrame(curves)},
        figures={"fig1": _figure(angles, limit, kernels, widths, steps=p.steps, depth=p.depth)},
        arrays={"angles": angles, "limit": limit,
                **{f"w{w}_{t}": k for w in widths for t, k in kernels[w].items()}},
    )


def _figure(angles, limit, kernels, widths, *, steps, depth):
    fig, axes = figure(1, 2, height=2.4, sharey=True)
    colors = ("tab:green", "tab:red", "tab:blue", "tab:orange")
    for ax, (t, title) in zip(axes[0], (("t0", "$t=0$"), ("trained", f"$t={steps}$")), strict=True):
        for w, color in zip(widths, colors, strict=False):
            for j, curve in enumerate(kernels[w][t]):
                ax.plot(angles, curve, color=color, linewidth=0.5, alpha=0.6,
                        label=f"$n={w}$" if j == 0 else None)
        ax.plot(angles, limit, color="black", linestyle="--", linewidth=0.9, label="$n=\\infty$ (analytic)")
        ax.set_xlabel("$\\gamma$")
        ax.set_title(title)
    axes[0, 0].set_ylabel(f"$\\Theta^{{({depth})}}(x_0, x)$")
    axes[0, 0].legend()
    return fig


if __name__ == "__main__":
    main(run, params=Params)
