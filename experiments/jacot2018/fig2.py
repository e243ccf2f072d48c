"""Jacot et al. 2018, Fig. 2: trained networks against the limiting Gaussian of the NTK dynamics.

Depth-4 ReLU nets (beta = 0.1) at two widths, several inits each, trained by full-batch GD (lr 1.0, mean
square loss) on 4 points of the unit circle. Their functions on the circle are compared with the
10th/50th/90th percentiles of the infinite-width distribution of f_t (Sec. 5): f_0 ~ GP(0, Sigma(L))
trained by the kernel gradient flow of Theta(X, X)/N, a Gaussian (``ntkrepro.dynamics.ntk_ensemble``).
The paper estimated the limit from a width-10000 net; here it is exact (``fc_kernels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from jacot_common import (
    FLOAT32_BYTES,
    circle_points,
    gd_stepper,
    init_key,
    jackknife,
    jacot_net,
    width_estimates,
)
from scipy import stats

from ntkrepro.checks import param, refuse_oversized
from ntkrepro.dynamics import ntk_ensemble
from ntkrepro.kernels.fc import jacot_fc_kernels
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main

TARGETS = {"product": lambda x: x[:, 0] * x[:, 1]}
PERCENTILES = (10, 50, 90)


def distinct_on_circle(angles) -> str | None:
    """Angles that name distinct points of the circle (g and g + 2 pi are the same point): Theta(X, X)
    of repeated training points is singular."""
    points = np.round(np.mod(np.asarray(angles, dtype=float), 2 * np.pi), 12)
    return None if len(set(points)) == len(points) else "must be distinct points of the circle (modulo 2 pi)"


@dataclass
class Params:
    """``params`` of Fig. 2 (conf/experiment/jacot2018/fig2.yaml)."""

    depth: int = param(ge=1, doc="L weight layers")
    beta: float = param(ge=0, doc="bias scale beta (Sec. 2)")
    lr: float = param(gt=0, doc="GD learning rate on the mean square loss")
    steps: int = param(ge=1, doc="GD steps; also the time t of the limiting Gaussian")
    widths: list[int] = param(min_len=1, ge=1, distinct=True, doc="widths (one is a valid run: no ordering)")
    n_inits: int = param(ge=2, doc="inits per width (a spread needs two)")
    train_angles: list[float] = param(min_len=1, check=distinct_on_circle, doc="training points (cos g, sin g)")
    target: Literal["product"] = param(doc="training targets: product = x_1 x_2")
    n_grid: int = param(ge=2, doc="angles g in [-pi, pi] where the functions are compared")

    def check(self):
        refuse_oversized([
            *width_estimates(self.widths, depth=self.depth),
            ("params.n_grid", self.n_grid, FLOAT32_BYTES, 2, "the grid's kernel (n_grid x n_grid, float32)"),
            ("params.n_grid", self.n_grid, FLOAT32_BYTES * max(self.widths), 1,
             "the activations of the grid (n_grid x widest width, float32)"),
            ("params.n_inits", self.n_inits, FLOAT32_BYTES * self.n_grid, 1,
             "the outputs of one width (n_inits x n_grid, float32)"),
            ("params.train_angles", len(self.train_angles), FLOAT32_BYTES * self.n_grid, 1,
             "the kernel between grid and training points (n_grid x len(train_angles), float32)"),
        ])


def limiting_gaussian(theta_xX, theta_XX, sigma_xx, sigma_xX, sigma_XX, y, *, t: float):
    """Mean and variance of f_t(x) for the infinite-width net trained for time t (Sec. 5): the NTK
    ensemble of ``ntkrepro.dynamics`` at learning rate 1 on the mean loss (time in GD steps).

    Args: kernel blocks of the NTK (theta_*) and the NNGP (sigma_*) between the test points x and the
    N training points X (``sigma_xx``: the diagonal Sigma(x, x) only), targets y (N,), time t.
    Returns: (mean (n_x,), variance (n_x,)).
    """
    if np.linalg.eigvalsh(np.asarray(theta_XX))[0] <= 0:
        raise ValueError("Theta(X, X) is not positive definite: the training points must be distinct")
    mean, var = ntk_ensemble(theta_XX, theta_xX, sigma_XX, sigma_xX, sigma_xx, y, t=t, lr=1.0, loss="mean",
                             variances_only=True)
    return np.asarray(mean), np.clip(np.asarray(var), 0.0, None)


def gaussian_percentiles(mean, var, levels=PERCENTILES) -> np.ndarray:
    """Percentiles of N(mean, var) pointwise: shape (len(levels), n)."""
    z = stats.norm.ppf(np.asarray(levels, dtype=float) / 100.0)
    return np.asarray(mean)[None] + z[:, None] * np.sqrt(np.asarray(var))[None]


def fraction_inside(samples, lower, upper) -> float:
    """Fraction of (sample, grid point) pairs with lower <= value <= upper."""
    s = np.asarray(samples)
    return float(np.mean((s >= lower[None]) & (s <= upper[None])))


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    widths = sorted(p.widths)
    dtype = np.float32 if cfg.precision == "float32" else np.float64
    x_train = circle_points(p.train_angles).astype(dtype)
    y_train = TARGETS[p.target](x_train).astype(dtype)
    angles = np.linspace(-np.pi, np.pi, p.n_grid)
    grid = circle_points(angles).astype(dtype)

    k_train = jacot_fc_kernels(x_train, depth=p.depth, beta=p.beta)
    k_cross = jacot_fc_kernels(grid, x_train, depth=p.depth, beta=p.beta)
    sigma_diag = np.diag(np.asarray(jacot_fc_kernels(grid, depth=p.depth, beta=p.beta).nngp))
    mean, var = limiting_gaussian(k_cross.ntk, k_train.ntk, sigma_diag, k_cross.nngp, k_train.nngp,
                                  y_train, t=float(p.steps))
    q10, q50, q90 = gaussian_percentiles(mean, var)
    mean_inf, var_inf = limiting_gaussian(k_cross.ntk, k_train.ntk, sigma_diag, k_cross.nngp, k_train.nngp,
                                          y_train, t=np.inf)

    outputs, train_rmse = {w: [] for w in widths}, {w: [] for w in widths}
    nets = {w: jacot_net(depth=p.depth, width=w, beta=p.beta, dtype=dtype) for w in widths}
    steppers = {w: gd_stepper(net.apply_fn, learning_rate=p.lr, steps=p.steps) for w, net in nets.items()}
    jobs = [(w, i) for w in widths for i in range(p.n_inits)]
    for w, i in progress(jobs, desc="fig2 widths x inits", enabled=cfg.progress):
        params = nets[w].init_fn(init_key(cfg.seed, w, i), x_train.shape)
        params = steppers[w](params, x_train, y_train[:, None])
        outputs[w].append(np.asarray(nets[w].apply_fn(params, grid))[:, 0])
        residual = np.asarray(nets[w].apply_fn(params, x_train))[:, 0] - y_train
        train_rmse[w].append(float(np.sqrt(np.mean(residual**2))))
    outputs = {w: np.stack(v) for w, v in outputs.items()}

    gp_std_rms = float(np.sqrt(np.mean(var)))
    rows, metrics, uncertainty = [], {}, {}
    for w in widths:
        f = outputs[w]
        # standard errors over the inits: the fraction inside is a plain mean of per-init fractions,
        # the spread and the mean error are jackknifed
        est = {"frac_inside_10_90": jackknife(f, lambda s: fraction_inside(s, q10, q90)),
               "mean_err_over_gp_std": jackknife(
                   f, lambda s: np.sqrt(np.mean((s.mean(axis=0) - mean) ** 2)) / gp_std_rms),
               "spread_ratio": jackknife(f, lambda s: np.sqrt(np.mean(s.var(axis=0, ddof=1))) / gp_std_rms)}
        row = {"width": w, "n_inits": p.n_inits, **{k: e.value for k, e in est.items()},
               "train_rmse_max": max(train_rmse[w])}
        rows.append(row)
        metrics.update({f"{k}_w{w}": v for k, v in row.items() if k not in ("width", "n_inits")})
        uncertainty.update({f"{k}_w{w}": e.record() for k, e in est.items()})
    for key in ("frac_inside_10_90", "mean_err_over_gp_std", "spread_ratio"):
        metrics[f"{key}_smallest_width"] = rows[0][key]
        metrics[f"{key}_largest_width"] = rows[-1][key]
        uncertainty[f"{key}_smallest_width"] = uncertainty[f"{key}_w{rows[0]['width']}"]
        uncertainty[f"{key}_largest_width"] = uncertainty[f"{key}_w{rows[-1]['width']}"]
    metrics["train_rmse_max"] = max(r["train_rmse_max"] for r in rows)
    metrics["gp_std_rms"] = gp_std_rms
    metrics["gp_mean_t_vs_converged_max_abs"] = float(np.max(np.abs(mean - mean_inf)))
    metrics["gp_std_t_vs_converged_max_abs"] = float(np.max(np.abs(np.sqrt(var) - np.sqrt(var_inf))))

    curves = {"angle": angles, "gp_q10": q10, "gp_q50": q50, "gp_q90": q90}
    for w in widths:
        curves.update({f"w{w}_mean": outputs[w].mean(axis=0), f"w{w}_std": outputs[w].std(axis=0, ddof=1)})
    return StageResult(
        metrics=metrics,
        data={"name": f"{len(x_train)} points on the unit circle (params.train_angles), target {p.target}",
              "source": "synthetic (config)", "sha256": None, "substituted_for": None},
        sizes={"n_train": len(x_train), "widths": widths, "n_inits": int(p.n_inits),
               "n_grid": int(p.n_grid), "depth": int(p.depth), "steps": int(p.steps)},
        seeds=[int(cfg.seed)],
        uncertainty=uncertainty,
        tables={"fig2_summary": pd.DataFrame(rows), "fig2_curves": pd.DataFrame(curves)},
        figures={"fig2": _figure(angles, outputs, (q10, q50, q90), widths,
                                 np.asarray(p.train_angles), y_train)},
        arrays={"angles": angles, "gp_mean": mean, "gp_var": var,
                **{f"w{w}_outputs": f for w, f in outputs.items()}},
    )


def _figure(angles, outputs, quantiles, widths, train_angles, y_train):
    fig, axes = figure(1, len(widths), height=2.4, sharey=True)
    for ax, w in zip(axes[0], widths, strict=True):
        for j, f in enumerate(outputs[w]):
            ax.plot(angles, f, color="tab:blue", linewidth=0.5, alpha=0.6,
                    label=f"$n={w}$" if j == 0 else None)
        for q, level in zip(quantiles, PERCENTILES, strict=True):
            ax.plot(angles, q, color="black", linestyle="--" if level == 50 else ":", linewidth=0.9,
                    label="$n=\\infty$ {10,50,90}%" if level == 10 else None)
        ax.plot(np.mod(train_angles + np.pi, 2 * np.pi) - np.pi, y_train, "o", color="tab:red",
                markersize=3, label="train")
        ax.set_xlabel("$\\gamma$,  $x = (\\cos\\gamma, \\sin\\gamma)$")
        ax.set_title(f"$n={w}$")
    axes[0, 0].set_ylabel("$f_\\theta(x)$")
    axes[0, 0].legend()
    return fig


if __name__ == "__main__":
    main(run, params=Params)
