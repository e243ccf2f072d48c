"""Arora et al. 2019, Table 1: CNTK-V / CNTK-GAP kernel regression (full training set and the "-2K"
subset, read off the same Gram) and SGD-trained CNN-V / CNN-GAP against depth. Each CNN cell is the grid
run with the best accuracy on a validation split carved from the training images (the CNNs train on the
rest); the cell reports that run's test accuracy. The test set never takes part in a choice."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from arora_common import (
    READOUTS,
    check_labels,
    cnn_weight_estimate,
    cntk_blocks,
    cntk_grams,
    gram_estimates,
    image_pixels,
    itemsize,
    load_images,
    log_axis_with_ticks,
    odd,
    regression_accuracy,
    split_size,
)
from scipy.stats import spearmanr

from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.data import select_subset
from ntkrepro.empirical import empirical_ntk
from ntkrepro.nets import cnn
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.regression import accuracy, one_hot_shifted
from ntkrepro.stage import StageResult, main
from ntkrepro.train import TrainingDiverged, train

TABLE_DEPTHS = (3, 4, 6, 11, 21)
SHORT = {"vanilla": "v", "gap": "gap"}
COLUMNS = [("cnn_v", "CNN-V"), ("cntk_v", "CNTK-V"), ("cntk_v_2k", "CNTK-V-2K"),
           ("cnn_gap", "CNN-GAP"), ("cntk_gap", "CNTK-GAP"), ("cntk_gap_2k", "CNTK-GAP-2K")]


def cnn_learning_rate(net, params, probe, lr_units: float) -> float:
    """``lr_units`` / mean_i Theta_hat(x_i, x_i): the initial empirical NTK's diagonal on ``probe`` (per
    output) bounds lambda_max(Theta_batch) / batch, so lr_units < 2 keeps SGD on the mean square loss
    stable in the kernel regime."""
    theta = np.asarray(empirical_ntk(net.apply_fn, params, probe, trainable=net.trainable_mask))
    return float(lr_units / np.mean(np.diag(theta)))


@dataclass
class Subset:
    """``params.subset``: the "-2K" columns, read off the full Gram."""

    n_train: int = param(ge=1, doc="training points of the subset (Sec. 5.1: 2,000); <= data.n_train")
    seed: int = param(ge=0, doc="which points (class-balanced, seeded)")


@dataclass
class VanillaDepths:
    """``params.vanilla``: the CNTK-V column."""

    depths: list[int] = param(min_len=1, ge=2, distinct=True, doc="CNTK depths (conv layers + 1), >= 2")


@dataclass
class GapDepths:
    """``params.gap``: the CNTK-GAP column (first and last layer fixed: a trained middle needs depth >= 3)."""

    depths: list[int] = param(min_len=1, ge=3, distinct=True, doc="CNTK-GAP depths, >= 3")


@dataclass
class CnnGrid:
    """``params.cnn``: the SGD-trained CNN-V / CNN-GAP, best of a grid selected on a validation split."""

    depths: list[int] = param(min_len=1, ge=3, distinct=True, doc="CNN depths (both readouts; GAP needs >= 3)")
    channels: list[int] = param(min_len=1, ge=1, distinct=True, doc="channel grid")
    lrs: list[float] = param(min_len=1, gt=0, distinct=True, doc="learning rates, units of 1 / mean NTK diagonal")
    kappa: list[float] = param(min_len=1, gt=0, distinct=True, doc="output multipliers (0: no output, no gradient)")
    epochs: int = param(ge=1)
    batch_size: int = param(ge=1, doc="<= the CNN's fit images (data.n_train - n_val)")
    lr_probe: int = param(ge=1, doc="fit images on which the initial NTK diagonal sets the lr unit")
    seed: int = param(ge=0)
    n_val: int = param(ge=1, doc="validation images carved from the training set; <= data.n_train - 1")
    val_seed: int = param(ge=0)


@dataclass
class Params:
    """``params`` of Table 1 (conf/experiment/arora2019/table1.yaml)."""

    filter_size: int = param(ge=1, check=odd, doc="q (Sec. 5.1: 3)")
    downsample: int = param(ge=1, doc="average-pool factor (1 = native resolution); divides the image side")
    ridge: float = param(ge=0, doc="ridge of the kernel solve (Sec. 5.1: 0)")
    label_pos: float = param(doc="target of the true class (Sec. 5.1: 0.9)")
    label_neg: float = param(doc="target of the other classes (Sec. 5.1: -0.1)")
    subset: Subset = param()
    vanilla: VanillaDepths = param()
    gap: GapDepths = param()
    gram_tile: int = param(ge=1, doc="ntkrepro.gram tile side (cache granularity only)")
    cnn: CnnGrid = param()

    def check(self):
        check_labels(self.label_pos, self.label_neg)
        c = self.cnn
        refuse_oversized([cnn_weight_estimate("params.cnn.channels", c.channels, depth=max(c.depths),
                                              filter_size=self.filter_size, what="the weights of the widest CNN")])

    def check_config(self, cfg) -> None:
        """Refuse, before any data is loaded, what the typed params cannot see alone: the split sizes against
        the validation split, the subset, the batch and the lr probe; the downsampling factor against the
        images; the CNTK Grams and the CNN's activations against memory (one line naming the parameter)."""
        p, c = cfg.params, cfg.params.cnn
        n_tr, n_te = split_size(cfg, "train"), split_size(cfg, "test")
        if c.n_val > n_tr - 1:
            raise bad("params.cnn.n_val", f"must be in [1, data.n_train - 1 = {n_tr - 1}] (the CNNs train on the "
                      "other training images)", c.n_val)
        n_fit = n_tr - c.n_val
        if c.batch_size > n_fit:
            raise bad("params.cnn.batch_size", f"must be <= the {n_fit} images the CNNs train on (data.n_train - "
                      f"params.cnn.n_val): an epoch would have no batch", c.batch_size)
        if c.lr_probe > n_fit:
            raise bad("params.cnn.lr_probe", f"must be <= the {n_fit} images the CNNs train on (data.n_train - "
                      "params.cnn.n_val)", c.lr_probe)
        if p.subset.n_train > n_tr:
            raise bad("params.subset.n_train", f"must be <= data.n_train = {n_tr} (a subset of the training set)",
                      p.subset.n_train)
        pixels, size, widest = image_pixels(cfg, p.downsample), itemsize(cfg.precision), max(c.channels)
        n_eval = max(n_te, c.n_val)
        refuse_oversized([
            *gram_estimates(cfg, large_path=True),
            ("params.cnn.batch_size", c.batch_size, size * pixels * widest * (max(c.depths) - 1), 1,
             f"the CNN activations of one batch kept for backpropagation (batch x {pixels} pixels x "
             f"{widest} channels x {max(c.depths) - 1} layers, {cfg.precision})"),
            ("params.cnn.channels", widest, size * pixels * n_eval, 1,
             f"one CNN layer's activations over the {n_eval} test or validation images in one forward pass "
             f"(images x {pixels} pixels x channels, {cfg.precision})"),
        ])


def validation_split(labels, n_val: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val): positions in the training set. ``val`` is a seeded random subset of ``n_val`` training
    images (on which the CNN grid is selected), ``fit`` the others (on which the CNNs train); both
    sorted, disjoint, together the whole training set."""
    n = len(labels)
    if isinstance(n_val, bool) or int(n_val) != n_val or not 1 <= n_val < n:
        raise ValueError(f"params.cnn.n_val must be an integer in [1, {n - 1}] (n_train = {n}), got {n_val!r}")
    val = np.sort(select_subset(np.asarray(labels), int(n_val), seed=seed, split="train"))
    return np.setdiff1d(np.arange(n), val), val


def train_cnn(x_fit, t_fit, x_val, t_val, x_te, y_te, *, depth, readout, channels, lr_units, kappa, c,
              filter_size, key) -> dict:
    """One SGD run of Table 1's CNN (square loss, constant learning rate) on the fit images; final-epoch
    accuracies (%) on the fit, validation and test images."""
    dtype = x_fit.dtype
    net = cnn(depth=depth, channels=channels, out_dim=t_fit.shape[1], readout=readout,
              fix_first_last=readout == "gap", filter_size=filter_size, output_scale=kappa, dtype=dtype)
    init_key, sgd_key = jax.random.split(key)
    params = net.init_fn(init_key, x_fit.shape)
    eta = cnn_learning_rate(net, params, x_fit[: c.lr_probe], lr_units)
    steps = c.epochs * (len(x_fit) // c.batch_size)
    row = {"readout": readout, "depth": depth, "channels": channels, "lr_units": lr_units,
           "kappa": kappa, "learning_rate": eta, "steps": steps}
    try:
        result = train(net.apply_fn, params, x_fit, t_fit, steps=steps, learning_rate=eta, loss="mse",
                       batch_size=c.batch_size, key=sgd_key, trainable=net.trainable_mask,
                       x_test=x_val, y_test=t_val)
    except TrainingDiverged as err:
        return {**row, "diverged_at": err.step, "train_acc": np.nan, "val_acc": np.nan, "test_acc": np.nan,
                "loss_curve": err.history["loss"]}
    final = result.evals[-1]
    test_acc = 100 * accuracy(np.asarray(net.apply_fn(result.params, x_te)), y_te)
    return {**row, "diverged_at": None, "train_acc": 100 * final["train_accuracy"],
            "val_acc": 100 * final["test_accuracy"], "test_acc": test_acc, "train_loss": final["train_loss"],
            "loss_curve": result.history["loss"]}


def select_cnn_cells(grid: pd.DataFrame) -> tuple[dict, dict, pd.DataFrame]:
    """Table 1's CNN cells from the grid runs (columns readout, depth, val_acc, test_acc, diverged_at).

    Per (readout, depth): among the runs that did not diverge, the one with the highest validation
    accuracy (the first in grid order on a tie); the cell is that run's test accuracy. Test accuracies are
    only read off the selected runs. Returns (cells {(column, depth): accuracy}, diverged {(column,
    depth): (diverged, runs)}, the selected rows). A cell whose runs all diverged stays unmeasured."""
    cells, diverged, chosen = {}, {}, []
    for (readout, depth), sel in grid.groupby(["readout", "depth"], sort=False):
        col = f"cnn_{SHORT[readout]}"
        ok = sel[sel.diverged_at.isna()]
        diverged[(col, int(depth))] = (len(sel) - len(ok), len(sel))
        if len(ok):
            best = ok.loc[ok.val_acc.idxmax()]
            cells[(col, int(depth))] = float(best.test_acc)
            chosen.append(best)
    return cells, diverged, pd.DataFrame(chosen)


def _mean_gain(cells: dict, better: str, worse: str):
    """Mean over the depths where both columns were measured of column ``better`` minus ``worse``."""
    pairs = [(cells[(better, d)], cells[(worse, d)]) for d in TABLE_DEPTHS
             if (better, d) in cells and (worse, d) in cells]
    return float(np.mean([a - b for a, b in pairs])) if pairs else None


def rank_correlation(a, b):
    """Spearman's rho of two equally long lists; None for fewer than 3 values or a constant list."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b)[0])


def summarize(cells: dict) -> dict:
    """Table 1's metrics and the text's claims from ``cells[(column, depth)] = accuracy (%)``."""
    metrics = {f"acc_{col}_d{d}": cells.get((col, d)) for col, _ in COLUMNS for d in TABLE_DEPTHS}
    kernels = {(col, d): v for (col, d), v in cells.items() if col in ("cntk_v", "cntk_gap")}
    if kernels:
        (best_col, best_d), best = max(kernels.items(), key=lambda kv: kv[1])
        metrics.update(best_kernel_acc=best, best_kernel_depth=best_d,
                       best_kernel_is_gap=best_col == "cntk_gap")
    else:
        metrics.update(best_kernel_acc=None, best_kernel_depth=None, best_kernel_is_gap=None)
    vanilla = {d: v for (col, d), v in cells.items() if col == "cntk_v"}
    metrics["best_depth_cntk_v"] = max(vanilla, key=vanilla.get) if vanilla else None
    gap = {d: v for (col, d), v in cells.items() if col == "cntk_gap"}
    metrics["best_depth_cntk_gap"] = max(gap, key=gap.get) if gap else None
    metrics["gap_gain_cntk"] = _mean_gain(cells, "cntk_gap", "cntk_v")
    metrics["gap_gain_cntk_2k"] = _mean_gain(cells, "cntk_gap_2k", "cntk_v_2k")
    metrics["gap_gain_cnn"] = _mean_gain(cells, "cnn_gap", "cnn_v")
    common = [d for d in TABLE_DEPTHS if ("cntk_v", d) in cells and ("cntk_gap", d) in cells]
    metrics["gap_beats_vanilla_cntk"] = (
        all(cells[("cntk_gap", d)] > cells[("cntk_v", d)]
            and cells[("cntk_gap_2k", d)] > cells[("cntk_v_2k", d)] for d in common)
        if common else None)
    cnns = [v for (col, _), v in cells.items() if col.startswith("cnn")]
    metrics["cnn_minus_cntk_best"] = (max(cnns) - max(kernels.values())) if cnns and kernels else None
    full = [(col, d) for col, d in kernels]
    metrics["rank_corr_2k_full"] = rank_correlation([cells[c] for c in full],
                                                    [cells[(c[0] + "_2k", c[1])] for c in full])
    within = []
    for readout in READOUTS:
        col = f"cntk_{SHORT[readout]}"
        depths = [d for d in TABLE_DEPTHS if (col, d) in cells]
        within.append(rank_correlation([cells[(col, d)] for d in depths], [cells[(col + "_2k", d)] for d in depths]))
        metrics[f"rank_corr_2k_full_{readout}"] = within[-1]
    # the pooled rho is carried by the readout (every GAP cell above every vanilla one in both columns):
    # the claim reads the weaker of the within-readout correlations
    metrics["rank_corr_2k_full_within_min"] = None if None in within else min(within)
    return metrics


def _figure(cells: dict, paper: dict, data_label: str):
    fig, axes = figure(1, 3, height=2.5)
    colors = {"cntk": "C0", "cntk_2k": "C1", "cnn": "C2"}
    for ax, readout in zip(axes[0, :2], READOUTS, strict=True):
        s = SHORT[readout]
        for kind, label in (("cntk", "CNTK"), ("cntk_2k", "CNTK-2K"), ("cnn", "CNN")):
            col = f"{kind.split('_')[0]}_{s}" + ("_2k" if kind.endswith("2k") else "")
            depths = [d for d in TABLE_DEPTHS if (col, d) in cells]
            if depths:
                ax.plot(depths, [cells[(col, d)] for d in depths], "o-", color=colors[kind],
                        label=f"{label} (ours)")
            ref = [paper.get(f"acc_{col}_d{d}") for d in TABLE_DEPTHS]
            ax.plot(TABLE_DEPTHS, ref, "x--", color=colors[kind], alpha=0.6, label=f"{label} (paper, CIFAR-10)")
        log_axis_with_ticks(ax, TABLE_DEPTHS, label="depth")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{'vanilla' if readout == 'vanilla' else 'GAP'} ({data_label})")
    axes[0, 0].legend(fontsize=5, ncol=2)
    ax = axes[0, 2]
    for readout, marker in (("vanilla", "o"), ("gap", "s")):
        col = f"cntk_{SHORT[readout]}"
        depths = [d for d in TABLE_DEPTHS if (col, d) in cells]
        ax.scatter([cells[(col, d)] for d in depths], [cells[(col + "_2k", d)] for d in depths],
                   marker=marker, label=f"CNTK-{'V' if readout == 'vanilla' else 'GAP'}")
        for d in depths:
            ax.annotate(str(d), (cells[(col, d)], cells[(col + "_2k", d)]), fontsize=5)
    ax.set_xlabel("full training set (%)")
    ax.set_ylabel("subset (%)")
    ax.set_title("subset vs full (labels: depth)")
    ax.legend()
    return fig


load = load_images  # the data Table 1 reads (for its Gram tile jobs too)


def grams(cfg, data) -> dict:
    """Every CNTK Gram Table 1 computes, in its order: K(train, train) and K(test, train) per readout and
    depth of ``params.vanilla`` / ``params.gap`` (the Gram tile jobs compute these; nothing else lists them)."""
    return cntk_grams(cfg, data, [(readout, d) for readout in READOUTS for d in cfg.params[readout].depths])


def run(cfg) -> StageResult:
    p = cfg.params
    c = p.cnn
    data = load(cfg)
    train_set, test_set, x_tr, x_te = data.train, data.test, data.x_train, data.x_test
    y_tr, y_te = np.asarray(train_set.y), np.asarray(test_set.y)
    k = train_set.num_classes
    subset = select_subset(y_tr, p.subset.n_train, seed=p.subset.seed, split="train", balanced=True,
                           num_classes=k)
    fit, val = validation_split(y_tr, c.n_val, seed=c.val_seed)
    reg = dict(num_classes=k, ridge=p.ridge, label_pos=p.label_pos, label_neg=p.label_neg)

    cells, kernel_rows = {}, []
    for (readout, depth), pair in progress(list(grams(cfg, data).items()), desc="CNTK Grams", enabled=cfg.progress):
        k_tr, k_te = cntk_blocks(pair, cfg=cfg)
        col = f"cntk_{SHORT[readout]}"
        cells[(col + "_2k", depth)] = regression_accuracy(k_tr[np.ix_(subset, subset)], k_te[:, subset],
                                                          y_tr[subset], y_te, **reg)
        cells[(col, depth)] = regression_accuracy(k_tr, k_te, y_tr, y_te, **reg,
                                                  overwrite_k=pair[0].into is not None)  # last: may destroy k_tr
        kernel_rows.append({"readout": readout, "depth": depth, "acc_full": cells[(col, depth)],
                            "acc_subset": cells[(col + "_2k", depth)]})
        del k_tr, k_te  # before the next pair is computed: one pair alive at a time

    t_tr = np.asarray(one_hot_shifted(y_tr, k, pos=p.label_pos, neg=p.label_neg), dtype=x_tr.dtype)
    x_fit, t_fit, x_val, t_val = x_tr[fit], t_tr[fit], x_tr[val], t_tr[val]
    grid = list(itertools.product(READOUTS, c.depths, c.channels, c.lrs, c.kappa))
    runs, step_metrics = [], {}
    for i, (readout, depth, channels, lr_units, kappa) in enumerate(
            progress(grid, desc="CNN grid", enabled=cfg.progress)):
        key = jax.random.fold_in(jax.random.PRNGKey(c.seed), i)
        r = train_cnn(x_fit, t_fit, x_val, t_val, x_te, y_te, depth=depth, readout=readout,
                      channels=channels, lr_units=float(lr_units), kappa=float(kappa), c=c,
                      filter_size=p.filter_size, key=key)
        curve = r.pop("loss_curve")
        stride = max(1, len(curve) // 200)
        step_metrics[f"cnn_loss_{SHORT[readout]}_d{depth}_c{channels}_lr{lr_units:g}_k{kappa:g}"] = [
            (int(s), float(curve[s])) for s in range(0, len(curve), stride)]
        runs.append(r)
    grid_table = pd.DataFrame(runs)
    cnn_cells, cnn_diverged, selected = select_cnn_cells(grid_table)
    cells.update(cnn_cells)

    metrics = summarize(cells)
    metrics["cnn_runs_diverged"] = int(grid_table.diverged_at.notna().sum())
    diverged = {f"acc_{col}_d{d}": {"diverged": kd, "runs": n} for (col, d), (kd, n) in cnn_diverged.items()}
    all_cnn = {"diverged": metrics["cnn_runs_diverged"], "runs": len(grid_table)}
    diverged.update(gap_gain_cnn=all_cnn, cnn_minus_cntk_best=all_cnn)
    table = pd.DataFrame([{"depth": d, **{name: cells.get((col, d)) for col, name in COLUMNS}}
                          for d in TABLE_DEPTHS])
    prov = train_set.provenance
    data_label = prov.name + (f", stand-in for {prov.substituted_for}" if prov.substituted_for else "")
    side = x_tr.shape[1]
    return StageResult(
        metrics=metrics,
        data=prov,
        sizes={"n_train": len(x_tr), "n_test": len(x_te), "n_subset": len(subset),
               "n_cnn_fit": len(fit), "n_cnn_val": len(val),
               "image": f"{side}x{x_tr.shape[2]}x{x_tr.shape[3]}", "downsample": p.downsample,
               "cnn_grid_runs": len(grid)},
        seeds=[cfg.seed, p.subset.seed, c.seed, c.val_seed],
        tables={"table1": table, "cnn_grid": grid_table, "cnn_selected": selected,
                "kernels": pd.DataFrame(kernel_rows)},
        figures={"table1": _figure(cells, paper_values(Path(__file__).with_name("claims.yaml"), "table1"), data_label)},
        step_metrics=step_metrics,
        diverged=diverged,
        notes=[f"test data: {test_set.provenance}",
               f"'-2K' columns: class-balanced subset of {len(subset)} of the {len(x_tr)} training "
               f"images (seed {p.subset.seed}), read off the full Gram",
               f"CNN validation split: {len(val)} of the {len(x_tr)} training images ({prov.name}, "
               f"train split; seeded random subset, seed {c.val_seed}), disjoint from the {len(fit)} images "
               "the CNNs train on and from the test set; the CNTK columns use all training images",
               "CNN cells: per depth and readout, the grid run with the best final-epoch validation accuracy "
               "(diverged runs left out); the cell is its test accuracy (the paper selects on the test set)"],
    )


if __name__ == "__main__":
    main(run, params=Params)
