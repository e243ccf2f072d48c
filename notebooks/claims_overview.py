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
# (`NTKREPRO_RESULTS`, default `results/quick`). Nothing is recomputed here.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ntkrepro.claims import STATUSES, evaluate_all

ROOT = next((p for p in (Path.cwd(), Path.cwd().parent) if (p / "experiments").is_dir()), None)
if ROOT is None:
    raise FileNotFoundError(f"no experiments/ folder in {Path.cwd()} or its parent: run this notebook from the "
                            "project root or from notebooks/")
RESULTS = Path(os.environ.get("NTKREPRO_RESULTS", ROOT / "results" / "quick"))
if not RESULTS.is_dir():
    raise FileNotFoundError(f"results folder {RESULTS} does not exist: set NTKREPRO_RESULTS to a results/<scale> "
                            "folder")
registries = sorted((ROOT / "experiments").glob("*/claims.yaml"))
if not registries:
    raise FileNotFoundError(f"no claims registries (experiments/*/claims.yaml) under {ROOT}")
results = evaluate_all(registries, RESULTS)
claims = pd.DataFrame(
    [
        {"paper": r.claim.paper, "id": r.claim.id, "where": r.claim.where, "paper_value": r.claim.paper_value,
         "measured": r.measured, "status": r.status, "scale": r.scale, "data": r.data}
        for r in results
    ]
)
print(f"{len(claims)} claims from {len(registries)} registries, results in {RESULTS}")
claims.head(20)

# %% [markdown]
# ## Status counts per paper

# %%
counts = pd.DataFrame(columns=list(STATUSES))
if len(claims):
    counts = claims.groupby(["paper", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
counts

# %%
if len(counts):
    ax = counts.plot.barh(stacked=True, figsize=(7, 3))
    ax.set_xlabel("claims")
    plt.tight_layout()
