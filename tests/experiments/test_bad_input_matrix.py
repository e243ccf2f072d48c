"""The bad-input matrix of every stage, from each paper's table ``BAD`` in test_bad_input_<paper>.py: each
case refused before any data or compute with one line ``error: <parameter>: ...``; at least ten per stage;
every registered scale of every stage validates (on a 64 GiB machine, the paper scale's target)."""

import pytest
import test_bad_input_arora2019
import test_bad_input_feng2020_deq
import test_bad_input_golikov2022
import test_bad_input_hayou2020
import test_bad_input_jacot2018
from stage_checks import refused

from ntkrepro.config import CONF_DIR, compose, validate
from ntkrepro.stage import stage_module

TABLES = {"arora2019": test_bad_input_arora2019.BAD, "feng2020_deq": test_bad_input_feng2020_deq.BAD,
          "golikov2022": test_bad_input_golikov2022.BAD, "hayou2020": test_bad_input_hayou2020.BAD,
          "jacot2018": test_bad_input_jacot2018.BAD}
CASES = [(f"{paper}/{artifact}", *case) for paper, table in TABLES.items() for artifact, cases in table.items()
         for case in cases]
EXPERIMENTS = [f"{paper}/{artifact}" for paper, table in TABLES.items() for artifact in table]


@pytest.mark.parametrize(("experiment", "overrides", "path", "fragment"), CASES,
                         ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_bad_params_are_refused_in_one_line_naming_the_parameter(memory_16gib, experiment, overrides, path,
                                                                 fragment):
    message = refused(experiment, overrides)
    assert message.startswith(f"error: {path}: "), message
    assert fragment in message, message


def test_every_stage_has_its_table_and_at_least_ten_bad_inputs():
    declared = sorted(f"{p.parent.name}/{p.stem}" for p in (CONF_DIR / "experiment").glob("*/*.yaml"))
    assert sorted(EXPERIMENTS) == declared
    assert all(len(cases) >= 10 for table in TABLES.values() for cases in table.values())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_every_registered_scale_validates(monkeypatch, experiment, scale):
    monkeypatch.setattr("ntkrepro.checks.physical_memory", lambda: 64 * 2**30)
    validate(compose(experiment, [f"scale={scale}"]), stage_module(experiment).Params)
