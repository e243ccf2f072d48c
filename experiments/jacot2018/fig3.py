"""Jacot et al. 2018, Fig. 3: kernel principal components of the NTK and training along the second one.

(a) Non-centred kernel PCA of the exact limiting NTK on a batch X of N digits: the eigenvalues lambda_k
of Theta(X, X)/N (the operator of the mean-loss gradient flow) and the principal components f(k), scaled
to unit empirical norm ||f||^2 = (1/N) sum_i f(x_i)^2, i.e. f(k)(X) = sqrt(N) u_k. The batch is shown
in the coordinates (f(2), f(3)). The paper estimated the eigenvalues from the empirical NTK of a
width-10000 net; the same estimate from the widest net here (first trial, at init) is reported beside
the exact ones.
(b, c) Nets of several widths trained by full-batch GD (lr 1.0, mean square loss) towards
f* = f_theta0 + 0.5 f(2). The residual f_t - f* splits into g_t (along f(2)) and h_t (orthogonal to it);
in the infinite-width limit ||g_t|| = 0.5 exp(-lambda_2 t) and h_t = 0 (Sec. 5). Wider nets should
follow this straight line (log scale) more closely. Footnote: with beta = 1 the gap between lambda_1
and lambda_2 is about ten times larger; both betas are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from jacot_common import (
    activation_estimate,
    decreasing,
    gd_stepper,
    init_key,
    itemsize,
    jacot_net,
    width_estimates,
)

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.empirical import empirical_ntk
from ntkrepro.kernels.fc import jacot_fc_kernels
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, load_split, main
from ntkrepro.stats import LineFit, line_fit, mean_se


@dataclass
class Params:
    """``params`` of Fig. 3 (conf/experiment/jacot2018/fig3.yaml)."""

    depth: int = param(ge=1, doc="L weight layers of the nets and of the kernel PCA")
    beta: float = param(ge=0, doc="bias scale beta (Sec. 6: 0.1)")
    beta_footnote: float = param(ge=0, doc="the footnote's beta, compared with params.beta")
    lr: float = param(gt=0, doc="GD learning rate on the mean square loss")
    n_components: int = param(ge=3, doc="kernel principal components (Fig. 3 uses f(2) and f(3))")
    amplitude: float = param(gt=0, doc="f* = f_theta0 + amplitude f(2); the residuals are relative to it")
    widths: list[int] = param(min_len=1, ge=1, distinct=True, doc="widths (one: the orderings are None)")
    n_trials: int = param(ge=1, doc="trials per width")
    steps: int = param(ge=1, doc="GD steps: t in [0, steps]")
    record_every: int = param(ge=1, doc="steps between recorded residuals")
    max_depth_table: int = param(ge=1, doc="eigenvalues tabulated for depths 1..max_depth_table")

    def check(self):
        if self.steps < self.record_every:
            raise bad("params.steps", f"must be >= params.record_every = {self.record_every} (a decay needs "
                      "two recorded points)", self.steps)
        if self.steps % self.record_every:
            raise bad("params.steps", f"must be a multiple of params.record_every = {self.record_every}",
                      self.steps)
        if self.depth > self.max_depth_table:
            raise bad("params.depth", f"must be <= params.max_depth_table = {self.max_depth_table} (its "
                      "spectrum comes from the tabulated depths)", self.depth)
        if self.beta_footnote == self.beta:
            raise bad("params.beta_footnote", f"must differ from params.beta = {self.beta:g} (the footnote "
                      "compares the eigenvalue gaps of two betas)", self.beta_footnote)
        refuse_oversized(width_estimates(self.widths, depth=self.depth))

    def check_config(self, cfg) -> None:
        """Refuse a batch too small for the principal components or too large for memory, before loading it
        (the typed params cannot see ``data``)."""
        n, p, size = cfg.data.n_train, cfg.params, itemsize(cfg.precision)
        if n is None:
            return
        if n < p.n_components:
            raise bad("data.n_train", f"must be >= params.n_components = {p.n_components} (the kernel PCA of a "
                      "batch of N digits has N components)", n)
        refuse_oversized([
            ("data.n_train", n, size * p.max_depth_table, 2,
             f"the NTKs of the tabulated depths (max_depth_table x N x N, {cfg.precision})"),
            *activation_estimate("data.n_train", n, widths=p.widths, depth=p.depth, precision=cfg.precision,
                                 batch="N"),
            ("params.steps", p.steps, size * n * p.n_trials / p.record_every, 1,
             f"the recorded residuals of one width (n_trials x steps / record_every x N, {cfg.precision})"),
        ])


def kernel_pca(gram: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k eigenvalues of gram/N and the principal components evaluated on the batch, (k, N),
    with unit empirical norm and the sign fixed so that each component's entry of largest |value| is
    positive (non-centred kernel PCA, Sec. 6)."""
    gram = np.asarray(gram, dtype=np.float64)
    n = gram.shape[0]
    if gram.ndim != 2 or gram.shape[1] != n:
        raise ValueError(f"kernel_pca needs a square Gram matrix, got shape {gram.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n}, got {k}")
    evals, evecs = np.linalg.eigh(gram / n)
    order = np.argsort(evals)[::-1][:k]
    comps = np.sqrt(n) * evecs[:, order].T
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    return evals[order], comps * signs[:, None]


def decompose_residual(residual: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical norms ||g|| and ||h|| of residual = g + h, g along ``direction`` (unit empirical norm),
    h orthogonal to it; ``residual`` (T, N) -> two arrays (T,). ||v||^2 = (1/N) sum_i v_i^2."""
    r = np.atleast_2d(np.asarray(residual, dtype=np.float64))
    n = r.shape[1]
    coef = r @ direction / n
    h = r - coef[:, None] * direction[None]
    return np.abs(coef), np.sqrt(np.sum(h * h, axis=1) / n)


def log_deviation(g_norm: np.ndarray, predicted: np.ndarray) -> float:
    """max_t |ln(||g_t|| / predicted_t)|: how far a trajectory strays from the straight line."""
    ratio = np.maximum(np.asarray(g_norm), np.finfo(float).tiny) / np.asarray(predicted)
    return float(np.max(np.abs(np.log(ratio))))


def fitted_rate(times: np.ndarray, g_norm: np.ndarray) -> float:
    """Least-squares slope of -ln ||g_t|| against t (the decay rate; lambda_2 in the limit)."""
    return -rate_fit(times, g_norm).slope


def rate_fit(times: np.ndarray, g_norms: np.ndarray) -> LineFit:
    """One least-squares line of ln ||g_t|| against t through the points of every trajectory in
    ``g_norms`` ((trials, T) or (T,), all on ``times``): its slope is minus the decay rate and equals
    the mean of the per-trial slopes (same times); its standard error and n come from the pooled
    residuals (``ntkrepro.stats.line_fit``)."""
    g = np.atleast_2d(np.asarray(g_norms, dtype=np.float64))
    t = np.asarray(times, dtype=np.float64)
    y = np.log(np.maximum(g, np.finfo(float).tiny))
    return line_fit(np.tile(t, g.shape[0]), y.ravel())


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    widths = sorted(p.widths)  # one width: the orderings are None (not measured)
    dtype = np.float32 if cfg.precision == "float32" else np.float64
    train = load_split(cfg, "train")
    x = np.asarray(train.x, dtype=dtype).reshape(len(train.x), -1)
    labels = np.asarray(train.y)
    n = x.shape[0]

    kernels = {float(b): np.asarray(jacot_fc_kernels(x, depth=p.max_depth_table, beta=b, all_depths=True).ntk)
               for b in (p.beta, p.beta_footnote)}
    spectra = {b: kernel_pca(k[p.depth - 1], k=p.n_components) for b, k in kernels.items()}
    lam, comps = spectra[float(p.beta)]
    lam_fn = spectra[float(p.beta_footnote)][0]
    direction = comps[1]

    table = []
    for b, k_all in kernels.items():
        for depth in range(1, p.max_depth_table + 1):
            ev = kernel_pca(k_all[depth - 1], k=p.n_components)[0]
            table.append({"beta": b, "depth": depth, **{f"lambda{i + 1}": v for i, v in enumerate(ev)},
                          "lambda1_over_lambda2": ev[0] / ev[1]})

    times = np.arange(0, p.steps + 1, p.record_every)
    predicted = p.amplitude * np.exp(-lam[1] * times)
    g_norms, h_norms = {w: [] for w in widths}, {w: [] for w in widths}
    nets = {w: jacot_net(depth=p.depth, width=w, beta=p.beta, dtype=dtype) for w in widths}
    steppers = {w: gd_stepper(net.apply_fn, learning_rate=p.lr, steps=p.record_every)
                for w, net in nets.items()}
    jobs = [(w, i) for w in widths for i in range(p.n_trials)]
    for w, i in progress(jobs, desc="fig3 widths x trials", enabled=cfg.progress):
        net, advance = nets[w], steppers[w]
        params = net.init_fn(init_key(cfg.seed, w, i), x.shape)
        if w == widths[-1] and i == 0:  # the paper's estimate: the NTK of its widest net at init
            lam_empirical = kernel_pca(np.asarray(empirical_ntk(net.apply_fn, params, x)), k=p.n_components)[0]
        f0 = np.asarray(net.apply_fn(params, x))[:, 0]
        target = (f0 + p.amplitude * direction).astype(dtype)
        residuals = [f0 - target]
        for _ in range(len(times) - 1):
            params = advance(params, x, target[:, None])
            residuals.append(np.asarray(net.apply_fn(params, x))[:, 0] - target)
        g, h = decompose_residual(np.stack(residuals), direction)
        g_norms[w].append(g)
        h_norms[w].append(h)
    g_norms = {w: np.stack(v) for w, v in g_norms.items()}
    h_norms = {w: np.stack(v) for w, v in h_norms.items()}

    metrics = {"lambda1": lam[0], "lambda2": lam[1], "lambda3": lam[2],
               "lambda1_beta_footnote": lam_fn[0], "lambda2_beta_footnote": lam_fn[1],
               "lambda3_beta_footnote": lam_fn[2],
               "gap_ratio_footnote_over_paper_beta": float((lam_fn[0] / lam_fn[1]) / (lam[0] / lam[1])),
               "gap_diff_ratio_footnote_over_paper_beta": float((lam_fn[0] - lam_fn[1]) / (lam[0] - lam[1])),
               **{f"lambda{k + 1}_empirical_largest_width": v for k, v in enumerate(lam_empirical[:3])}}
    rows, uncertainty = [], {}
    half = len(times) // 2
    for w in widths:
        g_dev = [log_deviation(g, predicted) for g in g_norms[w]]
        h_max = h_norms[w].max(axis=1) / p.amplitude
        fit = rate_fit(times, g_norms[w])
        row = {"width": w, "n_trials": p.n_trials,
               "g_log_dev": float(np.mean(g_dev)), "h_max_rel": float(np.mean(h_max)),
               "g_rate_over_lambda2": -fit.slope / lam[1],
               # local rates: the first and the second half of the time range (a drift the fit hides)
               "g_rate_over_lambda2_first_half": (-rate_fit(times[:half + 1], g_norms[w][:, :half + 1]).slope
                                                  / lam[1]) if half >= 1 else None,
               "g_rate_over_lambda2_second_half": (-rate_fit(times[half:], g_norms[w][:, half:]).slope
                                                   / lam[1]) if len(times) - half >= 2 else None}
        rows.append(row)
        metrics.update({f"{k}_w{w}": v for k, v in row.items() if k not in ("width", "n_trials")})
        rate = fit.slope_estimate()
        uncertainty[f"g_rate_over_lambda2_w{w}"] = {**rate.record(), "se": float(rate.se / lam[1])}
        if p.n_trials >= 2:
            uncertainty[f"g_log_dev_w{w}"] = mean_se(g_dev, over="trials").record()
            uncertainty[f"h_max_rel_w{w}"] = mean_se(h_max, over="trials").record()
    for key in ("g_log_dev", "h_max_rel", "g_rate_over_lambda2", "g_rate_over_lambda2_first_half",
                "g_rate_over_lambda2_second_half"):
        for which, row in (("smallest", rows[0]), ("largest", rows[-1])):
            metrics[f"{key}_{which}_width"] = row[key]
            if f"{key}_w{row['width']}" in uncertainty:
                uncertainty[f"{key}_{which}_width"] = uncertainty[f"{key}_w{row['width']}"]
    # orderings over the widths: None (not measured) with one width, never a vacuous True
    metrics["g_dev_decreases_with_width"] = decreasing(r["g_log_dev"] for r in rows)
    metrics["h_decreases_with_width"] = decreasing(r["h_max_rel"] for r in rows)
    metrics = {k: float(v) if isinstance(v, np.floating) else v for k, v in metrics.items()}

    curves = {"t": times, "g_predicted": predicted}
    for w in widths:
        for i in range(p.n_trials):
            curves.update({f"g_w{w}_trial{i}": g_norms[w][i], f"h_w{w}_trial{i}": h_norms[w][i]})
    return StageResult(
        metrics=metrics,
        data=train.provenance,
        sizes={"n_batch": n, "input_dim": int(x.shape[1]), "widths": widths, "n_trials": int(p.n_trials),
               "depth": int(p.depth), "steps": int(p.steps), "record_every": int(p.record_every)},
        seeds=[int(cfg.seed)],
        uncertainty=uncertainty,
        tables={"fig3_summary": pd.DataFrame(rows), "fig3_eigenvalues": pd.DataFrame(table),
                "fig3_curves": pd.DataFrame(curves)},
        figures={"fig3": _figure(comps, labels, times, predicted, g_norms, h_norms, widths, lam)},
        arrays={"eigenvalues": lam, "components": comps, "labels": labels, "t": times,
                **{f"g_w{w}": v for w, v in g_norms.items()}, **{f"h_w{w}": v for w, v in h_norms.items()}},
    )


def _figure(comps, labels, times, predicted, g_norms, h_norms, widths, lam):
    fig, axes = figure(1, 3, height=2.4)
    ax = axes[0, 0]
    points = ax.scatter(comps[1], comps[2], c=labels, cmap="tab10", s=3, linewidths=0)
    fig.colorbar(points, ax=ax, label="class")
    ax.set_xlabel("$f^{(2)}$")
    ax.set_ylabel("$f^{(3)}$")
    ax.set_title(f"(a) $\\lambda_2$={lam[1]:.3g}, $\\lambda_3$={lam[2]:.3g}")
    colors = ("tab:green", "tab:red", "tab:blue", "tab:orange")
    for w, color in zip(widths, colors, strict=False):
        for i, (g, h) in enumerate(zip(g_norms[w], h_norms[w], strict=True)):
            label = f"$n={w}$" if i == 0 else None
            axes[0, 1].plot(times, h, color=color, linewidth=0.8, label=label)
            axes[0, 2].semilogy(times, g, color=color, linewidth=0.8, label=label)
    axes[0, 2].semilogy(times, predicted, color="black", linestyle="--", linewidth=0.9, label="$n=\\infty$")
    axes[0, 1].set_title("(b) $\\|h_t\\|$")
    axes[0, 2].set_title("(c) $\\|g_t\\|$")
    for ax in axes[0, 1:]:
        ax.set_xlabel("$t$")
    axes[0, 2].legend()
    return fig


if __name__ == "__main__":
    main(run, params=Params)
