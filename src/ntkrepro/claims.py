"""Claims registry: each paper's published numbers and claims, checked against measured metrics.

A registry is ``experiments/<paper>/claims.yaml``::

    paper: jacot2018
    artifacts:                           # the premise shared by every claim of an artifact
      fig3:
        settings: {data.n_train: 512}    # config values the claims are about (see "Premise" below)
        free:                            # config keys that do not change what the claims measure
          params.record_every: "sampling of the plotted curve only; the fits use every recorded step"
        identity:                        # premise keys that define WHAT is measured (optional)
          params.model.kind: "another architecture measures another object"
    claims:
      - id: fig3_lambda1                 # unique within the paper
        artifact: fig3                   # the stage whose metrics.json holds the measurement
        metric: lambda1                  # key in metrics.json["metrics"]
        paper_value: 0.0457              # the published number (the ONLY place it lives)
        where: "Sec. 6, Fig. 3"
        statement: "first NTK eigenvalue of Theta/N on 512 MNIST digits"
        kind: value                      # value | rate | ordering | limit | bound
        tolerance: {rel: 0.1}            # {abs: x}, {rel: x}, {se: k}; ordering: none
        tolerance_reason: "..."
        settings: {params.widths: {includes: [10000]}}   # merged over the artifact's settings
        free: {params.steps: "eigenvalues of the kernel at init; no training involved"}
        needs_data: true                 # a stand-in dataset on any split cannot confirm it (default true)
        exact: false                     # measured by an exact computation: a miss is "contradicted"
        evidence: [lambda2, n_train]     # optional: other metrics of the artifact shown with the verdict
        consistency: "why it cannot fail"  # optional: a check that holds by construction (see below)
        paper_table: "mean(t1_a, t1_b) - mean(t1_c)"  # optional: the value the paper's own table implies

**Premise.** A claim is about the paper's settings. Its premise keys are the run config's ``precision``,
``params.*`` and ``data.*`` (except ``data.substitute``). Every premise key the claim does not declare
must equal the paper-scale registered config (``conf/`` composed with ``scale=paper``); ``settings``
replaces that equality by a constraint for one key, ``free`` removes it (with the reason). A constraint
is a value (equality; numbers to 1e-9 relative) or a mapping of ``min``/``max`` (every element),
``includes`` (a list containing these), ``min_len``, ``min_distinct`` (list length / distinct values),
``one_of``. A stage records its resolved ``config``, the paper-scale ``paper_config`` and its
``overrides`` against the registered config of its scale; a violated premise key gives
``not comparable`` when the run overrode it (a CLI override, a sweep job) and ``not run at this scale``
when the scale's registered config lacks it; both carry the indicative verdict, except where a violated
key is one of the claim's ``identity`` keys (key: reason; e.g. the architecture): a run that differs there
measures another object, so its numbers say nothing about the claim and no indicative verdict is given.

**Bounds.** ``kind: bound`` with ``side: above`` (or ``below``) claims the measured value lies above
(below) ``paper_value``; with an uncertainty, the whole interval m ± 2 se must (a significant gap),
an interval across the bound is inconclusive. It takes no tolerance.

**Statistics.** ``tolerance.abs``/``rel`` is the band within which the paper's number counts as
reproduced. A metric with an uncertainty (``metrics.json["uncertainty"][metric] = {se, n, over}``:
a mean over seeds, a fitted slope) is judged with its interval m ± 2 se: inside the band: reproduced;
outside: deviates (contradicted if exact); straddling: ``inconclusive``. ``tolerance.se: k`` makes the
band (also) k measured standard errors (a test of "equal up to noise"). A non-exact claim without an
uncertainty is labelled a single-run comparison.

**Other statuses.** ``data unavailable``: a stand-in on any split; in a rehearsal (scale ``rehearsal``:
the paper's sizes on stand-ins) for every claim, ``needs_data`` or not, so that it never scores a stand-in.
``paper inconsistent``: the text's number (``paper_value``) disagrees, beyond the tolerance, with what the
paper's own table gives (``paper_table``, an expression over other claims' paper values with + - * / and
mean, min, max); the measured value is then compared with the table's (indicative). ``consistency``: a check that cannot
fail by construction (an identity, a guaranteed regime) is reported in a separate section as
``check holds`` / ``check fails``, never counted as reproduced. Diverged runs behind a metric
(``metrics.json["diverged"][metric] = {diverged, runs}``) are stated with the verdict.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KINDS = ("value", "rate", "ordering", "limit", "bound")
SIDES = ("above", "below")
STATUSES = ("reproduced", "deviates", "contradicted", "inconclusive", "paper inconsistent", "not comparable",
            "not run at this scale", "data unavailable")
CHECK_STATUSES = ("check holds", "check fails", "check not run")
CONSTRAINT_OPS = ("min", "max", "includes", "min_len", "min_distinct", "one_of")
TOLERANCE_KEYS = ("abs", "rel", "se")
INTERVAL_Z = 2.0  # the measured interval is m ± 2 se
REHEARSAL = "rehearsal"  # the scale that runs the paper's sizes on stand-ins (conf/scale/rehearsal.yaml)


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
    needs_data: bool
    exact: bool
    evidence: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)
    free: dict = field(default_factory=dict)
    consistency: str | None = None
    side: str | None = None  # kind: bound
    identity: dict = field(default_factory=dict)  # premise keys that define what is measured: key -> reason
    paper_table: str | None = None
    table_value: float | None = None  # paper_table evaluated on the registry's paper values


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
    verdict: str | None = None       # what the numbers alone say (the indicative verdict)
    statistics: str = ""             # "mean over 10 seeds, se 0.02" / "single run" / ""
    uncertainty: dict | None = None  # {se, n, over} of the measured value


# ---- premise -------------------------------------------------------------------------------------------

def is_premise_key(key: str) -> bool:
    """Config keys a claim's statement can depend on: precision, params.*, data.* (not data.substitute)."""
    return key == "precision" or key.startswith("params.") or (key.startswith("data.") and key != "data.substitute")


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _check_constraint(where: str, key: str, c) -> None:
    if isinstance(c, dict):
        bad = set(c) - set(CONSTRAINT_OPS)
        if bad or not c:
            raise ClaimError(f"{where}: settings.{key}: a constraint mapping takes {list(CONSTRAINT_OPS)}, "
                             f"got {sorted(c)}")
        for op in ("min_len", "min_distinct"):
            if op in c and not (isinstance(c[op], int) and c[op] >= 1):
                raise ClaimError(f"{where}: settings.{key}.{op} must be an integer >= 1")
        for op in ("includes", "one_of"):
            if op in c and not isinstance(c[op], list):
                raise ClaimError(f"{where}: settings.{key}.{op} must be a list")


def satisfies(value, constraint) -> bool:
    """Whether a config value meets a settings constraint (see the module docstring)."""
    if not isinstance(constraint, dict):
        return _same(value, constraint)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    nums = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
    if "min" in constraint and not (items and nums and all(v >= constraint["min"] for v in items)):
        return False
    if "max" in constraint and not (items and nums and all(v <= constraint["max"] for v in items)):
        return False
    if "includes" in constraint and not all(any(_same(v, w) for v in items) for w in constraint["includes"]):
        return False
    if "min_len" in constraint and not (isinstance(value, (list, tuple)) and len(value) >= constraint["min_len"]):
        return False
    if "min_distinct" in constraint:
        distinct = []
        for v in items:
            if not any(_same(v, w) for w in distinct):
                distinct.append(v)
        if not (isinstance(value, (list, tuple)) and len(distinct) >= constraint["min_distinct"]):
            return False
    if "one_of" in constraint and not any(_same(value, w) for w in constraint["one_of"]):
        return False
    return True


def describe(constraint) -> str:
    if not isinstance(constraint, dict):
        return f"= {_short(constraint)}"
    return ", ".join(f"{op} {_short(v)}" for op, v in constraint.items())


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass(frozen=True)
class Violation:
    key: str
    value: Any
    needs: str
    overridden: bool

    def __str__(self) -> str:
        how = "overridden to" if self.overridden else "="
        return f"{self.key} {how} {_short(self.value)} (the claim needs {self.needs})"


def premise_violations(claim: Claim, config: dict, paper_config: dict, overrides: dict) -> list[Violation]:
    """The claim's premise keys that the run's (flattened) ``config`` does not meet: declared settings,
    and every other premise key of ``paper_config`` not declared free."""
    out = []
    keys = sorted(set(claim.settings) | {k for k in set(paper_config) | set(config) if is_premise_key(k)})
    for key in keys:
        if key in claim.free:
            continue
        value = config.get(key, "<absent>")
        if key in claim.settings:
            ok, needs = satisfies(value, claim.settings[key]), describe(claim.settings[key])
        else:
            expected = paper_config.get(key, "<absent>")
            ok, needs = _same(value, expected), f"the paper's {_short(expected)}"
        if not ok:
            out.append(Violation(key, value, needs, key in overrides))
    return out


# ---- registry ------------------------------------------------------------------------------------------

_FUNCS = {"mean": lambda *a: sum(a) / len(a), "min": min, "max": max}


def _table_expr(expr: str, values: dict[str, Any], where: str) -> float:
    """Evaluate a paper_table expression over claim ids (their paper values); + - * / and mean/min/max."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise ClaimError(f"{where}: paper_table {expr!r}: {err.msg}") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values or not isinstance(values[node.id], (int, float)):
                raise ClaimError(f"{where}: paper_table names {node.id!r}, not a numeric claim of this registry")
            return float(values[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            a, b = ev(node.left), ev(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b,
                    ast.Div: a / b if b else math.nan}[type(node.op)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and node.args:
            return float(_FUNCS[node.func.id](*[ev(a) for a in node.args]))
        raise ClaimError(f"{where}: paper_table {expr!r}: only numbers, claim ids, + - * / and mean/min/max")

    return ev(tree)


def _mapping(where: str, name: str, value) -> dict:
    value = value or {}
    if not isinstance(value, dict):
        raise ClaimError(f"{where}: {name} must be a mapping of config keys")
    return value


def _check_free(where: str, free: dict, what: str = "free") -> None:
    for key, reason in free.items():
        if not (isinstance(reason, str) and reason.strip()):
            raise ClaimError(f"{where}: {what}.{key} needs its reason (a non-empty string)")
        if what == "identity" and not is_premise_key(key):
            raise ClaimError(f"{where}: identity.{key} must be a premise key (precision, params.*, data.*)")


def load_registry(path: str | Path) -> list[Claim]:
    """Parse and check one ``claims.yaml``."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or "paper" not in doc or "claims" not in doc:
        raise ClaimError(f"{path}: expected keys 'paper' and 'claims'")
    artifacts = _mapping(str(path), "artifacts", doc.get("artifacts"))
    for name, block in artifacts.items():
        where = f"{path}: artifact {name}"
        block = _mapping(where, "the artifact block", block)
        if set(block) - {"settings", "free", "identity"}:
            raise ClaimError(f"{where}: takes 'settings', 'free' and 'identity' only, got {sorted(block)}")
        for key, c in _mapping(where, "settings", block.get("settings")).items():
            _check_constraint(where, key, c)
        _check_free(where, _mapping(where, "free", block.get("free")))
        _check_free(where, _mapping(where, "identity", block.get("identity")), what="identity")
    raws, seen = doc["claims"] or [], set()
    for i, raw in enumerate(raws):
        missing = {"id", "artifact", "metric", "paper_value", "where", "kind"} - set(raw)
        if missing:
            raise ClaimError(f"{path}: claim #{i} lacks {sorted(missing)}")
        if raw["id"] in seen:
            raise ClaimError(f"{path}: duplicate claim id {raw['id']!r}")
        seen.add(raw["id"])
    paper_values_by_id = {raw["id"]: raw["paper_value"] for raw in raws}
    claims = []
    for raw in raws:
        where = f"{path}: claim {raw['id']}"
        if "needs_scale" in raw:
            raise ClaimError(f"{where}: needs_scale is derived from settings now; declare the claim's settings")
        if raw["kind"] not in KINDS:
            raise ClaimError(f"{where}: kind must be one of {KINDS}")
        tol = raw.get("tolerance") or {}
        if set(tol) - set(TOLERANCE_KEYS):
            raise ClaimError(f"{where}: tolerance takes {TOLERANCE_KEYS}, got {sorted(tol)}")
        if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in tol.values()):
            raise ClaimError(f"{where}: tolerance values must be finite numbers > 0")
        if raw["kind"] == "bound":
            if raw.get("side") not in SIDES or tol:
                raise ClaimError(f"{where}: a bound takes side: above|below and no tolerance")
        elif raw.get("side") is not None:
            raise ClaimError(f"{where}: side is for kind: bound")
        elif raw["kind"] != "ordering" and not tol:
            raise ClaimError(f"{where}: a tolerance {{abs|rel|se: x}} is required")
        if tol and not raw.get("tolerance_reason"):
            raise ClaimError(f"{where}: tolerance_reason is required")
        evidence = raw.get("evidence") or []
        if not (isinstance(evidence, list) and all(isinstance(e, str) for e in evidence)):
            raise ClaimError(f"{where}: evidence must be a list of metric names")
        block = artifacts.get(raw["artifact"]) or {}
        settings = {**(block.get("settings") or {}), **_mapping(where, "settings", raw.get("settings"))}
        for key, c in settings.items():
            _check_constraint(where, key, c)
        free = {**(block.get("free") or {}), **_mapping(where, "free", raw.get("free"))}
        _check_free(where, free)
        both = set(settings) & set(free)
        if both:
            raise ClaimError(f"{where}: {sorted(both)} both constrained and free")
        identity = {**(block.get("identity") or {}), **_mapping(where, "identity", raw.get("identity"))}
        _check_free(where, identity, what="identity")
        if set(identity) & set(free):
            raise ClaimError(f"{where}: {sorted(set(identity) & set(free))} both identity and free")
        consistency = raw.get("consistency")
        if consistency is not None and not (isinstance(consistency, str) and consistency.strip()):
            raise ClaimError(f"{where}: consistency takes the reason the check cannot fail (a string)")
        table = raw.get("paper_table")
        table_value = None
        if table is not None:
            if raw["kind"] in ("ordering", "bound"):
                raise ClaimError(f"{where}: paper_table needs a value, rate or limit claim")
            table_value = _table_expr(str(table), paper_values_by_id, where)
        claims.append(
            Claim(
                paper=doc["paper"], id=raw["id"], artifact=raw["artifact"], metric=raw["metric"],
                paper_value=raw["paper_value"], where=raw["where"],
                statement=raw.get("statement", ""), kind=raw["kind"], tolerance=tol,
                tolerance_reason=raw.get("tolerance_reason", ""),
                needs_data=bool(raw.get("needs_data", True)), exact=bool(raw.get("exact", False)),
                evidence=tuple(evidence), settings=settings, free=free, consistency=consistency,
                side=raw.get("side"), identity=identity,
                paper_table=None if table is None else str(table), table_value=table_value,
            )
        )
    return claims


def paper_values(registry: str | Path, artifact: str) -> dict:
    """The published value of each metric of ``artifact`` in a registry: for figure markers only (the
    verdicts come from :func:`evaluate`)."""
    return {c.metric: c.paper_value for c in load_registry(registry) if c.artifact == artifact}


# ---- verdicts ------------------------------------------------------------------------------------------

def band(tolerance: dict, expected: float, se: float | None = None) -> float:
    """Half-width of the acceptance band around ``expected``: the largest of abs, rel·|expected| and
    se·(measured standard error)."""
    parts = [tolerance.get("abs", 0.0), tolerance.get("rel", 0.0) * abs(expected)]
    if "se" in tolerance and se is not None and math.isfinite(se):
        parts.append(tolerance["se"] * se)
    return max(parts)


def compare(claim: Claim, measured, expected, uncertainty: dict | None) -> str:
    """reproduced / deviates / contradicted / inconclusive of a measured value against ``expected``."""
    miss = "contradicted" if claim.exact else "deviates"
    if claim.kind == "ordering":
        return "reproduced" if bool(measured) == bool(expected) else miss
    se = None if not uncertainty else uncertainty.get("se")
    if claim.kind == "bound":
        margin = (float(measured) - float(expected)) * (1 if claim.side == "above" else -1)
        spread = INTERVAL_Z * se if se is not None and math.isfinite(se) else 0.0
        return "reproduced" if margin - spread > 0 else miss if margin + spread <= 0 else "inconclusive"
    d = abs(float(measured) - float(expected))
    width = band(claim.tolerance, float(expected), se)
    if "se" in claim.tolerance and (se is None or not math.isfinite(se)) and set(claim.tolerance) == {"se"}:
        return "inconclusive"  # a band of k standard errors needs a measured spread
    if se is None or not math.isfinite(se) or "se" in claim.tolerance:
        return "reproduced" if d <= width else miss
    if d + INTERVAL_Z * se <= width:
        return "reproduced"
    if d - INTERVAL_Z * se > width:
        return miss
    return "inconclusive"


def _statistics(claim: Claim, uncertainty: dict | None) -> str:
    if uncertainty:
        se = uncertainty.get("se")
        se_txt = "no spread (n = 1)" if se is None or not math.isfinite(se) else f"se {se:.3g}"
        return f"{uncertainty.get('over', 'points')}: n = {uncertainty.get('n')}, {se_txt}"
    if claim.exact or claim.kind == "ordering":
        return ""
    return "single run (no spread measured)"


def _data_summary(record: dict) -> tuple[str | None, list[str]]:
    """(label of the data used, the stand-ins on any split)."""
    splits = record.get("splits") or []
    data = record.get("data") or {}
    stand_ins = sorted({f"{s.get('split')}: {s.get('name')} for {s['substituted_for']}"
                        for s in splits if s.get("substituted_for")})
    if not splits and data.get("substituted_for"):
        stand_ins = [f"{data.get('name')} for {data['substituted_for']}"]
    name = data.get("name")
    if splits:
        name = ", ".join(f"{s.get('split')}: {s.get('name')} (n={s.get('n')})" for s in splits)
    if stand_ins:
        name = f"{name} [stand-in: {'; '.join(stand_ins)}]"
    return name, stand_ins


def evaluate(claim: Claim, record: dict | None) -> ClaimResult:
    """Status of one claim given its artifact's metrics.json record (None: the stage did not run)."""
    not_run = "check not run" if claim.consistency else "not run at this scale"
    if record is None:
        return ClaimResult(claim, not_run, None, None, None, None, f"no metrics.json for artifact {claim.artifact!r}")
    metrics = record.get("metrics", {})
    overridden = sorted(k for k in (record.get("overrides") or {}) if is_premise_key(k) and k not in claim.free)
    if overridden and (claim.metric not in metrics or any(m not in metrics for m in claim.evidence)):
        # a sweep or an override removed what the claim measures (e.g. one of the sigma_w it names)
        return ClaimResult(claim, "check not run" if claim.consistency else "not comparable", None, None,
                           record.get("scale"), None, f"the run's overrides ({', '.join(overridden)}) removed "
                           f"the metric {claim.metric!r} or its evidence")
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
    uncertainty = (record.get("uncertainty") or {}).get(claim.metric)
    data_name, stand_ins = _data_summary(record)
    base = dict(claim=claim, measured=measured, scale=record.get("scale"), data=data_name,
                evidence={m: metrics[m] for m in claim.evidence}, uncertainty=uncertainty,
                statistics=_statistics(claim, uncertainty))
    notes = []
    diverged = (record.get("diverged") or {}).get(claim.metric)
    if diverged and diverged.get("diverged"):
        notes.append(f"{diverged['diverged']} of {diverged['runs']} runs diverged (left out of the metric)")

    # the indicative verdict: what the numbers alone say
    unmeasured = measured is None or (isinstance(measured, float) and math.isnan(measured))
    difference, verdict = None, None
    if not unmeasured:
        if claim.kind != "ordering":
            difference = float(measured) - float(claim.paper_value)
        verdict = compare(claim, measured, claim.paper_value, uncertainty)

    def result(status: str, detail: str, diff=difference, verdict_=verdict) -> ClaimResult:
        return ClaimResult(**base, status=status, difference=diff, verdict=verdict_,
                           detail="; ".join([d for d in (detail, *notes) if d]))

    indicative = f" (indicative: {verdict})" if verdict else ""
    config, paper_config = record.get("config"), record.get("paper_config")
    if config is None or paper_config is None:
        return result("check not run" if claim.consistency else "not comparable",
                      "the run recorded no config to compare with the paper's settings" + indicative)
    violations = premise_violations(claim, config, paper_config, record.get("overrides") or {})
    other = [v.key for v in violations if v.key in claim.identity]
    if other:  # another object was measured: its numbers say nothing about the claim
        indicative = "; not indicative: " + "; ".join(f"{k}: {claim.identity[k]}" for k in other)
        verdict = None
    if claim.needs_data and stand_ins and violations:  # say it too: a stand-in could not confirm it either
        notes.append(f"stand-in on {'; '.join(stand_ins)}")
    overridden = [v for v in violations if v.overridden]
    if overridden:
        return result("check not run" if claim.consistency else "not comparable",
                      "; ".join(str(v) for v in overridden) + indicative, verdict_=verdict)
    if violations:
        return result(not_run, f"at {record.get('scale')}: " + "; ".join(str(v) for v in violations) + indicative,
                      verdict_=verdict)
    if unmeasured:
        return result(not_run, "the stage did not measure it (see the stage's notes)")
    if stand_ins and (claim.needs_data or record.get("scale") == REHEARSAL):
        rehearsal = "rehearsal (the paper's sizes on a stand-in): " if record.get("scale") == REHEARSAL else ""
        return result("check not run" if claim.consistency else "data unavailable",
                      f"{rehearsal}stand-in on {'; '.join(stand_ins)}{indicative}")
    if claim.consistency:
        holds = verdict == "reproduced"
        return result("check holds" if holds else "check fails", f"consistency check: {claim.consistency}")
    if claim.table_value is not None:
        table_agrees = compare(claim, claim.table_value, claim.paper_value, None) == "reproduced"
        if not table_agrees:
            vs_table = compare(claim, measured, claim.table_value, uncertainty)
            return result("paper inconsistent",
                          f"the text gives {claim.paper_value}, the paper's own table {claim.table_value:.4g} "
                          f"({claim.paper_table}); measured vs the table: {vs_table}",
                          diff=float(measured) - claim.table_value, verdict_=vs_table)
    return result(verdict, "")


def load_records(results_dir: str | Path) -> dict[tuple[str, str], dict]:
    """The registered run of every ``<paper>/<artifact>/metrics.json`` under one scale's results folder."""
    records = {}
    for path in sorted(Path(results_dir).glob("*/*/metrics.json")):
        rec = json.loads(path.read_text())
        rec["_path"] = str(path)
        records[(rec["paper"], rec["artifact"])] = rec
    return records


def load_sweep_records(results_dir: str | Path) -> list[dict]:
    """Every Hydra multirun job's metrics.json (``<paper>/<artifact>/multirun/<time>/<job>/``)."""
    out = []
    for path in sorted(Path(results_dir).glob("*/*/multirun/*/*/metrics.json")):
        rec = json.loads(path.read_text())
        rec["_path"] = str(path)
        out.append(rec)
    return out


def evaluate_all(registries: list[Path], results_dir: str | Path) -> list[ClaimResult]:
    """Evaluate every claim of every registry against the registered runs under ``results_dir``."""
    records = load_records(results_dir)
    out = []
    for reg in registries:
        for claim in load_registry(reg):
            out.append(evaluate(claim, records.get((claim.paper, claim.artifact))))
    return out
