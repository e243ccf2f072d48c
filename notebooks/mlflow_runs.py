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
# # MLflow runs
# The runs of the project's store (`NTKREPRO_MLFLOW_URI`, default the SQLite store under
# `results/mlflow/`): one experiment per paper, one run per stage execution, tagged with scale,
# data and commit.

# %%
import os
from pathlib import Path

import pandas as pd

from ntkrepro.tracking import search_runs

ROOT = next((p for p in (Path.cwd(), Path.cwd().parent) if (p / "experiments").is_dir()), None)
if ROOT is None:
    raise FileNotFoundError(f"no experiments/ folder in {Path.cwd()} or its parent: run this notebook from the "
                            "project root or from notebooks/")
URI = os.environ.get("NTKREPRO_MLFLOW_URI", f"sqlite:///{ROOT / 'results' / 'mlflow' / 'mlflow.db'}")
if URI.startswith("sqlite:///") and not Path(URI.removeprefix("sqlite:///")).is_file():
    raise FileNotFoundError(f"no MLflow store at {URI}: set NTKREPRO_MLFLOW_URI to the store the stages logged to")
PAPERS = sorted(p.name for p in (ROOT / "experiments").iterdir() if (p / "claims.yaml").exists())
if not PAPERS:
    raise FileNotFoundError(f"no claims registries (experiments/*/claims.yaml) under {ROOT}")
rows = []
for paper in PAPERS:
    for run in search_runs(URI, paper):
        tags = run.data.tags
        rows.append({"paper": paper, "artifact": tags.get("artifact"), "scale": tags.get("scale"),
                     "data": tags.get("data.name"), "substituted": tags.get("data.substituted"),
                     "commit": (tags.get("git_commit") or "")[:10],
                     "runtime_s": run.data.metrics.get("runtime_s"), "run_id": run.info.run_id})
runs = pd.DataFrame(rows)
print(f"{len(runs)} runs in {URI}")
runs.head(30)

# %% [markdown]
# ## Runtime per artifact (latest run of each)

# %%
if len(runs):
    latest = runs.drop_duplicates(["paper", "artifact", "scale"])
    ax = latest.set_index(latest["paper"] + "/" + latest["artifact"])["runtime_s"].sort_values().plot.barh(
        figsize=(6, max(2, 0.25 * len(latest))))
    ax.set_xlabel("runtime (s)")
