"""Hayou et al. 2020, the CNN results (issue 17 item 2): Prop. 1 (the CNTK recursion of eq. 11 / 19) and
Lemma 4 (its residual version) against the empirical NTK of finite CNNs of that form (Monte Carlo over
initializations), and the CNN reading of Thm. 1 and Thm. 2 ("all results that follow are true for any
alpha, alpha'", Sec. 4.1) on the exact infinite-channel recursion (``cnn_kernels``) up to depth
``params.max_depth``, with the correlation rates of App. Lemmas 2-3 for CNNs.

``ntkrepro.kernels.conv`` computes Arora et al.'s CNTK (zero padding, no bias, c_sigma scaling, a dense or
GAP readout), not this setting (periodic boundary, sigma_b, the kernel of every output position); the
recursion here agrees with it where the two settings coincide (tests). Rate claims are judged by the
registry on raw numbers (``hayou_common.rate_diagnostics`` per kernel entry; the worst entry is recorded).
Entries: "cross" = K_{a,a'}(x, x') for x != x' (every a, a'); "same input" = K_{a,a'}(x, x), a != a';
"diagonal" = K_{a,a}(x, x)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd
from cnn_kernels import cnn_kernels, deep_cnn, hayou_cnn
from hayou_common import (
    FLOAT64_BYTES,
    EOCCase,
    check_eoc_cases,
    depth_grid,
    distinct,
    eoc_points,
    farthest_from,
    grid_estimate,
    rate_diagnostics,
    rate_max_depth,
)

from ntkrepro.checks import activation, bad, param, refuse_oversized
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.kernels.deep import smooth_map
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main


@dataclass
class MCCase:
    """A finite CNN (Prop. 1) or conv. ResNet (Lemma 4) whose empirical NTK is compared with the recursion."""

    name: str = param(doc="metric name part")
    activation: str = param(check=activation)
    sigma_w2: float = param(gt=0)
    sigma_b2: float = param(ge=0)
    residual: bool = param(doc="Lemma 4 (conv. ResNet) instead of Prop. 1")


@dataclass
class Params:
    """``params`` of the CNN checks (conf/experiment/hayou2020/cnn_checks.yaml)."""

    max_depth: int = param(ge=100, check=rate_max_depth, doc="deepest L (a multiple of 100)")
    per_decade: int = param(ge=1, doc="depths per decade of the log grid")
    positions: int = param(ge=2, doc="M, positions per channel (1-D, periodic)")
    half_width: int = param(ge=1, doc="k: the filter is [-k, k] (size 2k + 1)")
    in_channels: int = param(ge=1, doc="n0, input channels")
    n_inputs: int = param(ge=2, doc="random inputs (every pair x != x' is checked)")
    input_seed: int = param(ge=0, doc="seed of the inputs and of the Monte Carlo draws")
    eoc: list[EOCCase] = param(min_len=1, doc="Thm. 1 cases (distinct activations)")
    resnet_sigma_w2: list[float] = param(min_len=1, gt=0, distinct=True, doc="Thm. 2 (conv. ResNet): sigma_w2")
    mc: list[MCCase] = param(min_len=1, doc="Prop. 1 / Lemma 4 Monte Carlo cases")
    mc_depth: int = param(ge=2, doc="depth of the Monte Carlo nets")
    mc_channels: int = param(ge=1, doc="channels of the Monte Carlo nets")
    mc_samples: int = param(ge=2, doc="initializations averaged (a standard error needs 2)")

    def check(self):
        blocks = self.n_inputs * (self.n_inputs + 1) // 2
        refuse_oversized([
            grid_estimate(self.max_depth, self.per_decade),
            ("params.positions", self.positions, 2 * FLOAT64_BYTES * blocks * _grid_len(self), 2,
             "the kernels of every input pair recorded on the depth grid (positions^2 x pairs x depths x 2, float64)"),
            ("params.mc_channels", self.mc_channels, FLOAT64_BYTES * self.mc_depth * (2 * self.half_width + 1)
             * 2 * self.positions * self.n_inputs, 2,
             "the Jacobian of the Monte Carlo net's outputs (channels^2 x depth x filter x outputs, float64)"),
        ])
        check_eoc_cases(self.eoc, "params.eoc")
        for i, case in enumerate(self.eoc):
            if case.activation not in ("relu", "tanh") and not case.activation.startswith("leaky_relu"):
                raise bad(f"params.eoc[{i}].activation", "the CNN deep path has ReLU-like closed forms and the "
                          "smooth map of Tanh-like phi; use relu, leaky_relu:<slope> or tanh", case.activation)
            if case.activation == "tanh" and case.sigma_b2 == 0:
                raise bad(f"params.eoc[{i}].sigma_b2", "must be > 0 for tanh (the smooth map is built at the "
                          "fixed-point variance q*, which is 0 at sigma_b2 = 0)", case.sigma_b2)
        distinct("params.mc", [c.name for c in self.mc], "names", "metrics are named by case")


def _grid_len(p) -> int:
    return int(max(math.log10(p.max_depth), 1.0) * p.per_decade) + 8


def _inputs(p) -> np.ndarray:
    """n_inputs random inputs (n0 channels x M positions), N(0, 1) entries, from params.input_seed."""
    rng = np.random.default_rng(int(p.input_seed))
    return rng.normal(size=(int(p.n_inputs), int(p.in_channels), int(p.positions)))


def _entries(deep, n: int):
    """Index lists of the recorded blocks (i <= j): cross blocks, same-input blocks."""
    blocks = [(i, j) for i in range(n) for j in range(i, n)]
    return [b for b, (i, j) in enumerate(blocks) if i != j], [b for b, (i, j) in enumerate(blocks) if i == j]


def _diagnostics(depths, errors, ref) -> list[dict]:
    """rate_diagnostics of every entry of errors (depths, B, M, M) (ref (B,)), flattened."""
    out = []
    for b in range(errors.shape[1]):
        for a1 in range(errors.shape[2]):
            for a2 in range(errors.shape[3]):
                out.append(rate_diagnostics(depths, errors[:, b, a1, a2], ref=ref[b]))
    return out


def _min_tail(depths, errors, ref) -> float:
    """Smallest L |e(L)| / ref over the last two decades (L_max/100..L_max) and every entry: a Theta(1/L) error
    keeps it near its constant, an error that decays faster falls to round-off."""
    top = int(depths[-1])
    keep = depths >= top // 100
    scaled = depths[keep, None, None, None] * np.abs(errors[keep]) / ref[None, :, None, None]
    return float(np.min(scaled))


def _eoc_metrics(name: str, act: str, point, deep, n: int) -> tuple[dict, list]:
    depths = deep.depths.astype(float)
    top = int(deep.depths[-1])
    relu_like = act != "tanh"
    lam = 0.25 if relu_like else 1.0 / 3.0
    cross, same = _entries(deep, n)
    qq = deep.qq
    k_over_l = deep.ntk / depths[:, None, None, None]
    m = deep.ntk.shape[-1]
    off_pos = ~np.eye(m, dtype=bool)
    diag_pos = np.eye(m, dtype=bool)
    err_cross = k_over_l[:, cross] - lam * qq[None, cross, None, None]
    off = _diagnostics(deep.depths, err_cross, qq[cross])
    same_err = k_over_l[:, same] - qq[None, same, None, None]  # the paper's AK^inf(x, x) = q at every a, a'
    diag_err = same_err[:, :, diag_pos].reshape(len(depths), len(same), m, 1)
    diag = _diagnostics(deep.depths, diag_err, qq[same])
    ratio_same = (k_over_l[-1, same] / qq[same, None, None])[:, off_pos]
    lam_cross = (k_over_l[-1, cross] / qq[cross, None, None]).ravel()
    gamma_last = deep.gamma[-1][deep.gamma[-1] > 0]
    metrics = {
        f"{name}_offdiag_max_drift": max(d["drift"] for d in off),
        f"{name}_offdiag_increment_ratio": farthest_from([d["increment_ratio"] for d in off], 1.0),
        f"{name}_offdiag_max_peak": max(d["peak"] for d in off),
        f"{name}_offdiag_slope": float(np.median([d["slope"] for d in off])),
        f"{name}_offdiag_log_coefficient_over_q": float(np.median(
            [d["log_coefficient"] / qq[cross[i // (m * m)]] for i, d in enumerate(off)])),
        f"{name}_lambda": float(np.median(lam_cross)),
        f"{name}_lambda_spread": float(np.ptp(lam_cross)),
        f"{name}_same_input_offpos_ratio_max": float(np.max(ratio_same)),
        f"{name}_same_input_offpos_ratio_min": float(np.min(ratio_same)),
        f"{name}_diag_max_drift": max(d["drift"] for d in diag),
        f"{name}_diag_min_tail": _min_tail(deep.depths, diag_err, qq[same]),
        f"{name}_switch_depth": int(deep.switch_depth),
    }
    if relu_like:
        metrics[f"{name}_corr_l2_gamma"] = farthest_from(list(top**2 * gamma_last), 9 * math.pi**2 / 2)
    else:
        fpp1 = smooth_map(act, sigma_w2=point.sigma_w2, q=point.q).fpp1
        metrics[f"{name}_fpp1"] = fpp1
        metrics[f"{name}_corr_l_gamma_fpp1_over_2"] = farthest_from(list(top * gamma_last * fpp1 / 2), 1.0)
    same_to_lambda = same_err[:, 0, 0, 1] - (lam - 1) * qq[same[0]]
    curves = [("cross", depths * err_cross[:, 0, 0, 0] / qq[cross[0]]),
              ("same input a != a' (to lambda q)", depths * same_to_lambda / qq[same[0]]),
              ("diagonal", depths * np.abs(diag_err[:, 0, 0, 0]) / qq[same[0]])]
    return metrics, curves


def _resnet_metrics(tag: str, sw2: float, deep, n: int) -> tuple[dict, list, list]:
    depths = deep.depths.astype(float)
    a = sw2 / 2
    cross, same = _entries(deep, n)
    qq = deep.qq
    k_over_l = deep.ntk / depths[:, None, None, None]  # K / alpha_L, alpha_L = L (1 + a)^(L-1)
    m = deep.ntk.shape[-1]
    diag_pos = np.eye(m, dtype=bool)
    w = a / (1 + a)
    err_cross = k_over_l[:, cross] - w / 4 * qq[None, cross, None, None]
    diag_err = (k_over_l[:, same][:, :, diag_pos] - w * qq[None, same, None]).reshape(len(depths), len(same), m, 1)
    off = _diagnostics(deep.depths, err_cross, qq[cross])
    diag = _diagnostics(deep.depths, diag_err, qq[same])
    diag_ratio = (k_over_l[-1, same][:, diag_pos] / qq[same, None]).ravel()
    lam = (k_over_l[-1, cross] / (w * qq[cross, None, None])).ravel()  # off-diagonal over the diagonal limit
    metrics = {
        f"{tag}_diag_limit_over_paper": float(np.median(diag_ratio)),
        f"{tag}_lambda": float(np.median(lam)),
        f"{tag}_diag_min_tail": _min_tail(deep.depths, diag_err, qq[same]),
    }
    return metrics, off, diag


def mc_samples(case, xs, p) -> np.ndarray:
    """Empirical NTKs of ``p.mc_samples`` finite nets of ``case`` (channels ``p.mc_channels``, depth ``p.mc_depth``):
    (S, n, n, 2M, 2M), outputs position-major (channel = index % 2)."""
    net = hayou_cnn(depth=int(p.mc_depth), channels=int(p.mc_channels), positions=xs.shape[2], k=int(p.half_width),
                    activation=case.activation, sigma_w2=float(case.sigma_w2), sigma_b2=float(case.sigma_b2),
                    residual=bool(case.residual))
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(int(p.input_seed)), np.moveaxis(xs, 1, 2),
                            n_samples=int(p.mc_samples), outputs="full", implementation="jacobian", keep_samples=True)
    return np.asarray(mc.samples)


def sq_excess(draws: np.ndarray, ref: np.ndarray, *, seed: int) -> tuple[float, float]:
    """(r, its standard error): r = (|mean - ref|_F^2 - tr Cov / S) / |ref|_F^2 estimates |E K - ref|_F^2 / |ref|_F^2
    without the bias of the Monte Carlo noise (tr Cov / S from the sample variances of the S draws); the
    standard error by bootstrap over the draws (200 resamples)."""

    def excess(d):
        noise = np.sum(np.var(d, axis=0, ddof=1)) / len(d)
        return float((np.sum((d.mean(axis=0) - ref) ** 2) - noise) / np.sum(ref**2))

    rng = np.random.default_rng(seed)
    boot = [excess(draws[rng.integers(0, len(draws), len(draws))]) for _ in range(200)]
    return excess(draws), float(np.std(boot, ddof=1))


def _mc_metric(case, xs, p) -> tuple[float, float, float]:
    """:func:`sq_excess` of channel 0's kernels (every input pair and position pair) against Prop. 1 / Lemma 4,
    and the largest cross-channel |mean K| / max |K| (Prop. 1's delta_ii')."""
    samples = mc_samples(case, xs, p)
    ref = cnn_kernels(xs, depth=int(p.mc_depth), k=int(p.half_width), activation=case.activation,
                      sigma_w2=float(case.sigma_w2), sigma_b2=float(case.sigma_b2),
                      residual=bool(case.residual)).ntk[-1]
    r, se = sq_excess(samples[..., 0::2, 0::2], ref, seed=int(p.input_seed))
    return r, se, float(np.max(np.abs(samples[..., 0::2, 1::2].mean(axis=0))) / np.max(np.abs(ref)))


def _layer1_metric(xs, p) -> float:
    """max |K_emp - K^1| / max |K^1| of a one-layer net (its NTK does not depend on the weights)."""
    net = hayou_cnn(depth=1, channels=4, positions=xs.shape[2], k=int(p.half_width), activation="relu",
                    sigma_w2=2.0, sigma_b2=0.3)
    x = np.moveaxis(xs, 1, 2)
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), x, n_samples=1, outputs="full",
                            implementation="jacobian")
    ref = cnn_kernels(xs, depth=1, k=int(p.half_width), activation="relu", sigma_w2=2.0, sigma_b2=0.3).ntk[0]
    emp = np.asarray(mc.mean)[:, :, 0::2, 0::2]
    return float(np.max(np.abs(emp - ref)) / np.max(np.abs(ref)))


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    depths = depth_grid(int(p.max_depth), int(p.per_decade))
    top = int(depths[-1])
    n = int(p.n_inputs)
    xs = _inputs(p)
    k = int(p.half_width)
    points = eoc_points(p.eoc, "params.eoc")
    metrics: dict = {"max_depth": top}
    uncertainty: dict = {}
    figs: list = []

    # ---- Prop. 1 and Lemma 4 against finite nets
    metrics["cnn_prop1_layer1_max_rel_dev"] = _layer1_metric(xs, p)
    for case in progress(list(p.mc), desc="Monte Carlo", enabled=cfg.progress):
        dev, se, cross_channel = _mc_metric(case, xs, p)
        metrics[f"cnn_mc_{case.name}_sq_excess"] = dev
        uncertainty[f"cnn_mc_{case.name}_sq_excess"] = {"se": se, "n": int(p.mc_samples),
                                                          "over": "initializations (bootstrap)"}
        metrics[f"cnn_mc_{case.name}_cross_channel"] = cross_channel

    # ---- Thm. 1 on the EOC (App. Lemmas 2-3)
    for case, point in progress(list(zip(p.eoc, points, strict=True)), desc="EOC CNNs", enabled=cfg.progress):
        act = point.activation
        deep = deep_cnn(xs, depths=depths, k=k, activation=case.activation, sigma_w2=point.sigma_w2,
                        sigma_b2=point.sigma_b2, q_star=None if act != "tanh" else point.q)
        name = f"cnn_eoc_{act.replace(':', '_').replace('.', 'p')}"
        found, curves = _eoc_metrics(name, act, point, deep, n)
        metrics.update(found)
        metrics[f"{name}_sigma_w2"] = point.sigma_w2
        figs.append((act, curves))

    # ---- Thm. 2, conv. ResNet (ReLU, sigma_b = 0)
    off_all, diag_all, lams = [], [], []
    for sw2 in progress(list(p.resnet_sigma_w2), desc="conv. ResNets", enabled=cfg.progress):
        deep = deep_cnn(xs, depths=depths, k=k, activation="relu", sigma_w2=float(sw2), sigma_b2=0.0, q_star=None,
                        residual=True)
        tag = f"cnn_resnet_sw2_{f'{float(sw2):g}'.replace('.', 'p')}"
        found, off, diag = _resnet_metrics(tag, float(sw2), deep, n)
        metrics.update(found)
        lams.append(found[f"{tag}_lambda"])
        off_all += off
        diag_all += diag
    metrics.update({
        "cnn_resnet_offdiag_max_drift": max(d["drift"] for d in off_all),
        "cnn_resnet_offdiag_increment_ratio": farthest_from([d["increment_ratio"] for d in off_all], 1.0),
        "cnn_resnet_diag_max_drift": max(d["drift"] for d in diag_all),
        "cnn_resnet_diag_min_tail": min(v for key, v in metrics.items() if key.endswith("_diag_min_tail")
                                        and key.startswith("cnn_resnet_sw2")),
        "cnn_resnet_lambda_in_unit_interval": bool(all(0 < v < 1 for v in lams)),
    })
    metrics = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in metrics.items()}

    rows = [{"metric": key, "value": v, "uncertainty (se)": uncertainty.get(key, {}).get("se")}
            for key, v in metrics.items()]
    return StageResult(
        metrics=metrics,
        uncertainty=uncertainty,
        sizes={"max_depth": top, "n_depths": len(depths), "positions": int(p.positions), "n_inputs": n,
               "mc_channels": int(p.mc_channels), "mc_samples": int(p.mc_samples)},
        seeds=[int(p.input_seed)],
        tables={"cnn_checks": pd.DataFrame(rows)},
        figures={"cnn_checks_scaled_errors": _figure(depths, figs)},
        arrays={"depths": depths, "inputs": xs},
        notes=["the CNN of eq. 11 / 19 (periodic boundary, bias, no readout); kernels of every position pair; "
               "the deep path switches to the uniform-variance gamma map once the per-position variances agree "
               "to 1e-12 (see switch_depth)"],
    )


def _figure(depths, cases):
    """L e(L) / q against L for one entry of each kind: flat = Theta(1/L), a rising line = Theta(log L / L)."""
    fig, axes = figure(1, len(cases), height=2.6)
    keep = depths >= 10
    for ax, (act, curves) in zip(axes[0], cases, strict=True):
        for label, curve in curves:
            ax.semilogx(depths[keep], curve[keep], label=label)
        ax.set(xlabel="depth L", ylabel="L (K/L - limit) / q", title=f"CNN on the EOC, {act}")
        ax.legend(fontsize=5)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
