"""Feng & Kolter (DEQ-NTK), Table 1: DEQ-NTK (Thm. 2 fixed point) kernel regression on MNIST, with
the Gram's measured cost and its extrapolation to the full data set."""

from __future__ import annotations

import math

import pandas as pd
from deq_eval import extrapolate_cpu_hours, gram_regression, paper_values, setting_tag

from ntkrepro.plotting import figure, mark_paper_value
from ntkrepro.stage import StageResult, load_split, main


def run(cfg) -> StageResult:
    p = cfg.params
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    rows, metrics = [], {}
    for s in p.settings:
        variances = dict(sigma_w2=float(s.sigma_w2), sigma_u2=float(s.sigma_u2), sigma_b2=float(s.sigma_b2))
        r = gram_regression("deq", variances, train, test, cfg=cfg, tile=p.tile, ridge=p.ridge,
                            label_pos=p.label_pos, label_neg=p.label_neg)
        tag = setting_tag(**variances)
        full = p.extrapolate_to
        cost = extrapolate_cpu_hours(gram_cpu_s=r["gram_cpu_s"], solve_cpu_s=r["solve_cpu_s"],
                                     n_train=r["n_train"], n_test=r["n_test"],
                                     full_n_train=full.n_train, full_n_test=full.n_test)
        rows.append({"method": "DEQ-NTK", **variances, "test_acc_pct": r["acc_pct"],
                     "n_train": r["n_train"], "n_test": r["n_test"], "gram_seconds": r["gram_wall_s"],
                     "solve_seconds": r["solve_wall_s"], **cost})
        metrics[f"acc_pct_deq_{tag}"] = r["acc_pct"]
        metrics[f"gram_seconds_deq_{tag}"] = r["gram_wall_s"]
        metrics[f"train_cpu_hours_full_deq_{tag}"] = cost["train_cpu_hours_full"]
    table = pd.DataFrame(rows)
    metrics["gram_seconds"] = float(table.gram_seconds.sum())
    metrics["train_cpu_hours_full_log10"] = math.log10(table.train_cpu_hours_full.sum())
    return StageResult(
        metrics=metrics,
        data=train.provenance,
        sizes={"n_train": len(train.x), "n_test": len(test.x)},
        seeds=[cfg.seed],
        tables={"table1": table},
        figures={"table1": _figure(table, paper_values(cfg.paper, cfg.artifact))},
        notes=[f"test data: {test.provenance}"],
    )


def _figure(table, published):
    fig, ax = figure()
    labels = [setting_tag(sigma_w2=r.sigma_w2, sigma_u2=r.sigma_u2, sigma_b2=r.sigma_b2)
              for r in table.itertuples()]
    ax.bar(labels, table.test_acc_pct, label="measured")
    for label in labels:
        if f"acc_pct_deq_{label}" in published:
            mark_paper_value(ax, published[f"acc_pct_deq_{label}"], label="paper")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    return fig


if __name__ == "__main__":
    main(run, experiment="feng2020_deq/table1")
