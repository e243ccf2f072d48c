"""Jacot et al. 2018, Fig. 1: convergence of the NTK with width, at initialization and after training.

Depth-4 ReLU nets (beta = 0.1, n_0 = 2) at two widths, several independent inits each. For each net the
empirical NTK Theta(4)(x_0, x), x_0 = (1, 0), x = (cos g, sin g) on a grid of g in [-pi, pi], is computed
at t = 0 and after t full-batch GD steps (lr 1.0, mean square loss) on f*(x) = x_1 x_2 with N(0, I)
inputs; the analytic limit (Sec. 4 recursion) is overlaid. Wider nets should spread less, their mean
should sit on the limit, and training should move ("inflate") the kernel less.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jacot_common import (
    circle_points,
    decreasing,
    distinct_widths,
    gd_stepper,
    init_key,
    jackknife,
    jacot_net,
    ntk_row_fn,
)

from ntkrepro.kernels.fc import jacot_fc_kernels
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, load_split, main


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
    p = cfg.params
    widths = distinct_widths(p.widths, at_least=2)  # Fig. 1 compares widths: one width is refused
    if len(p.x0) != 2:
        raise ValueError(f"params.x0 must be a point of the plane (2 numbers), got {list(p.x0)}")
    if p.n_grid < 2:
        raise ValueError(f"params.n_grid must be >= 2 (a curve over the circle), got {p.n_grid}")
    if p.n_inits < 2:
        raise ValueError(f"params.n_inits must be >= 2 (a spread needs two inits), got {p.n_inits}")
    if p.steps < 1:
        raise ValueError(f"params.steps must be >= 1 (the trained kernel needs training), got {p.steps}")
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
    main(run, experiment="jacot2018/fig1")
