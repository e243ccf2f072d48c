"""The reproduction report: built from ``metrics.json`` files and the claims registries only.

    python -m ntkrepro.report --results results/quick --experiments experiments [--mlflow-ui URL]

writes ``report.md`` (Markdown) and ``report.html`` (the same Markdown rendered by Python-Markdown, figures
embedded, self-contained) into the results folder, and prints the scoreboard. The page opens on the verdict
summary (per paper and overall; the claims that need attention -- contradicted, paper inconsistent,
deviates, inconclusive -- first, with their evidence and a link to the paper README's derivation), then one
section per artifact: its figures beside its claims, consistency checks apart, the claims that did not run
at this scale collapsed; stage tables over ``MAX_INLINE_ROWS`` rows are linked (CSV), not inlined. Every
run links to the MLflow UI (``--mlflow-ui``, ``NTKREPRO_MLFLOW_UI``, or the run's tracking server; default
``http://127.0.0.1:5000``). No recomputation happens here; a claim that references a metric no stage
produced is an error.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.extensions.toc import TocExtension, slugify
from markdown.treeprocessors import Treeprocessor

from ntkrepro.claims import (
    CHECK_STATUSES,
    REHEARSAL,
    STATUSES,
    ClaimError,
    ClaimResult,
    evaluate,
    evaluate_all,
    load_records,
    load_registry,
    load_sweep_records,
)
from ntkrepro.io import atomic_write_text

MAX_INLINE_ROWS = 30  # a stage table longer than this is linked, not inlined
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
ATTENTION = ("contradicted", "paper inconsistent", "deviates", "inconclusive")  # listed first, in this order
COLLAPSED = ("not run at this scale",)
# the order claims are listed in within an artifact: what needs attention first, what did not run last
ORDER = (*ATTENTION, "reproduced", "data unavailable", "not comparable", "not run at this scale")
STATUS_COLOURS = {  # badge background; text is white unless listed in LIGHT
    "reproduced": "#1a7f37", "deviates": "#d4700a", "contradicted": "#cf222e", "inconclusive": "#bf8700",
    "paper inconsistent": "#8250df", "not comparable": "#57606a", "not run at this scale": "#afb8c1",
    "data unavailable": "#0969da", "check holds": "#4b8b5a", "check fails": "#cf222e",
    "check not run": "#afb8c1",
}
LIGHT = ("not run at this scale", "check not run")
MEANING = {
    "reproduced": "the measurement agrees with the paper's number, with the claim's premise",
    "deviates": "the measurement misses the paper's number beyond the tolerance",
    "contradicted": "an exact computation misses the paper's number",
    "inconclusive": "the interval m ± 2 se straddles the tolerance band",
    "paper inconsistent": "the text's number disagrees with the paper's own table",
    "not comparable": "an override or a sweep removed the claim's premise (indicative verdict shown)",
    "not run at this scale": "the scale's registered config lacks the premise (indicative verdict shown)",
    "data unavailable": "a stand-in dataset was used (indicative verdict shown)",
}


# ---- formatting ------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_MD_SPECIAL = re.compile(r"([\\`*|])")


def _esc(text) -> str:
    """Plain text for a Markdown paragraph or table cell: Markdown's specials escaped, ``<`` as an entity,
    line breaks as spaces; an underscore is escaped where it could open or close emphasis."""
    text = _MD_SPECIAL.sub(r"\\\1", str(text).replace("\n", " ")).replace("<", "&lt;")
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def _code(text) -> str:
    """A code span (no backticks or pipes inside, so that it cannot break a table)."""
    return "`" + str(text).replace("`", "'").replace("|", "/") + "`"


def unit(metric: str, value=None) -> str:
    """The unit a metric's name implies ('' when none): *_s seconds, *_pp percentage points, *_pct and
    accuracies above 1 percent, CPU hours (log10 where the name says so)."""
    tokens = metric.lower().split("_")
    if "log10" in tokens:
        rest = [t for t in tokens if t != "log10"]
        inner = "CPU h" if "cpu" in rest and "hours" in rest else ("s" if rest[-1:] == ["s"] else "")
        return f"log10({inner})" if inner else "log10"
    if tokens[-1:] in (["s"], ["seconds"]) or "seconds" in tokens:
        return "s"
    if "pp" in tokens:
        return "pp"
    if "pct" in tokens or "percent" in tokens:
        return "%"
    if "hours" in tokens:
        return "CPU h" if "cpu" in tokens else "h"
    if ({"acc", "accuracy"} & set(tokens)) and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and abs(value) > 1:
        return "%"
    return ""


def _slug(status: str) -> str:
    return status.replace(" ", "-")


def _with_unit(v, u: str) -> str:
    if v is None or not u or isinstance(v, bool):
        return _fmt(v)
    return f"{_fmt(v)} {u}"


def _tol(c) -> str:
    parts = [f"±{c.tolerance['abs']:g}" if "abs" in c.tolerance else "",
             f"±{100 * c.tolerance['rel']:g}%" if "rel" in c.tolerance else "",
             f"±{c.tolerance['se']:g} se" if "se" in c.tolerance else ""]
    return " or ".join(p for p in parts if p) or "—"


def _claim_unit(r: ClaimResult) -> str:
    return unit(r.claim.metric, r.claim.paper_value if r.measured is None else r.measured)


def _measured(r: ClaimResult) -> str:
    """The measured value with its standard error, when one was measured, and its unit."""
    u = _claim_unit(r)
    se = (r.uncertainty or {}).get("se")
    if se is None or not isinstance(se, (int, float)) or se != se or r.measured is None:
        return _with_unit(r.measured, u)
    return f"{_fmt(r.measured)} ± {se:.2g}" + (f" {u}" if u else "")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; cells are Markdown already (escape plain text with :func:`_esc`)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("\n", " ") or " " for cell in row) + " |" for row in rows]
    return out


def anchor(*parts: str) -> str:
    """The id Python-Markdown's toc gives a heading ``parts[0] / parts[1]``."""
    return slugify(" / ".join(parts), "-")


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


# ---- data and provenance ---------------------------------------------------------------------------------

def data_label(rec: dict) -> str:
    """The data a run used, once per distinct split: ``train, test: fashion_mnist n=512 (stand-in for mnist)``."""
    splits = rec.get("splits") or []
    if not splits:
        data = rec.get("data") or {}
        name = data.get("name") or "—"
        return name + (f" (stand-in for {data['substituted_for']})" if data.get("substituted_for") else "")
    groups: dict[tuple, list[str]] = {}
    for s in splits:
        key = (s.get("name"), s.get("n"), s.get("substituted_for"))
        groups.setdefault(key, []).append(str(s.get("split")))
    parts = []
    for (name, n, sub), names in groups.items():
        parts.append(f"{', '.join(names)}: {name}" + (f" n={n}" if n is not None else "")
                     + (f" (stand-in for {sub})" if sub else ""))
    return "; ".join(parts)


def mlflow_run_url(rec: dict, ui: str | None = None) -> str | None:
    """The MLflow UI page of a run: the run's tracking server when it logged over HTTP, else ``ui``
    (default :data:`DEFAULT_MLFLOW_UI`). With the experiment id recorded, the experiment's run page;
    otherwise the UI's run-id route, which finds the experiment itself (its redirect drops any URL
    parameter, so that page opens in the mode the browser last chose)."""
    run = rec.get("mlflow_run_id")
    if not run:
        return None
    exp = rec.get("mlflow_experiment_id")
    return f"{_ui_base(rec, ui)}/#/experiments/{exp}/runs/{run}?{ML_MODE}" if exp else \
        f"{_ui_base(rec, ui)}/#/runs/{run}"


def mlflow_experiment_url(rec: dict, ui: str | None = None) -> str | None:
    """The runs table of a run's MLflow experiment (None when its id is unknown), in model-training mode."""
    exp = rec.get("mlflow_experiment_id")
    return f"{_ui_base(rec, ui)}/#/experiments/{exp}?{ML_MODE}" if exp else None


def _ui_base(rec: dict, ui: str | None) -> str:
    uri = str((rec.get("config") or {}).get("tracking.uri") or "")
    return (uri if uri.startswith(("http://", "https://")) else ui or DEFAULT_MLFLOW_UI).rstrip("/")


# MLflow 3.17's UI shows every experiment as the kind its global GenAI / Model training switch says (the
# switch's feature flag is built in as on; the experiment's mlflow.experimentKind tag is read only with it
# off). The switch reads this URL parameter first, else the browser's localStorage "mlflow.workflowType_v1"
# (written when the user clicks the switch), else GenAI. No server setting reaches it: every link carries it.
ML_MODE = "workflowType=machine_learning"


def experiment_ids(records: list[dict]) -> dict[str, str]:
    """run id -> MLflow experiment id, read from the runs' SQLite stores (read-only; no mlflow import). A run
    logged to a server or a store that cannot be read is left out (its link then uses the run-id route)."""
    import sqlite3

    out: dict[str, str] = {}
    stores = {str((rec.get("config") or {}).get("tracking.uri") or "") for rec in records}
    for uri in sorted(u for u in stores if u.startswith("sqlite:///")):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            continue
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                out.update({run: str(exp) for run, exp in db.execute("SELECT run_uuid, experiment_id FROM runs")})
        except sqlite3.Error:
            continue
    return out


def _run_link(rec: dict, ui: str | None) -> str:
    url = mlflow_run_url(rec, ui)
    if url is None:
        return "not tracked" + (f" ({_esc(rec['tracking_error'])})" if rec.get("tracking_error") else "")
    return f"[{rec['mlflow_run_id'][:8]}]({url})"


def figure_caption(rec: dict, fig: str) -> str:
    """What a figure was computed from: config and scale, data actually used, sizes, seeds, precision, runtime."""
    paper, artifact = rec.get("paper"), rec.get("artifact")
    data = rec.get("data") or {}
    used = _code(data.get("name"))
    if data.get("substituted_for"):
        used += f" (stand-in for {_code(data['substituted_for'])})"
    if rec.get("splits"):
        used = ", ".join(f"{s.get('split')} {_code(s.get('name'))} (n={s.get('n')}"
                         + (f", stand-in for {_code(s['substituted_for'])})" if s.get("substituted_for") else ")")
                         for s in rec["splits"])
    sizes = _esc(", ".join(f"{k}={_fmt(v)}" for k, v in (rec.get("sizes") or {}).items()) or "—")
    seeds = ", ".join(str(s) for s in rec.get("seeds") or []) or "none"
    runtime = "—" if rec.get("runtime_s") is None else f"{_fmt(rec['runtime_s'])} s"
    return (f"Figure {_code(fig)} of {paper}/{artifact}: config {_code(f'conf/experiment/{paper}/{artifact}.yaml')} "
            f"at scale {_code(rec.get('scale'))}; data {used}; sizes {sizes}; seeds {seeds}; precision "
            f"{_esc(_fmt(rec.get('precision')))}; runtime {runtime}.")


# ---- claims ----------------------------------------------------------------------------------------------

def _order(r: ClaimResult) -> int:
    return ORDER.index(r.status) if r.status in ORDER else len(ORDER)


def _indicative(r: ClaimResult) -> str:
    if r.status in ("not comparable", "not run at this scale", "data unavailable", "paper inconsistent") \
            and r.verdict:
        return r.verdict + (" (vs the paper's table)" if r.status == "paper inconsistent" else "")
    return ""


def _evidence(r: ClaimResult) -> str:
    return ", ".join(f"{k} = {_with_unit(v, unit(k, v))}" for k, v in r.evidence.items())


def _notes(r: ClaimResult, readme: str | None = None) -> str:
    """The detail (or the tolerance's reason), the statistics, the evidence metrics as measured; a claim
    that needs attention links the paper's README, where the derivation is."""
    parts = [_esc(p) for p in (r.detail or r.claim.tolerance_reason, r.statistics) if p]
    if r.evidence:
        parts.append("evidence: " + _esc(_evidence(r)))
    if r.status in ATTENTION and readme:
        parts.append(f"derivation: [README]({readme})")
    return "; ".join(parts)


def _claim_cell(r: ClaimResult) -> str:
    """The claim's id and statement; a claim measured in a rehearsal says so first."""
    label = "*rehearsal* · " if r.scale == REHEARSAL else ""
    return f"{label}**{_esc(r.claim.id)}**: {_esc(r.claim.statement or r.claim.metric)}"


REHEARSAL_BANNER = (
    "> **Rehearsal, not a reproduction.** These runs use the papers' sizes and settings on declared stand-in "
    "data (scale `rehearsal`: e.g. Fashion-MNIST 60,000/10,000 for MNIST, the CIFAR-10-shaped synthetic "
    "`cifar10_shaped` for CIFAR-10). What they measure is time, memory and numerical behaviour at the paper's "
    "size; every claim measured on a stand-in is *data unavailable* with its indicative verdict, never "
    "reproduced, and each claim row measured here is marked *rehearsal*.")


CLAIM_HEADER = ["claim", "where", "paper", "measured", "data", "diff", "tolerance", "status", "indicative", "notes"]


def data_used(rec: dict | None) -> str:
    """The data sets a run read, once each: ``fashion_mnist (stand-in for mnist)``; ``—`` without a run."""
    if rec is None:
        return "—"
    splits = rec.get("splits") or [rec.get("data") or {}]
    names = dict.fromkeys(s.get("name") + (f" (stand-in for {s['substituted_for']})" if s.get("substituted_for")
                                           else "") for s in splits if s.get("name"))
    return ", ".join(names) or "—"


def _claim_data(r: ClaimResult, used: str) -> str:
    """The data a claim's number came from: a claim whose metric was not measured (e.g. a data set's cells
    that this scale does not run) shows none, never the run's other (stand-in) data."""
    unmeasured = r.measured is None or (isinstance(r.measured, float) and math.isnan(r.measured))
    return "not run" if unmeasured else used


def _claim_rows(results: list[ClaimResult], readme: str | None, used: str = "—") -> list[list[str]]:
    rows = []
    for r in sorted(results, key=_order):
        u = _claim_unit(r)
        rows.append([_claim_cell(r), _esc(r.claim.where), _esc(_with_unit(r.claim.paper_value, u)),
                     _esc(_measured(r)), _esc(_claim_data(r, used)), _esc(_fmt(r.difference)), _esc(_tol(r.claim)),
                     r.status, _esc(_indicative(r)), _notes(r, readme)])
    return rows


def _details(summary: str, body: list[str]) -> list[str]:
    """A collapsed block (``<details>``) whose body is Markdown."""
    return ["", '<details markdown="1">', f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def _claims_table(results: list[ClaimResult], readme: str | None, used: str = "—") -> list[str]:
    """The claims table; the indicative column only where some claim has an indicative verdict."""
    rows = _claim_rows(results, readme, used)
    keep = [i for i, h in enumerate(CLAIM_HEADER) if h != "indicative" or any(row[i] for row in rows)]
    return _md_table([CLAIM_HEADER[i] for i in keep], [[row[i] for i in keep] for row in rows])


def _claims_block(results: list[ClaimResult], readme: str | None, stage: str, used: str = "—",
                  costs: dict[str, str] | None = None) -> list[str]:
    """The claims table, then the claims not run at this scale collapsed, with what running them costs."""
    shown = [r for r in results if r.status not in COLLAPSED]
    hidden = [r for r in results if r.status in COLLAPSED]
    lines = []
    if shown:
        lines += ["", *_claims_table(shown, readme, used)]
    if hidden:
        paper = stage.split("/")[0]
        needs = paper_scale_cost(stage, costs)
        lines += _details(f"{len(hidden)} claim{'s' * (len(hidden) != 1)} not run at this scale — "
                          f"{_esc(needs)}",
                          [f"They need the paper's settings: {_code(f'snakemake {paper} --config scale=paper')}; "
                           f"estimated cost of {stage} at paper scale: {_esc(needs)} (from the benchmarks' "
                           f"measured rates: {_code(f'python scripts/cost_table.py --stage {stage} --detail')}). The "
                           "indicative verdict is what this scale's numbers say.", "",
                           *_claims_table(hidden, readme, used)])
    return lines


def load_costs(path: Path | None) -> dict[str, str]:
    """``{stage: one line}`` from ``scripts/cost_table.py --scale paper --json`` output (the cost model needs
    the papers' workloads, which the library does not load): each stage's summary, or why it has none."""
    if path is None:
        return {}
    rows = json.loads(Path(path).read_text())
    return {r["stage"]: r.get("summary") or f"no cost estimate ({r.get('error')})" for r in rows}


def paper_scale_cost(stage: str, costs: dict[str, str] | None = None) -> str:
    """One line: what running ``stage`` at paper scale costs (``costs``: :func:`load_costs`), or how to get it."""
    return (costs or {}).get(stage) or (
        f"no cost estimate here (python scripts/cost_table.py --scale paper --stage {stage})")


def _badges(counts: Counter, statuses=STATUSES) -> str:
    """Counts per status as coloured badges (inline HTML; plain text where HTML is not rendered)."""
    return " ".join(f'<span class="badge st-{_slug(s)}">{counts[s]} {s}</span>' for s in statuses if counts.get(s))


def _plain_counts(counts: Counter, statuses=STATUSES) -> str:
    return " · ".join(f"{counts[s]} {s}" for s in statuses if counts.get(s))


# ---- sections --------------------------------------------------------------------------------------------

def sweep_section(sweeps: list[tuple[dict, list[ClaimResult]]], ui: str | None = None) -> list[str]:
    """Hydra multirun jobs: each judged against its own config, listed apart from the registered runs."""
    if not sweeps:
        return []
    lines = ["", "## Sweep jobs (not counted in the scoreboard)", "",
             "Each job's claims are evaluated against its own resolved config; an override of a claim's "
             "premise makes it *not comparable*."]
    rows = []
    for rec, res in sweeps:
        counts = Counter(r.status for r in res)
        overrides = rec.get("overrides") or {}
        rows.append([f"{rec.get('paper')}/{rec.get('artifact')}", _code(Path(rec["_path"]).parent),
                     _esc(", ".join(f"{k}={_fmt(v['run'])}" for k, v in overrides.items()) or "none"),
                     ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "no claims",
                     _run_link(rec, ui)])
    return lines + [""] + _md_table(["artifact", "job folder", "overrides", "claims", "MLflow run"], rows)


def _table_rows(folder: Path, table: str) -> int | None:
    csv_path, md_path = folder / f"{table}.csv", folder / f"{table}.md"
    if csv_path.exists():
        with csv_path.open(newline="") as fh:
            return max(sum(1 for _ in csv.reader(fh)) - 1, 0)
    if md_path.exists():
        return max(sum(1 for line in md_path.read_text().splitlines() if line.startswith("|")) - 2, 0)
    return None


def _artifact_section(paper: str, artifact: str, rec: dict | None, results: list[ClaimResult],
                      results_dir: Path, readme: str | None, ui: str | None,
                      costs: dict[str, str] | None = None) -> list[str]:
    claims = [r for r in results if not r.claim.consistency]
    checks = [r for r in results if r.claim.consistency]
    counts = Counter(r.status for r in results)
    stage, used = f"{paper}/{artifact}", data_used(rec)
    lines = ["", f"### {paper} / {artifact}", ""]
    if rec is None:
        lines += [f"Not run at this scale (no metrics.json); {_badges(counts, (*STATUSES, *CHECK_STATUSES))}."]
        return lines + _claims_block(claims, readme, stage, used, costs) + _claims_block(
            checks, readme, stage, used, costs)
    folder = Path(rec["_path"]).parent
    rel = _rel(folder, results_dir)
    overrides = rec.get("overrides")
    commit = str(rec.get("git_commit"))[:10] + (" (dirty)" if rec.get("git_dirty") else "")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    lines += [
        f"**{_badges(counts, (*STATUSES, *CHECK_STATUSES)) or 'no claims'}** · MLflow run {_run_link(rec, ui)} · "
        f"runtime {_fmt(rec.get('runtime_s'))} s · precision {_esc(_fmt(rec.get('precision')))} · "
        f"seeds {_esc(', '.join(str(s) for s in rec.get('seeds') or []) or 'none')} · commit {_code(commit)}", "",
        f"Data: {_esc(data_label(rec))}. Sizes: "
        f"{_esc(', '.join(f'{k}={_fmt(v)}' for k, v in (rec.get('sizes') or {}).items()) or '—')}. "
        "Overrides of the registered config: " + _esc(
            "unknown (not recorded)" if overrides is None else
            ", ".join(f"{k} {_fmt(v['registered'])} → {_fmt(v['run'])}" for k, v in overrides.items()) or "none")
        + ".", "",
        "Files: " + ", ".join(f"[{_esc(name)}]({rel}/{name})" for name in files) + ".", "",
    ]
    figures = []
    for fig in rec.get("figures", []):
        figures += [f"![{artifact}: {fig}]({rel}/{fig}.png)", "", f"*{figure_caption(rec, fig)}*", ""]
    claim_lines = _claims_block(claims, readme, stage, used, costs) or [
        "", "No claims registered for this artifact."]
    if figures:
        lines += ['<div class="artifact" markdown="1">', '<div class="figures" markdown="1">', "", *figures,
                  "</div>", '<div class="claims" markdown="1">', *claim_lines, "", "</div>", "</div>", ""]
    else:
        lines += claim_lines
    if checks:
        lines += ["", "Consistency checks (identities and regimes that cannot fail; not counted as reproduced):"]
        lines += _claims_block(checks, readme, stage, used, costs)
    for split in rec.get("splits") or []:
        if split.get("substituted_for"):
            lines += ["", f"Split {_code(split.get('split'))}: {_esc(split.get('name'))} from "
                      f"{_esc(split.get('source'))} stands in for {_esc(split['substituted_for'])} (sha256 "
                      f"{_code(str(split.get('sha256'))[:12])})."]
    for table in rec.get("tables", []):
        n = _table_rows(folder, table)
        md = folder / f"{table}.md"
        links = ", ".join(f"[{table}.{ext}]({rel}/{table}.{ext})" for ext in ("csv", "md")
                          if (folder / f"{table}.{ext}").exists())
        if n is not None and n <= MAX_INLINE_ROWS and md.exists():
            lines += ["", f"Table {_code(table)} ({links}):", "", md.read_text().strip(), ""]
        else:
            lines += ["", f"Table {_code(table)}: {n if n is not None else '?'} rows, in {links or 'no file'} "
                      f"(over {MAX_INLINE_ROWS} rows: not inlined)."]
    return lines


def build_markdown(results: list[ClaimResult], records: dict, scale: str,
                   sweeps: list[tuple[dict, list[ClaimResult]]] | None = None, *,
                   results_dir: Path | None = None, experiments_dir: Path | None = None,
                   mlflow_ui: str | None = None, costs: dict[str, str] | None = None) -> str:
    """The report's Markdown; ``costs``: each stage's paper-scale cost line (:func:`load_costs`)."""
    results_dir = Path(results_dir or ".")
    experiments_dir = Path(experiments_dir or "experiments")
    papers = sorted({r.claim.paper for r in results} | {p for p, _ in records})
    claims = [r for r in results if not r.claim.consistency]
    checks = [r for r in results if r.claim.consistency]
    readmes = {p: _rel(experiments_dir / p / "README.md", results_dir)
               for p in papers if (experiments_dir / p / "README.md").exists()}
    total = Counter(r.status for r in claims)
    rehearsal = scale == REHEARSAL or any(rec.get("scale") == REHEARSAL for rec in records.values())
    lines = [f"# ntkrepro {'paper-size rehearsal' if rehearsal else 'reproduction report'} — scale {scale}", "",
             *([REHEARSAL_BANNER, ""] if rehearsal else []),
             f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from the metrics.json files and the claims "
             f"registries (no recomputation). MLflow UI: [experiments]"
             f"({(mlflow_ui or DEFAULT_MLFLOW_UI).rstrip('/')}/#/experiments?{ML_MODE}) (model-training view).", "",
             TOC_PLACEHOLDER, "", "## Verdict summary", "",
             f"**{len(claims)} claims**: {_badges(total)}; consistency checks: "
             f"{_badges(Counter(r.status for r in checks), CHECK_STATUSES) or 'none'}.", ""]
    rows = []
    for paper in papers:
        counts = Counter(r.status for r in claims if r.claim.paper == paper)
        check_counts = Counter(r.status for r in checks if r.claim.paper == paper)
        rows.append([f"[{paper}](#{anchor(paper)})", *[str(counts.get(s, 0)) for s in STATUSES],
                     "/".join(str(check_counts.get(s, 0)) for s in CHECK_STATUSES)])
    rows.append(["**all**", *[f"**{total.get(s, 0)}**" for s in STATUSES],
                 "/".join(str(sum(r.status == s for r in checks)) for s in CHECK_STATUSES)])
    lines += _md_table(["paper", *STATUSES, "checks (holds/fails/not run)"], rows)
    attention = sorted((r for r in claims if r.status in ATTENTION), key=lambda r: (_order(r), r.claim.paper))
    lines += ["", "### Needs attention", ""]
    if attention:
        lines += [f"{len(attention)} claims are contradicted, inconsistent in the paper, deviate or are "
                  "inconclusive; each links its artifact and the paper README's derivation.", ""]
        lines += _md_table(
            ["status", "artifact", "claim", "paper", "measured", "tolerance", "evidence and notes"],
            [[r.status, f"[{r.claim.paper}/{r.claim.artifact}](#{anchor(r.claim.paper, r.claim.artifact)})",
              _claim_cell(r), _esc(_with_unit(r.claim.paper_value, _claim_unit(r))), _esc(_measured(r)),
              _esc(_tol(r.claim)), _notes(r, readmes.get(r.claim.paper))] for r in attention])
    else:
        lines += ["No claim is contradicted, paper inconsistent, deviating or inconclusive at this scale."]
    lines += ["", "Statuses: " + "; ".join(f"**{s}**: {_esc(m)}" for s, m in MEANING.items()) + ". A claim is "
              "*reproduced* only with its premise: the paper's settings for every config key it depends on "
              "(or its registry's constraint), no override of them, real data on every split. Consistency "
              "checks (identities and regimes that cannot fail) are listed apart and never counted."]
    for paper in papers:
        counts = Counter(r.status for r in claims if r.claim.paper == paper)
        readme = readmes.get(paper)
        title = _paper_title(experiments_dir / paper / "README.md")
        runs_table = next((url for (p, _), rec in sorted(records.items()) if p == paper
                           for url in [mlflow_experiment_url(rec, mlflow_ui)] if url), None)
        lines += ["", f"## {paper}", "", *([f"*{_esc(title)}*", ""] if title else []),
                  f"{_badges(counts) or 'no claims'}." + (f" Settings, deviations and derivations: "
                                                         f"[README]({readme})." if readme else "")
                  + (f" MLflow: [runs table]({runs_table})." if runs_table else "")]
        artifacts = sorted({r.claim.artifact for r in results if r.claim.paper == paper}
                           | {a for p, a in records if p == paper})
        ran = [a for a in artifacts if (paper, a) in records]
        for artifact in ran:
            lines += _artifact_section(paper, artifact, records[(paper, artifact)],
                                       [r for r in results if (r.claim.paper, r.claim.artifact) == (paper, artifact)],
                                       results_dir, readme, mlflow_ui, costs)
        missing = [a for a in artifacts if (paper, a) not in records]
        if missing:
            body = []
            for artifact in missing:
                res = [r for r in results if (r.claim.paper, r.claim.artifact) == (paper, artifact)]
                body += [f"**{artifact}** ({len(res)} claims): not run at this scale; at paper scale: "
                         f"{_esc(paper_scale_cost(f'{paper}/{artifact}', costs))}.",
                         *_claim_lines_flat(res, readme), ""]
            lines += _details(f"{len(missing)} artifact{'s' * (len(missing) != 1)} without results at this "
                              f"scale: {', '.join(missing)}", body)
    lines += sweep_section(sweeps or [], mlflow_ui)
    lines += ["", "## Provenance", ""]
    lines += _md_table(["artifact", "commit", "dirty", "date", "host", "JAX", "backend / devices", "MLflow run"],
                       [[f"[{p}/{a}](#{anchor(p, a)})", _code(str(rec.get("git_commit"))[:10]),
                         _fmt(rec.get("git_dirty")), _esc(rec.get("date")),
                         _esc((rec.get("runtime") or {}).get("host")), _esc((rec.get("runtime") or {}).get("jax")),
                         _esc(f"{(rec.get('runtime') or {}).get('jax_backend')}: "
                              f"{(rec.get('runtime') or {}).get('jax_devices')}"),
                         _run_link(rec, mlflow_ui)] for (p, a), rec in sorted(records.items())])
    lines += ["", "Package versions at report time: " + ", ".join(
        f"{name} {_version(name)}" for name in ("jax", "jaxlib", "numpy", "scipy", "hydra-core",
                                               "snakemake", "mlflow", "matplotlib")) + "."]
    unstated = [(p, a, k, v) for (p, a), rec in sorted(records.items())
                for k, v in sorted((rec.get("unstated_settings") or {}).items())]
    lines += ["", "## Settings the papers leave unstated", ""]
    lines += _md_table(["paper", "artifact", "setting", "value chosen"],
                       [[p, a, _esc(k), _esc(_fmt(v))] for p, a, k, v in unstated])
    i = lines.index(TOC_PLACEHOLDER)
    lines[i:i + 1] = table_of_contents(lines)
    return "\n".join(lines) + "\n"


TOC_PLACEHOLDER = "<!-- table of contents -->"


def table_of_contents(lines: list[str]) -> list[str]:
    """A Markdown list of links to the ``##`` and ``###`` headings (ids as Python-Markdown's toc gives them)."""
    items = []
    for line in lines:
        m = re.match(r"(##|###) (.+)$", line)
        if m:
            indent = "    " * (len(m.group(1)) - 2)
            items.append(f"{indent}- [{m.group(2)}](#{slugify(m.group(2), '-')})")
    return ['<div class="toc" markdown="1">', "", "**Contents**", "", *items, "", "</div>"]


def _paper_title(readme: Path) -> str:
    """The first heading of a paper's README (its authors and title), '' when there is none."""
    if not readme.exists():
        return ""
    first = next((line for line in readme.read_text().splitlines() if line.startswith("# ")), "")
    return first[2:].strip()


def _claim_lines_flat(results: list[ClaimResult], readme: str | None) -> list[str]:
    return ["", *_claims_table(results, readme)] if results else []


def scoreboard_text(results: list[ClaimResult]) -> str:
    """The scoreboard as plain text for the console: one line per paper and a total."""
    claims = [r for r in results if not r.claim.consistency]
    papers = sorted({r.claim.paper for r in results})
    width = max([len(p) for p in papers] + [5])
    lines = []
    for paper in [*papers, None]:
        sel = [r for r in claims if paper is None or r.claim.paper == paper]
        counts = Counter(r.status for r in sel)
        lines.append(f"{paper or 'all':<{width}}  {len(sel):>3} claims: {_plain_counts(counts) or 'none'}")
    return "\n".join(lines)


# ---- HTML ------------------------------------------------------------------------------------------------

class _ReportTree(Treeprocessor):
    """Figures (an image paragraph and the italic caption under it) become ``<figure>`` with the PNG embedded;
    status cells become coloured badges; claims tables are marked for the sort/filter script."""

    def __init__(self, md, results_dir: Path):
        super().__init__(md)
        self.results_dir = results_dir

    def run(self, root):
        for parent in list(root.iter()):
            children = list(parent)
            for i, child in enumerate(children):
                if child.tag == "p" and len(child) == 1 and child[0].tag == "img" and not (child.text or "").strip() \
                        and not (child[0].tail or "").strip():
                    self._figure(parent, child, children[i + 1] if i + 1 < len(children) else None)
        statuses = set(STATUSES) | set(CHECK_STATUSES)
        for table in root.iter("table"):
            heads = [(th.text or "").strip() for th in table.iter("th")]
            if "status" in heads:
                table.set("class", "claims")
            for th in table.iter("th"):
                if (th.text or "").strip() in statuses:
                    th.set("class", f"st st-{_slug(th.text.strip())}")
            for tr in table.iter("tr"):
                for head, td in zip(heads, tr.findall("td"), strict=False):
                    text = "".join(td.itertext()).strip()
                    if head in statuses:  # a count under a status heading: coloured when not zero
                        td.set("class", "zero" if text == "0" else f"count st-{_slug(head)}")
                    elif text in statuses and len(td) == 0:  # a status (or an indicative verdict): a badge
                        td.text = None
                        badge = ET.SubElement(td, "span", {"class": f"badge st-{_slug(text)}"})
                        badge.text = text
                        if head == "status":
                            td.set("data-status", text)
                        else:
                            td.set("class", "indicative")
        return root

    def _figure(self, parent, p, after):
        img = p[0]
        src = img.get("src", "")
        figure = ET.Element("figure")
        path = self.results_dir / src
        if path.is_file():
            a = ET.SubElement(figure, "a", {"href": "#", "class": "zoom", "title": "click to enlarge"})
            ET.SubElement(a, "img", {"src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(),
                                     "alt": img.get("alt", "")})
        else:
            missing = ET.SubElement(figure, "p", {"class": "missing"})
            missing.text = f"figure file missing: {src}"
        caption = ET.SubElement(figure, "figcaption")
        if after is not None and after.tag == "p" and len(after) == 1 and after[0].tag == "em" \
                and not (after.text or "").strip() and not (after[0].tail or "").strip():
            em = after[0]
            caption.text = em.text
            for sub in list(em):
                caption.append(sub)
            parent.remove(after)
        else:
            caption.text = img.get("alt", "")
        index = list(parent).index(p)
        parent.remove(p)
        parent.insert(index, figure)


class _ReportExtension(Extension):
    def __init__(self, results_dir: Path):
        super().__init__()
        self.results_dir = results_dir

    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's API)
        md.treeprocessors.register(_ReportTree(md, self.results_dir), "ntkrepro_report", 5)


def render_html(markdown_text: str, results_dir: Path) -> str:
    """The body HTML of the report's Markdown (Python-Markdown: tables, toc, md_in_html)."""
    return markdown.markdown(markdown_text, extensions=[
        "tables", "attr_list", "md_in_html", "sane_lists",
        TocExtension(toc_depth="2-3", marker=""),
        _ReportExtension(Path(results_dir))])


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1800px;padding:0 16px;
 color:#1f2328;line-height:1.4}
h1{font-size:1.6em;margin:.6em 0 .2em} h2{border-bottom:1px solid #d0d7de;margin-top:1.6em}
h3{margin-top:1.4em}
.toc{float:right;max-width:300px;max-height:70vh;overflow:auto;font-size:12px;border:1px solid #d0d7de;
 border-radius:6px;padding:4px 12px;margin:0 0 8px 16px;background:#f6f8fa}
.toc ul{padding-left:14px;margin:2px 0} .toc p{margin:4px 0}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
td,th{border:1px solid #d0d7de;padding:2px 6px;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0} table.claims th{cursor:pointer}
table.claims td:first-child{min-width:16em} code{font-size:90%;background:#f6f8fa;padding:0 3px}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-weight:600;white-space:nowrap}
th.st{white-space:nowrap} td.zero{color:#afb8c1} td.count{font-weight:600}
.artifact{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.artifact .figures{flex:0 1 640px;min-width:320px} .artifact .claims{flex:1 1 760px;min-width:0;overflow-x:auto}
table.claims td:nth-child(2){min-width:7em}
figure{margin:0 0 12px} figure img{max-width:100%;height:auto;cursor:zoom-in;border:1px solid #eaeef2}
figcaption{font-size:12px;color:#57606a} .missing{color:#cf222e}
details{margin:6px 0} summary{cursor:pointer;color:#57606a}
.filter{font-size:12px;margin:4px 0} .filter select,.filter input{font-size:12px}
#overlay{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);overflow:auto;z-index:10;cursor:zoom-out}
#overlay img{display:block;margin:2vh auto;background:#fff}
"""

_SCRIPT = """
(function(){
 function val(td){var t=(td.dataset.status||td.textContent).trim();var n=parseFloat(t.replace(/[^0-9eE+.-].*$/,''));
  return isNaN(n)?t.toLowerCase():n;}
 document.querySelectorAll('table').forEach(function(table){
  var heads=table.querySelectorAll('thead th');
  heads.forEach(function(th,i){th.title='click to sort';th.addEventListener('click',function(){
   var body=table.tBodies[0],rows=Array.from(body.rows),dir=th.dataset.dir==='asc'?-1:1;
   th.dataset.dir=dir>0?'asc':'desc';
   rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);
    if(typeof x!==typeof y){x=String(x);y=String(y);}return x<y?-dir:x>y?dir:0;});
   rows.forEach(function(r){body.appendChild(r);});});});
  if(!table.classList.contains('claims'))return;
  var col=Array.from(heads).findIndex(function(th){return th.textContent.trim()==='status';});
  var seen=[];Array.from(table.tBodies[0].rows).forEach(function(r){var s=r.cells[col].dataset.status;
   if(s&&seen.indexOf(s)<0)seen.push(s);});
  var bar=document.createElement('div');bar.className='filter';
  var sel=document.createElement('select');sel.innerHTML='<option value="">all statuses</option>'+
   seen.map(function(s){return '<option>'+s+'</option>';}).join('');
  var txt=document.createElement('input');txt.placeholder='filter text';
  function apply(){var s=sel.value,q=txt.value.toLowerCase();Array.from(table.tBodies[0].rows).forEach(function(r){
   var ok=(!s||r.cells[col].dataset.status===s)&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
   r.style.display=ok?'':'none';});}
  sel.onchange=apply;txt.oninput=apply;bar.append('show ',sel,' ',txt);table.parentNode.insertBefore(bar,table);
 });
 var ov=document.getElementById('overlay');
 document.querySelectorAll('a.zoom').forEach(function(a){a.addEventListener('click',function(e){e.preventDefault();
  ov.innerHTML='';var img=document.createElement('img');img.src=a.querySelector('img').src;ov.appendChild(img);
  ov.style.display='block';});});
 ov.addEventListener('click',function(){ov.style.display='none';});
 document.addEventListener('keydown',function(e){if(e.key==='Escape')ov.style.display='none';});
})();
"""


def build_html(markdown_text: str, results_dir: Path, title: str = "ntkrepro reproduction report") -> str:
    """A self-contained page: the Markdown rendered by Python-Markdown, figures inlined as base64 with the
    italic line under each as its figcaption, status badges, sortable/filterable claims tables."""
    colours = "".join(f".st-{_slug(s)}{{background:{c};color:{'#1f2328' if s in LIGHT else '#fff'}}}"
                      for s, c in STATUS_COLOURS.items())
    body = render_html(markdown_text, results_dir)
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<style>{_STYLE}{colours}</style></head><body>\n{body}\n<div id='overlay'></div>"
            f"<script>{_SCRIPT}</script></body></html>\n")


# ---- entry points ----------------------------------------------------------------------------------------

def evaluate_results(results_dir: Path, experiments_dir: Path):
    """(claim results, registered records, sweep jobs with their results) of one scale's results folder."""
    registries = sorted(Path(experiments_dir).glob("*/claims.yaml"))
    results = evaluate_all(registries, results_dir)
    records = load_records(results_dir)
    claims = [c for reg in registries for c in load_registry(reg)]
    sweeps = [(rec, [evaluate(c, rec) for c in claims if (c.paper, c.artifact) == (rec["paper"], rec["artifact"])])
              for rec in load_sweep_records(results_dir)]
    return results, records, sweeps


def build(results_dir: Path, experiments_dir: Path, mlflow_ui: str | None = None,
          costs: Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``results_dir``; return their paths. ``costs``: the JSON of
    ``scripts/cost_table.py --scale paper --json`` (what the claims not run would cost)."""
    return _build(results_dir, experiments_dir, mlflow_ui, costs)[:2]


def _build(results_dir: Path, experiments_dir: Path, mlflow_ui: str | None = None, costs: Path | None = None):
    results_dir = Path(results_dir)
    mlflow_ui = mlflow_ui or os.environ.get("NTKREPRO_MLFLOW_UI") or DEFAULT_MLFLOW_UI
    results, records, sweeps = evaluate_results(results_dir, Path(experiments_dir))
    every = [*records.values(), *(rec for rec, _ in sweeps)]
    ids = experiment_ids(every)
    for rec in every:
        if rec.get("mlflow_run_id") in ids:
            rec.setdefault("mlflow_experiment_id", ids[rec["mlflow_run_id"]])
    scale = results_dir.name
    md = build_markdown(results, records, scale, sweeps, results_dir=results_dir,
                        experiments_dir=Path(experiments_dir), mlflow_ui=mlflow_ui, costs=load_costs(costs))
    md_path = atomic_write_text(results_dir / "report.md", md)
    html_path = atomic_write_text(results_dir / "report.html",
                                  build_html(md, results_dir, f"ntkrepro reproduction report — {scale}"))
    return md_path, html_path, results


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="results/<scale> folder")
    parser.add_argument("--experiments", default=Path("experiments"), type=Path)
    parser.add_argument("--mlflow-ui", default=None,
                        help=f"base URL of the MLflow UI for run links (default: $NTKREPRO_MLFLOW_UI or "
                             f"{DEFAULT_MLFLOW_UI}; a run logged to a tracking server links there)")
    parser.add_argument("--costs", type=Path, default=None,
                        help="paper-scale cost of every stage: the JSON of scripts/cost_table.py --scale paper --json")
    parser.add_argument("--scoreboard-only", action="store_true",
                        help="print the scoreboard and the report's path; write nothing")
    args = parser.parse_args(argv)
    try:
        if args.scoreboard_only:
            results = evaluate_results(args.results, args.experiments)[0]
            md, html_path = args.results / "report.md", args.results / "report.html"
        else:
            md, html_path, results = _build(args.results, args.experiments, args.mlflow_ui, args.costs)
    except ClaimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Scoreboard ({args.results.name}):\n{scoreboard_text(results)}\n")
    print(f"Report: {html_path.resolve()}\n        {md.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
