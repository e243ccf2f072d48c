"""Golikov et al. 2022, sec. 4.3 (with sec. 8.2): Monte Carlo estimates of the NTK against the exact kernel.

Theta_hat^(M) = mean of M empirical NTKs (eq. 3) of width-n nets over independent initializations. It
converges to the limit Theta as n -> inf for any M, and to E Theta_hat as M -> inf at fixed n; E Theta_hat
= Theta + O(1/n) (sec. 8.2, after eq. 157), exactly Theta with one hidden layer (the first layer's
covariance x.x'/d is deterministic, eqs. 56-58). Measured on digits for FC and CNN nets, ReLU and erf:

- grid (widths x sample counts M): relative error ||Theta_hat^(M) - Theta||_F / ||Theta||_F on the train
  Gram, and the test accuracy of kernel regression with Theta_hat^(M) in place of Theta. The draws at one
  width are split into disjoint consecutive groups of M; each group is one Monte Carlo estimate. Curves:
  median over groups (robust to the rare huge draws of narrow ReLU nets); bands: the 10-90% range.
- bias probe (a narrow width, the net's depth and the one-hidden-layer control): many draws in groups.
  The Frobenius error is dominated by the draw-to-draw fluctuation of the kernel's overall scale
  (O(sqrt(depth/n)), common to every entry), which hides an O(1/n) bias unless M >> n. The bias is
  therefore measured on the kernel's shape s(K) = mean off-diagonal / mean diagonal entry, in which the
  scale cancels: delta = s(E Theta_hat) / s(Theta) - 1, estimated from all draws, with a t-statistic
  over the groups. delta != 0 proves E Theta_hat != Theta: a bias that no number of samples removes.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ntkrepro.checks import activation, bad, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.kernels.gaussian import c_sigma
from ntkrepro.nets import cnn, fc
from ntkrepro.plotting import band, figure
from ntkrepro.progress import progress
from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted
from ntkrepro.stage import StageResult, load_split, main
from ntkrepro.stats import Estimate, local_slopes, loglog_fit, mean_se, relative_error

ARCHS = ("fc", "cnn")
PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64}
VARIANCE_ONLY_RATE = -0.5  # the mean of M independent draws: error ~ M^-1/2 when there is no bias


# ---------------------------------------------------------------- models


def make_network(arch: str, *, depth: int, width: int, activation: str, readout: str, dtype):
    """The finite-width net of ``arch`` (FC: sigma_w2 = c_sigma, no bias; CNN: Arora's conventions)."""
    if arch == "fc":
        return fc(depth=depth, width=width, activation=activation, sigma_w2=c_sigma(activation), dtype=dtype)
    if arch == "cnn":
        return cnn(depth=depth, channels=width, activation=activation, readout=readout, dtype=dtype)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def net_inputs(arch: str, images: np.ndarray) -> np.ndarray:
    """FC nets read flattened images, CNNs the (n, H, W, C) images."""
    return images.reshape(len(images), -1) if arch == "fc" else images


def exact_ntks(arch: str, x1, x2=None, *, depths, activation: str, readout: str) -> dict[int, np.ndarray]:
    """The limit NTKs matching :func:`make_network` at each of ``depths`` (float64): {depth: (n1, n2)}.
    FC: every depth from one recursion; CNN: one ``cntk`` call per depth."""
    if arch == "fc":
        k = fc_kernels(x1, x2, depth=max(depths), activation=activation, sigma_w2=c_sigma(activation),
                       sigma_b2=0.0, all_depths=True, dtype=jnp.float64)
        return {d: np.asarray(k.ntk[d - 1], dtype=np.float64) for d in depths}
    if arch == "cnn":
        return {d: np.asarray(cntk(x1, x2, depth=d, readout=readout, activation=activation,
                                   dtype=jnp.float64).ntk, dtype=np.float64) for d in depths}
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


@functools.partial(jax.jit, static_argnames=("init_fn", "apply_fn"))
def _ntk_draws(keys, x, *, init_fn, apply_fn):
    def one(key):
        params = init_fn(key, x.shape)
        jac = jax.vmap(jax.jacrev(lambda p, xi: apply_fn(p, xi[None])[0]), in_axes=(None, 0))(params, x)
        leaves = [leaf.reshape(x.shape[0], leaf.shape[1], -1) for leaf in jax.tree.leaves(jac)]
        return sum(jnp.einsum("ikp,jkp->ij", a, a) for a in leaves) / leaves[0].shape[1]

    return jax.vmap(one)(keys)


def ntk_draws(net, keys, x) -> np.ndarray:
    """Empirical NTKs Theta_hat(x, x) of ``net`` initialized with each key, (len(keys), n, n).

    The Jacobian contraction of ``ntkrepro.empirical.empirical_ntk`` (all parameters, trace over outputs),
    vmapped over draws: thousands of tiny nets cost little more than one. Key s of
    ``jax.random.split(key, N)`` gives the same draw as ``monte_carlo_kernel(..., key, n_samples=N)``.
    """
    return np.asarray(_ntk_draws(keys, jnp.asarray(x), init_fn=net.init_fn, apply_fn=net.apply_fn),
                      dtype=np.float64)


# ---------------------------------------------------------------- metrics


def group_means(samples: np.ndarray, size: int) -> np.ndarray:
    """Means of the disjoint consecutive groups of ``size`` draws, (len(samples) // size, ...)."""
    count = len(samples) // size
    if size < 1 or count < 1:
        raise ValueError(f"group size {size} needs 1..{len(samples)} draws per group")
    return samples[: count * size].reshape(count, size, *samples.shape[1:]).mean(axis=1)


def kernel_shape(k) -> float:
    """s(K) = mean off-diagonal entry / mean diagonal entry of a square Gram (invariant to K's scale)."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] < 2:
        raise ValueError(f"kernel_shape needs a square Gram of at least 2 points, got shape {k.shape}")
    n = k.shape[0]
    diag = np.trace(k)
    return float((k.sum() - diag) / (n * (n - 1)) / (diag / n))


def squared_bias_estimate(sum_dev: np.ndarray, sum_sq_norms: float, count: int) -> float:
    """Unbiased estimate of ||E Theta_hat - Theta||_F^2 from ``count`` draws with deviations d_i:
    the U-statistic mean_{i != j} <d_i, d_j> = (||sum d_i||^2 - sum ||d_i||^2) / (count (count - 1))."""
    if count < 2:
        raise ValueError("the squared-bias estimate needs at least 2 draws")
    return float((np.sum(np.asarray(sum_dev) ** 2) - sum_sq_norms) / (count * (count - 1)))


def t_statistic(values) -> float:
    """mean / (sample std / sqrt(count)) of independent replicate estimates (inf if they all agree)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("a t-statistic needs at least 2 replicates")
    se = v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean() / se) if se > 0 else math.copysign(math.inf, v.mean())


def rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


# ---------------------------------------------------------------- computations


def _key(seed: int, *labels) -> jax.Array:
    """A PRNG key per (arch, activation, depth, width, ...): every draw derives from the config seed."""
    key = jax.random.PRNGKey(seed)
    for label in labels:
        key = jax.random.fold_in(key, label if isinstance(label, int) else zlib.crc32(label.encode()) % 2**31)
    return key


def _regression_accuracy(k_all, n_train, targets, y_test, ridge_rel) -> float:
    k_train, k_test = k_all[:n_train], k_all[n_train:]
    ridge = ridge_rel * float(np.mean(np.diag(k_train)))
    pred = kernel_regression(k_train, targets, k_test, ridge=ridge)
    return float(accuracy(np.asarray(pred), y_test))


def grid_rows(samples, exact_all, *, n_train, sample_counts, targets, y_test, ridge_rel) -> list[dict]:
    """Error and accuracy of every group of M draws, for each M (one row per group)."""
    rows = []
    exact_train = exact_all[:n_train]
    for m in sample_counts:
        for g, mean in enumerate(group_means(samples, m)):
            rows.append({"M": m, "group": g, "error": relative_error(mean[:n_train], exact_train),
                         "accuracy": _regression_accuracy(mean, n_train, targets, y_test, ridge_rel)})
    return rows


def bias_probe(net, key, x, exact, *, n_groups, group_size, batch, checkpoints) -> dict:
    """``n_groups`` x ``group_size`` draws of Theta_hat(x, x), streamed in batches.

    Returns per group and checkpoint M the relative Frobenius error and the shape s of the group's
    running mean (``error``, ``shape``: (n_groups, len(checkpoints))), the shape of each group's full
    mean (``group_shapes``) and of the pooled mean (``pooled_shape``), the U-statistic estimate of the
    squared Frobenius bias and the mean squared deviation of one draw (``bias2``, ``mse1``).
    """
    total = n_groups * group_size
    keys = jax.random.split(key, total)
    norm = np.linalg.norm(exact)
    errors = np.zeros((n_groups, len(checkpoints)))
    shapes = np.zeros((n_groups, len(checkpoints)))
    group_shapes = np.zeros(n_groups)
    sum_all = np.zeros_like(exact)
    sum_sq = 0.0
    for g in range(n_groups):
        running = np.zeros_like(exact)
        for start in range(0, group_size, batch):
            stop = min(start + batch, group_size)
            draws = ntk_draws(net, keys[g * group_size + start: g * group_size + stop], x)
            dev = draws - exact
            sum_sq += float(np.sum(dev**2))
            cumulative = running + np.cumsum(draws, axis=0)
            for c, m in enumerate(checkpoints):
                if start < m <= stop:
                    mean = cumulative[m - start - 1] / m
                    errors[g, c] = np.linalg.norm(mean - exact) / norm
                    shapes[g, c] = kernel_shape(mean)
            running = cumulative[-1]
        sum_all += running
        group_shapes[g] = kernel_shape(running / group_size)
    return {
        "error": errors,
        "shape": shapes,
        "group_shapes": group_shapes,
        "pooled_shape": kernel_shape(sum_all / total),
        "bias2": squared_bias_estimate(sum_all - total * exact, sum_sq, total) / norm**2,
        "mse1": sum_sq / total / norm**2,
    }


def summarize_probe(probe: dict, exact_shape: float) -> dict:
    """delta = s(mean)/s(Theta) - 1 (pooled draws), its t-statistic over groups, the Frobenius bias."""
    deltas = probe["group_shapes"] / exact_shape - 1.0
    bias2 = probe["bias2"]
    return {
        "shape_bias": probe["pooled_shape"] / exact_shape - 1.0,
        "shape_bias_se": float(deltas.std(ddof=1) / math.sqrt(deltas.size)),
        "shape_bias_t": t_statistic(deltas),
        "frobenius_bias": math.sqrt(max(bias2, 0.0)),
        "bias_share_m1": max(bias2, 0.0) / probe["mse1"],
    }


# ---------------------------------------------------------------- stage


def _combos(p):
    return [(arch, act) for arch in p.archs for act in p.activations]


def _activations(values) -> str | None:
    """Every entry a registered activation (``ntkrepro.checks.activation``)."""
    return next((what for what in map(activation, values) if what), None)


def _includes_one(values) -> str | None:
    return None if 1 in values else "must include M = 1 (the single-draw error and its width slope)"


@dataclass
class BiasProbe:
    """Many draws at a narrow width, in groups (the t statistic's replicates)."""

    width: int = param(ge=1)
    n_points: int = param(ge=2, doc="train points whose Gram is probed (a shape needs an off-diagonal)")
    n_groups: int = param(ge=2, doc="replicates of the t statistic")
    group_size: int = param(ge=2)
    batch: int = param(ge=1, doc="draws vmapped at once")


@dataclass
class ArchGrid:
    """The (widths x sample counts) grid of one architecture and its bias probe."""

    widths: list[int] = param(min_len=1, ge=1, distinct=True)
    n_reps: list[int] = param(min_len=1, ge=2, doc="per width: groups at the largest M")
    bias_probe: BiasProbe = param()


@dataclass
class CnnGrid(ArchGrid):
    readout: Literal["vanilla", "gap"] = param()


@dataclass
class Params:
    """``params`` of conf/experiment/golikov2022/mc_vs_exact.yaml."""

    archs: list[Literal["fc", "cnn"]] = param(min_len=1, distinct=True)
    activations: list[str] = param(min_len=1, distinct=True, check=_activations)
    depth: int = param(ge=3, doc="weight layers incl. the readout; >= 3 for a finite-width bias")
    control_depth: int = param(ge=2, doc="one hidden layer: E Theta_hat = Theta exactly")
    net_precision: Literal["float32", "float64"] = param()
    n_samples: list[int] = param(min_len=1, ge=1, distinct=True, check=_includes_one)
    ridge_rel: float = param(ge=0)
    label_pos: float = param()
    label_neg: float = param()
    fc: ArchGrid = param()
    cnn: CnnGrid = param()

    def check(self):
        if self.control_depth >= self.depth:
            raise bad("params.control_depth", f"must be < params.depth = {self.depth} (the control has fewer "
                      "layers than the net whose bias it controls)", self.control_depth)
        if not self.label_pos > self.label_neg:
            raise bad("params.label_pos", f"must be > params.label_neg = {self.label_neg:g} (the one-hot "
                      "target of the true class)", self.label_pos)
        for arch in self.archs:
            grid = getattr(self, arch)
            if len(grid.n_reps) != len(grid.widths):
                raise bad(f"params.{arch}.n_reps", f"needs one entry per width (params.{arch}.widths = "
                          f"{grid.widths})", grid.n_reps)
            q = grid.bias_probe
            refuse_oversized([
                (f"params.{arch}.bias_probe.batch", q.batch, 8 * q.n_points**2, 1,
                 "one batch of probed Grams (batch x n_points^2, float64)"),
                (f"params.{arch}.widths", max(grid.widths), 4 * (9 if arch == "cnn" else 1), 2,
                 "a hidden weight of the widest net (width^2" + (" x 3 x 3" if arch == "cnn" else "")
                 + ", float32)"),
            ])

    def check_config(self, cfg) -> None:
        """``data`` against the params, before it is loaded (the typed params cannot see it): the probed points
        among the train points, and the kept draws of one width (draws x n x n_train, float64) in memory."""
        p = cfg.params
        n_train, n_test = cfg.data.n_train, cfg.data.n_test
        for arch in p.archs:
            if n_train is not None and p[arch].bias_probe.n_points > n_train:
                raise bad(f"params.{arch}.bias_probe.n_points", f"must be <= data.n_train = {n_train} (the probed "
                          "points are train points)", p[arch].bias_probe.n_points)
        if n_train is not None and n_test is not None:
            draws = max(max(p[arch].n_reps) for arch in p.archs) * max(p.n_samples)
            refuse_oversized([("data.n_train", n_train, 8 * draws * (n_train + n_test) / n_train, 2,
                               f"the kept Monte Carlo draws of one width ({draws} draws x (n_train + n_test) x "
                               "n_train, float64)")])


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    n_train = len(train.y)
    images = np.concatenate([np.asarray(train.x), np.asarray(test.x)]).astype(np.float64)
    targets = one_hot_shifted(np.asarray(train.y), train.num_classes, pos=p.label_pos, neg=p.label_neg)
    y_test = np.asarray(test.y)
    net_dtype = PRECISIONS[p.net_precision]
    sample_counts = sorted(int(m) for m in p.n_samples)

    combos = _combos(p)
    exact_all, exact_acc = {}, {}
    for arch, act in progress(combos, desc="exact kernels", enabled=cfg.progress):
        x = net_inputs(arch, images)
        exact_all[arch, act] = exact_ntks(arch, x, x[:n_train], depths=(p.control_depth, p.depth),
                                          activation=act, readout=p.cnn.readout)
        exact_acc[arch, act] = _regression_accuracy(exact_all[arch, act][p.depth], n_train, targets, y_test,
                                                    p.ridge_rel)

    grid = []
    jobs = [(arch, act, w, reps * sample_counts[-1]) for arch, act in combos
            for w, reps in zip(p[arch].widths, p[arch].n_reps, strict=True)]
    for arch, act, width, draws in progress(jobs, desc="mc grid", enabled=cfg.progress):
        x = net_inputs(arch, images).astype(net_dtype)
        net = make_network(arch, depth=p.depth, width=width, activation=act, readout=p.cnn.readout,
                           dtype=net_dtype)
        mc = monte_carlo_kernel(net.init_fn, net.apply_fn, _key(cfg.seed, arch, act, p.depth, width), x,
                                x[:n_train], n_samples=draws, keep_samples=True,
                                implementation="jacobian")
        samples = np.asarray(mc.samples, dtype=np.float64)
        for row in grid_rows(samples, exact_all[arch, act][p.depth], n_train=n_train,
                             sample_counts=sample_counts, targets=targets, y_test=y_test,
                             ridge_rel=p.ridge_rel):
            grid.append({"arch": arch, "activation": act, "width": width, **row})
    grid = pd.DataFrame(grid)

    probe_rows, bias_rows = [], []
    probe_jobs = [(arch, act, depth) for arch, act in combos for depth in (p.control_depth, p.depth)]
    for arch, act, depth in progress(probe_jobs, desc="bias probe", enabled=cfg.progress):
        q = p[arch].bias_probe
        x = net_inputs(arch, images[: q.n_points]).astype(net_dtype)  # the first train points
        exact = exact_all[arch, act][depth][: q.n_points, : q.n_points]
        net = make_network(arch, depth=depth, width=q.width, activation=act, readout=p.cnn.readout,
                           dtype=net_dtype)
        checkpoints = _powers_of_two(q.group_size)
        probe = bias_probe(net, _key(cfg.seed, "probe", arch, act, depth, q.width), x, exact,
                           n_groups=q.n_groups, group_size=q.group_size, batch=q.batch,
                           checkpoints=checkpoints)
        exact_shape = kernel_shape(exact)
        bias_rows.append({"arch": arch, "activation": act, "depth": depth, "width": q.width,
                          "draws": q.n_groups * q.group_size, "n_groups": q.n_groups, "exact_shape": exact_shape,
                          **summarize_probe(probe, exact_shape)})
        for c, m in enumerate(checkpoints):
            errs, shape_dev = probe["error"][:, c], probe["shape"][:, c] / exact_shape - 1.0
            probe_rows.append({"arch": arch, "activation": act, "depth": depth, "width": q.width, "M": m,
                               "error_rms": rms(errs), "error_q10": np.quantile(errs, 0.1),
                               "error_q90": np.quantile(errs, 0.9), "shape_dev_rms": rms(shape_dev),
                               "shape_dev_q10": np.quantile(np.abs(shape_dev), 0.1),
                               "shape_dev_q90": np.quantile(np.abs(shape_dev), 0.9)})
    bias = pd.DataFrame(bias_rows)
    probe_table = pd.DataFrame(probe_rows)

    summary, metrics, uncertainty = summarize_grid(grid, exact_acc, seed=cfg.seed)
    published = paper_values(Path(__file__).with_name("claims.yaml"), "mc_vs_exact")
    probe_metrics, probe_uncertainty = bias_metrics(bias, depth=p.depth, control_depth=p.control_depth)
    metrics.update(probe_metrics)
    uncertainty.update(probe_uncertainty)
    figures = {
        "mc_error_vs_width": _plot_vs(summary, combos, x="width", lines="M", value="error", logy=True,
                                      reference_slopes={c: published.get(f"err_slope_width_m1_{c[0]}_{c[1]}")
                                                        for c in combos}, reference_label="paper's rate"),
        "mc_error_vs_samples": _plot_vs(summary, combos, x="M", lines="width", value="error", logy=True,
                                        reference_slopes=dict.fromkeys(combos, VARIANCE_ONLY_RATE),
                                        reference_label="M^-1/2 (variance only)"),
        "mc_accuracy_vs_width": _plot_vs(summary, combos, x="width", lines="M", value="accuracy", logy=False,
                                         exact=exact_acc),
        "mc_bias": _plot_bias(probe_table, bias, combos, p.depth, p.control_depth),
    }
    return StageResult(
        metrics=metrics,
        data=train.provenance,
        sizes={"n_train": n_train, "n_test": len(y_test), "depth": p.depth, "control_depth": p.control_depth,
               "n_samples": sample_counts,
               "net_precision": p.net_precision,
               **{f"widths_{arch}": list(p[arch].widths) for arch in p.archs},
               **{f"draws_{arch}": [r * sample_counts[-1] for r in p[arch].n_reps] for arch in p.archs},
               **{f"probe_draws_{arch}": p[arch].bias_probe.n_groups * p[arch].bias_probe.group_size
                  for arch in p.archs}},
        seeds=[cfg.seed],
        tables={"mc_grid_summary": summary, "mc_bias": bias, "mc_bias_probe": probe_table},
        figures=figures,
        uncertainty=uncertainty,
        notes=[f"exact-kernel test accuracy {arch}/{act}: {acc:.3f}"
               for (arch, act), acc in exact_acc.items()],
    )


def _powers_of_two(limit: int) -> list[int]:
    return [2**k for k in range(int(math.log2(limit)) + 1)] + ([limit] if limit & (limit - 1) else [])


def bootstrap_slope_se(errors_by_width: dict, *, n_boot: int, seed: int) -> float:
    """Standard error of the log-log slope of the median error against width, by resampling the draws of
    every width with replacement (``errors_by_width``: width -> single-draw errors)."""
    rng = np.random.default_rng(seed)
    widths = sorted(errors_by_width)
    slopes = [loglog_fit(widths, [np.median(rng.choice(errors_by_width[w], len(errors_by_width[w])))
                                    for w in widths]).slope for _ in range(n_boot)]
    return float(np.std(slopes, ddof=1))


def summarize_grid(grid: pd.DataFrame, exact_acc: dict, *,
                   seed: int = 0) -> tuple[pd.DataFrame, dict, dict]:
    """Per (arch, activation, width, M): median (``error``), RMS and 10-90% range of the error and mean /
    10-90% of the accuracy over groups. Returns (summary, metrics, uncertainty): slopes of the median error
    against width and M (the M = 1 width slope with its bootstrap standard error over the draws and its
    local slopes), the accuracy gaps at the narrowest width with the paired reduction from M = 1 to M_max
    (standard error over the M_max groups), and the orderings the claims check (None where the grid has
    fewer than 2 widths or 2 sample counts: nothing to order). The median, not the RMS: at small widths a
    rare draw whose kernel scale is several times too large (ReLU: the scale is a product of per-layer
    chi-square-like factors) dominates a mean over a few dozen draws; both scale as n^-1/2 once the
    fluctuations are Gaussian."""
    rows = []
    for (arch, act, width, m), g in grid.groupby(["arch", "activation", "width", "M"]):
        rows.append({"arch": arch, "activation": act, "width": width, "M": m, "groups": len(g),
                     "error": g.error.median(), "error_rms": rms(g.error), "error_q10": g.error.quantile(0.1),
                     "error_q90": g.error.quantile(0.9), "accuracy": g.accuracy.mean(),
                     "accuracy_q10": g.accuracy.quantile(0.1), "accuracy_q90": g.accuracy.quantile(0.9),
                     "accuracy_exact": exact_acc[arch, act]})
    summary = pd.DataFrame(rows)
    metrics, uncertainty = {}, {}
    slopes_width, slopes_samples, gaps_shrink = [], [], []
    for (arch, act), s in summary.groupby(["arch", "activation"]):
        tag = f"{arch}_{act}"
        m_values = sorted(s.M.unique())
        widths = sorted(s.width.unique())
        for m in m_values:
            by_width = s[s.M == m].sort_values("width")
            slope = loglog_fit(by_width.width, by_width.error).slope if len(widths) > 1 else math.nan
            if m == m_values[0]:
                name = f"err_slope_width_m{m}_{tag}"
                metrics[name] = slope
                single = grid[(grid.arch == arch) & (grid.activation == act) & (grid.M == m)]
                se = (bootstrap_slope_se({w: g.error.to_numpy() for w, g in single.groupby("width")},
                                         n_boot=200, seed=seed) if len(widths) > 1 else math.nan)
                metrics[f"err_slope_width_m{m}_se_{tag}"] = se
                if len(widths) > 1:
                    uncertainty[name] = Estimate(slope, se, len(widths), "widths (bootstrap se over draws)").record()
                    metrics[f"err_local_slopes_width_m{m}_{tag}"] = [
                        round(float(v), 3) for v in local_slopes(by_width.width, by_width.error)]
            if m == m_values[-1]:
                metrics[f"err_slope_width_m{m}_{tag}"] = slope
            if len(widths) > 1:
                slopes_width.append(slope)
        for w in widths:
            by_m = s[s.width == w].sort_values("M")
            if len(m_values) > 1:
                slopes_samples.append(loglog_fit(by_m.M, by_m.error).slope)
        metrics[f"err_slope_samples_max_{tag}"] = (
            float(np.max(slopes_samples[-len(widths):])) if len(m_values) > 1 else math.nan)
        narrow = s[s.width == widths[0]].set_index("M")
        metrics[f"acc_exact_{tag}"] = exact_acc[arch, act]
        metrics[f"acc_gap_m{m_values[0]}_{tag}"] = exact_acc[arch, act] - narrow.accuracy[m_values[0]]
        metrics[f"acc_gap_m{m_values[-1]}_{tag}"] = exact_acc[arch, act] - narrow.accuracy[m_values[-1]]
        if len(m_values) > 1:
            cells = grid[(grid.arch == arch) & (grid.activation == act) & (grid.width == widths[0])]
            reduction = paired_accuracy_gain(cells, m_values[0], m_values[-1])
            metrics[f"acc_gap_reduction_{tag}"] = reduction.value
            uncertainty[f"acc_gap_reduction_{tag}"] = reduction.record()
            gaps_shrink.append(metrics[f"acc_gap_m{m_values[-1]}_{tag}"] < metrics[f"acc_gap_m{m_values[0]}_{tag}"])
    metrics["error_decreases_with_width"] = bool(np.all(np.asarray(slopes_width) < 0)) if slopes_width else None
    metrics["error_decreases_with_samples"] = (bool(np.all(np.asarray(slopes_samples) < 0))
                                               if slopes_samples else None)
    metrics["accuracy_gap_shrinks_with_samples"] = bool(all(gaps_shrink)) if gaps_shrink else None
    return summary, metrics, uncertainty


def paired_accuracy_gain(cells: pd.DataFrame, m_small: int, m_large: int) -> Estimate:
    """Mean over the groups of ``m_large`` draws of (accuracy of the group's mean kernel - mean accuracy of
    its ``m_small``-draw sub-groups), with its standard error over those groups (independent draws). The
    sub-groups of group g are groups g*k .. g*k + k - 1 of size ``m_small`` (k = m_large / m_small; the
    groups are consecutive), so the mean over groups equals the difference of the two mean accuracies."""
    if m_large % m_small:
        raise ValueError(f"M = {m_large} is not a multiple of M = {m_small}")
    k = m_large // m_small
    small = cells[cells.M == m_small].set_index("group").accuracy
    large = cells[cells.M == m_large].set_index("group").accuracy
    if len(small) != k * len(large):
        raise ValueError(f"{len(large)} groups of M = {m_large} need {k * len(large)} groups of M = {m_small}, "
                         f"got {len(small)}")
    gains = [large[g] - small.loc[g * k: g * k + k - 1].mean() for g in large.index]
    return mean_se(gains, over="groups of M_max draws")


def bias_metrics(bias: pd.DataFrame, *, depth: int, control_depth: int) -> tuple[dict, dict]:
    """Raw measurements of the bias probe (the registry's tolerances decide): per (arch, activation) the
    shape bias delta (uncertainty: its standard error over the groups), its t statistic and Frobenius
    bias at both depths; at ``depth`` the size |t| of the t statistic (large: a bias is resolved from
    zero) and the share of one draw's mean squared error that is squared
    bias; the largest |t| over the combinations at ``control_depth`` (exactly unbiased: t ~ Student) and the
    largest bias share at ``depth``."""
    metrics, uncertainty, control_t, shares = {}, {}, [], []
    for row in bias.itertuples(index=False):
        tag = f"{row.arch}_{row.activation}_depth{row.depth}"
        metrics[f"shape_bias_{tag}"] = row.shape_bias
        uncertainty[f"shape_bias_{tag}"] = {"se": float(row.shape_bias_se), "n": int(row.n_groups),
                                            "over": "groups of draws"}
        metrics[f"shape_bias_t_{tag}"] = row.shape_bias_t
        metrics[f"frobenius_bias_{tag}"] = row.frobenius_bias
        if row.depth == depth:
            metrics[f"bias_share_m1_{row.arch}_{row.activation}"] = row.bias_share_m1
            metrics[f"shape_bias_abs_t_{row.arch}_{row.activation}"] = abs(float(row.shape_bias_t))
            shares.append(row.bias_share_m1)
        if row.depth == control_depth:
            control_t.append(abs(row.shape_bias_t))
    metrics["control_shape_bias_abs_t_max"] = float(max(control_t)) if control_t else None
    metrics["bias_share_m1_max"] = float(max(shares)) if shares else None
    return metrics, uncertainty


# ---------------------------------------------------------------- figures


def _plot_vs(summary, combos, *, x, lines, value, logy, reference_slopes=None, reference_label=None,
             exact=None):
    fig, axes = figure(1, len(combos), height=2.6)
    for (arch, act), ax in zip(combos, np.atleast_1d(axes).reshape(-1), strict=True):
        s = summary[(summary.arch == arch) & (summary.activation == act)]
        for level, g in s.groupby(lines):
            g = g.sort_values(x)
            band(ax, g[x], g[value], g[f"{value}_q10"], g[f"{value}_q90"], label=f"{lines}={level}",
                 marker="o", markersize=2.5)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        slope = (reference_slopes or {}).get((arch, act))
        if slope is not None:  # through the first point of the top curve
            x0 = float(s[x].min())
            y0 = float(s[s[x] == x0][value].max())
            xs = np.array([x0, float(s[x].max())])
            ax.plot(xs, y0 * (xs / x0) ** slope, "k--", linewidth=0.8, label=f"{reference_label} ({slope:g})")
        if exact is not None:
            ax.axhline(exact[arch, act], color="black", linestyle="--", linewidth=0.8, label="exact kernel")
        ax.set_title(f"{arch.upper()} {act}")
        ax.set_xlabel("width n" if x == "width" else "samples M")
        ax.set_ylabel("relative error" if value == "error" else "test accuracy")
        ax.legend(fontsize=5)
    return fig


def _plot_bias(probe_table, bias, combos, depth, control_depth):
    fig, axes = figure(2, len(combos), height=2.4)
    axes = np.asarray(axes).reshape(2, len(combos))
    for col, (arch, act) in enumerate(combos):
        top, bottom = axes[0, col], axes[1, col]
        for d in (control_depth, depth):
            g = probe_table[(probe_table.arch == arch) & (probe_table.activation == act)
                            & (probe_table.depth == d)].sort_values("M")
            line = band(top, g.M, g.error_rms, g.error_q10, g.error_q90, label=f"depth {d}")
            top.plot(g.M, g.error_rms.iloc[0] * g.M**VARIANCE_ONLY_RATE, ":", color=line.get_color(),
                     linewidth=0.8)
            line = band(bottom, g.M, g.shape_dev_rms, g.shape_dev_q10, g.shape_dev_q90, label=f"depth {d}")
            row = bias[(bias.arch == arch) & (bias.activation == act) & (bias.depth == d)].iloc[0]
            bottom.axhline(abs(row.shape_bias), color=line.get_color(), linestyle="--", linewidth=0.8,
                           label=f"|delta| all draws ({row.shape_bias:+.3f}, t={row.shape_bias_t:.1f})")
        width = int(bias[(bias.arch == arch) & (bias.activation == act)].width.iloc[0])
        top.set_title(f"{arch.upper()} {act}, width {width}")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("samples M")
            ax.legend(fontsize=5)
        top.set_ylabel("relative error (dotted: M^-1/2)")
        bottom.set_ylabel("|s(mean)/s(exact) - 1|")
    return fig


if __name__ == "__main__":
    main(run, params=Params)
