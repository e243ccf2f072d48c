"""Claim statuses from (claim, metrics.json) pairs, registry validation, and the report (tables, figure captions)."""

import base64
import json
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ntkrepro.claims import ClaimError, evaluate, load_registry, satisfies
from ntkrepro.io import atomic_savefig
from ntkrepro.plotting import figure
from ntkrepro.report import build


def _registry(tmp_path, claims, paper="p"):
    path = tmp_path / "experiments" / paper / "claims.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"paper": paper, "claims": claims}))
    return path


VALUE = {"id": "c1", "artifact": "a", "metric": "m", "paper_value": 1.0, "where": "Tab. 1",
         "kind": "value", "tolerance": {"abs": 0.1}, "tolerance_reason": "seed noise"}
PAPER_CONFIG = {"precision": "float64", "params.widths": [100, 1000], "data.n_train": 512}


def _record(value, scale="quick", substituted_for=None, config=None, overrides=None):
    """A metrics.json record whose run had the paper's settings unless ``config`` says otherwise."""
    splits = [{"split": "train", "name": "digits", "n": 512, "substituted_for": None},
              {"split": "test", "name": substituted_for and "fashion_mnist" or "digits", "n": 100,
               "substituted_for": substituted_for}]
    return {"paper": "p", "artifact": "a", "scale": scale, "metrics": {"m": value},
            "data": {"name": "digits", "substituted_for": None}, "splits": splits,
            "config": {**PAPER_CONFIG, "seed": 0, **(config or {})}, "paper_config": dict(PAPER_CONFIG),
            "overrides": overrides or {}}


@pytest.mark.parametrize(
    "value,config,overridden,subst,exact,status",
    [
        (1.05, None, False, None, False, "reproduced"),
        (1.5, None, False, None, False, "deviates"),
        (1.5, None, False, None, True, "contradicted"),
        (1.05, {"params.widths": [100, 300]}, False, None, False, "not run at this scale"),
        (1.05, {"params.widths": [100]}, True, None, False, "not comparable"),
        (1.05, {"precision": "float32"}, True, None, False, "not comparable"),
        (1.05, {"seed": 3}, True, None, False, "reproduced"),  # another seed is a replication, not a new premise
        (1.05, None, False, "mnist", False, "data unavailable"),  # a stand-in on the test split only
        (None, None, False, None, False, "not run at this scale"),
    ],
)
def test_statuses(tmp_path, value, config, overridden, subst, exact, status):
    (claim,) = load_registry(_registry(tmp_path, [{**VALUE, "exact": exact}]))
    overrides = {k: {"registered": None, "run": v} for k, v in (config or {}).items()} if overridden else {}
    result = evaluate(claim, _record(value, substituted_for=subst, config=config, overrides=overrides))
    assert result.status == status
    if status in ("not comparable", "not run at this scale") and value is not None:
        assert "(indicative: reproduced)" in result.detail and result.verdict == "reproduced"


def test_settings_and_free_replace_the_paper_equality(tmp_path):
    """A claim about the widest width only: any width list holding 1000 meets it; a free key may differ."""
    claim = {**VALUE, "settings": {"params.widths": {"includes": [1000]}},
             "free": {"data.n_train": "the claim is about the kernel at init, no data"}}
    (c,) = load_registry(_registry(tmp_path, [claim]))
    assert evaluate(c, _record(1.0, config={"params.widths": [1000], "data.n_train": 64})).status == "reproduced"
    res = evaluate(c, _record(1.0, config={"params.widths": [100]},
                              overrides={"params.widths": {"registered": [100, 1000], "run": [100]}}))
    assert res.status == "not comparable" and "params.widths overridden to [100]" in res.detail


def test_artifact_block_applies_to_every_claim_and_claims_refine_it(tmp_path):
    path = tmp_path / "experiments" / "p" / "claims.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({
        "paper": "p",
        "artifacts": {"a": {"settings": {"params.widths": {"min_distinct": 2}},
                            "free": {"data.n_train": "not used by these claims"}}},
        "claims": [VALUE, {**VALUE, "id": "c2", "settings": {"params.widths": {"includes": [1000]}}}]}))
    c1, c2 = load_registry(path)
    assert c1.settings == {"params.widths": {"min_distinct": 2}} and "data.n_train" in c1.free
    assert c2.settings == {"params.widths": {"includes": [1000]}} and "data.n_train" in c2.free
    one = _record(1.0, config={"params.widths": [1000, 1000]})
    assert evaluate(c1, one).status == "not run at this scale"  # one distinct width: no ordering to check
    assert evaluate(c2, one).status == "reproduced"


def test_a_reduced_run_on_a_stand_in_says_both(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [VALUE]))
    res = evaluate(c, _record(1.05, substituted_for="mnist", config={"params.widths": [100, 300]}))
    assert res.status == "not run at this scale"
    assert "params.widths = [100, 300]" in res.detail and "stand-in on test: fashion_mnist" in res.detail


def test_identity_keys_withhold_the_indicative_verdict(tmp_path):
    """A run that differs in an identity key (another architecture) measured another object: not run at this
    scale (or not comparable) with no indicative verdict; a difference elsewhere keeps it."""
    path = tmp_path / "experiments" / "p" / "claims.yaml"
    path.parent.mkdir(parents=True)
    config = {**PAPER_CONFIG, "params.model.kind": "cifar_resnet"}
    path.write_text(yaml.safe_dump({
        "paper": "p", "artifacts": {"a": {"identity": {"params.model.kind": "another network"}}},
        "claims": [VALUE]}))
    (c,) = load_registry(path)

    def record(**changes):
        rec = _record(1.0, config={"params.model.kind": "cifar_resnet", **changes})
        rec["paper_config"] = dict(config)
        return rec

    res = evaluate(c, record(**{"params.model.kind": "fc_resnet"}))
    assert res.status == "not run at this scale" and res.verdict is None
    assert "(indicative:" not in res.detail and "not indicative: params.model.kind: another network" in res.detail
    over = record(**{"params.model.kind": "fc_resnet"})
    over["overrides"] = {"params.model.kind": {"registered": "cifar_resnet", "run": "fc_resnet"}}
    res = evaluate(c, over)
    assert res.status == "not comparable" and res.verdict is None
    res = evaluate(c, record(**{"params.widths": [100, 300]}))  # a reduced setting of the same object
    assert res.status == "not run at this scale" and res.verdict == "reproduced"
    assert evaluate(c, record()).status == "reproduced"


@pytest.mark.parametrize("block,message", [
    ({"identity": {"seed": "x"}}, "must be a premise key"),
    ({"identity": {"params.a": ""}}, "needs its reason"),
    ({"identity": {"params.a": "x"}, "free": {"params.a": "y"}}, "both identity and free"),
])
def test_identity_is_validated(tmp_path, block, message):
    path = tmp_path / "experiments" / "p" / "claims.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"paper": "p", "claims": [{**VALUE, **block}]}))
    with pytest.raises(ClaimError, match=message):
        load_registry(path)


@given(st.lists(st.integers(-3, 3), max_size=6), st.integers(1, 4))
def test_min_distinct_counts_distinct_values(values, k):
    assert satisfies(values, {"min_distinct": k}) == (len(set(values)) >= k)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=5), st.floats(-10, 10), st.floats(-10, 10))
def test_min_max_bound_every_element(values, lo, hi):
    assert satisfies(values, {"min": lo, "max": hi}) == all(lo <= v <= hi for v in values)


@pytest.mark.parametrize(
    "measured,se,tolerance,status",
    [
        (1.05, 0.01, {"abs": 0.1}, "reproduced"),      # 1.05 ± 0.02 inside ±0.1
        (1.05, 0.2, {"abs": 0.1}, "inconclusive"),     # 1.05 ± 0.4 straddles the band
        (1.5, 0.1, {"abs": 0.1}, "deviates"),          # 1.5 ± 0.2 entirely outside
        (1.3, 0.2, {"se": 2}, "reproduced"),           # within 2 measured standard errors
        (1.5, 0.2, {"se": 2}, "deviates"),
        (1.0, float("nan"), {"se": 2}, "inconclusive"),  # one run: no spread to compare with
    ],
)
def test_uncertainty_interval(tmp_path, measured, se, tolerance, status):
    (c,) = load_registry(_registry(tmp_path, [{**VALUE, "tolerance": tolerance}]))
    rec = _record(measured)
    rec["uncertainty"] = {"m": {"se": se, "n": 10, "over": "seeds"}}
    res = evaluate(c, rec)
    assert res.status == status
    assert res.statistics.startswith("seeds: n = 10")


def test_single_run_is_labelled(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [VALUE]))
    assert evaluate(c, _record(1.0)).statistics == "single run (no spread measured)"


def test_diverged_runs_are_stated(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [VALUE]))
    rec = _record(1.0)
    rec["diverged"] = {"m": {"diverged": 2, "runs": 5}}
    assert "2 of 5 runs diverged" in evaluate(c, rec).detail


@pytest.mark.parametrize("needs_data", [True, False])
def test_a_rehearsal_on_a_stand_in_is_never_reproduced(tmp_path, needs_data):
    """A rehearsal (the paper's premise met, a stand-in on a split) is data unavailable with the indicative
    verdict, also for a claim that needs no real data, which a reduced scale's stand-in would score."""
    (claim,) = load_registry(_registry(tmp_path, [{**VALUE, "needs_data": needs_data}]))
    result = evaluate(claim, _record(1.05, scale="rehearsal", substituted_for="mnist"))
    assert result.status == "data unavailable" and result.verdict == "reproduced"
    assert result.detail.startswith("rehearsal (the paper's sizes on a stand-in): stand-in on test: fashion_mnist "
                                    "for mnist (indicative: reproduced)")
    quick = evaluate(claim, _record(1.05, scale="quick", substituted_for="mnist")).status
    assert quick == ("data unavailable" if needs_data else "reproduced")
    (check,) = load_registry(_registry(tmp_path, [{**VALUE, "needs_data": needs_data, "consistency": "identity"}]))
    assert evaluate(check, _record(1.0, scale="rehearsal", substituted_for="mnist")).status == "check not run"


@pytest.mark.parametrize("artifact,stand_in,real,n", [("table1", "fashion_mnist", "mnist", (60000, 10000)),
                                                       ("table2", "cifar10_shaped", "cifar10", (50000, 10000))])
def test_a_rehearsal_record_of_a_stage_judges_no_claim_reproduced(artifact, stand_in, real, n):
    """Every claim of DEQ-NTK Tables 1-2 on a rehearsal record shaped as the stage writes it (the rehearsal's
    config and the paper's premise from conf/, the stand-in on both splits, values the claims accept as measured):
    each is data unavailable with the indicative verdict "reproduced"; the same record on the real data
    at paper scale would be reproduced (so the stand-in alone decides)."""
    from pathlib import Path

    from ntkrepro.config import flatten, premise_config, registered_config

    registry = Path(__file__).resolve().parents[1] / "experiments" / "feng2020_deq" / "claims.yaml"
    claims = [c for c in load_registry(registry) if c.artifact == artifact and not c.consistency]
    splits = [{"split": s, "name": stand_in, "n": k, "substituted_for": real, "requested": real}
              for s, k in zip(("train", "test"), n, strict=True)]
    def agreeing(c):  # a value the claim accepts: the paper's, strictly inside a bound
        return c.paper_value + {"above": 1, "below": -1}.get(c.side, 0)

    metrics = {m: 1.0 for c in claims for m in c.evidence} | {c.metric: agreeing(c) for c in claims}
    record = {"paper": "feng2020_deq", "artifact": artifact, "scale": "rehearsal", "metrics": metrics,
              "data": {"name": stand_in, "substituted_for": real}, "splits": splits,
              "config": flatten(registered_config(f"feng2020_deq/{artifact}", "rehearsal")), "overrides": {},
              "paper_config": premise_config(registered_config(f"feng2020_deq/{artifact}", "paper"))}
    results = [evaluate(c, record) for c in claims]
    assert claims and [r.status for r in results] == ["data unavailable"] * len(claims)
    assert [r.verdict for r in results] == ["reproduced"] * len(claims)
    real_splits = [{**s, "name": real, "substituted_for": None} for s in splits]
    on_real = {**record, "scale": "paper", "splits": real_splits, "data": {"name": real, "substituted_for": None},
               "config": flatten(registered_config(f"feng2020_deq/{artifact}", "paper"))}
    assert [evaluate(c, on_real).status for c in claims] == ["reproduced"] * len(claims)


def test_consistency_checks_are_not_reproduced(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [{**VALUE, "consistency": "an identity of the recursion"}]))
    assert evaluate(c, _record(1.0)).status == "check holds"
    assert evaluate(c, _record(2.0)).status == "check fails"
    assert evaluate(c, _record(1.0, config={"params.widths": [1]}, overrides={"params.widths": {}})).status \
        == "check not run"


def test_paper_disagreeing_with_its_own_table(tmp_path):
    table = [{**VALUE, "id": "t_a", "paper_value": 80.0}, {**VALUE, "id": "t_b", "paper_value": 69.7},
             {**VALUE, "id": "t_c", "paper_value": 60.0}]
    text = {**VALUE, "id": "gain", "paper_value": 9.0, "tolerance": {"abs": 0.5},
            "paper_table": "mean(t_a, t_b) - t_c - 4.85"}
    claims = {c.id: c for c in load_registry(_registry(tmp_path, [*table, text]))}
    assert claims["gain"].table_value == pytest.approx(10.0)
    res = evaluate(claims["gain"], _record(10.2))  # a perfect run measures what the table says
    assert res.status == "paper inconsistent" and res.verdict == "reproduced"
    assert "the paper's own table 10" in res.detail
    consistent = {**text, "paper_table": "mean(t_a, t_b) - t_c - 5.85"}
    (_, _, _, c2) = load_registry(_registry(tmp_path, [*table, consistent]))
    assert evaluate(c2, _record(9.2)).status == "reproduced"
    with pytest.raises(ClaimError, match="'nope'"):
        load_registry(_registry(tmp_path, [*table, {**text, "paper_table": "nope - 1"}]))
    with pytest.raises(ClaimError, match="only numbers"):
        load_registry(_registry(tmp_path, [*table, {**text, "paper_table": "__import__('os')"}]))


def test_run_without_recorded_config_is_not_comparable(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [VALUE]))
    rec = _record(1.0)
    del rec["config"]
    assert evaluate(c, rec).status == "not comparable"


def test_relative_tolerance_and_difference(tmp_path):
    (claim,) = load_registry(_registry(tmp_path, [{**VALUE, "tolerance": {"rel": 0.05}}]))
    assert evaluate(claim, _record(1.04)).status == "reproduced"
    res = evaluate(claim, _record(0.9))
    assert res.status == "deviates"
    assert res.difference == pytest.approx(-0.1)


def test_ordering_claim(tmp_path):
    claim = {**VALUE, "kind": "ordering", "paper_value": True, "tolerance": None}
    claim.pop("tolerance_reason")
    (c,) = load_registry(_registry(tmp_path, [claim]))
    assert evaluate(c, _record(True)).status == "reproduced"
    assert evaluate(c, _record(False)).status == "deviates"


def test_missing_stage_is_not_run(tmp_path):
    (claim,) = load_registry(_registry(tmp_path, [VALUE]))
    assert evaluate(claim, None).status == "not run at this scale"


def test_metric_no_stage_produced_fails_loudly(tmp_path):
    (claim,) = load_registry(_registry(tmp_path, [{**VALUE, "metric": "nope"}]))
    with pytest.raises(ClaimError, match="'nope'"):
        evaluate(claim, _record(1.0))


@pytest.mark.parametrize(
    "bad,msg",
    [({"kind": "guess"}, "kind"), ({"tolerance": None}, "tolerance"), ({"needs_scale": "quick"}, "needs_scale"),
     ({"tolerance": {"abs": -1}}, "> 0"), ({"tolerance": {"sd": 1}}, "tolerance takes"),
     ({"settings": {"params.widths": {"atleast": 2}}}, "constraint mapping"),
     ({"free": {"params.widths": ""}}, "reason"),
     ({"settings": {"params.w": 1}, "free": {"params.w": "x"}}, "both constrained and free"),
     ({"consistency": True}, "consistency takes")],
)
def test_registry_validation(tmp_path, bad, msg):
    with pytest.raises(ClaimError, match=msg):
        load_registry(_registry(tmp_path, [{**VALUE, **bad}]))


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(ClaimError, match="duplicate"):
        load_registry(_registry(tmp_path, [VALUE, VALUE]))


def test_evidence_metrics_travel_with_the_verdict_and_reach_the_report(tmp_path):
    claim = {**VALUE, "exact": True, "evidence": ["slope", "converged"]}
    (c,) = load_registry(_registry(tmp_path, [claim]))
    record = _record(1.5)
    record["metrics"].update(slope=-0.4844, converged=False)
    result = evaluate(c, record)
    assert result.status == "contradicted" and result.evidence == {"slope": -0.4844, "converged": False}
    (tmp_path / "experiments" / "p" / "README.md").write_text("# p\n")
    results = tmp_path / "results" / "quick"
    (results / "p" / "a").mkdir(parents=True)
    (results / "p" / "a" / "metrics.json").write_text(json.dumps({**record, "figures": [], "tables": []}))
    md = build(results, tmp_path / "experiments")[0].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| contradicted |") or line.startswith("| **c1**")]
    assert len(rows) == 2  # in the summary's attention list and in the artifact's claims table
    for row in rows:
        assert "evidence: slope = -0.4844, converged = false; derivation: [README](../../experiments/p/README.md)" \
            in row


def test_evidence_must_name_metrics_the_stage_produced(tmp_path):
    with pytest.raises(ClaimError, match="list of metric names"):
        load_registry(_registry(tmp_path, [{**VALUE, "evidence": "slope"}]))
    (c,) = load_registry(_registry(tmp_path, [{**VALUE, "evidence": ["slope"]}]))
    with pytest.raises(ClaimError, match=r"evidence metrics \['slope'\]"):
        evaluate(c, _record(1.0))


def test_report_lists_claims_and_artifacts(tmp_path):
    _registry(tmp_path, [VALUE, {**VALUE, "id": "c2", "artifact": "b"}])
    results = tmp_path / "results" / "quick"
    rec = {**_record(1.02), "figures": [], "tables": [], "unstated_settings": {"n_points": 4}}
    (results / "p" / "a").mkdir(parents=True)
    (results / "p" / "a" / "metrics.json").write_text(json.dumps(rec))
    md_path, html_path = build(results, tmp_path / "experiments")
    md = md_path.read_text()
    assert "| [p](#p) | 1 | 0 | 0 | 0 | 0 | 0 | 1 | 0 | 0/0/0 |" in md  # c1 reproduced, c2 (stage b absent) not run
    assert "n_points" in md
    assert "<table" in html_path.read_text()


class _Figures(HTMLParser):
    """The <figure> elements of a page: the img src and the figcaption text of each."""

    def __init__(self):
        super().__init__()
        self.figures, self.paragraphs, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "figure":
            self.figures.append({"src": None, "caption": ""})
        elif tag == "img":
            self.figures[-1]["src"] = dict(attrs)["src"]
        elif tag in ("figcaption", "p"):
            self._in = tag
            if tag == "p":
                self.paragraphs.append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "figcaption":
            self.figures[-1]["caption"] += data
        elif self._in == "p":
            self.paragraphs[-1] += data


def test_report_figure_captions_name_config_data_sizes_seeds_precision_runtime(tmp_path):
    _registry(tmp_path, [VALUE])
    results = tmp_path / "results" / "quick"
    common = {"figures": ["curve"], "tables": [], "sizes": {"n_train": 20, "widths": [50, 200]},
              "seeds": [0, 3], "precision": "float32", "runtime_s": 12.5}
    records = {"a": {**_record(1.02, substituted_for="mnist"), **common},
               "b": {**_record(1.02), **common, "artifact": "b", "figures": ["curve", "absent"],
                     "data": {"name": "gaussian", "substituted_for": None}, "splits": []}}
    pngs = {}
    for artifact, rec in records.items():
        folder = results / "p" / artifact
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(rec))
        fig, ax = figure()
        ax.plot([0, 1], [1, 0] if artifact == "a" else [0, 1])
        pngs[artifact] = atomic_savefig(fig, folder / "curve.png").read_bytes()
        plt.close(fig)
    md_path, html_path = build(results, tmp_path / "experiments")

    lines = md_path.read_text().splitlines()
    captions = {}
    for artifact, fig in [("a", "curve"), ("b", "curve"), ("b", "absent")]:
        i = lines.index(f"![{artifact}: {fig}](p/{artifact}/{fig}.png)")
        assert lines[i + 1] == "" and lines[i + 2].startswith("*Figure") and lines[i + 2].endswith("*")
        captions[artifact, fig] = lines[i + 2]
    for (artifact, fig), caption in captions.items():
        for part in (f"Figure `{fig}` of p/{artifact}", f"config `conf/experiment/p/{artifact}.yaml`",
                     "scale `quick`", "sizes n_train=20, widths=[50, 200]", "seeds 0, 3",
                     "precision float32", "runtime 12.5 s"):
            assert part in caption, (part, caption)
    assert "train `digits` (n=512), test `fashion_mnist` (n=100, stand-in for `mnist`)" in captions["a", "curve"]
    assert "data `gaussian`;" in captions["b", "curve"] and "stand-in" not in captions["b", "curve"]

    page = _Figures()
    page.feed(html_path.read_text())
    assert len(page.figures) == 3
    for figure_html, (key, caption) in zip(page.figures, captions.items(), strict=True):
        assert figure_html["caption"] == caption.strip("*").replace("`", "")
        if key[1] == "curve":
            assert base64.b64decode(figure_html["src"].removeprefix("data:image/png;base64,")) == pngs[key[0]]
        else:
            assert figure_html["src"] is None
    assert "figure file missing: p/b/absent.png" in page.paragraphs
    assert not any(p.startswith("*Figure") or p.startswith("Figure") for p in page.paragraphs)


def test_sweep_jobs_are_judged_on_their_own_config_and_not_counted(tmp_path):
    _registry(tmp_path, [VALUE])
    results = tmp_path / "results" / "quick"
    registered = {**_record(1.02), "figures": [], "tables": []}
    job = {**_record(1.02, config={"params.widths": [100]},
                     overrides={"params.widths": {"registered": [100, 1000], "run": [100]}}),
           "figures": [], "tables": []}
    (results / "p" / "a" / "multirun" / "20261206-0000" / "0").mkdir(parents=True)
    (results / "p" / "a" / "metrics.json").write_text(json.dumps(registered))
    (results / "p" / "a" / "multirun" / "20261206-0000" / "0" / "metrics.json").write_text(json.dumps(job))
    md = build(results, tmp_path / "experiments")[0].read_text()
    assert "| [p](#p) | 1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0/0/0 |" in md  # only the registered run is counted
    sweep = md[md.index("## Sweep jobs"):]
    row = next(line for line in sweep.splitlines() if line.startswith("| p/a |"))
    assert "params.widths=[100]" in row and "not comparable 1" in row


@pytest.mark.parametrize("side,measured,se,status", [
    ("above", 0.5, None, "reproduced"), ("above", -0.5, None, "deviates"),
    ("above", 0.5, 0.1, "reproduced"),      # 0.5 ± 0.2 entirely above 0: a significant gap
    ("above", 0.1, 0.1, "inconclusive"),    # 0.1 ± 0.2 crosses the bound
    ("above", -0.5, 0.1, "deviates"),
    ("below", -0.5, 0.1, "reproduced"), ("below", 0.5, 0.1, "deviates"),
])
def test_one_sided_bounds(tmp_path, side, measured, se, status):
    claim = {**VALUE, "kind": "bound", "side": side, "paper_value": 0.0}
    del claim["tolerance"], claim["tolerance_reason"]
    (c,) = load_registry(_registry(tmp_path, [claim]))
    rec = _record(measured)
    if se is not None:
        rec["uncertainty"] = {"m": {"se": se, "n": 8, "over": "draws"}}
    assert evaluate(c, rec).status == status
    with pytest.raises(ClaimError, match="side: above|below"):
        load_registry(_registry(tmp_path, [{**claim, "side": "up"}]))


def test_an_override_that_removes_the_metric_is_not_comparable_not_an_error(tmp_path):
    (c,) = load_registry(_registry(tmp_path, [VALUE]))
    rec = _record(1.0, config={"params.widths": [100]},
                  overrides={"params.widths": {"registered": [100, 1000], "run": [100]}})
    del rec["metrics"]["m"]
    res = evaluate(c, rec)
    assert res.status == "not comparable" and "removed the metric 'm'" in res.detail
    del rec["overrides"]["params.widths"]
    with pytest.raises(ClaimError, match="'m'"):  # without an override a missing metric is a registry bug
        evaluate(c, rec)
