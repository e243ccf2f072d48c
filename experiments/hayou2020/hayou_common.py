"""Shared by the Hayou et al. 2020 stages: depth grids, the input pairs of the kernel checks, the exact
limits of the (normalized) NTKs, rate diagnostics of an error curve, and the seeded SGD runs of Tables 1-2
(test accuracy after an early and a late epoch; diverged runs left out and counted).

Rate diagnostics. An error e(L) is described by numbers read from its deepest decades (L_max/100,
L_max/10, L_max), never by a class decided here: ``drift`` (the relative change of L e(L) over the last
decade: -> 0 for Theta(1/L), ~ 1/ln L for Theta(log L / L)), ``increment_ratio`` (the last per-decade
increment of L e over the previous one: -> 1 for Theta(log L / L), -> 0.1 for 1/L + O(1/L^2)), the log-log
``slope`` over the last decade with its standard error, and ``peak`` (the largest |e| / limit over all
depths: a Theta rate has a nonzero term, an error that vanishes to round-off has none). The registry
(claims.yaml) states what each rate claim requires of these numbers, with its tolerance and reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from ntkrepro import stats
from ntkrepro.checks import activation, bad, param
from ntkrepro.kernels import meanfield
from ntkrepro.kernels.deep import eoc_point, ffnn_eoc, relu_like_rho, relu_resnet
from ntkrepro.kernels.gaussian import get_activation
from ntkrepro.train import TrainingDiverged, train


def accuracies_at_epochs(net, data, *, seed: int, n_seeds: int, epochs: tuple[int, int], batch_size: int,
                         learning_rate, label: str, notes: list) -> tuple[np.ndarray, np.ndarray]:
    """Test accuracies (%) after the early and the late epoch of ``n_seeds`` SGD runs (cross-entropy, seeds
    ``seed``, ``seed`` + 1, ...). ``data`` = (x, y, x_test, y_test); ``epochs`` = (early, late), late a
    multiple of early. A run whose loss becomes non-finite gives NaN at every epoch it did not reach (an
    accuracy recorded before it diverged is kept), and a line naming the seed goes to ``notes``; diverged
    runs are never counted at chance (see :func:`cell_summary`)."""
    x, y, x_test, y_test = data
    early, late = epochs
    steps_per_epoch = len(x) // batch_size
    runs = []
    for s in range(n_seeds):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), s)
        params = net.init_fn(jax.random.fold_in(key, 0), x.shape)
        try:
            result = train(net.apply_fn, params, x, y, steps=late * steps_per_epoch, learning_rate=learning_rate,
                           loss="cross_entropy", batch_size=batch_size, key=jax.random.fold_in(key, 1),
                           eval_every=early * steps_per_epoch, x_test=x_test, y_test=y_test)
            evals = result.evals
        except TrainingDiverged as err:
            notes.append(f"{label} seed {s}: diverged at step {err.step} (epoch {err.step / steps_per_epoch:.2f}); "
                         "left out of the accuracies after it")
            evals = [e for e in err.evals if e["step"] < err.step]  # the diverged step's parameters are broken
        by_step = {e["step"]: 100.0 * e["test_accuracy"] for e in evals}
        runs.append([by_step.get(epoch * steps_per_epoch, np.nan) for epoch in (early, late)])
    runs = np.asarray(runs, dtype=float)
    return runs[:, 0], runs[:, 1]


def cell_summary(values) -> dict:
    """One cell of Table 1/2 from its per-seed accuracies (NaN = the run diverged before this epoch):
    ``mean`` (None when every run diverged), ``std`` (sample, None below 2 runs), the ``estimate``
    (``ntkrepro.stats.mean_se`` over the finite runs, None when none), ``diverged`` and ``runs``."""
    values = np.asarray(values, dtype=float)
    ok = values[np.isfinite(values)]
    est = stats.mean_se(ok, over="seeds") if ok.size else None
    return {
        "mean": None if est is None else est.value,
        "std": float(np.std(ok, ddof=1)) if ok.size > 1 else None,
        "estimate": est,
        "diverged": int(values.size - ok.size),
        "runs": int(values.size),
    }


def depth_grid(max_depth: int, per_decade: int) -> np.ndarray:
    """Depths 1..max_depth, about ``per_decade`` per decade, always containing max_depth / 10^k."""
    if max_depth < 1 or per_decade < 1:
        raise ValueError(f"max_depth and per_decade must be >= 1, got {max_depth}, {per_decade}")
    decades = math.log10(max_depth)
    grid = np.round(np.logspace(0, decades, max(2, int(per_decade * decades) + 1))).astype(int)
    anchors = [max_depth // 10**k for k in range(int(decades) + 1) if max_depth % 10**k == 0]
    return np.unique(np.concatenate([grid, anchors, [1, max_depth]]))


# ------------------------------------------------------------ typed params shared by the stages (issue 16)
# Each stage declares its ``Params`` (ntkrepro.checks); these are the pieces several stages share. The
# checks here are arithmetic on the config (no recursion, no kernel); what needs a mean-field solve (an EOC
# point of a smooth activation at sigma_b2 > 0, the phase of an ordered/chaotic case) is checked by the
# stage before its first recursion and refused with the case's path (``eoc_points``, ``phase_points``).

FLOAT64_BYTES = 8
MAX_DEPTH = 2**53  # the depth grid is computed in float64, which holds every integer up to 2^53 exactly


def depth_at_most_max(value: int) -> str | None:
    return None if value <= MAX_DEPTH else (f"must be <= 2^53 = {MAX_DEPTH} (the depth grid is computed in "
                                            "float64; one recursion step per layer)")


def rate_max_depth(value: int) -> str | None:
    """The deepest L of a stage judged by :func:`rate_diagnostics`: a multiple of 100, at most 2^53."""
    if value % 100:
        return "must be a multiple of 100 (the rate diagnostics read the depths L_max / 100, L_max / 10 and L_max)"
    return depth_at_most_max(value)


@dataclass
class Pair:
    """An input pair {norm2: [|x|^2/d, |x'|^2/d], cos: c} of the kernel checks (x != x')."""

    norm2: list[float] = param(min_len=2, max_len=2, gt=0, doc="|x|^2/d and |x'|^2/d")
    cos: float = param(gt=-1, lt=1, doc="cosine of x and x' (|c| = 1 would be one input twice)")


@dataclass
class EOCCase:
    """A FFNN on the EOC: sigma_w2 is solved for chi_1 = 1 at this sigma_b2."""

    activation: str = param(check=activation)
    sigma_b2: float = param(ge=0)


@dataclass
class PhaseCase:
    """A FFNN in the ordered (chi_1 < 1) or chaotic (chi_1 > 1) phase."""

    activation: str = param(check=activation)
    sigma_w2: float = param(gt=0)
    sigma_b2: float = param(ge=0)


@dataclass
class Epochs:
    """The epochs at which test accuracy is read (Tables 1-2: 10 and 100 / 160 in the paper)."""

    early: int = param(ge=1)
    late: int = param(ge=1)

    def check(self):
        if self.late % self.early:
            raise bad("params.epochs.late", f"must be a multiple of params.epochs.early = {self.early} (the "
                      "accuracy is evaluated every early epochs)", self.late)


def weight_estimates(width: int, depth: int, *, itemsize: int, width_path: str, depth_path: str,
                     what: str) -> list:
    """What a dense net's sizes drive: one width x width weight matrix (the width alone), then depth of them
    (the depth at that width; an upper bound: a net of ``depth`` weight layers has at most depth - 1)."""
    bits = 8 * itemsize
    return [(width_path, width, itemsize, 2, f"one hidden weight matrix of the {what} (width x width, float{bits})"),
            (depth_path, depth, itemsize * width**2, 1,
             f"the hidden weight matrices of the {what} (at most depth x width x width at width {width}, "
             f"float{bits})")]


def eoc_problem(name: str, sigma_b2: float) -> str | None:
    """What is wrong with an EOC point of ``name`` at ``sigma_b2``, from closed forms only (None when only a
    mean-field solve can tell: a smooth activation at sigma_b2 > 0, see ``eoc_points``)."""
    act = get_activation(name)
    if relu_like_rho(name) is not None:
        return None if sigma_b2 == 0 else f"{name} is ReLU-like: its only EOC point has sigma_b2 = 0"
    if act.deriv2 is None:
        return f"{name} has no second derivative and is not ReLU-like: the EOC recursion cannot use it"
    if sigma_b2 == 0 and float(act.fn(np.float64(0.0))) != 0.0:
        return f"{name} has phi(0) != 0, so sigma_b2 = 0 has no EOC point (use sigma_b2 > 0)"
    return None


def check_eoc_cases(cases: list, path: str) -> None:
    """Distinct activations (the metrics are named by activation) and EOC points that can exist."""
    distinct(path, [c.activation for c in cases], "activations", "metrics are named by activation")
    for i, case in enumerate(cases):
        what = eoc_problem(case.activation, case.sigma_b2)
        if what:
            raise bad(f"{path}[{i}].sigma_b2", what, case.sigma_b2)


def distinct(path: str, values: list, what: str, why: str) -> None:
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise bad(f"{path}[{i}]", f"{what} must be distinct ({why})", v)
        seen.add(v)


def grid_estimate(max_depth: int, per_decade: int) -> tuple:
    """What ``per_decade`` drives: the log grid of ``depth_grid`` and the kernels recorded on it."""
    decades = max(math.log10(max_depth), 1.0)
    return ("params.per_decade", per_decade, FLOAT64_BYTES * 8 * decades, 1,
            "the depth grid and the kernels recorded on it (per_decade x log10(max_depth) depths x 8 values, "
            "float64)")


def phase_estimate(path: str, depth: int, n_pairs: int) -> tuple:
    """The general recursion keeps every layer's 2 x 2 NNGP and NTK of every pair (float64)."""
    return (path, depth, FLOAT64_BYTES * 8 * n_pairs, 1,
            f"the kernels of the general recursion at every layer ({path.split('.')[-1]} x {n_pairs} pair(s) "
            "x 2 x 2 x 2, float64)")


def check_phase_depth(depth_path: str, depth: int, start_path: str, start: int) -> None:
    if depth < 2 * start + 2:
        raise bad(depth_path, f"must be >= 2 {start_path} + 2 = {2 * start + 2} (the rate is fitted over "
                  f"two halves of [{start_path}, depth])", depth)


def eoc_points(cases, path: str) -> list:
    """The EOC point of every case (``ntkrepro.kernels.deep.eoc_point``) before any recursion; a case without one is
    refused with its path (``params.eoc[1]``)."""
    points = []
    for i, case in enumerate(cases):
        try:
            points.append(eoc_point(case.activation, sigma_b2=float(case.sigma_b2)))
        except ValueError as err:
            raise bad(f"{path}[{i}]", f"no usable EOC point: {err}", _plain_case(case)) from None
    return points


def phase_points(cases, path: str, *, phase: str) -> list[tuple[float, float]]:
    """(q*, chi_1) of every case before any recursion; a case without a finite fixed point, or not in
    ``phase`` ("ordered": chi_1 < 1, "chaotic": chi_1 > 1), is refused with its path."""
    out = []
    for i, case in enumerate(cases):
        act, sw2, sb2 = case.activation, float(case.sigma_w2), float(case.sigma_b2)
        q = meanfield.q_star(act, sigma_w2=sw2, sigma_b2=sb2)
        if not math.isfinite(q):
            raise bad(f"{path}[{i}]", "has no finite fixed-point variance q* (the variance grows with depth): "
                      "lower sigma_w2", _plain_case(case))
        chi = meanfield.chi1(act, sigma_w2=sw2, sigma_b2=sb2, q=q)
        if (phase == "ordered" and not chi < 1) or (phase == "chaotic" and not chi > 1):
            need = "chi_1 < 1" if phase == "ordered" else "chi_1 > 1"
            raise bad(f"{path}[{i}]", f"must be in the {phase} phase ({need}); here chi_1 = {chi:.6g}",
                      _plain_case(case))
        out.append((q, chi))
    return out


def _plain_case(case) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(case, resolve=True) if isinstance(case, DictConfig) else dict(case)


def first_layer_covariance(pair, *, sigma_w2: float, sigma_b2: float) -> tuple[float, float, float]:
    """Sigma^1 = sigma_b2 + sigma_w2 x.x'/d for a pair given as {norm2: [|x|^2/d, |x'|^2/d], cos: c}."""
    n1, n2 = (float(v) for v in pair["norm2"])
    c = float(pair["cos"])
    if n1 <= 0 or n2 <= 0 or not -1 < c < 1:
        raise ValueError(f"input pair needs positive norms and -1 < cos < 1, got {dict(pair)}")
    return sigma_b2 + sigma_w2 * n1, sigma_b2 + sigma_w2 * c * math.sqrt(n1 * n2), sigma_b2 + sigma_w2 * n2


def value_at(depths: np.ndarray, values: np.ndarray, depth: int) -> float:
    idx = np.flatnonzero(depths == depth)
    if idx.size == 0:
        raise ValueError(f"depth {depth} is not on the grid")
    return float(values[idx[0]])


def loglog_fit(depths, errors, lo: int, hi: int) -> stats.LineFit | None:
    """``ntkrepro.stats.loglog_fit`` of |e| against L over lo <= L <= hi (None with fewer than 2 points)."""
    depths, errors = np.asarray(depths, float), np.abs(np.asarray(errors, float))
    keep = (depths >= lo) & (depths <= hi) & (errors > 0)
    if keep.sum() < 2:
        return None
    return stats.loglog_fit(depths[keep], errors[keep])


def loglog_slope(depths, errors, lo: int, hi: int) -> float:
    """Least-squares slope of log|e| against log L over lo <= L <= hi (nan with fewer than 2 points)."""
    fit = loglog_fit(depths, errors, lo, hi)
    return float("nan") if fit is None else fit.slope


def exponential_rate(depths, errors, lo: int, hi: int) -> float:
    """Least-squares gamma of |e| ~ exp(-gamma L) over lo <= L <= hi."""
    depths, errors = np.asarray(depths, float), np.abs(np.asarray(errors, float))
    keep = (depths >= lo) & (depths <= hi) & (errors > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(-stats.line_fit(depths[keep], np.log(errors[keep])).slope)


def rate_diagnostics(depths, errors, *, ref: float) -> dict:
    """The decay of ``errors`` (signed) over the last two decades of ``depths`` (see module doc).

    Returns ``L_err`` (L e at L_max), ``drift`` (relative change of L e over the last decade),
    ``increment_ratio`` (last / previous per-decade increment of L e), ``log_coefficient`` (A in
    L e = A ln L + B from the last decade), ``slope`` / ``slope_se`` / ``slope_n`` (log-log fit over the
    last decade), ``peak`` (max |e| / |ref| over every depth) and ``vanishes`` (|e| <= 1e-12 |ref| at
    every depth: zero to round-off; ``ref`` is the size of the limit). An error that vanishes has no rate:
    its L e is settled at 0 (``drift`` 0) and grows by nothing per decade (``increment_ratio`` 0).
    """
    depths = np.asarray(depths)
    errors = np.asarray(errors, dtype=float)
    top = int(depths.max())
    if top % 100 or top < 100:
        raise ValueError(f"the deepest depth must be a multiple of 100 (>= 100), got {top}")
    l0, l1, l2 = top // 100, top // 10, top
    s0, s1, s2 = (d * value_at(depths, errors, d) for d in (l0, l1, l2))
    peak = float(np.max(np.abs(errors)) / abs(ref))
    vanishes = peak <= 1e-12
    inc1, inc0 = s2 - s1, s1 - s0
    if vanishes:
        drift, ratio = 0.0, 0.0
    else:
        drift = abs(inc1) / abs(s2) if s2 != 0 else float("nan")
        ratio = inc1 / inc0 if inc0 != 0 else float("nan")
    fit = loglog_fit(depths, errors, l1, l2)
    return {
        "L_err": s2,
        "drift": drift,
        "increment_ratio": ratio,
        "log_coefficient": inc1 / math.log(10.0),
        "slope": float("nan") if fit is None else fit.slope,
        "slope_se": float("nan") if fit is None else fit.slope_se,
        "slope_n": 0 if fit is None else fit.n,
        "peak": peak,
        "vanishes": vanishes,
    }


def rate_text(diag: dict) -> str:
    """The measured decay in words and numbers (no class is decided here: the registry judges)."""
    if diag["vanishes"]:
        return "0 (exact at every depth)"
    return (f"L e drifts {diag['drift']:.3g}/decade, increment ratio {diag['increment_ratio']:.3g}, "
            f"slope {diag['slope']:.3f}")


def farthest_from(values, target: float) -> float:
    """The value of ``values`` farthest from ``target`` (nan when any is nan: not measured)."""
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        return float("nan")
    return max(values, key=lambda v: abs(v - target))


# ------------------------------------------------------------ the kernel cases of Fig. 1 and the theorems
# Limits of the normalized kernels (x != x'), from App. Lemmas 5-6 (a_l = lambda_l a_(l-1) + b_l with
# lambda_l = 1 - alpha/l + ..., b_l -> b gives a_l / l -> b / (1 + alpha)):
#   FFNN on the EOC, ReLU-like: f'(c_l) = 1 - 3/l, b = q = sqrt(Sigma^1(x,x) Sigma^1(x',x'))  -> q/4;
#   FFNN on the EOC, smooth phi: f'(c_l) = 1 - 2/l, b = q* (fixed-point variance)            -> q*/3;
#   ReLU ResNet (Thm. 2), K/(L P_L): lambda_l = 1 - 3/l, b = q sigma_w2/2 / (1 + sigma_w2/2) -> b/4,
#     diagonal (lambda_l = 1) -> b with q = Sigma^1(x,x);
#   scaled ReLU ResNet (Prop. 3), K/(P_L ln L): diagonal -> (sigma_w2/2) Sigma^1(x,x) (sum of
#     (sigma_w2/2)/(l + sigma_w2/2)), off-diagonal -> (sigma_w2/2) q / 4 (lambda_l = 1 - 3/(l ln l)).
# The lambda claims measure K/(L q) at the deepest depth, independently of these formulas.


def eoc_case(activation: str, *, sigma_b2: float, pairs, depths, progress=None, point=None) -> dict:
    """Thm. 1: K^L / L of a FFNN on the EOC for each input pair; errors to the limits above (``point``: the
    EOC point if already solved, see ``eoc_points``)."""
    point = eoc_point(activation, sigma_b2=sigma_b2) if point is None else point
    relu_like = relu_like_rho(activation) is not None
    runs = []
    for pair in pairs:
        s11, s12, s22 = first_layer_covariance(pair, sigma_w2=point.sigma_w2, sigma_b2=point.sigma_b2)
        run = ffnn_eoc(activation, point=point, sigma1=(s11, s12, s22), depths=depths, progress=progress)
        q_off = math.sqrt(s11 * s22) if relu_like else point.q
        q11, q22 = (s11, s22) if relu_like else (point.q, point.q)
        runs.append(
            {
                "pair": dict(pair),
                "run": run,
                "q_off": q_off,
                "off_err": run.k12 / depths - q_off / (4.0 if relu_like else 3.0),
                "diag_err": np.maximum(np.abs(run.k11 / depths - q11), np.abs(run.k22 / depths - q22)),
                "lambda_at_max": float(run.k12[-1] / depths[-1] / q_off),
            }
        )
    return {"activation": activation, "point": point, "relu_like": relu_like, "runs": runs}


def resnet_case(*, sigma_w2: float, branch_scale: str, pairs, depths, progress=None) -> dict:
    """Thm. 2 / Prop. 3: normalized K_res^L of a ReLU ResNet (sigma_b = 0) and errors to the limits above.

    ``standard``: K / alpha_L with the paper's alpha_L = L (1 + sigma_w2/2)^(L-1);
    ``scaled``: K / (P_L ln L) (the paper's alpha_L = L^(1 + sigma_w2/2) is checked separately)."""
    alpha = sigma_w2 / 2.0
    runs = []
    for pair in pairs:
        s11, s12, s22 = first_layer_covariance(pair, sigma_w2=sigma_w2, sigma_b2=0.0)
        run = relu_resnet(
            sigma_w2=sigma_w2,
            branch_scale=branch_scale,
            sigma1=(s11, s12, s22),
            depths=depths,
            progress=progress,
        )
        q = math.sqrt(s11 * s22)
        if branch_scale == "standard":
            norm, diag_lim, off_lim = depths.astype(float), alpha / (1 + alpha), alpha / (1 + alpha) / 4
        else:
            norm = np.log(np.maximum(depths, 2).astype(float))
            diag_lim, off_lim = alpha, alpha / 4
        log_k11 = np.log(run.k11) + run.log_p
        runs.append(
            {
                "pair": dict(pair),
                "run": run,
                "q_off": q,
                "off_err": run.k12 / norm - off_lim * q,
                "diag_err": run.k11 / norm - diag_lim * s11,
                "diag_limit_over_paper": float(run.k11[-1] / norm[-1] / s11) if branch_scale == "standard" else None,
                "lambda_at_max": float(run.k12[-1] / math.sqrt(run.k11[-1] * run.k22[-1])),
                "log_k11": log_k11,
            }
        )
    return {"sigma_w2": sigma_w2, "branch_scale": branch_scale, "runs": runs}


def phase_case(activation: str, *, sigma_w2: float, sigma_b2: float, pairs, depth: int) -> dict:
    """Prop. 2: K^L in the ordered or chaotic phase (general float64 recursion), with the fixed point
    q*, chi_1 and, when chi_1 < 1, the constant limit lambda = q* / (1 - chi_1) of every entry."""
    q = meanfield.q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    if not math.isfinite(q):
        raise ValueError(f"{activation} at sigma_w2={sigma_w2}, sigma_b2={sigma_b2}: no finite fixed-point variance")
    chi = meanfield.chi1(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    runs = [
        vars(meanfield.ntk_recursion(first_layer_covariance(pair, sigma_w2=sigma_w2, sigma_b2=sigma_b2), activation,
                                     sigma_w2=sigma_w2, sigma_b2=sigma_b2, depth=depth))
        for pair in pairs
    ]
    limit = q / (1.0 - chi) if chi < 1 else float("nan")
    err = (
        np.max([np.maximum.reduce([np.abs(r[k] - limit) for k in ("k11", "k12", "k22")]) for r in runs], axis=0)
        if chi < 1
        else None
    )
    return {
        "activation": activation,
        "sigma_w2": sigma_w2,
        "sigma_b2": sigma_b2,
        "q": q,
        "chi1": chi,
        "limit": limit,
        "runs": runs,
        "err": err,
        "depths": np.arange(1, depth + 1),
    }
