"""benchmarks/run.py at tiny sizes without the peer: the studies run, check their variants against each
other and write their JSON (so that benchmarks/device.sh does not meet a broken script on a device).
No timing is asserted."""

import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [
    ["trace", "--n-trace", "1"],
    ["cntk", "--n-vanilla", "3", "--n-gap", "1"],
    ["fc", "--n", "6"],
    ["deq", "--n-deq", "6"],
])
def test_study_runs_without_the_peer_and_writes_json(run, tmp_path, args):
    run.main([*args, "--repeats", "1", "--no-peer", "--results-dir", str(tmp_path)])
    (out,) = tmp_path.glob(f"*-{args[0]}.json")
    result = json.loads(out.read_text())
    assert result["study"] == args[0]
    assert result["machine"]["backend"] == "cpu" and result["machine"]["devices"]
    assert isinstance(result["machine"]["git_uncommitted_changes"], bool)
    if args[0] == "trace":
        assert [r["variant"] for r in result["rows"]] == ["shifted_adds_q2", "shifted_adds_separable",
                                                          "convolution", "offset_planes_masked_separable"]
        assert all(r["seconds"] > 0 for r in result["rows"])
    if args[0] in ("cntk", "fc"):
        assert all(r["peer"] == {"error": "peer skipped (--no-peer)"} and r["speedup"] is None
                   for r in result["rows"])
    if args[0] == "cntk":
        assert all(r["cifar10_full_gram_depth21_cpu_hours_extrapolated"] > 0 for r in result["rows"])
