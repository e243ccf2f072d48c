"""Claim statuses from (claim, metrics.json) pairs, registry validation, and the report (tables, figure captions)."""

import base64
import json
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pytest
import yaml

from ntkrepro.claims import ClaimError, evaluate, load_registry
from ntkrepro.io import atomic_savefig
from ntkrepro.plotting import figure
from ntkrepro.report import build


def _registry(tmp_path, claims, paper="p"):
    path = tmp_path / "experiments" / paper / "claims.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"paper": paper, "claims": claims}))
    return path


VALUE = {"id": "c1", "artifact": "a", "metric": "m", "paper_value": 1.0, "where": "Tab. 1",
         "kind": "value", "tolerance": {"abs": 0.1}, "tolerance_reason": "seed noise",
         "needs_scale": "quick"}


def _record(value, scale="quick", substituted_for=None):
    return {"paper": "p", "artifact": "a", "scale": scale, "metrics": {"m": value},
            "data": {"name": "digits", "substituted_for": substituted_for}}


@pytest.mark.parametrize(
    "value,scale,subst,exact,status",
    [
        (1.05, "quick", None, False, "reproduced"),
        (1.5, "quick", None, False, "deviates"),
        (1.5, "quick", None, True, "contradicted"),
        (1.05, "smoke", None, False, "not run at this scale"),
        (1.05, "quick", "mnist", False, "data unavailable"),
        (None, "quick", None, False, "not run at this scale"),
    ],
)
def test_statuses(tmp_path, value, scale, subst, exact, status):
    (claim,) = load_registry(_registry(tmp_path, [{**VALUE, "exact": exact}]))
    result = evaluate(claim, _record(value, scale, subst))
    assert result.status == status


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
    [({"kind": "guess"}, "kind"), ({"tolerance": None}, "tolerance"), ({"needs_scale": "huge"}, "needs_scale")],
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
    results = tmp_path / "results" / "quick"
    (results / "p" / "a").mkdir(parents=True)
    (results / "p" / "a" / "metrics.json").write_text(json.dumps({**record, "figures": [], "tables": []}))
    md = build(results, tmp_path / "experiments")[0].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| c1 |"))
    assert "evidence: slope = -0.4844, converged = false; why: experiments/p/README.md" in row


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
    assert "| p | 1 | 0 | 0 | 1 | 0 |" in md  # c1 reproduced, c2 (stage b absent) not run
    assert "n_points" in md
    assert "<table>" in html_path.read_text()


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
                     "data": {"name": "gaussian", "substituted_for": None}}}
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
    assert "data `digits` (stand-in for `mnist`)" in captions["a", "curve"]
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
