"""Feng & Kolter (DEQ-NTK), Fig. 1: accuracy against depth of the finite-depth NTK and of the
finite-depth DEQ-NTK iteration (Thm. 1); the NTK freezes (its Gram tends to a constant matrix: the
condition number explodes and the effective rank falls to 1), the DEQ-NTK converges to Thm. 2's
fixed point and keeps its accuracy.

Both kernels come from one recursion (`deq_kernels`, all depths at once): the NTK of each panel is the
input-injection network with sigma_U^2 = 0, the DEQ-NTK has sigma_U^2 = (panel sigma_b^2) - 0.1 and
sigma_b^2 = 0.1 (caption of Fig. 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from deq_eval import FLOAT32_BYTES, check_initialization, check_unit_norm, percent
from scipy import stats

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.kernels.deq import deq_kernels, deq_ntk
from ntkrepro.plotting import band, figure
from ntkrepro.progress import progress
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted
from ntkrepro.stage import StageResult, load_split, main
from ntkrepro.stats import mean_se

MODELS = ("ntk", "deq")


def panel_tag(sigma_w2: float, sigma_b2: float) -> str:
    """A metric-name-safe panel label: (0.65, 0.35) -> 'w65_b35'."""
    return f"w{round(100 * sigma_w2)}_b{round(100 * sigma_b2)}"


def model_variances(model: str, *, sigma_w2: float, sigma_b2: float, deq_sigma_b2: float) -> dict:
    """Kernel variances of a Fig. 1 panel: the NTK has no input injection; the DEQ-NTK moves all but
    ``deq_sigma_b2`` of the panel's bias variance to the injection (caption of Fig. 1)."""
    if model == "ntk":
        return {"sigma_w2": sigma_w2, "sigma_u2": 0.0, "sigma_b2": sigma_b2}
    if model == "deq":
        if sigma_b2 < deq_sigma_b2:
            raise ValueError(
                f"panel sigma_b2={sigma_b2} < deq_sigma_b2={deq_sigma_b2}: the DEQ-NTK's "
                "sigma_u2 = sigma_b2 - deq_sigma_b2 would be negative"
            )
        return {"sigma_w2": sigma_w2, "sigma_u2": sigma_b2 - deq_sigma_b2, "sigma_b2": deq_sigma_b2}
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def ntk_ridge(k_train_diag: np.ndarray, *, eps: float) -> float:
    """The paper's NTK ridge r = eps * Theta(x,x) / n (Sec. 5, printed "eps^Theta(x,x)/n"; read as a
    product, with Theta(x,x) the mean of the train diagonal and n the number of train points)."""
    diag = np.asarray(k_train_diag)
    return float(eps * diag.mean() / diag.shape[0])


def mean_ci(values, *, level: float) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean over draws (zero width if all agree)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def spectrum_stats(gram: np.ndarray) -> tuple[float, float]:
    """(condition number, effective rank) of a symmetric PSD Gram matrix.

    Effective rank = exp(entropy of the normalized eigenvalues) (Roy & Vetterli 2007): 1 for a
    constant (frozen) matrix, n for a multiple of the identity. Eigenvalues below zero (round-off) are
    clipped to 0 for the entropy; the condition number is inf when the smallest is <= 0.
    """
    eig = np.linalg.eigvalsh(np.asarray(gram, dtype=np.float64))
    top, bottom = eig[-1], eig[0]
    cond = float(top / bottom) if bottom > 0 else float("inf")
    p = np.clip(eig, 0.0, None) / np.clip(eig, 0.0, None).sum()
    p = p[p > 0]
    return cond, float(np.exp(-(p * np.log(p)).sum()))


def half_drop_depth(depths, mean_acc) -> float | None:
    """First depth at which the accuracy has lost half of its total drop from the first to the last
    depth (the depth at which the NTK's freeze sets in); None if it does not drop."""
    acc = np.asarray(mean_acc, dtype=float)
    drop = acc[0] - acc[-1]
    if drop <= 0:
        return None
    below = np.nonzero(acc <= acc[0] - drop / 2)[0]
    return float(np.asarray(depths)[below[0]])


def fixed_point_gap(theta_deep: np.ndarray, theta_star: np.ndarray) -> tuple[float, float]:
    """(off-diagonal, diagonal) max |Theta^(L) - Theta*| / max |Theta*| of two square train Grams.

    Reported apart because Theta*(x.y) has a square-root singularity at x.y = 1: the diagonal's
    x.x, 1 only up to rounding (~1e-15), moves Theta* by ~1e-7, depending on whether a kernel snaps
    x.x to 1 -- a conditioning effect, not a gap between the iteration and the fixed point."""
    diff = np.abs(theta_deep - theta_star) / np.abs(theta_star).max()
    off = ~np.eye(diff.shape[0], dtype=bool)
    return float(diff[off].max()), float(np.diag(diff).max())


def kernels_at_depths(x_rows, x_cols, *, depths, row_chunk: int, variances: dict) -> np.ndarray:
    """Theta^(depth)(x_rows, x_cols) for every requested depth, shape (len(depths), n_rows, n_cols),
    from one all-depths recursion per block of ``row_chunk`` rows (memory: max(depths) x chunk x n_cols)."""
    idx = np.asarray(depths) - 1
    blocks = []
    for start in range(0, x_rows.shape[0], row_chunk):
        k = deq_kernels(x_rows[start:start + row_chunk], x_cols, depth=int(max(depths)),
                        all_depths=True, **variances)
        blocks.append(np.asarray(k.ntk)[idx])
    return np.concatenate(blocks, axis=1)


def _draw(rng, n_pool: int, n: int) -> np.ndarray:
    if n > n_pool:
        raise ValueError(f"cannot draw {n} points from a pool of {n_pool}; raise data.n_train/n_test")
    return np.sort(rng.choice(n_pool, size=n, replace=False))


def draw_indices(seed: int, draw: int, pools: tuple[int, int], sizes: tuple[int, int], *,
                 test_points: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) pool indices of one draw: seeded uniform subsets without replacement. ``fixed``: the
    test points are draw 0's in every draw (one test set, the train points redrawn); ``per_draw``: both
    redrawn. The train subsets are the same either way."""
    rng = np.random.default_rng([seed, draw])
    i_tr, i_te = _draw(rng, pools[0], sizes[0]), _draw(rng, pools[1], sizes[1])
    if test_points == "fixed" and draw != 0:
        rng0 = np.random.default_rng([seed, 0])
        _draw(rng0, pools[0], sizes[0])
        i_te = _draw(rng0, pools[1], sizes[1])
    return i_tr, i_te


@dataclass
class Panel:
    """(sigma_W^2, sigma_b^2) of the NTK in one panel of Fig. 1."""

    sigma_w2: float = param(ge=0, lt=1, doc="< 1: the DEQ-NTK's fixed point exists (Lemma 1)")
    sigma_b2: float = param(ge=0)


@dataclass
class Params:
    """Fig. 1's ``params`` (conf/experiment/feng2020_deq/fig1.yaml)."""

    n_train: int = param(ge=2, doc="train points per draw")
    n_test: int = param(ge=1, doc="test points per draw")
    n_draws: int = param(ge=2, doc="draws (the CI over draws needs two)")
    panels: list[Panel] = param(min_len=1, distinct=True)
    deq_sigma_b2: float = param(ge=0)
    depths: list[int] = param(min_len=2, ge=1, distinct=True, doc="the first against the deepest")
    ridge_eps: float = param(ge=0)
    deq_ridge: float = param(ge=0)
    label_pos: float = param()
    label_neg: float = param()
    ci_level: float = param(gt=0, lt=1)
    spectrum_draw: int = param(ge=0)
    row_chunk: int = param(ge=1)
    test_points: Literal["fixed", "per_draw"] = param(
        doc="fixed: draw 0's test points for every draw (the train points are redrawn); per_draw: redrawn too")

    def check(self):
        if self.spectrum_draw >= self.n_draws:
            raise bad("params.spectrum_draw", f"must be one of the draws 0..{self.n_draws - 1} "
                      f"(params.n_draws = {self.n_draws})", self.spectrum_draw)
        for i, q in enumerate(self.panels):
            if q.sigma_b2 < self.deq_sigma_b2:
                raise bad(f"params.panels[{i}].sigma_b2", f"must be >= params.deq_sigma_b2 = {self.deq_sigma_b2:g} "
                          "(the DEQ-NTK's sigma_u2 = sigma_b2 - deq_sigma_b2)", q.sigma_b2)
            check_initialization(f"params.panels[{i}]", sigma_w2=q.sigma_w2, sigma_b2=q.sigma_b2)
        if not self.label_pos > self.label_neg:
            raise bad("params.label_pos", f"must be > params.label_neg = {self.label_neg:g} (the one-hot "
                      "target of the true class)", self.label_pos)
        rows = self.n_train + self.n_test
        refuse_oversized([
            ("params.n_train", self.n_train, FLOAT32_BYTES * len(self.depths) * (rows / self.n_train), 2,
             "the kernels of one draw at every depth (depths x (n_train + n_test) x n_train, float32)"),
            ("params.depths", max(self.depths), FLOAT32_BYTES * min(self.row_chunk, rows) * self.n_train, 1,
             "one block of the all-depths recursion (max depth x row_chunk x n_train, float32)"),
        ])

    def check_config(self, cfg) -> None:
        """``data`` against the params, before it is loaded (the typed params cannot see it): unit-norm inputs
        (the DEQ-NTK fixed point), and pools large enough for one draw (null = the whole split)."""
        check_unit_norm(cfg)
        p = cfg.params
        for split in ("train", "test"):
            pool = cfg.data[f"n_{split}"]
            if pool is not None and p[f"n_{split}"] > pool:
                raise bad(f"params.n_{split}", f"must be <= data.n_{split} = {pool} (the pool each draw is taken "
                          "from)", p[f"n_{split}"])


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    panels = [dict(sigma_w2=float(q.sigma_w2), sigma_b2=float(q.sigma_b2)) for q in p.panels]
    depths = sorted({int(d) for d in p.depths})
    dtype = np.float32 if cfg.precision == "float32" else np.float64
    pool_train, pool_test = load_split(cfg, "train"), load_split(cfg, "test")
    x_pool_train = np.asarray(pool_train.x, dtype=dtype).reshape(len(pool_train.x), -1)
    x_pool_test = np.asarray(pool_test.x, dtype=dtype).reshape(len(pool_test.x), -1)
    num_classes = pool_train.num_classes

    rows, spectra, fixed_point_err = [], [], {}
    jobs = [(draw, q, model) for draw in range(p.n_draws) for q in panels for model in MODELS]
    draws = {}
    for draw, q, model in progress(jobs, desc="fig1 draws x panels x models", enabled=cfg.progress):
        if draw not in draws:
            draws[draw] = draw_indices(cfg.seed, draw, (len(x_pool_train), len(x_pool_test)),
                                       (p.n_train, p.n_test), test_points=p.test_points)
        i_tr, i_te = draws[draw]
        x_tr, x_te = x_pool_train[i_tr], x_pool_test[i_te]
        y_tr, y_te = np.asarray(pool_train.y)[i_tr], np.asarray(pool_test.y)[i_te]
        targets = one_hot_shifted(y_tr, num_classes, pos=p.label_pos, neg=p.label_neg)
        variances = model_variances(model, **q, deq_sigma_b2=p.deq_sigma_b2)
        k_all = kernels_at_depths(np.concatenate([x_tr, x_te]), x_tr, depths=depths,
                                  row_chunk=p.row_chunk, variances=variances)
        tag = panel_tag(q["sigma_w2"], q["sigma_b2"])
        for k, depth in zip(k_all, depths, strict=True):
            k_train = k[: p.n_train]
            ridge = ntk_ridge(np.diag(k_train), eps=p.ridge_eps) if model == "ntk" else p.deq_ridge
            pred = kernel_regression(k_train, targets, k, ridge=ridge)  # rows: train then test
            pred_train, pred_test = pred[: p.n_train], pred[p.n_train:]
            rows.append({"panel": tag, "model": model, "depth": depth, "draw": draw, "ridge": ridge,
                         "test_acc_pct": percent(accuracy(pred_test, y_te)),
                         "train_acc_pct": percent(accuracy(pred_train, y_tr)),
                         "test_pred_classes": len(np.unique(np.argmax(np.asarray(pred_test), axis=1)))})
            if draw == p.spectrum_draw:
                cond, erank = spectrum_stats(k_train)
                spectra.append({"panel": tag, "model": model, "depth": depth,
                                "condition_number": cond, "effective_rank": erank})
        if model == "deq" and draw == p.spectrum_draw:
            star = np.asarray(deq_ntk(x_tr, **variances).ntk)
            fixed_point_err[tag] = fixed_point_gap(k_all[-1][: p.n_train], star)

    per_draw = pd.DataFrame(rows)
    summary = _summarize(per_draw, level=p.ci_level)
    spectrum = pd.DataFrame(spectra)
    metrics = _metrics(summary, spectrum, fixed_point_err, panels, depths)
    uncertainty = draw_uncertainty(per_draw, panels, depths)
    figures = {"fig1": _accuracy_figure(summary, panels), "fig1_freeze": _freeze_figure(spectrum, panels)}
    return StageResult(
        metrics=metrics,
        data=pool_train.provenance,
        sizes={"n_train_per_draw": p.n_train, "n_test_per_draw": p.n_test, "n_draws": p.n_draws,
               "pool_train": len(x_pool_train), "pool_test": len(x_pool_test),
               "input_dim": int(x_pool_train.shape[1]), "max_depth": max(depths)},
        seeds=[cfg.seed],
        tables={"fig1_accuracy": summary, "fig1_spectrum": spectrum, "fig1_per_draw": per_draw},
        figures=figures,
        notes=[f"test data: {pool_test.provenance}"],
        uncertainty=uncertainty,
    )


def draw_uncertainty(per_draw: pd.DataFrame, panels, depths) -> dict:
    """Standard error over draws of each per-panel mean accuracy reported as a metric (first and deepest
    depth): ``StageResult.uncertainty`` entries."""
    out = {}
    for q in panels:
        tag = panel_tag(q["sigma_w2"], q["sigma_b2"])
        for model, depth, name in (("ntk", depths[0], f"ntk_acc_pct_depth{depths[0]}_{tag}"),
                                   ("ntk", depths[-1], f"ntk_acc_pct_deepest_{tag}"),
                                   ("deq", depths[-1], f"deq_acc_pct_deepest_{tag}")):
            g = per_draw[(per_draw.panel == tag) & (per_draw.model == model) & (per_draw.depth == depth)]
            out[name] = mean_se(g["test_acc_pct"], over="draws").record()
    return out


def _summarize(per_draw: pd.DataFrame, *, level: float) -> pd.DataFrame:
    out = []
    for (tag, model, depth), g in per_draw.groupby(["panel", "model", "depth"], sort=True):
        mean, lo, hi = mean_ci(g["test_acc_pct"], level=level)
        out.append({"panel": tag, "model": model, "depth": depth, "test_acc_pct": mean,
                    "ci_lo": lo, "ci_hi": hi, "ci_halfwidth": (hi - lo) / 2,
                    "train_acc_pct_min": float(g["train_acc_pct"].min()), "ridge": float(g["ridge"].mean()),
                    "pred_classes_max": int(g["test_pred_classes"].max())})
    return pd.DataFrame(out)


def _metrics(summary, spectrum, fixed_point_err, panels, depths) -> dict:
    m: dict = {}
    drops, singletons, stable, deq_wins, erank_ratio, half_depths = [], [], [], [], [], []
    tail_from = max(depths) / 2
    for q in panels:
        tag = panel_tag(q["sigma_w2"], q["sigma_b2"])
        ntk = summary[(summary.panel == tag) & (summary.model == "ntk")].sort_values("depth")
        deq = summary[(summary.panel == tag) & (summary.model == "deq")].sort_values("depth")
        first, last = ntk.iloc[0], ntk.iloc[-1]
        m[f"ntk_acc_pct_depth{int(first.depth)}_{tag}"] = float(first.test_acc_pct)
        m[f"ntk_acc_pct_deepest_{tag}"] = float(last.test_acc_pct)
        m[f"deq_acc_pct_deepest_{tag}"] = float(deq.iloc[-1].test_acc_pct)
        m[f"ntk_ci_halfwidth_deepest_{tag}"] = float(last.ci_halfwidth)
        half = half_drop_depth(ntk.depth, ntk.test_acc_pct)
        m[f"ntk_half_drop_depth_{tag}"] = half
        half_depths.append(half)
        drops.append(last.test_acc_pct < first.test_acc_pct - (first.ci_halfwidth + last.ci_halfwidth))
        singletons.append(last.ci_halfwidth == 0.0)
        tail = deq[deq.depth >= tail_from]
        stable.append(np.ptp(tail.test_acc_pct) <= tail.ci_halfwidth.max())
        deq_wins.append(deq.iloc[-1].test_acc_pct - last.test_acc_pct
                        > deq.iloc[-1].ci_halfwidth + last.ci_halfwidth)
        spec = spectrum[(spectrum.panel == tag) & (spectrum.depth == max(depths))]
        erank = dict(zip(spec.model, spec.effective_rank, strict=True))
        m[f"ntk_effective_rank_deepest_{tag}"] = erank["ntk"]
        m[f"deq_effective_rank_deepest_{tag}"] = erank["deq"]
        erank_ratio.append(erank["deq"] / erank["ntk"])
        m[f"deq_iter_fixed_point_rel_err_{tag}"], m[f"deq_iter_fixed_point_diag_rel_err_{tag}"] = (
            fixed_point_err[tag])
    m["ntk_effective_rank_deepest_max"] = max(
        m[f"ntk_effective_rank_deepest_{panel_tag(**q)}"] for q in panels)
    m["deq_over_ntk_effective_rank_deepest_min"] = min(erank_ratio)
    m["deq_effective_rank_exceeds_ntk_all_panels"] = bool(min(erank_ratio) > 1)
    m["deq_iter_fixed_point_rel_err"] = max(off for off, _ in fixed_point_err.values())
    m["deq_iter_fixed_point_diag_rel_err"] = max(diag for _, diag in fixed_point_err.values())
    m["ntk_accuracy_drops_all_panels"] = bool(all(drops))
    m["ntk_ci_singleton_deepest_all_panels"] = bool(all(singletons))
    # a frozen NTK predicts one class on every test point: the evidence behind a singleton CI (README)
    m["ntk_pred_classes_deepest_max"] = (None if "pred_classes_max" not in summary else int(max(
        summary[(summary.model == "ntk") & (summary.depth == max(depths))].pred_classes_max)))
    m["deq_accuracy_stable_all_panels"] = bool(all(stable))
    m["deq_beats_deepest_ntk_all_panels"] = bool(all(deq_wins))
    m["ntk_freeze_later_with_larger_sw2"] = freeze_later_with_larger_sw2(
        [q["sigma_w2"] for q in panels], half_depths)
    return m


def freeze_later_with_larger_sw2(sigma_w2s, half_depths) -> bool | None:
    """Whether the NTK's half-drop depth is non-decreasing in sigma_W^2 and larger at the largest than at
    the smallest; None (not measured) with fewer than 2 distinct sigma_W^2 (no ordering to check)."""
    if len(set(sigma_w2s)) < 2:
        return None
    by_sw2 = [h for _, h in sorted(zip(sigma_w2s, half_depths, strict=True), key=lambda t: t[0])]
    return bool(None not in by_sw2
                and all(a <= b for a, b in zip(by_sw2, by_sw2[1:], strict=False))
                and by_sw2[0] < by_sw2[-1])


def _accuracy_figure(summary, panels):
    fig, axes = figure(1, len(panels), height=2.4)
    for ax, q in zip(axes[0], panels, strict=True):
        tag = panel_tag(q["sigma_w2"], q["sigma_b2"])
        for model, label in (("ntk", "NTK"), ("deq", "DEQ-NTK iteration")):
            s = summary[(summary.panel == tag) & (summary.model == model)].sort_values("depth")
            band(ax, s.depth, s.test_acc_pct, s.ci_lo, s.ci_hi, label=label, marker="o", markersize=2)
        ax.set_xscale("log")
        ax.set_xlabel("depth")
        ax.set_title(f"$\\sigma_W^2$={q['sigma_w2']:g}, $\\sigma_b^2$={q['sigma_b2']:g}")
    axes[0, 0].set_ylabel("test accuracy (%), 95% CI")
    axes[0, 0].legend()
    return fig


def _freeze_figure(spectrum, panels):
    fig, axes = figure(1, 2, height=2.4)
    for i, q in enumerate(panels):
        tag = panel_tag(q["sigma_w2"], q["sigma_b2"])
        for model, style in (("ntk", "-"), ("deq", "--")):
            s = spectrum[(spectrum.panel == tag) & (spectrum.model == model)].sort_values("depth")
            label = f"{model.upper()} $\\sigma_W^2$={q['sigma_w2']:g}"
            kw = dict(linestyle=style, color=f"C{i}", label=label)
            axes[0, 0].loglog(s.depth, s.condition_number.replace(np.inf, np.nan), **kw)
            axes[0, 1].loglog(s.depth, s.effective_rank, **kw)
    axes[0, 0].set_ylabel("condition number of train Gram")
    axes[0, 1].set_ylabel("effective rank of train Gram")
    for ax in axes[0]:
        ax.set_xlabel("depth")
    axes[0, 1].legend(fontsize=5)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
