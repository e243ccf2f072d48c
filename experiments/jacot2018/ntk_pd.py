"""Jacot et al. 2018, Prop. 2 (Sec. 4): positive-definiteness of the limiting NTK on the unit sphere.

"For a non-polynomial Lipschitz nonlinearity sigma, for any input dimension n_0, the restriction of the
limiting NTK Theta(L) to the unit sphere S^(n_0 - 1) is positive-definite if L >= 2." Checked on n
distinct seeded points of the sphere (uniform: normalized Gaussians; nested, the first n of the largest
set) with the exact kernels (``jacot_fc_kernels``, the paper's convention, every depth 1..max_depth in
one recursion): the smallest eigenvalue of Theta(X, X)/n in float64, for the non-polynomial activations
(``params.activations``), against n and the depth.

A float64 eigenvalue can only be told from 0 above its error floor (``eigen_floor``): a Gram computed
with relative entry errors ~ L eps and eigenvalues by a backward-stable solver has every eigenvalue within
(L + 1) n eps ||G||_2 of the exact one (Weyl), plus n L delta max|G| for an activation whose Gaussian
expectations come from quadrature (delta = 1e-10, the documented accuracy of ``from_callable``). The
stage records each claim's eigenvalue with its floor as the interval (2 se = floor): above it the Gram
is resolved positive definite, within it numerically singular.

The controls that make the check falsifiable go through the same kernels, solver and floor and must come
out singular: a polynomial activation (``params.polynomial_activations``, e.g. identity: Theta(L) =
L x.x'/n_0 + const has rank <= n_0 + 1), and depth 1 for every activation (Theta(1) = Sigma(1) = x.x'/n_0 +
beta^2, rank <= n_0 + 1: the reason for L >= 2), both on the point sets with n > n_0 + 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ntkrepro.checks import activation as registered_activation
from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.kernels.fc import jacot_fc_kernels
from ntkrepro.kernels.gaussian import get_activation
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main

QUADRATURE_ACCURACY = 1e-10  # ntkrepro.kernels.gaussian.from_callable: "Accurate (~1e-10)" per expectation
FLOAT64_BYTES = 8
AFFINE_GRID = np.linspace(-3.0, 3.0, 13)


def is_polynomial(name: str) -> bool:
    """Whether a registered activation is a polynomial. The registry's only polynomials are the affine
    ones (identity, ``relu_like:a,a``, ``leaky_relu:1``): phi is affine on a grid around 0 (every other
    registered activation bends there)."""
    fn = get_activation(name).fn
    y = np.asarray(fn(AFFINE_GRID), dtype=np.float64)
    slope = (y[-1] - y[0]) / (AFFINE_GRID[-1] - AFFINE_GRID[0])
    line = y[0] + slope * (AFFINE_GRID - AFFINE_GRID[0])
    return bool(np.max(np.abs(y - line)) <= 1e-12 * max(1.0, np.max(np.abs(y))))


def _each(kind: str, polynomial: bool):
    def check(names) -> str | None:
        for name in names:
            what = registered_activation(name)
            if what:
                return what
            if is_polynomial(name) is not polynomial:
                return f"{name!r} is {'not ' if polynomial else ''}a polynomial: {kind}"
        return None

    return check


@dataclass
class Params:
    """``params`` of the Prop. 2 check (conf/experiment/jacot2018/ntk_pd.yaml)."""

    beta: float = param(ge=0, doc="bias scale beta (Sec. 2)")
    input_dim: int = param(ge=2, doc="n_0: the points lie on the unit sphere S^(n_0 - 1) of R^(n_0)")
    n_points: list[int] = param(min_len=1, ge=2, distinct=True,
                                doc="sizes n of the nested point sets (the first n of the largest)")
    max_depth: int = param(ge=2, doc="depths L = 1..max_depth (Prop. 2 is about L >= 2)")
    activations: list[str] = param(min_len=1, distinct=True,
                                   check=_each("the non-polynomial activations of Prop. 2", polynomial=False),
                                   doc="non-polynomial activations whose NTK must be positive definite")
    polynomial_activations: list[str] = param(min_len=1, distinct=True,
                                              check=_each("the controls must be polynomials", polynomial=True),
                                              doc="polynomial controls whose NTK must come out singular")

    def check(self):
        rank = self.input_dim + 1
        if max(self.n_points) <= rank:
            raise bad("params.n_points", f"needs a size > params.input_dim + 1 = {rank} (the rank of the "
                      "depth-1 and polynomial kernels: the controls need more points than that)", self.n_points)
        n = max(self.n_points)  # > input_dim + 1: the points (n x input_dim) are smaller than one Gram
        refuse_oversized([
            ("params.n_points", n, FLOAT64_BYTES * 2, 2,
             "the NNGP and NTK of one depth on the largest point set (2 x n x n, float64)"),
            ("params.max_depth", self.max_depth, FLOAT64_BYTES * 2 * n * n, 1,
             "the NNGP and NTK of every depth on the largest point set (2 x max_depth x n x n, float64)"),
        ])


def metric_key(name: str) -> str:
    """An activation name as a metric-name fragment ("leaky_relu:0.1" -> "leaky_relu_0_1")."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_")


def sphere_points(n: int, dim: int, seed: int) -> np.ndarray:
    """n points uniform on the unit sphere of R^dim (normalized standard Gaussians), seeded."""
    x = np.random.default_rng([int(seed), int(dim)]).standard_normal((int(n), int(dim)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def eigen_floor(gram: np.ndarray, *, depth: int, eps: float, quadrature: bool) -> float:
    """Error floor of the eigenvalues of a computed Gram G (module docstring): (L + 1) n eps ||G||_2, plus
    n L delta max|G| where the kernel's Gaussian expectations are quadratures of accuracy delta."""
    g = np.asarray(gram, dtype=np.float64)
    n = g.shape[0]
    floor = (depth + 1) * n * eps * np.linalg.norm(g, 2)
    if quadrature:
        floor += n * depth * QUADRATURE_ACCURACY * np.max(np.abs(g))
    return float(floor)


def spectrum_rows(name: str, ntk_all_depths, n_points, *, eps: float, polynomial: bool) -> list[dict]:
    """One row per (depth, n): the extreme eigenvalues of Theta(L)(X_n, X_n)/n with their floor."""
    quadrature = not get_activation(name).has_closed_form
    rows = []
    for depth_index, theta in enumerate(np.asarray(ntk_all_depths, dtype=np.float64)):
        for n in n_points:
            g = theta[:n, :n] / n
            g = (g + g.T) / 2
            ev = np.linalg.eigvalsh(g)
            floor = eigen_floor(g, depth=depth_index + 1, eps=eps, quadrature=quadrature)
            rows.append({"activation": name, "polynomial": polynomial, "quadrature": quadrature,
                         "depth": depth_index + 1, "n": int(n), "lambda_min": float(ev[0]),
                         "lambda_max": float(ev[-1]), "floor": floor, "lambda_min_over_floor": float(ev[0] / floor),
                         "resolved_pd": bool(ev[0] > floor), "singular": bool(abs(ev[0]) <= floor)})
    return rows


def worst_resolved(rows: list[dict]) -> dict:
    """The Gram whose smallest eigenvalue is least resolved from 0 (smallest lambda_min / floor)."""
    return min(rows, key=lambda r: r["lambda_min_over_floor"])


def least_singular(rows: list[dict]) -> dict:
    """The Gram whose smallest eigenvalue is farthest from 0 in floors (largest |lambda_min| / floor)."""
    return max(rows, key=lambda r: abs(r["lambda_min_over_floor"]))


def log_slope(ns, values) -> float | None:
    """Least-squares slope of log lambda against log n (None with fewer than two positive values)."""
    pairs = [(n, v) for n, v in zip(ns, values, strict=True) if v > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def _record(prefix: str, row: dict, metrics: dict, uncertainty: dict) -> None:
    metrics[prefix] = row["lambda_min"]
    metrics[f"{prefix}_over_floor"] = row["lambda_min_over_floor"]
    metrics[f"{prefix}_floor"] = row["floor"]
    metrics[f"{prefix}_depth"] = row["depth"]
    metrics[f"{prefix}_n"] = row["n"]
    uncertainty[prefix] = {"se": row["floor"] / 2, "n": row["n"],
                           "over": "points; 2 se = the float64 error floor of the eigenvalue (no sampling)"}


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    dtype = np.float32 if cfg.precision == "float32" else np.float64
    eps = float(np.finfo(dtype).eps)
    n_points = sorted(int(n) for n in p.n_points)
    rank = int(p.input_dim) + 1
    x = sphere_points(n_points[-1], p.input_dim, cfg.seed)
    separation = float(np.min(np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(len(x), 1)]))

    names = [(a, False) for a in p.activations] + [(a, True) for a in p.polynomial_activations]
    rows = []
    for name, polynomial in progress(names, desc="ntk_pd activations", enabled=cfg.progress):
        ntk = jacot_fc_kernels(x, depth=int(p.max_depth), beta=float(p.beta), activation=name,
                               all_depths=True, dtype=dtype).ntk
        rows += spectrum_rows(name, ntk, n_points, eps=eps, polynomial=polynomial)

    metrics, uncertainty = {}, {}
    above_rank = [r for r in rows if r["n"] > rank]
    for name in p.activations:
        mine = [r for r in rows if r["activation"] == name]
        key = metric_key(name)
        _record(f"lambda_min_{key}", worst_resolved([r for r in mine if r["depth"] >= 2]), metrics, uncertainty)
        depth2 = [r for r in mine if r["depth"] == 2]
        metrics[f"lambda_min_{key}_n_slope_depth2"] = log_slope([r["n"] for r in depth2],
                                                                [r["lambda_min"] for r in depth2])
        for r in mine:
            if r["n"] == n_points[-1]:
                metrics[f"lambda_min_{key}_d{r['depth']}_n{r['n']}"] = r["lambda_min"]
    for name in p.polynomial_activations:
        mine = [r for r in above_rank if r["activation"] == name and r["depth"] >= 2]  # depth 1: its own control
        _record(f"control_lambda_{metric_key(name)}", least_singular(mine), metrics, uncertainty)
    _record("depth1_lambda", least_singular([r for r in above_rank if r["depth"] == 1 and not r["polynomial"]]),
            metrics, uncertainty)
    nonpoly = [r for r in rows if not r["polynomial"] and r["depth"] >= 2]
    metrics["all_nonpolynomial_resolved_pd"] = bool(all(r["resolved_pd"] for r in nonpoly))
    metrics["all_controls_singular"] = bool(all(r["singular"] for r in above_rank
                                                if r["polynomial"] or r["depth"] == 1))  # every depth, both controls
    metrics["rank_bound_depth1_and_affine"] = rank
    metrics["min_separation"] = separation

    table = pd.DataFrame(rows)
    return StageResult(
        metrics=metrics,
        sizes={"n_points": n_points, "input_dim": int(p.input_dim), "max_depth": int(p.max_depth),
               "activations": list(p.activations), "polynomial_activations": list(p.polynomial_activations)},
        seeds=[int(cfg.seed)],
        uncertainty=uncertainty,
        tables={"ntk_pd_eigenvalues": table},
        figures={"ntk_pd": _figure(table, n_points=n_points, max_depth=int(p.max_depth), rank=rank)},
        arrays={"points": x},
    )


def _figure(table: pd.DataFrame, *, n_points, max_depth: int, rank: int):
    fig, axes = figure(1, 2, height=2.6)
    left, right = axes[0]
    colors = dict(zip(table.activation.unique(), ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple",
                                                  "tab:brown", "tab:pink", "tab:olive", "tab:cyan"), strict=False))
    for name, sub in table.groupby("activation", sort=False):
        style = {"color": "gray" if sub.polynomial.iloc[0] else colors[name]}
        for depth, ls in ((2, "-"), (max_depth, "--")):
            d = sub[sub.depth == depth]
            left.plot(d.n, np.abs(d.lambda_min), ls, marker="o", markersize=2.5,
                      label=f"{name}, L={depth}" + (" (polynomial)" if sub.polynomial.iloc[0] else ""), **style)
        d = sub[sub.n == n_points[-1]]
        right.plot(d.depth, np.abs(d.lambda_min), "-", marker="o", markersize=2.5, label=name, **style)
    floors = table.groupby("n").floor.max()
    left.plot(floors.index, floors.values, ":", color="black", label="float64 floor (largest)")
    last = table[table.n == n_points[-1]].groupby("depth").floor.max()
    right.plot(last.index, last.values, ":", color="black", label="float64 floor")
    left.axvline(rank + 0.5, color="gray", linewidth=0.6)
    for ax in (left, right):
        ax.set_yscale("log")
    left.set_xscale("log", base=2)
    left.set_xlabel("$n$ points on $S^{n_0-1}$")
    left.set_ylabel("$|\\lambda_{\\min}(\\Theta/n)|$")
    right.set_xlabel(f"depth $L$ ($n={n_points[-1]}$)")
    left.legend(fontsize=5, ncol=2)
    right.legend(fontsize=5)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
