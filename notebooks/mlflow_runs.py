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
# The runs of the project's store (`NTKREPRO_MLFLOW_URI`, default the SQLite store under `results/mlflow/`; a
# relative `sqlite:///` path is taken from the project root): one experiment per paper, one run per stage
# execution, tagged with scale, data and commit; sweeps are a parent run with one child per job. Runs of
# different scales are never mixed in one table or chart. Execute:
# `NTKREPRO_MLFLOW_URI=sqlite:///results/mlflow/mlflow.db jupytext --to ipynb --execute notebooks/mlflow_runs.py`.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ntkrepro.config import CONF_DIR
from ntkrepro.tracking import search_runs

ROOT = CONF_DIR.parent  # the checkout (ntkrepro is installed editable from it)
URI = os.environ.get("NTKREPRO_MLFLOW_URI", "sqlite:///results/mlflow/mlflow.db")
if URI.startswith("sqlite:///"):
    db = Path(URI.removeprefix("sqlite:///"))
    db = db if db.is_absolute() else ROOT / db
    if not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: set NTKREPRO_MLFLOW_URI to the store the stages logged to")
    URI = f"sqlite:///{db}"
PAPERS = sorted(p.name for p in (ROOT / "experiments").iterdir() if (p / "claims.yaml").exists())
if not PAPERS:
    raise FileNotFoundError(f"no claims registries (experiments/*/claims.yaml) under {ROOT}")
rows = []
for paper in PAPERS:
    for run in search_runs(URI, paper):
        tags = run.data.tags
        rows.append({"scale": tags.get("scale"), "paper": paper, "artifact": tags.get("artifact"),
                     "run": run.info.run_name, "status": run.info.status,
                     "kind": "sweep parent" if tags.get("sweep") == "True" else
                     ("sweep job" if "mlflow.parentRunId" in tags else "run"),
                     "data": tags.get("data.name"), "substituted": tags.get("data.substituted"),
                     "commit": (tags.get("git_commit") or "")[:10],
                     "runtime_s": run.data.metrics.get("runtime_s"),
                     "start": pd.to_datetime(run.info.start_time, unit="ms"), "run_id": run.info.run_id})
runs = pd.DataFrame(rows, columns=["scale", "paper", "artifact", "run", "status", "kind", "data", "substituted",
                                   "commit", "runtime_s", "start", "run_id"])
print(f"{len(runs)} runs in {URI}")
runs.groupby(["scale", "paper", "kind"]).size().unstack(fill_value=0) if len(runs) else runs

# %% [markdown]
# ## Runs per scale (newest first)

# %%
SCALES = [s for s in ("smoke", "quick", "paper") if s in set(runs["scale"])] + \
    sorted(set(runs["scale"].dropna()) - {"smoke", "quick", "paper"})
for scale in SCALES:
    print(f"scale {scale}")
    display(runs[runs["scale"] == scale].sort_values("start", ascending=False).head(50))  # noqa: F821

# %% [markdown]
# ## Runtime per artifact: latest registered run of each, one panel per scale

# %%
latest = (runs[runs["kind"] == "run"].sort_values("start", ascending=False)
          .drop_duplicates(["scale", "paper", "artifact"]))
if len(latest):
    height = max(2, 0.3 * latest.groupby("scale").size().max())
    fig, axes = plt.subplots(1, len(SCALES), figsize=(5 * len(SCALES), height), squeeze=False)
    for ax, scale in zip(axes[0], SCALES, strict=False):
        sel = latest[latest["scale"] == scale]
        series = sel.set_index(sel["paper"] + "/" + sel["artifact"])["runtime_s"].sort_values()
        series.plot.barh(ax=ax, color="#0969da")
        ax.set_title(f"scale {scale}")
        ax.set_xlabel("runtime (s)")
    plt.tight_layout()
