"""Feng & Kolter (DEQ-NTK), Table 1: DEQ-NTK (Thm. 2 fixed point) kernel regression on MNIST, with
the Gram's measured cost and its extrapolation to the full data set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deq_eval import TableData, TableParams, deq_grams, evaluate_deq_settings, setting_tag

from ntkrepro.claims import paper_values
from ntkrepro.plotting import figure, mark_paper_value
from ntkrepro.stage import StageResult, load_split, main


@dataclass
class Params(TableParams):
    """Table 1's ``params``: the DEQ-NTK settings, regression and cost extrapolation (``deq_eval``)."""


def load(cfg) -> TableData:
    """The data Table 1 reads (for its Gram tile jobs too)."""
    return TableData(load_split(cfg, "train"), load_split(cfg, "test"))


def grams(cfg, data: TableData) -> dict:
    """Every Gram Table 1 computes, in its order: the DEQ-NTK's K(train, train) and K(test, train) per setting
    (the Gram tile jobs compute these; nothing else lists them)."""
    return deq_grams(cfg, data.train, data.test)


def run(cfg) -> StageResult:
    data = load(cfg)
    train, test = data.train, data.test
    table, metrics = evaluate_deq_settings(cfg, train, test, grams(cfg, data))
    return StageResult(
        metrics=metrics,
        data=train.provenance,
        sizes={"n_train": len(train.x), "n_test": len(test.x)},
        seeds=[cfg.seed],
        tables={"table1": table},
        figures={"table1": _figure(table, paper_values(Path(__file__).with_name("claims.yaml"), cfg.artifact))},
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
    ax.set_xlabel("DEQ-NTK setting (variances x 100)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    return fig


if __name__ == "__main__":
    main(run, params=Params)
