"""The report's structure, read as a researcher reads it: the HTML is parsed (not string-matched) and checked
for the verdict summary first, claims that need attention listed first with their evidence and README,
figures beside their claims, collapsed not-run claims, linked (not inlined) long tables, units, MLflow
links, a table of contents whose links resolve, and no Markdown left unrendered (alignment rows, backticks)."""

import base64
import csv
import json
import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pytest
import yaml

from ntkrepro.io import atomic_savefig
from ntkrepro.plotting import figure
from ntkrepro.report import (
    MAX_INLINE_ROWS,
    cli,
    data_label,
    experiment_ids,
    mlflow_experiment_url,
    mlflow_run_url,
    unit,
)

PAPER_CONFIG = {"precision": "float64", "params.widths": [100, 1000]}
RUN_ID = "0123456789abcdef0123456789abcdef"


def _claim(id_, metric, paper_value, **kw):
    return {"id": id_, "artifact": "a", "metric": metric, "paper_value": paper_value, "where": "Tab. 1",
            "statement": f"statement of {id_}", "kind": "value", "tolerance": {"abs": 0.5},
            "tolerance_reason": "noise", **kw}


CLAIMS_P = [
    _claim("ok", "acc_pct", 90.0),                                           # reproduced, unit %
    _claim("miss", "cost_s", 10.0),                                          # deviates, unit s
    _claim("exact_miss", "cpu_hours_log10", 2.6, exact=True, evidence=["gram_seconds"]),  # contradicted
    _claim("needs_width", "acc_pct", 90.0, settings={"params.widths": {"includes": [10000]}}),  # not run
    _claim("cifar_cell", "acc_cifar_pct", 90.0, settings={"params.widths": {"includes": [10000]}}),  # never ran
    _claim("identity", "acc_pct", 90.0, consistency="holds by construction"),  # consistency check
    _claim("other_artifact", "x", 1.0, artifact="b"),                        # stage b did not run
]
CLAIMS_Q = [{**_claim("q_ok", "m", 1.0), "artifact": "c"}]


def _record(paper, artifact, metrics, **kw):
    return {"paper": paper, "artifact": artifact, "scale": "quick", "metrics": metrics,
            "data": {"name": "fashion_mnist", "substituted_for": None},
            "splits": [{"split": "train", "name": "digits", "n": 512, "substituted_for": None, "source": "sklearn"},
                       {"split": "test", "name": "digits", "n": 100, "substituted_for": None, "source": "sklearn"}],
            "config": dict(PAPER_CONFIG), "paper_config": dict(PAPER_CONFIG), "overrides": {},
            "figures": [], "tables": [], "seeds": [0], "sizes": {"n_train": 512}, "precision": "float64",
            "runtime_s": 3.5, "git_commit": "abcdef0123456789", "git_dirty": False, "mlflow_run_id": RUN_ID, **kw}


def _table(folder, name, n_rows):
    with (folder / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "value"])
        writer.writerows([i, i * 0.5] for i in range(n_rows))
    rows = "\n".join(f"| {i} | {i * 0.5} |" for i in range(n_rows))
    (folder / f"{name}.md").write_text(f"|   step |   value |\n|-------:|--------:|\n{rows}\n")


def _costs_json(path):
    """scripts/cost_table.py --json rows for paper p: artifact a is the full CIFAR-10 CNTK-GAP Gram at depth 21
    (rated by benchmarks/rates.py's GAP block), with 29 GB estimated by its checks; b has no cost model."""
    from ntkrepro import cost

    a = cost.stage_cost("p/a", [cost.cntk_gram(60000, side=32, depth=21, readout="gap")], cost.load_rates(), 29e9)
    b = {"stage": "p/b", "error": "no cost model for p/b: experiments/p/cost.py declares ['a']"}
    path.write_text(json.dumps([{"stage": "p/a", "summary": a.summary()}, b]))
    return path


@pytest.fixture
def report(tmp_path):
    """A results folder with two papers: every status that needs attention, a figure, a short and a long
    table, an artifact that did not run; the report built from it by the CLI."""
    exp = tmp_path / "experiments"
    for paper, claims in (("p", CLAIMS_P), ("q", CLAIMS_Q)):
        (exp / paper).mkdir(parents=True)
        (exp / paper / "claims.yaml").write_text(yaml.safe_dump({"paper": paper, "claims": claims}))
        (exp / paper / "README.md").write_text(f"# {paper}\n")
    results = tmp_path / "results" / "quick"
    folder = results / "p" / "a"
    folder.mkdir(parents=True)
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    png = atomic_savefig(fig, folder / "curve.png").read_bytes()
    plt.close(fig)
    _table(folder, "summary", 3)
    _table(folder, "curves", MAX_INLINE_ROWS + 10)
    (folder / "metrics.json").write_text(json.dumps(_record(
        "p", "a", {"acc_pct": 90.2, "cost_s": 20.0, "cpu_hours_log10": -0.1035, "gram_seconds": 12.0,
                   "acc_cifar_pct": None},
        figures=["curve"], tables=["summary", "curves"])))
    (results / "q" / "c").mkdir(parents=True)
    (results / "q" / "c" / "metrics.json").write_text(json.dumps(_record("q", "c", {"m": 1.1})))
    assert cli(["--results", str(results), "--experiments", str(exp), "--mlflow-ui", "http://ui.example:5000",
                "--costs", str(_costs_json(tmp_path / "costs.json"))]) == 0
    page = _Page()
    page.feed((results / "report.html").read_text())
    return {"md": (results / "report.md").read_text(), "page": page, "png": png, "results": results, "exp": exp}


class _Page(HTMLParser):
    """Elements with their ancestors, text nodes (outside script/style) with their ancestors, ids and hrefs."""

    def __init__(self):
        super().__init__()
        self.stack, self.elements, self.texts, self.ids, self.hrefs = [], [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        element = {"tag": tag, "attrs": attrs, "ancestors": list(self.stack), "text": ""}
        self.elements.append(element)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.hrefs.append((attrs["href"], element))
        if tag not in ("img", "meta", "br", "hr", "input"):
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1]["tag"] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        if any(e["tag"] in ("script", "style") for e in self.stack):
            return
        self.texts.append((data, list(self.stack)))
        for e in self.stack:
            e["text"] += data

    def find(self, tag, cls=None):
        return [e for e in self.elements
                if e["tag"] == tag and (cls is None or cls in e["attrs"].get("class", "").split())]


def _inside(element, tag, cls=None):
    return any(a["tag"] == tag and (cls is None or cls in a["attrs"].get("class", "").split())
               for a in element["ancestors"])


def test_no_markdown_left_unrendered(report):
    page = report["page"]
    for text, _ in page.texts:
        assert "`" not in text, f"stray backtick in {text!r}"
        assert not re.search(r"(^|\|)\s*:?-{3,}:?\s*\|", text), f"literal alignment row in {text!r}"
        assert "![" not in text and "**" not in text, text
    # every table is a real table: header cells, no row of dashes among its cells
    for td in page.find("td"):
        assert not re.fullmatch(r"\s*:?-{3,}:?\s*", td["text"]), "an alignment row rendered as data"


def test_verdict_summary_comes_first_with_per_paper_and_overall_counts(report):
    page = report["page"]
    h1, h2s = page.find("h1"), page.find("h2")
    assert "scale quick" in h1[0]["text"] and h2s[0]["text"] == "Verdict summary"
    assert [h["text"] for h in h2s[1:3]] == ["p", "q"]
    summary = next(t for t in page.find("table") if "paper" in t["text"] and "reproduced" in t["text"])
    rows = [tr["text"].split() for tr in page.elements if tr["tag"] == "tr" and tr["ancestors"][-1] is not None
            and summary in tr["ancestors"]]
    assert rows[1][0] == "p" and rows[2][0] == "q" and rows[3][0] == "all"
    # badges: a status heading and each status cell carry the status's colour class
    assert {"st-contradicted", "st-reproduced"} <= {c for th in page.find("th")
                                                  for c in th["attrs"].get("class", "").split()}
    badges = {b["text"] for b in page.find("span", "badge")}
    assert {"contradicted", "deviates", "reproduced"} <= badges


def test_claims_needing_attention_are_listed_first_with_evidence_and_derivation(report):
    md = report["md"]
    summary = md[md.index("## Verdict summary"):md.index("## p")]
    rows = [line for line in summary.splitlines() if line.startswith("| contradicted") or line.startswith("| deviates")]
    assert [r.split("|")[1].strip() for r in rows] == ["contradicted", "deviates"]
    assert "exact_miss" in rows[0] and "evidence: gram_seconds = 12 s" in rows[0]
    assert "[README](../../experiments/p/README.md)" in rows[0] and "[p/a](#p-a)" in rows[0]
    assert (report["results"] / "../../experiments/p/README.md").resolve().exists()


def test_figure_beside_its_claims_embedded_at_full_resolution(report):
    page = report["page"]
    (fig,) = page.find("figure")
    assert _inside(fig, "div", "artifact")
    (img,) = [e for e in page.find("img")]
    assert base64.b64decode(img["attrs"]["src"].removeprefix("data:image/png;base64,")) == report["png"]
    assert _inside(img, "a", "zoom")  # click to enlarge
    artifact = next(a for a in fig["ancestors"] if "artifact" in a["attrs"].get("class", ""))
    claims_tables = [t for t in page.find("table", "claims") if artifact in t["ancestors"]]
    assert claims_tables and "exact_miss" in claims_tables[0]["text"]
    style = (report["results"] / "report.html").read_text().split("</style>")[0]
    assert "max-width:640px" not in style.replace(" ", "")  # no cap below the image's own size


def test_not_run_claims_are_collapsed_and_consistency_checks_apart(report):
    page = report["page"]
    status_cells = [td for td in page.find("td") if "data-status" in td["attrs"]]
    badges = [td for td in status_cells if td["text"] == "not run at this scale"]
    assert badges and all(_inside(b, "details") for b in badges)
    assert all("open" not in d["attrs"] for d in page.find("details"))
    shown = [td for td in status_cells if td["text"] in ("reproduced", "contradicted")]
    assert shown and not any(_inside(b, "details") for b in shown)
    # the consistency check is in its own table, not in the artifact's claims table
    tables = [t for t in page.find("table", "claims") if "identity" in t["text"]]
    assert len(tables) == 1 and "exact_miss" not in tables[0]["text"]
    assert "other_artifact" in next(d for d in page.find("details") if "without results" in d["text"])["text"]


def test_not_run_claims_show_what_running_them_costs(report):
    """The collapsed block's summary carries the paper-scale estimate (--costs: scripts/cost_table.py's JSON;
    here the full CIFAR-10 GAP Gram at depth 21, recomputed from the raw row of the GAP block benchmark that rates
    it: distinct pairs x conv layers / the row's, at its pairs per CPU second); an artifact without a cost model
    says so."""
    from ntkrepro.cost import BENCHMARKS, hours, load_rates

    rate = load_rates()["cpu"]["cntk_block:gap"]
    record = json.loads((BENCHMARKS / rate.source.split(" ")[0]).read_text())
    row = max((r for r in record["rows"] if r["kind"] == "cntk_block" and r["path"] == "sym"), key=lambda r: r["depth"])
    expected = hours(60000 * 60001 / 2 * (21 - 1) / (row["depth"] - 1) / row["pairs_per_cpu_s"] / 3600)
    summaries = [e["text"] for e in report["page"].find("summary") if "not run at this scale" in e["text"]]
    assert any(f"needs ≈ {expected} CPU-h" in t and "no GPU rate measured" in t and "peak ≈ 29 GB" in t
               for t in summaries), summaries
    missing = next(d for d in report["page"].find("details") if "without results" in d["text"])["text"]
    assert "no cost estimate (no cost model for p/b" in missing


def test_a_claim_whose_metric_never_ran_shows_no_data(report):
    """A cell this scale did not run (metric None, e.g. the CIFAR-10 columns) is not labelled with the data the
    run's other cells used."""
    md = report["md"]
    never = next(line for line in md.splitlines() if line.startswith("| **cifar_cell**"))
    measured = next(line for line in md.splitlines() if line.startswith("| **needs_width**"))
    assert never.split(" | ")[4] == "not run" and "digits" not in never
    assert measured.split(" | ")[4] == "digits"


def test_long_tables_are_linked_not_inlined(report):
    page = report["page"]
    assert all(sum(1 for e in page.elements if e["tag"] == "tr" and t in e["ancestors"]) <= MAX_INLINE_ROWS + 1
               for t in page.find("table"))
    hrefs = {h for h, _ in page.hrefs}
    assert {"p/a/curves.csv", "p/a/summary.csv", "p/a/curve.png", "p/a/metrics.json"} <= hrefs
    assert "curves: 40 rows" in report["md"].replace("`", "")
    assert "| 2 | 1.0 |" in report["md"]  # the 3-row table is inlined


def test_units_data_and_mlflow_links(report):
    md, page = report["md"], report["page"]
    row = next(line for line in md.splitlines() if line.startswith("| **exact_miss**"))
    assert "2.6 log10(CPU h)" in row and "-0.1035 log10(CPU h)" in row
    assert "90.2 %" in md and "20 s" in md
    assert "train, test: digits n=512" not in md and "train: digits n=512; test: digits n=100" in md
    links = [h for h, _ in page.hrefs if h.startswith("http://ui.example:5000")]
    assert f"http://ui.example:5000/#/runs/{RUN_ID}" in links


def test_table_of_contents_links_resolve(report):
    page = report["page"]
    toc = [(h, e) for h, e in page.hrefs if _inside(e, "div", "toc")]
    assert len(toc) >= 5
    for href, _ in toc:
        assert href.startswith("#") and href[1:] in page.ids, href
    internal = [h for h, _ in page.hrefs if h.startswith("#") and h != "#"]
    assert all(h[1:] in page.ids for h in internal), [h for h in internal if h[1:] not in page.ids]


def test_cli_prints_the_scoreboard_and_the_report_path(report, capsys):
    assert cli(["--results", str(report["results"]), "--experiments", str(report["exp"]), "--scoreboard-only"]) == 0
    out = capsys.readouterr().out
    assert "p " in out and "1 contradicted" in out and "all" in out
    assert str((report["results"] / "report.html").resolve()) in out


@pytest.mark.parametrize("metric, value, expected", [
    ("acc_pct_deq", 37.5, "%"), ("best_kernel_acc", 77.4, "%"), ("acc_mnist_relu", 0.9, ""),
    ("train_cpu_hours_full_log10", 2.6, "log10(CPU h)"), ("gram_seconds", 3.0, "s"), ("runtime_s", 1.0, "s"),
    ("deq_settings_spread_pp", 0.7, "pp"), ("lambda1", 0.04, ""), ("slope_s_fit", 1.0, ""),
])
def test_unit_from_the_metric_name(metric, value, expected):
    assert unit(metric, value) == expected


def test_data_label_names_each_split_once():
    rec = {"splits": [{"split": "train", "name": "fashion_mnist", "n": 512, "substituted_for": "mnist"},
                      {"split": "test", "name": "fashion_mnist", "n": 512, "substituted_for": "mnist"}]}
    assert data_label(rec) == "train, test: fashion_mnist n=512 (stand-in for mnist)"
    assert data_label({"data": {"name": "gaussian"}}) == "gaussian"


def test_mlflow_link_prefers_the_tracking_server_and_the_experiment_id():
    rec = {"mlflow_run_id": "r1", "config": {"tracking.uri": "sqlite:///x.db"}}
    assert mlflow_run_url(rec) == "http://127.0.0.1:5000/#/runs/r1"
    assert mlflow_run_url(rec, "http://h:8080/") == "http://h:8080/#/runs/r1"
    server = {**rec, "config": {"tracking.uri": "http://server:5000"}, "mlflow_experiment_id": "7"}
    assert mlflow_run_url(server, "http://h:8080") == \
        "http://server:5000/#/experiments/7/runs/r1?workflowType=machine_learning"
    assert mlflow_run_url({"mlflow_run_id": None}) is None
    assert mlflow_experiment_url(server, "http://h:8080") == \
        "http://server:5000/#/experiments/7?workflowType=machine_learning"
    assert mlflow_experiment_url(rec) is None


def test_links_open_the_experiment_list_and_runs_tables_in_model_training_mode(report, tmp_path):
    """The header links the experiment list and each paper its experiment's runs table, with MLflow 3's
    ?workflowType=machine_learning (the UI otherwise opens an experiment on its GenAI overview)."""
    md = report["md"]
    assert "[experiments](http://ui.example:5000/#/experiments?workflowType=machine_learning)" in md
    rec = json.loads((report["results"] / "p" / "a" / "metrics.json").read_text())
    rec["mlflow_experiment_id"] = "4"
    (report["results"] / "p" / "a" / "metrics.json").write_text(json.dumps(rec))
    assert cli(["--results", str(report["results"]), "--experiments", str(report["exp"]),
                "--mlflow-ui", "http://ui.example:5000"]) == 0
    md = (report["results"] / "report.md").read_text()
    paper_p = md[md.index("\n## p\n"):md.index("\n## q\n")]
    assert "MLflow: [runs table](http://ui.example:5000/#/experiments/4?workflowType=machine_learning)" in paper_p
    assert f"http://ui.example:5000/#/experiments/4/runs/{RUN_ID}?workflowType=machine_learning" in paper_p


def test_experiment_ids_come_from_the_sqlite_store(tmp_path):
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER)")
        con.execute("INSERT INTO runs VALUES ('r1', 3)")
    recs = [{"config": {"tracking.uri": f"sqlite:///{db}"}}, {"config": {"tracking.uri": "http://server:5000"}},
            {"config": {"tracking.uri": f"sqlite:///{tmp_path / 'absent.db'}"}}]
    assert experiment_ids(recs) == {"r1": "3"}


def test_a_rehearsal_report_has_a_banner_labels_each_row_and_reproduces_nothing(tmp_path, report):
    """A rehearsal's results (scale rehearsal: the paper's sizes on stand-ins) give a report that opens with
    the rehearsal banner, marks every claim row measured there, and has no reproduced claim, also for a claim
    that needs no real data; a quick-scale report has no banner."""
    exp = tmp_path / "exp_rehearsal"
    claims = [_claim("ok", "acc_pct", 90.0), _claim("timing", "gram_seconds", 12.0, needs_data=False)]
    (exp / "p").mkdir(parents=True)
    (exp / "p" / "claims.yaml").write_text(yaml.safe_dump({"paper": "p", "claims": claims}))
    results = tmp_path / "results" / "rehearsal"
    (results / "p" / "a").mkdir(parents=True)
    stand_in = [{"split": s, "name": "fashion_mnist", "n": n, "substituted_for": "mnist", "source": "system"}
                for s, n in (("train", 60000), ("test", 10000))]
    (results / "p" / "a" / "metrics.json").write_text(json.dumps(_record(
        "p", "a", {"acc_pct": 90.2, "gram_seconds": 12.1}, scale="rehearsal", splits=stand_in)))
    assert cli(["--results", str(results), "--experiments", str(exp)]) == 0
    md = (results / "report.md").read_text()
    page = _Page()
    page.feed((results / "report.html").read_text())
    banner = next(e for e in page.find("blockquote") if "Rehearsal, not a reproduction" in e["text"])
    headings = [e for e in page.elements if e["tag"] in ("h1", "h2", "blockquote")]
    assert headings[0]["tag"] == "h1" and "rehearsal" in headings[0]["text"] and headings[1] is banner
    rows = [line for line in md.splitlines() if line.startswith("| *rehearsal* · **")]
    assert len(rows) == 2 and all(" | data unavailable | reproduced | " in row for row in rows)
    status_cells = [td["text"] for td in page.find("td") if "data-status" in td["attrs"]]
    assert status_cells == ["data unavailable"] * 2
    assert "Rehearsal" not in report["md"] and "*rehearsal*" not in report["md"]
