"""Arora et al. 2019, Theorems 3.1 and 3.2 on CNNs, numerically: (a) the empirical NTK at initialization
of the CNN of Sec. 4 (vanilla; GAP with first and last layer fixed) against the exact CNTK, relative
Frobenius error against the number of channels; (b) a CNN trained by full-batch gradient descent
against the exact kernel's gradient-descent solution at the same step (kernel regression as the step
count grows), relative error of the test predictions against the number of channels."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd
from arora_common import (
    READOUTS,
    check_labels,
    cnn_weight_estimate,
    downsample,
    gram_estimates,
    image_pixels,
    itemsize,
    log_axis_with_ticks,
    odd,
    split_size,
)

from ntkrepro.checks import param, refuse_oversized
from ntkrepro.empirical import empirical_ntk
from ntkrepro.kernels.conv import cntk
from ntkrepro.nets import cnn
from ntkrepro.plotting import figure, loglog_with_fit
from ntkrepro.progress import progress
from ntkrepro.regression import one_hot_shifted
from ntkrepro.stage import StageResult, load_split, main
from ntkrepro.stats import local_slopes, loglog_fit, relative_error
from ntkrepro.train import train

SHORT = {"vanilla": "v", "gap": "gap"}


def kernel_gd_prediction(k_train, k_test, targets, *, learning_rate: float, steps: int):
    """Test predictions after ``steps`` full-batch GD steps on (1/2n) sum_i ||u_i - y_i||^2 of the
    linear model with kernel K from zero outputs: K_test K^-1 (I - (I - eta K / n)^steps) Y (steps ->
    infinity: kernel regression K_test K^-1 Y)."""
    n = k_train.shape[0]
    lam, vec = np.linalg.eigh(k_train)
    if lam.min() <= 0:
        raise ValueError("kernel_gd_prediction needs a positive definite training Gram")
    filt = (1.0 - (1.0 - learning_rate * lam / n) ** steps) / lam
    return k_test @ (vec @ (filt[:, None] * (vec.T @ targets)))


@dataclass
class InitCheck:
    """``params.init``: Thm. 3.1, the empirical NTK at init against the CNTK (vanilla and GAP)."""

    depth: int = param(ge=3, doc="CNN depth (both readouts; GAP with first and last layer fixed needs >= 3)")
    widths: list[int] = param(min_len=2, ge=1, distinct=True, doc="channels; a rate needs 2 distinct widths")
    n_seeds: int = param(ge=1, doc="inits per width (RMS over them)")


@dataclass
class TrainedCheck:
    """``params.trained``: Thm. 3.2, a trained CNN against the kernel's GD solution at the same step."""

    depth: int = param(ge=2, doc="CNN depth (vanilla readout)")
    widths: list[int] = param(min_len=2, ge=1, distinct=True, doc="channels; a rate needs 2 distinct widths")
    n_seeds: int = param(ge=1, doc="inits per width (RMS over them)")
    steps: int = param(ge=1, doc="full-batch GD steps T")
    lr: float = param(gt=0, lt=2, doc="in units of n / lambda_max(Theta): GD on the kernel diverges at >= 2")


@dataclass
class Params:
    """``params`` of the theorem checks (conf/experiment/arora2019/theory_checks.yaml)."""

    filter_size: int = param(ge=1, check=odd, doc="q")
    downsample: int = param(ge=1, doc="average-pool factor (1 = native resolution); divides the image side")
    init: InitCheck = param()
    trained: TrainedCheck = param()
    label_pos: float = param(doc="target of the true class (0.9)")
    label_neg: float = param(doc="target of the other classes (-0.1)")
    seed: int = param(ge=0)

    def check(self):
        check_labels(self.label_pos, self.label_neg)
        refuse_oversized([
            cnn_weight_estimate("params.init.widths", self.init.widths, depth=self.init.depth,
                                filter_size=self.filter_size, what="one image's Jacobian row at the widest width"),
            cnn_weight_estimate("params.trained.widths", self.trained.widths, depth=self.trained.depth,
                                filter_size=self.filter_size, what="the weights of the widest trained CNN"),
        ])

    def check_config(self, cfg) -> None:
        """Refuse, before any data is loaded, a downsampling factor that divides no image side, CNTK Grams
        that exhaust memory, and a full-batch training whose activations do (one line naming the parameter)."""
        p = cfg.params
        pixels, widest, layers = image_pixels(cfg, p.downsample), max(p.trained.widths), p.trained.depth - 1
        refuse_oversized([
            *gram_estimates(cfg),
            ("data.n_train", split_size(cfg, "train"), itemsize(cfg.precision) * pixels * widest * layers, 1,
             f"the activations of full-batch GD kept for backpropagation (n_train x {pixels} pixels x widest "
             f"trained width {widest} x {layers} layers, {cfg.precision})"),
        ])


def rate_metrics(widths, errors, name: str) -> tuple[dict, dict, object]:
    """The fitted log-log slope of ``errors`` against ``widths`` (metric ``name``), the width-to-width local
    slopes (``<name>_local_slopes``, rounded to 3 digits: how the exponent drifts along the sweep) and the
    fit's standard error and number of points (``StageResult.uncertainty``). Returns (metrics,
    uncertainty, fit)."""
    fit = loglog_fit(widths, errors)
    metrics = {name: fit.slope,
               f"{name}_local_slopes": [round(float(v), 3) for v in local_slopes(widths, errors)]}
    return metrics, {name: fit.slope_estimate().record()}, fit


def init_errors(x, *, depth, readout, widths, n_seeds, filter_size, seed, enabled):
    """Rows (width, seed, relative error) of the empirical NTK at init vs the exact CNTK on ``x``."""
    exact = np.asarray(cntk(x, depth=depth, readout=readout, fix_first_last=readout == "gap",
                            filter_size=filter_size, dtype=x.dtype).ntk)
    rows, nets = [], {}
    jobs = [(w, s) for w in widths for s in range(n_seeds)]
    for width, s in progress(jobs, desc=f"Thm 3.1 {readout}", enabled=enabled):
        if width not in nets:  # one net per width: its jitted functions are reused across seeds
            nets[width] = cnn(depth=depth, channels=width, readout=readout, fix_first_last=readout == "gap",
                              filter_size=filter_size, dtype=x.dtype)
        net = nets[width]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), width), s)
        params = net.init_fn(key, x.shape)
        emp = empirical_ntk(net.apply_fn, params, x, trainable=net.trainable_mask, implementation="jacobian")
        rows.append({"readout": readout, "width": width, "seed": s, "rel_error": relative_error(emp, exact)})
    return rows


def centred_cnn(net):
    """(init, apply, mask) of f(theta, x) - f(theta_0, x): parameters are the pair [theta, theta_0],
    only theta trainable; same gradients (hence NTK) as the net, zero output at initialization."""

    def init(key, input_shape):
        theta0 = net.init_fn(key, input_shape)
        return [theta0, theta0]

    def apply(pair, x):
        return net.apply_fn(pair[0], x) - net.apply_fn(pair[1], x)

    def mask(pair):
        return [net.trainable_mask(pair[0]), jax.tree.map(lambda _: False, pair[1])]

    return init, apply, mask


def trained_errors(x_tr, t_tr, x_te, *, depth, widths, n_seeds, steps, lr_units, filter_size, seed,
                   enabled):
    """Rows (width, seed, relative error) of a trained centred CNN's test outputs vs the exact
    kernel's GD solution at the same step, and the kernel solution's own diagnostics."""
    kw = dict(depth=depth, readout="vanilla", filter_size=filter_size, dtype=x_tr.dtype)
    k_tr, k_te = np.asarray(cntk(x_tr, **kw).ntk), np.asarray(cntk(x_te, x_tr, **kw).ntk)
    n = len(x_tr)
    eta = lr_units * n / float(np.linalg.eigvalsh(k_tr).max())
    f_kernel = kernel_gd_prediction(k_tr, k_te, t_tr, learning_rate=eta, steps=steps)
    f_train_kernel = kernel_gd_prediction(k_tr, k_tr, t_tr, learning_rate=eta, steps=steps)
    diagnostics = {
        "kernel_train_residual": relative_error(f_train_kernel, t_tr),
        "kernel_vs_regression": relative_error(f_kernel, k_te @ np.linalg.solve(k_tr, t_tr)),
        "learning_rate": eta,
    }
    rows, centred_nets = [], {}
    jobs = [(w, s) for w in widths for s in range(n_seeds)]
    for width, s in progress(jobs, desc="Thm 3.2", enabled=enabled):
        if width not in centred_nets:  # one function per width: training compiles once for all seeds
            centred_nets[width] = centred_cnn(cnn(depth=depth, channels=width, out_dim=t_tr.shape[1],
                                                  readout="vanilla", filter_size=filter_size, dtype=x_tr.dtype))
        init, centred, mask = centred_nets[width]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed + 1), width), s)
        pair = init(key, x_tr.shape)
        result = train(centred, pair, x_tr, t_tr, steps=steps, learning_rate=eta, loss="mse", trainable=mask)
        f_net = np.asarray(centred(result.params, x_te))
        rows.append({"width": width, "seed": s, "rel_error": relative_error(f_net, f_kernel),
                     "train_residual": relative_error(np.asarray(centred(result.params, x_tr)), t_tr)})
    return rows, diagnostics


def _rms_by_width(df: pd.DataFrame):
    g = df.groupby("width").rel_error
    rms = g.apply(lambda e: float(np.sqrt(np.mean(np.square(e)))))
    return rms.index.to_numpy(), rms.to_numpy(), g.min().to_numpy(), g.max().to_numpy()


def _figure(init, trained, *, init_depth, trained_depth, steps):
    fig, axes = figure(1, 2, height=2.4)
    ax = axes[0, 0]
    for readout in READOUTS:
        w, e, lo, hi, s, b = init[readout]
        line = loglog_with_fit(ax, w, e, slope=s, intercept=b, marker="o",
                               label=f"{'vanilla' if readout == 'vanilla' else 'GAP'} (RMS over seeds)")
        ax.fill_between(w, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    w, e = init["vanilla"][:2]
    ax.loglog(w, e[0] * (w / w[0]) ** -0.5, "k--", linewidth=0.8, label="slope -1/2")
    log_axis_with_ticks(ax, w, label="channels")
    ax.set_ylabel("||NTK_emp - CNTK||_F / ||CNTK||_F")
    ax.set_title(f"Thm 3.1: at init, depth {init_depth} (band: min-max)")
    ax.legend(fontsize=5)
    ax = axes[0, 1]
    w, e, lo, hi, s, b = trained
    line = loglog_with_fit(ax, w, e, slope=s, intercept=b, marker="o", label="RMS over seeds")
    ax.fill_between(w, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.loglog(w, e[0] * (w / w[0]) ** -0.5, "k--", linewidth=0.8, label="slope -1/2")
    log_axis_with_ticks(ax, w, label="channels")
    ax.set_ylabel("||f_nn - f_ntk|| / ||f_ntk|| (test)")
    ax.set_title(f"Thm 3.2: trained, depth {trained_depth}, {steps} GD steps")
    ax.legend(fontsize=5)
    return fig


def run(cfg) -> StageResult:
    p = cfg.params
    train_set, test_set = load_split(cfg, "train"), load_split(cfg, "test")
    x_tr, x_te = downsample(train_set.x, p.downsample), downsample(test_set.x, p.downsample)
    metrics, uncertainty, figs_data = {}, {}, {}

    init_rows = []
    for readout in READOUTS:
        init_rows += init_errors(x_tr, depth=p.init.depth, readout=readout, widths=p.init.widths,
                                 n_seeds=p.init.n_seeds, filter_size=p.filter_size, seed=p.seed,
                                 enabled=cfg.progress)
    init_df = pd.DataFrame(init_rows)
    for readout in READOUTS:
        widths, rms, lo, hi = _rms_by_width(init_df[init_df.readout == readout])
        rate, se, fit = rate_metrics(widths, rms, f"init_rate_{SHORT[readout]}")
        metrics.update(rate)
        uncertainty.update(se)
        for w, e in zip(widths, rms, strict=True):
            metrics[f"init_rel_error_{SHORT[readout]}_w{w}"] = float(e)
        figs_data[readout] = (widths, rms, lo, hi, fit.slope, fit.intercept)

    targets = np.asarray(one_hot_shifted(np.asarray(train_set.y), train_set.num_classes,
                                         pos=p.label_pos, neg=p.label_neg), dtype=x_tr.dtype)
    t = p.trained
    trained_rows, diag = trained_errors(x_tr, targets, x_te, depth=t.depth, widths=t.widths,
                                        n_seeds=t.n_seeds, steps=t.steps, lr_units=t.lr,
                                        filter_size=p.filter_size, seed=p.seed, enabled=cfg.progress)
    trained_df = pd.DataFrame(trained_rows)
    widths, rms, lo, hi = _rms_by_width(trained_df)
    rate, se, fit = rate_metrics(widths, rms, "trained_rate")
    metrics.update(rate)
    uncertainty.update(se)
    slope, intercept = fit.slope, fit.intercept
    metrics["trained_gap_decreases"] = bool(slope < 0 and rms[-1] < rms[0])
    for w, e in zip(widths, rms, strict=True):
        metrics[f"trained_rel_error_w{w}"] = float(e)
    metrics["trained_net_train_residual_widest"] = float(
        trained_df[trained_df.width == widths[-1]].train_residual.mean())
    metrics["kernel_train_residual"] = diag["kernel_train_residual"]
    metrics["kernel_vs_regression"] = diag["kernel_vs_regression"]

    fig = _figure(figs_data, (widths, rms, lo, hi, slope, intercept), init_depth=p.init.depth,
                  trained_depth=t.depth, steps=t.steps)

    return StageResult(
        metrics=metrics,
        data=train_set.provenance,
        sizes={"n_train": len(x_tr), "n_test": len(x_te), "image": "x".join(map(str, x_tr.shape[1:])),
               "init_widths": list(p.init.widths), "trained_widths": list(t.widths)},
        seeds=[cfg.seed, p.seed],
        tables={"init_errors": init_df, "trained_errors": trained_df},
        figures={"theory_checks": fig},
        uncertainty=uncertainty,
        notes=["Thm 3.2 check: centred net f(theta) - f(theta_0) (removes the init output, the role of "
               "the paper's small kappa); compared at the same GD step with the exact kernel's solution",
               f"kernel GD solution at T={t.steps}: relative train residual "
               f"{diag['kernel_train_residual']:.3g}, relative distance to kernel regression "
               f"{diag['kernel_vs_regression']:.3g}"],
    )


if __name__ == "__main__":
    main(run, params=Params)
