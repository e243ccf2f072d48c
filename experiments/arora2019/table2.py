"""Arora et al. 2019, Table 2: on CIFAR-2, kernel regression with the exact CNTK (vanilla, GAP) against
"random features" - the empirical NTK of a randomly initialized CNN of the same architecture (median
over independent draws) - against depth."""

from __future__ import annotations

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
    load_images,
    log_axis_with_ticks,
    odd,
    regression_accuracy,
)

from ntkrepro.checks import param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.empirical import empirical_ntk
from ntkrepro.nets import cnn
from ntkrepro.plotting import band, figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main
from ntkrepro.stats import relative_error

TABLE_DEPTHS = (3, 4, 6, 11, 21)
SHORT = {"vanilla": "v", "gap": "gap"}


@dataclass
class Params:
    """``params`` of Table 2 (conf/experiment/arora2019/table2.yaml)."""

    filter_size: int = param(ge=1, check=odd, doc="q (Sec. 5.1: 3)")
    downsample: int = param(ge=1, doc="average-pool factor (1 = native resolution); divides the image side")
    ridge: float = param(ge=0, doc="ridge of the kernel solve (0: exact)")
    label_pos: float = param(doc="target of the true class (Table 1's 0.9)")
    label_neg: float = param(doc="target of the other class (Table 1's -0.1)")
    depths: list[int] = param(min_len=1, ge=3, distinct=True, doc="depths (both readouts; GAP needs >= 3)")
    channels: int = param(ge=1, doc="channels of the random-feature CNNs (Sec. 5.2: 128)")
    n_draws: int = param(ge=1, doc="random-feature draws per cell, median (Sec. 5.2: 10)")
    gram_tile: int = param(ge=1, doc="ntkrepro.gram tile side (cache granularity only)")
    seed: int = param(ge=0)

    def check(self):
        check_labels(self.label_pos, self.label_neg)
        # empirical_ntk holds at least one image's Jacobian row: every trainable weight of the deepest net
        refuse_oversized([cnn_weight_estimate("params.channels", [self.channels], depth=max(self.depths),
                                              filter_size=self.filter_size,
                                              what="one image's Jacobian row of the deepest random-feature CNN")])

    def check_config(self, cfg) -> None:
        """Refuse, before any data is loaded, a downsampling factor that divides no image side and Grams
        (the exact CNTK's and the random features', float64) that exhaust memory (one line naming the
        parameter)."""
        image_pixels(cfg, cfg.params.downsample)
        refuse_oversized(gram_estimates(cfg, large_path=True))


def random_feature_gram(net, x_all, n_train: int, *, key):
    """(K(train, train), K(test, train)) of one draw of the empirical NTK of ``net`` (gradients w.r.t.
    its trainable weights: for Table 1's CNN-GAP the middle layers only, first and last layer fixed)."""
    params = net.init_fn(key, x_all.shape)
    gram = np.asarray(empirical_ntk(net.apply_fn, params, x_all, x_all[:n_train], trainable=net.trainable_mask,
                                    implementation="jacobian"), dtype=np.float64)
    return gram[:n_train], gram[n_train:]


def summarize(cells: dict) -> dict:
    """Table 2's metrics from ``cells[(column, depth)] = accuracy (%)`` (RF columns: the median)."""
    metrics = {f"acc_{col}_d{d}": cells.get((col, d))
               for col in ("rf_v", "cntk_v", "rf_gap", "cntk_gap") for d in TABLE_DEPTHS}
    gaps = {s: [cells[(f"cntk_{s}", d)] - cells[(f"rf_{s}", d)] for d in TABLE_DEPTHS
                if (f"cntk_{s}", d) in cells and (f"rf_{s}", d) in cells] for s in ("v", "gap")}
    both = gaps["v"] + gaps["gap"]
    metrics["exact_beats_rf"] = all(g > 0 for g in both) if both else None
    metrics["exact_minus_rf_v"] = float(np.mean(gaps["v"])) if gaps["v"] else None
    metrics["exact_minus_rf_gap"] = float(np.mean(gaps["gap"])) if gaps["gap"] else None
    early = [cells[("rf_gap", d)] for d in TABLE_DEPTHS if d <= 11 and ("rf_gap", d) in cells]
    metrics["rf_gap_max_acc_upto_d11"] = max(early) if early else None
    return metrics


def _figure(rows: pd.DataFrame, paper: dict, data_label: str):
    fig, axes = figure(1, 2, height=2.4)
    for ax, readout in zip(axes[0], READOUTS, strict=True):
        s = SHORT[readout]
        sel = rows[rows.readout == readout].sort_values("depth")
        ax.plot(sel.depth, sel.acc_exact, "o-", color="C0", label="exact CNTK (ours)")
        band(ax, sel.depth.to_numpy(), sel.acc_rf_median.to_numpy(), sel.acc_rf_q25.to_numpy(),
             sel.acc_rf_q75.to_numpy(), color="C3", label="random features, median, IQR (ours)")
        ax.plot(TABLE_DEPTHS, [paper.get(f"acc_cntk_{s}_d{d}") for d in TABLE_DEPTHS], "x--",
                color="C0", alpha=0.6, label="exact CNTK (paper, CIFAR-2)")
        ax.plot(TABLE_DEPTHS, [paper.get(f"acc_rf_{s}_d{d}") for d in TABLE_DEPTHS], "x--",
                color="C3", alpha=0.6, label="random features (paper, CIFAR-2)")
        ax.axhline(50.0, color="grey", linewidth=0.6)
        log_axis_with_ticks(ax, TABLE_DEPTHS, label="depth")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CNTK-{'V' if readout == 'vanilla' else 'GAP'} ({data_label})")
    axes[0, 1].legend(fontsize=5)
    return fig


load = load_images  # the data Table 2 reads (for its Gram tile jobs too)


def grams(cfg, data) -> dict:
    """Every CNTK Gram Table 2 computes, in its order: K(train, train) and K(test, train) per depth of
    ``params.depths`` and readout (the Gram tile jobs compute these; nothing else lists them)."""
    return cntk_grams(cfg, data, [(readout, d) for d in cfg.params.depths for readout in READOUTS])


def run(cfg) -> StageResult:
    p = cfg.params
    data = load(cfg)
    train_set, test_set, x_tr, x_te = data.train, data.test, data.x_train, data.x_test
    y_tr, y_te = np.asarray(train_set.y), np.asarray(test_set.y)
    x_all = np.concatenate([x_tr, x_te])
    n = len(x_tr)
    reg = dict(num_classes=train_set.num_classes, ridge=p.ridge, label_pos=p.label_pos,
               label_neg=p.label_neg)

    cells, rows, draws = {}, [], []
    for (readout, depth), pair in progress(list(grams(cfg, data).items()), desc="exact and random-feature kernels",
                                           enabled=cfg.progress):
        s = SHORT[readout]
        k_tr, k_te = cntk_blocks(pair, cfg=cfg)
        accs, errors = [], []
        net = cnn(depth=depth, channels=p.channels, out_dim=1, readout=readout, fix_first_last=readout == "gap",
                  filter_size=p.filter_size, dtype=x_all.dtype)  # one net: its jitted functions serve every draw
        for draw in range(p.n_draws):
            key = jax.random.fold_in(jax.random.fold_in(
                jax.random.fold_in(jax.random.PRNGKey(p.seed), depth), READOUTS.index(readout)), draw)
            rf_tr, rf_te = random_feature_gram(net, x_all, n, key=key)
            accs.append(regression_accuracy(rf_tr, rf_te, y_tr, y_te, **reg))
            errors.append(relative_error(np.concatenate([rf_tr, rf_te]), np.concatenate([k_tr, k_te])))
            draws.append({"readout": readout, "depth": depth, "draw": draw, "acc_rf": accs[-1],
                          "rel_kernel_error": errors[-1]})
        exact = regression_accuracy(k_tr, k_te, y_tr, y_te, **reg,
                                    overwrite_k=pair[0].into is not None)  # last: may destroy k_tr
        cells[(f"cntk_{s}", depth)] = exact
        cells[(f"rf_{s}", depth)] = float(np.median(accs))
        rows.append({"readout": readout, "depth": depth, "acc_exact": exact,
                     "acc_rf_median": float(np.median(accs)), "acc_rf_q25": float(np.quantile(accs, 0.25)),
                     "acc_rf_q75": float(np.quantile(accs, 0.75)), "acc_rf_min": min(accs),
                     "acc_rf_max": max(accs), "rel_kernel_error_median": float(np.median(errors))})
        del k_tr, k_te  # before the next pair is computed: one pair alive at a time
    rows = pd.DataFrame(rows)
    metrics = summarize(cells)
    for r in rows.itertuples():
        metrics[f"rf_rel_kernel_error_{SHORT[r.readout]}_d{r.depth}"] = r.rel_kernel_error_median
    table = pd.DataFrame([{"depth": d, "RF from Vanilla CNTK": cells.get(("rf_v", d)),
                           "Vanilla CNTK": cells.get(("cntk_v", d)),
                           "RF for CNTK-GAP": cells.get(("rf_gap", d)),
                           "CNTK-GAP": cells.get(("cntk_gap", d))}
                          for d in TABLE_DEPTHS])
    prov = train_set.provenance
    data_label = prov.name + (f", stand-in for {prov.substituted_for}" if prov.substituted_for else "")
    return StageResult(
        metrics=metrics,
        data=prov,
        sizes={"n_train": n, "n_test": len(x_te), "image": "x".join(map(str, x_tr.shape[1:])),
               "downsample": p.downsample, "channels": p.channels, "n_draws": p.n_draws},
        seeds=[cfg.seed, p.seed],
        tables={"table2": table, "kernels": rows, "draws": pd.DataFrame(draws)},
        figures={"table2": _figure(rows, paper_values(Path(__file__).with_name("claims.yaml"), "table2"), data_label)},
        notes=[f"test data: {test_set.provenance}",
               f"random features: empirical NTK of {p.channels}-channel CNNs, {p.n_draws} draws, median"],
    )


if __name__ == "__main__":
    main(run, params=Params)
