"""The reproduction report: built from ``metrics.json`` files and the claims registries only.

    python -m ntkrepro.report --results results/quick --experiments experiments

writes ``report.md`` and a self-contained ``report.html`` (figures embedded, each captioned with its config,
scale, data actually used, sizes, seeds, precision and runtime) into the results folder.
No recomputation happens here; a claim that references a metric no stage produced is an error.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from ntkrepro.claims import (
    CHECK_STATUSES,
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


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _tol(c) -> str:
    parts = [f"±{c.tolerance['abs']:g}" if "abs" in c.tolerance else "",
             f"±{100 * c.tolerance['rel']:g}%" if "rel" in c.tolerance else "",
             f"±{c.tolerance['se']:g} se" if "se" in c.tolerance else ""]
    return " or ".join(p for p in parts if p) or "—"


def _measured(r: ClaimResult) -> str:
    """The measured value with its standard error, when one was measured."""
    se = (r.uncertainty or {}).get("se")
    if se is None or not isinstance(se, (int, float)) or se != se:
        return _fmt(r.measured)
    return f"{_fmt(r.measured)} ± {se:.2g}"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r.replace("|", "\\|") for r in row) + " |" for row in rows]
    return out


def figure_caption(rec: dict, fig: str) -> str:
    """What a figure was computed from: config and scale, data actually used, sizes, seeds, precision, runtime."""
    paper, artifact = rec.get("paper"), rec.get("artifact")
    data = rec.get("data") or {}
    used = f"`{data.get('name')}`"
    if data.get("substituted_for"):
        used += f" (stand-in for `{data['substituted_for']}`)"
    if rec.get("splits"):
        used = ", ".join(f"{s.get('split')} `{s.get('name')}` (n={s.get('n')}"
                         + (f", stand-in for `{s['substituted_for']}`)" if s.get("substituted_for") else ")")
                         for s in rec["splits"])
    sizes = ", ".join(f"{k}={_fmt(v)}" for k, v in (rec.get("sizes") or {}).items()) or "—"
    seeds = ", ".join(str(s) for s in rec.get("seeds") or []) or "none"
    runtime = "—" if rec.get("runtime_s") is None else f"{_fmt(rec['runtime_s'])} s"
    return (f"Figure `{fig}` of {paper}/{artifact}: config `conf/experiment/{paper}/{artifact}.yaml` at scale "
            f"`{rec.get('scale')}`; data {used}; sizes {sizes}; seeds {seeds}; precision {_fmt(rec.get('precision'))}; "
            f"runtime {runtime}.")


def _notes(r: ClaimResult) -> str:
    """The detail (or the tolerance's reason), then the claim's evidence metrics as measured; a
    contradicted claim points to the paper's README, where the derivation is."""
    parts = [r.detail or r.claim.tolerance_reason, r.statistics]
    if r.evidence:
        parts.append("evidence: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in r.evidence.items()))
    if r.status == "contradicted":
        parts.append(f"why: experiments/{r.claim.paper}/README.md")
    return "; ".join(p for p in parts if p)


def sweep_section(sweeps: list[tuple[dict, list[ClaimResult]]]) -> list[str]:
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
        rows.append([f"{rec.get('paper')}/{rec.get('artifact')}", str(Path(rec["_path"]).parent),
                     ", ".join(f"{k}={_fmt(v['run'])}" for k, v in overrides.items()) or "none",
                     ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "no claims"])
    return lines + [""] + _md_table(["artifact", "job folder", "overrides", "claims"], rows)


def build_markdown(results: list[ClaimResult], records: dict, scale: str,
                   sweeps: list[tuple[dict, list[ClaimResult]]] | None = None) -> str:
    papers = sorted({r.claim.paper for r in results} | {p for p, _ in records})
    lines = [f"# ntkrepro reproduction report — scale `{scale}`", "",
             f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from the metrics.json files "
             "and the claims registries (no recomputation).", "", "## Scoreboard", ""]
    rows = []
    claims = [r for r in results if not r.claim.consistency]
    checks = [r for r in results if r.claim.consistency]
    for paper in papers:
        counts = Counter(r.status for r in results if r.claim.paper == paper)
        rows.append([paper, *[str(counts.get(s, 0)) for s in STATUSES],
                     "/".join(str(counts.get(s, 0)) for s in CHECK_STATUSES)])
    lines += _md_table(["paper", *STATUSES, "consistency checks (holds/fails/not run)"], rows)
    lines += ["", "A claim is *reproduced* only when the run had the claim's premise: the paper's settings "
              "for every config key the claim depends on (or the constraint its registry declares), no "
              "override of them, real data on every split. *not comparable*: a command-line override or "
              "a sweep removed the premise; *not run at this scale*: the scale's registered config lacks "
              "it; both give the indicative verdict. *inconclusive*: the measurement's interval "
              "(± 2 standard errors) straddles the tolerance. *paper inconsistent*: the text's number "
              "disagrees with the paper's own table. Consistency checks (identities and regimes that "
              "cannot fail) are listed apart and never counted as reproduced."]
    header = ["id", "where", "claim", "paper", "measured", "diff", "tolerance", "status", "scale", "data", "notes"]
    for paper in papers:
        lines += ["", f"## {paper}", "", "### Claims", ""]
        rows = [[r.claim.id, r.claim.where, r.claim.statement or r.claim.metric, _fmt(r.claim.paper_value),
                 _measured(r), _fmt(r.difference), _tol(r.claim), r.status, r.scale or "—",
                 r.data or "—", _notes(r)]
                for r in claims if r.claim.paper == paper]
        lines += _md_table(header, rows)
        paper_checks = [r for r in checks if r.claim.paper == paper]
        if paper_checks:
            lines += ["", "### Consistency checks (not counted as reproduced)", ""]
            lines += _md_table(header, [[r.claim.id, r.claim.where, r.claim.statement or r.claim.metric,
                                         _fmt(r.claim.paper_value), _measured(r), _fmt(r.difference),
                                         _tol(r.claim), r.status, r.scale or "—", r.data or "—", _notes(r)]
                                        for r in paper_checks])
        lines += ["", "### Artifacts", ""]
        for (p, artifact), rec in sorted(records.items()):
            if p != paper:
                continue
            folder = Path(rec["_path"]).parent
            data = rec.get("data") or {}
            subst = f" — **stand-in for {data['substituted_for']}**" if data.get("substituted_for") else ""
            lines += [f"#### {artifact}", "",
                      f"data: {data.get('name')} (source {data.get('source')}){subst}; sizes: "
                      f"{rec.get('sizes')}; seeds: {rec.get('seeds')}; precision: {rec.get('precision')}; "
                      f"runtime {rec.get('runtime_s')} s; commit {str(rec.get('git_commit'))[:10]}"
                      f"{' (dirty)' if rec.get('git_dirty') else ''}; MLflow run "
                      f"`{rec.get('mlflow_run_id')}`", ""]
            for split in rec.get("splits") or []:
                stand_in = f" — **stand-in for {split['substituted_for']}**" if split.get("substituted_for") else ""
                lines += [f"- split `{split.get('split')}`: {split.get('name')}, n = {split.get('n')}, source "
                          f"{split.get('source')}, sha256 {str(split.get('sha256'))[:12]}, indices "
                          f"{str(split.get('indices_sha256'))[:12]}{stand_in}"]
            overrides = rec.get("overrides")
            lines += ["", "overrides of the registered config: " + (
                "unknown (not recorded)" if overrides is None else
                ", ".join(f"`{k}` {_fmt(v['registered'])} → {_fmt(v['run'])}" for k, v in overrides.items())
                or "none"), ""]
            for fig in rec.get("figures", []):
                lines += [f"![{artifact}: {fig}]({paper}/{folder.name}/{fig}.png)", "",
                          f"*{figure_caption(rec, fig)}*", ""]
            for table in rec.get("tables", []):
                md = folder / f"{table}.md"
                if md.exists():
                    lines += [f"Table `{table}`:", "", md.read_text().strip(), ""]
    lines += sweep_section(sweeps or [])
    lines += ["", "## Provenance", ""]
    lines += _md_table(["artifact", "commit", "dirty", "date", "host", "JAX", "backend / devices",
                        "MLflow run"],
                       [[f"{p}/{a}", str(rec.get("git_commit"))[:10], _fmt(rec.get("git_dirty")),
                         str(rec.get("date")), str((rec.get("runtime") or {}).get("host")),
                         str((rec.get("runtime") or {}).get("jax")),
                         f"{(rec.get('runtime') or {}).get('jax_backend')}: "
                         f"{(rec.get('runtime') or {}).get('jax_devices')}",
                         f"`{rec.get('mlflow_run_id')}`"] for (p, a), rec in sorted(records.items())])
    lines += ["", "Package versions at report time: " + ", ".join(
        f"{name} {_version(name)}" for name in ("jax", "jaxlib", "numpy", "scipy", "hydra-core",
                                               "snakemake", "mlflow", "matplotlib")) + "."]
    unstated = [(p, a, k, v) for (p, a), rec in sorted(records.items())
                for k, v in sorted((rec.get("unstated_settings") or {}).items())]
    lines += ["", "## Settings the papers leave unstated", ""]
    lines += _md_table(["paper", "artifact", "setting", "value chosen"],
                       [[p, a, k, _fmt(v)] for p, a, k, v in unstated])
    return "\n".join(lines) + "\n"


def _is_caption(line: str) -> bool:
    """An italic line (``*...*``, not bold): the caption of the figure above it."""
    line = line.strip()
    return len(line) > 2 and line.startswith("*") and line.endswith("*") and not line.startswith("**")


def _inline(text: str) -> str:
    """Escaped text with the report's inline Markdown (`code`, **bold**) as HTML."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def build_html(markdown: str, results_dir: Path) -> str:
    """A self-contained HTML page: markdown tables and paragraphs, figures inlined as base64 with the
    italic line under each as its figcaption."""
    body, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in table if "---|" not in row]
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                           for r in cells[1:])
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            table.clear()

    lines = markdown.splitlines()
    captions = set()
    for i, line in enumerate(lines):
        if i in captions:
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2 : line.index("]")], line[line.index("(") + 1 : line.rindex(")")]
            caption = alt
            after = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
            if after is not None and _is_caption(lines[after]):
                caption = lines[after].strip()[1:-1]
                captions.add(after)
            png = results_dir / src
            if png.exists():
                img = f'<img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" ' \
                    f'alt="{html.escape(alt)}">'
            else:
                img = f"<p>figure file missing: {html.escape(src)}</p>"
            body.append(f"<figure>{img}<figcaption>{_inline(caption)}</figcaption></figure>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:640px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" + \
        "\n".join(body) + "</body></html>\n"


def build(results_dir: Path, experiments_dir: Path) -> tuple[Path, Path]:
    results_dir = Path(results_dir)
    registries = sorted(Path(experiments_dir).glob("*/claims.yaml"))
    results = evaluate_all(registries, results_dir)
    records = load_records(results_dir)
    claims = [c for reg in registries for c in load_registry(reg)]
    sweeps = [(rec, [evaluate(c, rec) for c in claims if (c.paper, c.artifact) == (rec["paper"], rec["artifact"])])
              for rec in load_sweep_records(results_dir)]
    scale = results_dir.name
    md = build_markdown(results, records, scale, sweeps)
    md_path = atomic_write_text(results_dir / "report.md", md)
    html_path = atomic_write_text(results_dir / "report.html", build_html(md, results_dir))
    return md_path, html_path


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="results/<scale> folder")
    parser.add_argument("--experiments", default=Path("experiments"), type=Path)
    args = parser.parse_args(argv)
    try:
        md, html_path = build(args.results, args.experiments)
    except ClaimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
