"""Every paper's claims registry against the registered configs: each claim is checkable at the paper
scale, names only config keys that exist, and no plausibly wrong measurement is scored reproduced
(mutation tests: a perturbed value, an override of its premise, a one-element sweep, a stand-in split)."""

import math
from functools import cache
from pathlib import Path

import pytest

from ntkrepro.claims import band, evaluate, is_premise_key, load_registry, satisfies
from ntkrepro.config import premise_config, registered_config

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = sorted((ROOT / "experiments").glob("*/claims.yaml"))
CLAIMS = [c for reg in REGISTRIES for c in load_registry(reg)]
GOOD = ("reproduced", "paper inconsistent", "check holds")


@cache
def paper_config(paper: str, artifact: str) -> dict:
    cfg = registered_config(f"{paper}/{artifact}", "paper")
    assert cfg is not None, f"no conf/experiment/{paper}/{artifact}.yaml"
    return cfg


def _record(claim, *, value=None, config=None, overrides=None, splits=None, se=None):
    cfg = dict(paper_config(claim.paper, claim.artifact))
    cfg.update(config or {})
    metrics = {m: 0.0 for m in claim.evidence}
    good = claim.paper_value
    if claim.kind == "bound":  # a value clearly on the claimed side
        good = claim.paper_value + (1 + abs(claim.paper_value)) * (1 if claim.side == "above" else -1)
    metrics[claim.metric] = good if value is None else value
    if claim.table_value is not None and value is None:
        metrics[claim.metric] = claim.table_value
    rec = {"paper": claim.paper, "artifact": claim.artifact, "scale": "paper", "metrics": metrics,
           "config": cfg, "paper_config": premise_config(paper_config(claim.paper, claim.artifact)),
           "overrides": overrides or {}, "data": {"name": "x", "substituted_for": None},
           "splits": splits or [{"split": "train", "name": "real", "n": 10, "substituted_for": None}]}
    if se is not None:
        rec["uncertainty"] = {claim.metric: {"se": se, "n": 10, "over": "seeds"}}
    return rec


def _se(claim):
    """A small measured standard error where the tolerance is counted in standard errors."""
    return 1e-3 * max(abs(float(claim.paper_value)), 1e-3) if "se" in claim.tolerance else None


ids = [f"{c.paper}/{c.id}" for c in CLAIMS]


@pytest.mark.parametrize("claim", CLAIMS, ids=ids)
def test_claim_keys_exist_and_its_premise_holds_at_paper_scale(claim):
    cfg = paper_config(claim.paper, claim.artifact)
    for key in [*claim.settings, *claim.free]:
        assert key in cfg and is_premise_key(key), f"{claim.id}: {key} is not a premise key of the paper config"
    for key, constraint in claim.settings.items():
        assert satisfies(cfg[key], constraint), f"{claim.id}: the paper config's {key} = {cfg[key]} fails {constraint}"


@pytest.mark.parametrize("claim", CLAIMS, ids=ids)
def test_the_paper_settings_and_the_paper_value_reproduce(claim):
    assert evaluate(claim, _record(claim, se=_se(claim))).status in GOOD


@pytest.mark.parametrize("claim", CLAIMS, ids=ids)
def test_a_perturbed_measurement_is_not_reproduced(claim):
    if claim.kind == "ordering":
        wrong = not bool(claim.paper_value)
    elif claim.kind == "bound":
        wrong = claim.paper_value - (1 + abs(claim.paper_value)) * (1 if claim.side == "above" else -1)
    else:
        expected = claim.table_value if claim.table_value is not None else float(claim.paper_value)
        se = _se(claim)
        wrong = expected + 2 * band(claim.tolerance, expected, se) + 4 * (se or 0) + 1e-6 * max(1, abs(expected))
    res = evaluate(claim, _record(claim, value=wrong, se=_se(claim)))
    assert res.status not in GOOD or (res.status == "paper inconsistent" and res.verdict != "reproduced")


def _violating_values(value):
    """Candidate replacements for a config value, most plausible first (a sweep of one, a changed number)."""
    out = []
    if isinstance(value, list):
        out += [value[:1], value[:-1], [*value, value[-1]], []] if value else [[1]]
        out += [[v * 2 + 1 if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]]
    elif isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, (int, float)):
        out += [value * 2 + 1, value / 2 if value else -1, -1, 10**9]
    elif value is None:
        out.append("changed")
    else:
        out.append(f"{value}_changed")
    return out


@pytest.mark.parametrize("claim", CLAIMS, ids=ids)
def test_an_override_of_the_premise_is_never_reproduced(claim):
    """Every premise key that is not free: an override that breaks it gives "not comparable" (a CLI
    override, a sweep job) and the same value in the scale's registered config "not run at this scale"."""
    cfg = paper_config(claim.paper, claim.artifact)
    for key in sorted(k for k in cfg if is_premise_key(k) and k not in claim.free):
        constraint = claim.settings.get(key, cfg[key])
        bad = next((v for v in _violating_values(cfg[key]) if not satisfies(v, constraint)), None)
        if bad is None:
            continue
        over = {key: {"registered": cfg[key], "run": bad}}
        assert evaluate(claim, _record(claim, config={key: bad}, overrides=over, se=_se(claim))).status in (
            "not comparable", "check not run"), key
        assert evaluate(claim, _record(claim, config={key: bad}, se=_se(claim))).status in (
            "not run at this scale", "check not run"), key


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.kind == "ordering"],
                         ids=[f"{c.paper}/{c.id}" for c in CLAIMS if c.kind == "ordering"])
def test_an_ordering_over_a_one_element_sweep_is_not_reproduced(claim):
    cfg = paper_config(claim.paper, claim.artifact)
    for key in sorted(k for k in cfg if is_premise_key(k) and k not in claim.free):
        if isinstance(cfg[key], list) and len({repr(v) for v in cfg[key]}) > 1:
            one = cfg[key][:1]
            over = {key: {"registered": cfg[key], "run": one}}
            status = evaluate(claim, _record(claim, config={key: one}, overrides=over)).status
            assert status not in GOOD, (key, status)


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.needs_data], ids=[f"{c.paper}/{c.id}" for c in CLAIMS
                                                                            if c.needs_data])
def test_a_stand_in_on_the_test_split_is_data_unavailable(claim):
    splits = [{"split": "train", "name": "real", "n": 10, "substituted_for": None},
              {"split": "test", "name": "fashion_mnist", "n": 10, "substituted_for": "real"}]
    assert evaluate(claim, _record(claim, splits=splits, se=_se(claim))).status in (
        "data unavailable", "check not run")


def test_every_registry_has_claims_and_numeric_paper_values():
    assert len(REGISTRIES) == 5 and len(CLAIMS) > 150
    for c in CLAIMS:
        if c.kind != "ordering":
            assert isinstance(c.paper_value, (int, float)) and math.isfinite(c.paper_value), c.id
