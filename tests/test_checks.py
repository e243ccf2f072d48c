"""Typed experiment parameters (ntkrepro.checks): strict types, bounds, nested paths, unknown keys,
cross-field checks; every error one line naming the parameter and the value."""

from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ntkrepro.checks import ConfigError, activation, bad, build, increasing, param
from ntkrepro.config import DataSchema


@dataclass
class Case:
    sigma_w2: float = param(ge=0)
    sigma_b2: float = param(0.0, ge=0)


@dataclass
class Params:
    depth: int = param(ge=1)
    widths: list[int] = param([100, 1000], min_len=2, ge=1, distinct=True)
    all_depths: bool = False
    activation: str = param("relu", check=activation)
    readout: Literal["vanilla", "gap"] = "vanilla"
    fit_range: list[int] = param([1, 10], min_len=2, max_len=2, ge=1, check=increasing)
    cases: list[Case] = param([])
    ridge: float | None = param(None, ge=0)

    def check(self):
        if self.fit_range[1] > self.depth:
            raise bad("params.fit_range", f"must lie in [1, depth={self.depth}]", self.fit_range)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"depth": 0}, "error: params.depth: must be >= 1 (got 0)"),
        ({"depth": "3"}, "error: params.depth: must be an integer (got '3')"),
        ({"depth": True}, "error: params.depth: must be an integer (got True)"),
        ({"depth": 10, "all_depths": "no"}, "error: params.all_depths: must be true or false (got 'no')"),
        ({"depth": 10, "widths": [100]}, "error: params.widths: needs at least 2 value(s) (got [100])"),
        ({"depth": 10, "widths": [100, 100]}, "error: params.widths: values must be distinct (got [100, 100])"),
        ({"depth": 10, "widths": [100, -1]}, "error: params.widths: every value must be >= 1 (got [100, -1])"),
        ({"depth": 10, "activation": "swishy"}, "error: params.activation: must be a registered activation"),
        ({"depth": 10, "readout": "max"}, "error: params.readout: must be one of 'vanilla', 'gap' (got 'max')"),
        ({"depth": 10, "fit_range": [5, 3]}, "error: params.fit_range: must be strictly increasing (got [5, 3])"),
        ({"depth": 4, "fit_range": [1, 10]}, "error: params.fit_range: must lie in [1, depth=4] (got [1, 10])"),
        ({"depth": 10, "cases": [{"sigma_w2": 2.0}, {"sigma_w2": -1.0}]},
         "error: params.cases[1].sigma_w2: must be >= 0 (got -1.0)"),
        ({"depth": 10, "cases": [{"sigma_w": 2.0}]}, "error: params.cases[0].sigma_w: unknown parameter"),
        ({"depth": 10, "ridge": float("nan")}, "error: params.ridge: must be a finite number (got nan)"),
        ({"depth": 10, "dpeth": 3}, "error: params.dpeth: unknown parameter (accepted: depth, widths"),
        ({}, "error: params.depth: is required"),
    ],
)
def test_bad_values_give_one_line_naming_the_parameter(values, message):
    with pytest.raises(ConfigError) as info:
        build(Params, OmegaConf.create(values))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_good_values_build_the_dataclass():
    p = build(Params, OmegaConf.create({"depth": 10, "cases": [{"sigma_w2": 2}], "ridge": 0}))
    assert p.cases[0].sigma_w2 == 2.0 and isinstance(p.cases[0], Case) and p.ridge == 0.0


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none()))
def test_an_int_field_accepts_exactly_the_ints(value):
    try:
        build(Params, {"depth": value, "fit_range": [1, 2]})  # the cross-field check needs depth >= 2
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == (isinstance(value, int) and not isinstance(value, bool) and value >= 2)


@given(st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3)))
def test_a_variance_accepts_exactly_finite_nonnegative_numbers(value):
    try:
        build(Case, {"sigma_w2": value})
        accepted = True
    except ConfigError:
        accepted = False
    finite = isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
    assert accepted == (finite and value >= 0)


@pytest.mark.parametrize("values,fragment", [
    ({"name": "mnsit"}, "error: data.name: must be a registered dataset"),
    ({"name": "mnist", "balanced": "no"}, "error: data.balanced: must be true or false (got 'no')"),
    ({"name": "mnist", "n_train": 0}, "error: data.n_train: must be >= 1 (got 0)"),
    ({"name": "mnist", "preprocess": "whiten"}, "error: data.preprocess: must be one of"),
])
def test_data_config_is_typed(values, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build(DataSchema, values, "data")
