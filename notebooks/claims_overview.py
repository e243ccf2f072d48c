# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Claims overview
# Every claim of every paper's registry against the metrics of one scale's results folder
# (`NTKREPRO_RESULTS`, default `results/quick`; a relative path is taken from the project root). Nothing is
# recomputed here. Execute: `NTKREPRO_RESULTS=results/smoke jupytext --to ipynb --execute notebooks/claims_overview.py`
# (from any folder; see the README, "Notebooks").

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ntkrepro.claims import CHECK_STATUSES, STATUSES, evaluate_all
from ntkrepro.config import CONF_DIR
from ntkrepro.report import ATTENTION, ORDER, STATUS_COLOURS

ROOT = CONF_DIR.parent  # the checkout (ntkrepro is installed editable from it)
RESULTS = Path(os.environ.get("NTKREPRO_RESULTS", "results/quick"))
RESULTS = RESULTS if RESULTS.is_absolute() else ROOT / RESULTS
if not RESULTS.is_dir():
    raise FileNotFoundError(f"results folder {RESULTS} does not exist: set NTKREPRO_RESULTS to a results/<scale> "
                            "folder (absolute, or relative to the project root)")
registries = sorted((ROOT / "experiments").glob("*/claims.yaml"))
if not registries:
    raise FileNotFoundError(f"no claims registries (experiments/*/claims.yaml) under {ROOT}")
results = evaluate_all(registries, RESULTS)
claims = pd.DataFrame(
    [
        {"paper": r.claim.paper, "artifact": r.claim.artifact, "id": r.claim.id, "where": r.claim.where,
         "paper_value": r.claim.paper_value, "measured": r.measured, "status": r.status,
         "indicative": r.verdict if r.status in ("not run at this scale", "not comparable", "data unavailable")
         else None, "check": bool(r.claim.consistency)}
        for r in results
    ]
)
PAPERS = sorted({r.claim.paper for r in results})
rank = {s: i for i, s in enumerate((*ORDER, *CHECK_STATUSES))}
claims = claims.sort_values(["status", "paper", "id"], key=lambda c: c.map(rank) if c.name == "status" else c)
print(f"{len(claims)} claims from {len(registries)} registries ({', '.join(PAPERS)}), results in {RESULTS}")

# %% [markdown]
# ## Status counts per paper
# Every paper of the registries is a row, also where nothing ran; consistency checks are counted apart.

# %%
verdicts = claims[~claims["check"]]
counts = (verdicts.groupby(["paper", "status"]).size().unstack(fill_value=0)
          .reindex(index=PAPERS, columns=list(STATUSES), fill_value=0))
counts.loc["all"] = counts.sum()
counts.style.apply(lambda col: [f"background-color: {STATUS_COLOURS[col.name]}; color: white" if v and
                                col.name not in ("not run at this scale",) else "" for v in col], axis=0)

# %%
plot = counts.drop(index="all")
ax = plot.plot.barh(stacked=True, figsize=(8, 0.5 * len(plot) + 1.5),
                    color=[STATUS_COLOURS[s] for s in plot.columns], edgecolor="white")
ax.set_xlabel("claims")
ax.invert_yaxis()
ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
plt.tight_layout()

# %% [markdown]
# ## Claims that need attention
# Contradicted, paper inconsistent, deviating and inconclusive claims, in that order (the report links each
# to its evidence and to the paper README's derivation).

# %%
attention = verdicts[verdicts["status"].isin(ATTENTION)]
print(f"{len(attention)} claims need attention")
attention

# %% [markdown]
# ## Every claim, by status (not run at this scale last)

# %%
pd.set_option("display.max_rows", 500)
verdicts
