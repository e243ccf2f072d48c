"""Claims registry: each paper's published numbers and claims, checked against measured metrics.

A registry is ``experiments/<paper>/claims.yaml``::

    paper: jacot2018
    claims:
      - id: fig3_lambda1                 # unique within the paper
        artifact: fig3                   # the stage whose metrics.json holds the measurement
        metric: lambda1                  # key in metrics.json["metrics"]
        paper_value: 0.0457              # the published number (the ONLY place it lives)
        where: "Sec. 6, Fig. 3"
        statement: "first NTK eigenvalue of Theta/N on 512 MNIST digits"
        kind: value                      # value | rate | ordering | limit
        tolerance: {rel: 0.1}            # {abs: x} and/or {rel: x}; ordering: none
        tolerance_reason: "..."
        needs_scale: quick               # smallest scale at which the measurement is meaningful
        needs_data: true                 # a stand-in dataset cannot confirm it (default true if data used)
        exact: false                     # measured by an exact computation: a miss is "contradicted"
        evidence: [lambda2, n_train]     # optional: other metrics of the artifact shown with the verdict

Statuses: ``reproduced``, ``deviates``, ``contradicted`` (an exact computation disagrees with the
paper), ``not run at this scale``, ``data unavailable`` (the stage ran on a stand-in).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCALE_RANK = {"smoke": 0, "quick": 1, "paper": 2}
KINDS = ("value", "rate", "ordering", "limit")
STATUSES = ("reproduced", "deviates", "contradicted", "not run at this scale", "data unavailable")


class ClaimError(ValueError):
    """A malformed registry, or a claim that references a metric no stage produced."""


@dataclass(frozen=True)
class Claim:
    paper: str
    id: str
    artifact: str
    metric: str
    paper_value: Any
    where: str
    statement: str
    kind: str
    tolerance: dict
    tolerance_reason: str
    needs_scale: str
    needs_data: bool
    exact: bool
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    status: str
    measured: Any
    difference: float | None
    scale: str | None
    data: str | None
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)  # the claim's evidence metrics, as measured


def load_registry(path: str | Path) -> list[Claim]:
    """Parse and check one ``claims.yaml``."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or "paper" not in doc or "claims" not in doc:
        raise ClaimError(f"{path}: expected keys 'paper' and 'claims'")
    claims, seen = [], set()
    for i, raw in enumerate(doc["claims"] or []):
        missing = {"id", "artifact", "metric", "paper_value", "where", "kind"} - set(raw)
        if missing:
            raise ClaimError(f"{path}: claim #{i} lacks {sorted(missing)}")
        if raw["id"] in seen:
            raise ClaimError(f"{path}: duplicate claim id {raw['id']!r}")
        seen.add(raw["id"])
        if raw["kind"] not in KINDS:
            raise ClaimError(f"{path}: claim {raw['id']}: kind must be one of {KINDS}")
        tol = raw.get("tolerance") or {}
        if raw["kind"] != "ordering" and not ({"abs", "rel"} & set(tol)):
            raise ClaimError(f"{path}: claim {raw['id']}: a tolerance {{abs|rel: x}} is required")
        if tol and not raw.get("tolerance_reason"):
            raise ClaimError(f"{path}: claim {raw['id']}: tolerance_reason is required")
        evidence = raw.get("evidence") or []
        if not (isinstance(evidence, list) and all(isinstance(e, str) for e in evidence)):
            raise ClaimError(f"{path}: claim {raw['id']}: evidence must be a list of metric names")
        needs_scale = raw.get("needs_scale", "quick")
        if needs_scale not in SCALE_RANK:
            raise ClaimError(f"{path}: claim {raw['id']}: needs_scale must be one of {list(SCALE_RANK)}")
        claims.append(
            Claim(
                paper=doc["paper"], id=raw["id"], artifact=raw["artifact"], metric=raw["metric"],
                paper_value=raw["paper_value"], where=raw["where"],
                statement=raw.get("statement", ""), kind=raw["kind"], tolerance=tol,
                tolerance_reason=raw.get("tolerance_reason", ""), needs_scale=needs_scale,
                needs_data=bool(raw.get("needs_data", True)), exact=bool(raw.get("exact", False)),
                evidence=tuple(evidence),
            )
        )
    return claims


def paper_values(registry: str | Path, artifact: str) -> dict:
    """The published value of each metric of ``artifact`` in a registry: for figure markers only (the
    verdicts come from :func:`evaluate`)."""
    return {c.metric: c.paper_value for c in load_registry(registry) if c.artifact == artifact}


def _within(measured: float, expected: float, tol: dict) -> bool:
    ok_abs = "abs" in tol and abs(measured - expected) <= tol["abs"]
    ok_rel = "rel" in tol and abs(measured - expected) <= tol["rel"] * abs(expected)
    return ok_abs or ok_rel


def evaluate(claim: Claim, record: dict | None) -> ClaimResult:
    """Status of one claim given its artifact's metrics.json record (None: the stage did not run)."""
    if record is None:
        return ClaimResult(claim, "not run at this scale", None, None, None, None,
                           f"no metrics.json for artifact {claim.artifact!r}")
    metrics = record.get("metrics", {})
    if claim.metric not in metrics:
        raise ClaimError(
            f"claim {claim.paper}/{claim.id} references metric {claim.metric!r}, which stage "
            f"{claim.artifact!r} did not produce (it has: {', '.join(sorted(metrics)) or 'none'})"
        )
    missing = [m for m in claim.evidence if m not in metrics]
    if missing:
        raise ClaimError(f"claim {claim.paper}/{claim.id}: evidence metrics {missing} are not in stage "
                         f"{claim.artifact!r}'s metrics")
    measured = metrics[claim.metric]
    scale = record.get("scale")
    data = record.get("data") or {}
    data_name = data.get("name")
    if data.get("substituted_for"):
        data_name = f"{data_name} (stand-in for {data['substituted_for']})"
    base = dict(claim=claim, measured=measured, scale=scale, data=data_name,
                evidence={m: metrics[m] for m in claim.evidence})

    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return ClaimResult(**base, status="not run at this scale", difference=None,
                           detail="the stage did not measure it at this scale")
    difference = None
    if claim.kind == "ordering":
        holds = bool(measured) == bool(claim.paper_value)
    else:
        difference = float(measured) - float(claim.paper_value)
        holds = _within(float(measured), float(claim.paper_value), claim.tolerance)
    verdict = "reproduced" if holds else ("contradicted" if claim.exact else "deviates")
    if SCALE_RANK.get(scale, 0) < SCALE_RANK[claim.needs_scale]:
        return ClaimResult(**base, status="not run at this scale", difference=difference,
                           detail=f"measured at {scale}; the claim needs {claim.needs_scale} "
                                  f"(indicative: {verdict})")
    if claim.needs_data and data.get("substituted_for"):
        return ClaimResult(**base, status="data unavailable", difference=difference,
                           detail=f"{data['substituted_for']} unavailable; measured on "
                                  f"{data.get('name')} (indicative: {verdict})")
    return ClaimResult(**base, status=verdict, difference=difference, detail="")


def load_records(results_dir: str | Path) -> dict[tuple[str, str], dict]:
    """All ``<paper>/<artifact>/metrics.json`` under one scale's results folder."""
    records = {}
    for path in sorted(Path(results_dir).glob("*/*/metrics.json")):
        rec = json.loads(path.read_text())
        rec["_path"] = str(path)
        records[(rec["paper"], rec["artifact"])] = rec
    return records


def evaluate_all(registries: list[Path], results_dir: str | Path) -> list[ClaimResult]:
    """Evaluate every claim of every registry against the metrics found under ``results_dir``."""
    records = load_records(results_dir)
    out = []
    for reg in registries:
        for claim in load_registry(reg):
            out.append(evaluate(claim, records.get((claim.paper, claim.artifact))))
    return out
