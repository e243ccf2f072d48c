"""Hayou et al. 2020: every rate and limit of Prop. 2, Thm. 1, Thm. 2, Prop. 3 and the correlation rates
of App. Lemmas 2, 3, 7, 8, measured on the exact infinite-width recursions (``ntkrepro.kernels.deep``) up to depth
``params.max_depth``; a table of claim / measurement / fit range / verdict and the scaled-error figures.

Fitted slopes and growth exponents are recorded with their standard errors (``ntkrepro.stats``). A rate
claim is judged by the registry on raw numbers (``hayou_common.rate_diagnostics``): the largest drift of
L e over the last decade (Theta(1/L): -> 0), the per-decade increment ratio of L e farthest from 1
(Theta(log L / L): -> 1), the spread of e ln L (Theta(1/log L): bounded), the peak |error| (a Theta rate
does not vanish) and the per-layer relative change (convergence); no class is decided in this file."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from hayou_common import (
    EOCCase,
    Pair,
    PhaseCase,
    check_eoc_cases,
    check_phase_depth,
    depth_grid,
    distinct,
    eoc_case,
    eoc_points,
    exponential_rate,
    farthest_from,
    grid_estimate,
    loglog_fit,
    phase_case,
    phase_estimate,
    phase_points,
    rate_diagnostics,
    rate_max_depth,
    rate_text,
    resnet_case,
)

from ntkrepro.checks import param, refuse_oversized
from ntkrepro.claims import ClaimError, evaluate, load_registry
from ntkrepro.kernels.deep import smooth_map
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main

RELU_S = 2 * math.sqrt(2) / (3 * math.pi)  # f(c) = c + s (1 - c)^{3/2} + ... for the normalized ReLU map


@dataclass
class Params:
    """``params`` of the theorem checks (conf/experiment/hayou2020/theorem_checks.yaml)."""

    max_depth: int = param(ge=100, check=rate_max_depth, doc="deepest L (a multiple of 100)")
    per_decade: int = param(ge=1, doc="depths per decade of the log grid")
    pairs: list[Pair] = param(min_len=1, doc="input pairs")
    eoc: list[EOCCase] = param(doc="Thm. 1 cases (distinct activations)")
    ordered: list[PhaseCase] = param(doc="Prop. 2, ordered phase (chi_1 < 1, checked before compute)")
    chaotic: list[PhaseCase] = param(doc="Prop. 2, chaotic phase (chi_1 > 1, checked before compute)")
    phase_depth: int = param(ge=1, doc="ordered/chaotic: depths 1..phase_depth")
    phase_fit_start: int = param(ge=1, doc="ordered: the log-linear rates are fitted from this depth")
    resnet_sigma_w2: list[float] = param(min_len=1, gt=0, distinct=True, doc="Thm. 2 / Prop. 3: sigma_w2")

    def check(self):
        n_phase = max(len(self.ordered), len(self.chaotic), 1)
        refuse_oversized([grid_estimate(self.max_depth, self.per_decade),
                          phase_estimate("params.phase_depth", self.phase_depth, len(self.pairs) * n_phase)])
        check_phase_depth("params.phase_depth", self.phase_depth, "params.phase_fit_start", self.phase_fit_start)
        check_eoc_cases(self.eoc, "params.eoc")
        for kind in ("ordered", "chaotic"):
            distinct(f"params.{kind}", [c.activation for c in getattr(self, kind)], "activations",
                     "metrics are named by activation")


def _tag(value: float) -> str:
    return f"{value:g}".replace(".", "p")


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    depths = depth_grid(int(p.max_depth), int(p.per_decade))
    top = int(depths[-1])
    fit = f"L in [{top // 10:,}, {top:,}] (and {top // 100:,} for the increment ratio)"
    pairs = [dict(pair) for pair in p.pairs]
    points = eoc_points(p.eoc, "params.eoc")  # before any recursion: a case without an EOC point, refused
    for kind in ("ordered", "chaotic"):  # and every phase case in its phase
        phase_points(p[kind], f"params.{kind}", phase=kind)
    metrics: dict = {"max_depth": top}
    uncertainty: dict = {}
    fit_ranges: dict[str, str] = {}
    details: list[dict] = []
    figs_data: dict = {"eoc": [], "resnet": [], "phase": []}

    # ---- Thm. 1 (FFNN on the EOC) and the correlation rates of App. Lemmas 2-3
    for case_cfg, point in progress(list(zip(p.eoc, points, strict=True)), desc="EOC cases", enabled=cfg.progress):
        case = eoc_case(case_cfg.activation, sigma_b2=float(case_cfg.sigma_b2), pairs=pairs, depths=depths,
                        point=point)
        act, point = case["activation"], case["point"]
        off = [rate_diagnostics(depths, r["off_err"], ref=r["q_off"], ) for r in case["runs"]]
        diag = [rate_diagnostics(depths, r["diag_err"], ref=r["q_off"], ) for r in case["runs"]]
        name = f"eoc_{act}"
        metrics.update(
            {
                f"{name}_sigma_w2": point.sigma_w2,
                f"{name}_q": point.q,
                **_rate_metrics(name, off, diag),
                f"{name}_offdiag_slope": float(np.median([d["slope"] for d in off])),
                f"{name}_offdiag_log_coefficient_over_q": float(
                    np.median([d["log_coefficient"] / r["q_off"] for d, r in zip(off, case["runs"], strict=True)])
                ),
                f"{name}_lambda": float(np.median([r["lambda_at_max"] for r in case["runs"]])),
            }
        )
        median = sorted(off, key=lambda d: d["slope"])[len(off) // 2]  # the pair behind the median slope
        uncertainty[f"{name}_offdiag_slope"] = {"se": median["slope_se"], "n": median["slope_n"], "over": "fit points"}
        gamma = case["runs"][0]["run"].gamma
        if case["relu_like"]:
            metrics[f"{name}_corr_l2_gamma"] = float(top**2 * gamma[-1])
            metrics[f"{name}_corr_check_depth"] = top
        else:
            fpp1 = smooth_map(act, sigma_w2=point.sigma_w2, q=point.q).fpp1
            metrics[f"{name}_fpp1"] = fpp1
            metrics[f"{name}_corr_l_gamma_fpp1_over_2"] = float(top * gamma[-1] * fpp1 / 2)
        for key in ("offdiag_slope", "offdiag_log_coefficient_over_q", *RATE_KEYS):
            fit_ranges[f"{name}_{key}"] = fit
        fit_ranges[f"{name}_lambda"] = f"K^L/(L q) at L = {top:,}"
        for r, d_off, d_diag in zip(case["runs"], off, diag, strict=True):
            details.append(_rate_detail(
                f"Thm. 1 EOC {act} (sigma_w2={point.sigma_w2:.6g}, sigma_b2={point.sigma_b2:g})", r, d_off, d_diag))
        figs_data["eoc"].append(case)

    # ---- Prop. 2: ordered and chaotic phases
    for kind in ("ordered", "chaotic"):
        for case_cfg in p[kind]:
            case = phase_case(
                case_cfg.activation,
                sigma_w2=float(case_cfg.sigma_w2),
                sigma_b2=float(case_cfg.sigma_b2),
                pairs=pairs,
                depth=int(p.phase_depth),
            )
            name = f"{kind}_{case['activation']}"
            metrics[f"{name}_chi1"] = case["chi1"]
            l_axis = case["depths"]
            if kind == "ordered":
                err = case["err"]
                floor = 1e3 * np.finfo(float).eps * case["limit"]
                hi = int(l_axis[np.flatnonzero(err > floor)[-1]])
                lo = int(p.phase_fit_start)
                mid = (lo + hi) // 2
                rate_first, rate_second = (
                    exponential_rate(l_axis, err, lo, mid),
                    exponential_rate(l_axis, err, mid, hi),
                )
                metrics[f"{name}_rate_ratio"] = rate_second / rate_first if rate_first > 0 else None
                metrics[f"{name}_rate_fade"] = max(0.0, 1.0 - rate_second / rate_first) if rate_first > 0 else None
                fit_ranges[f"{name}_rate_fade"] = f"1 - rate over [{mid}, {hi}] / rate over [{lo}, {mid}], floored at 0"
                metrics[f"{name}_rate"] = rate_second
                metrics[f"{name}_rate_over_minus_log_chi1"] = rate_second / -math.log(case["chi1"])
                fit_ranges[f"{name}_rate_ratio"] = f"L in [{mid}, {hi}] over [{lo}, {mid}] (error above 1e3 eps)"
                fit_ranges[f"{name}_rate"] = f"L in [{mid}, {hi}]"
            else:
                k11 = np.array([r["k11"] for r in case["runs"]])
                k12 = np.array([r["k12"] for r in case["runs"]])
                last = slice(len(l_axis) // 2, None)
                growth = float(np.median(np.diff(np.log(k11[:, last]), axis=1)))
                metrics[f"{name}_diag_growth_over_log_chi1"] = growth / math.log(case["chi1"])
                rel_change = np.max(np.abs(k11[:, -1] - k11[:, -2]) / np.abs(k11[:, -1]))
                metrics[f"{name}_K_rel_change"] = float(rel_change)
                metrics[f"{name}_offdiag_rel_change"] = float(
                    np.max(np.abs(k12[:, -1] - k12[:, -2]) / np.abs(k12[:, -1])))
                fit_ranges[f"{name}_diag_growth_over_log_chi1"] = f"L in [{l_axis[last][0]}, {l_axis[-1]}]"
                for key in ("K_rel_change", "offdiag_rel_change"):
                    fit_ranges[f"{name}_{key}"] = f"max over pairs of |K^L - K^(L-1)| / |K^L| at L = {l_axis[-1]}"
            figs_data["phase"].append((kind, case))

    # ---- Thm. 2 (standard ReLU ResNet) and Prop. 3 (scaled)
    for scale in ("standard", "scaled"):
        per_sw: list[dict] = []
        for sw2 in progress(list(p.resnet_sigma_w2), desc=f"{scale} ResNets", enabled=cfg.progress):
            case = resnet_case(sigma_w2=float(sw2), branch_scale=scale, pairs=pairs, depths=depths)
            off = [rate_diagnostics(depths, r["off_err"], ref=r["q_off"], ) for r in case["runs"]]
            diag = [rate_diagnostics(depths, r["diag_err"], ref=r["q_off"], ) for r in case["runs"]]
            tag = f"resnet_{scale}_sw2_{_tag(float(sw2))}"
            alpha = float(sw2) / 2
            gamma = case["runs"][0]["run"].gamma[-1]
            entry = {"off": off, "diag": diag}
            if scale == "standard":
                metrics[f"{tag}_diag_limit_over_paper"] = float(
                    np.median([r["diag_limit_over_paper"] for r in case["runs"]])
                )
                metrics[f"{tag}_corr_l2_gamma_scaled"] = float(top**2 * gamma * (alpha / (1 + alpha)) ** 2)
            else:
                log_k = case["runs"][0]["log_k11"]
                growth = loglog_fit(depths, np.exp(log_k - log_k[-1]), top // 10, top)
                metrics[f"{tag}_growth_exponent_minus_half_sw2"] = growth.slope - alpha
                uncertainty[f"{tag}_growth_exponent_minus_half_sw2"] = growth.slope_estimate().record()
                metrics[f"{tag}_corr_log2_gamma_sw4_over_16"] = float(math.log(top) ** 2 * gamma * float(sw2) ** 2 / 16)
                gam = case["runs"][0]["run"].gamma
                i1 = np.flatnonzero(depths == top // 10)[0]
                metrics[f"{tag}_corr_slope_inv_sqrt_gamma"] = float(
                    (gam[-1] ** -0.5 - gam[i1] ** -0.5) / math.log(10.0) * 4 / float(sw2)
                )
                fit_ranges[f"{tag}_corr_slope_inv_sqrt_gamma"] = f"(1-c)^(-1/2) between L = {top // 10:,} and {top:,}"
                entry["spread_off"] = [_e_log_l_spread(depths, r["off_err"]) for r in case["runs"]]
                entry["spread_diag"] = [_e_log_l_spread(depths, r["diag_err"]) for r in case["runs"]]
            metrics[f"{tag}_lambda"] = float(np.median([r["lambda_at_max"] for r in case["runs"]]))
            per_sw.append(entry)
            for r, d_off, d_diag in zip(case["runs"], off, diag, strict=True):
                details.append(_rate_detail(
                    f"{'Thm. 2' if scale == 'standard' else 'Prop. 3'} {scale} ReLU ResNet "
                    f"(sigma_w2={float(sw2):g}, sigma_b2=0)", r, d_off, d_diag))
            figs_data["resnet"].append(case)
        if scale == "standard":
            metrics.update(_rate_metrics("resnet_standard", [d for e in per_sw for d in e["off"]],
                                         [d for e in per_sw for d in e["diag"]]))
            lams = [metrics[k] for k in metrics if k.startswith("resnet_standard") and k.endswith("_lambda")]
            metrics["resnet_standard_lambda_in_unit_interval"] = bool(all(0 < v < 1 for v in lams))
            for key in RATE_KEYS:
                fit_ranges[f"resnet_standard_{key}"] = fit + ", every sigma_w2 and pair"
        else:
            for part in ("diag", "off"):
                key = f"resnet_scaled_{'offdiag' if part == 'off' else 'diag'}_e_log_L_spread"
                metrics[key] = _worst([s for e in per_sw for s in e[f"spread_{part}"]], max)
                fit_ranges[key] = (f"(max - min) / min |.| of e ln L at L = {top // 100:,}, {top // 10:,}, {top:,} "
                                   "(every sigma_w2 and pair)")
        for key in metrics:
            if key.startswith(f"resnet_{scale}_sw2") and key not in fit_ranges:
                fit_ranges[key] = f"L in [{top // 10:,}, {top:,}]" if "growth" in key else f"L = {top:,}"
    for key in metrics:
        if "_corr_" in key and key not in fit_ranges:
            fit_ranges[key] = f"L = {top:,}"

    table = _claims_table(cfg, metrics, fit_ranges, uncertainty)
    return StageResult(
        metrics=metrics,
        uncertainty=uncertainty,
        sizes={
            "max_depth": top,
            "n_depths": len(depths),
            "n_pairs": len(pairs),
            "phase_depth": int(p.phase_depth),
        },
        seeds=[],
        tables={"theorem_checks": table, "theorem_checks_details": pd.DataFrame(details)},
        figures={
            "theorem_checks_scaled_errors": _scaled_error_figure(depths, figs_data),
            "theorem_checks_correlations": _correlation_figure(depths, figs_data),
            "theorem_checks_phases": _phase_figure(figs_data["phase"]),
        },
        arrays={"depths": depths},
        notes=[
            "error curves use the limits derived in hayou_common (App. Lemmas 5-6); the lambda claims "
            "measure K/(L q) at the deepest depth independently"
        ],
    )


RATE_KEYS = ("offdiag_max_drift", "diag_max_drift", "offdiag_increment_ratio", "offdiag_max_peak", "diag_min_peak")


def _worst(values: list[float], pick) -> float | None:
    """``pick`` (max or min) of ``values``; None when any is nan (not measured)."""
    values = [float(v) for v in values]
    return None if not values or any(math.isnan(v) for v in values) else float(pick(values))


def _rate_metrics(name: str, off: list[dict], diag: list[dict]) -> dict:
    """The raw numbers the registry judges the rate claims of one case by (every pair; see module doc):
    the largest drift of L e (diagonal and off-diagonal), the off-diagonal increment ratio farthest from 1,
    the largest off-diagonal peak |error| (the sup over pairs) and the smallest diagonal one (every x)."""
    ratio = farthest_from([d["increment_ratio"] for d in off], 1.0)
    return {
        f"{name}_offdiag_max_drift": _worst([d["drift"] for d in off], max),
        f"{name}_diag_max_drift": _worst([d["drift"] for d in diag], max),
        f"{name}_offdiag_increment_ratio": None if math.isnan(ratio) else ratio,
        f"{name}_offdiag_max_peak": _worst([d["peak"] for d in off], max),
        f"{name}_diag_min_peak": _worst([d["peak"] for d in diag], min),
    }


def _e_log_l_spread(depths, errors) -> float:
    """Theta(1/log L) on a finite range: s = e ln L at L_max/100, L_max/10, L_max; (max s - min s) / min |s|
    (a spread of 1 is a factor 2 between one-signed values; values of both signs give at least 2; nan when
    one s is exactly 0)."""
    top = int(depths[-1])
    scaled = np.array([errors[np.flatnonzero(depths == d)[0]] * math.log(d) for d in (top // 100, top // 10, top)])
    low = float(np.min(np.abs(scaled)))
    return float((scaled.max() - scaled.min()) / low) if low > 0 else float("nan")


def _pair_text(pair: dict) -> str:
    n1, n2 = pair["norm2"]
    return f"|x|^2/d={n1:g}, |x'|^2/d={n2:g}, cos={pair['cos']:g}"


def _rate_detail(case: str, run: dict, d_off: dict, d_diag: dict) -> dict:
    """One row of the details table: a case's input pair, its off-diagonal and diagonal convergence rates."""
    return {
        "case": case,
        "pair": _pair_text(run["pair"]),
        "offdiag_rate": rate_text(d_off),
        "offdiag_L_err": d_off["L_err"],
        "offdiag_slope": d_off["slope"],
        "offdiag_log_coef_over_q": d_off["log_coefficient"] / run["q_off"],
        "diag_rate": rate_text(d_diag),
        "lambda_at_max": run["lambda_at_max"],
    }


def _claims_table(cfg, metrics: dict, fit_ranges: dict, uncertainty: dict) -> pd.DataFrame:
    """One row per claim of this artifact: the registry's statement and paper value, the measurement,
    the fit range and what the numbers alone say (the report adds the premise: the run's settings)."""
    from pathlib import Path

    record = {"metrics": metrics, "scale": cfg.scale.name, "data": None, "uncertainty": uncertainty}
    rows = []
    for claim in load_registry(Path(__file__).with_name("claims.yaml")):
        if claim.artifact != cfg.artifact:
            continue
        try:
            result = evaluate(claim, record)
        except ClaimError as err:  # a sweep that drops the claim's case (e.g. sigma_w2 = 2): not measured
            rows.append({"where": claim.where, "claim": claim.statement, "paper": _show(claim.paper_value),
                         "measured": "not measured", "fit range": "", "verdict (numbers alone)": str(err)})
            continue
        verdict = result.verdict or result.status
        rows.append(
            {
                "where": claim.where,
                "claim": claim.statement,
                "paper": _show(claim.paper_value),
                "measured": _show(result.measured),
                "fit range": fit_ranges.get(claim.metric, ""),
                "verdict (numbers alone)": f"{verdict} (consistency check)" if claim.consistency else verdict,
            }
        )
    return pd.DataFrame(rows)


def _show(value) -> str:
    if value is None:
        return "not measured"
    return str(value) if isinstance(value, bool) else f"{value:.6g}"


def _scaled_error_figure(depths, data):
    """L e(L) against ln L (flat for Theta(1/L), a straight rising line for Theta(log L / L)) and
    sqrt(L) e(L) for ELU (flat for Theta(L^-1/2)); scaled ResNets: e ln L."""
    fig, axes = figure(1, 3, height=2.6)
    ax_l, ax_sqrt, ax_log = axes[0]
    keep = depths >= 10
    for case in data["eoc"]:
        r = case["runs"][0]
        label = f"{case['activation']} (EOC)"
        if case["activation"] == "elu":
            ax_sqrt.semilogx(depths[keep], np.sqrt(depths[keep]) * r["off_err"][keep] / r["q_off"], label=label)
            continue
        ax_l.semilogx(depths[keep], depths[keep] * r["off_err"][keep] / r["q_off"], label=label)
    for case in data["resnet"]:
        r = case["runs"][0]
        label = f"ResNet sigma_w2={case['sigma_w2']:g}"
        if case["branch_scale"] == "standard":
            ax_l.semilogx(depths[keep], depths[keep] * r["off_err"][keep] / r["q_off"], linestyle="--", label=label)
        else:
            ax_log.semilogx(
                depths[keep],
                np.log(depths[keep]) * r["off_err"][keep] / r["q_off"],
                label=f"{label} off-diag.",
            )
            ax_log.semilogx(
                depths[keep],
                np.log(depths[keep]) * r["diag_err"][keep] / r["q_off"],
                linestyle=":",
                label=f"{label} diag.",
            )
    ax_l.set(xlabel="depth L", ylabel="L (K/alpha_L - AK_inf) / q", title="x != x': Theta(1/L) would be flat")
    ax_sqrt.set(xlabel="depth L", ylabel="sqrt(L) (K/L - AK_inf) / q", title="ELU on the EOC: flat = L^-1/2")
    ax_log.set(xlabel="depth L", ylabel="ln(L) (K/(P_L ln L) - lim) / q", title="scaled ResNet: flat = 1/log L")
    for ax in (ax_l, ax_sqrt, ax_log):
        ax.legend(fontsize=5)
    return fig


def _correlation_figure(depths, data):
    """The correlation laws of App. Lemmas 2, 3, 7, 8 as ratios that tend to 1 (Lemma 8 through the
    slope of (1 - c)^(-1/2) against ln l, see the claim)."""
    fig, ax = figure(height=2.6)
    keep = depths >= 10
    layers = depths[keep].astype(float)
    for case in data["eoc"]:
        gamma = case["runs"][0]["run"].gamma[keep]
        if case["relu_like"]:
            ratio = layers**2 * gamma * RELU_S**2 / 4
            label = f"{case['activation']}: l^2 (1-c) / (9 pi^2/2)"
        else:
            fpp1 = smooth_map(case["activation"], sigma_w2=case["point"].sigma_w2, q=case["point"].q).fpp1
            ratio, label = layers * gamma * fpp1 / 2, f"{case['activation']}: l (1-c) f''(1)/2"
        ax.semilogx(layers, ratio, label=label)
    for case in data["resnet"]:
        gamma, a = case["runs"][0]["run"].gamma[keep], case["sigma_w2"] / 2
        if case["branch_scale"] == "standard":
            ratio = layers**2 * gamma * (a / (1 + a)) ** 2 * RELU_S**2 / 4
            ax.semilogx(layers, ratio, linestyle="--", label=f"ResNet {case['sigma_w2']:g}: / delta (Lemma 7)")
        else:
            slope = np.gradient(gamma**-0.5, np.log(layers)) * 4 / (case["sigma_w2"] * RELU_S)
            ax.semilogx(
                layers,
                slope,
                linestyle=":",
                label=f"scaled ResNet {case['sigma_w2']:g}: d(1-c)^-1/2/d ln l / (s sw2/4) (Lemma 8)",
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set(xlabel="layer l", ylabel="measured / predicted", ylim=(0, 2))
    ax.legend(fontsize=5)
    return fig


def _phase_figure(cases):
    fig, axes = figure(1, 2, height=2.4)
    ax_o, ax_c = axes[0]
    for kind, case in cases:
        label = (
            f"{case['activation']} sigma_w2={case['sigma_w2']:g} sigma_b2={case['sigma_b2']:g} "
            f"(chi1={case['chi1']:.3g})"
        )
        if kind == "ordered":
            ax_o.semilogy(case["depths"], case["err"], label=label)
        else:
            ax_c.semilogy(case["depths"], case["runs"][0]["k11"], label=f"K(x,x): {label}")
            ax_c.semilogy(case["depths"], np.abs(case["runs"][0]["k12"]), linestyle="--", label="|K(x,x')|")
    ax_o.set(xlabel="depth L", ylabel="sup |K^L - q*/(1-chi1)|", title="ordered phase (Prop. 2)")
    ax_c.set(xlabel="depth L", ylabel="K^L", title="chaotic phase: K(x,x) ~ chi1^L")
    ax_o.legend(fontsize=5)
    ax_c.legend(fontsize=5)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
