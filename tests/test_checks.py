"""Typed experiment parameters (ntkrepro.checks): strict types, bounds, nested paths, unknown keys,
cross-field checks; every error one line naming the parameter and the value."""

from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given, settings
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


# ---- the public API's guards ---------------------------------------------------------------------------

import numpy as np  # noqa: E402

from ntkrepro.dynamics import linearized_outputs  # noqa: E402
from ntkrepro.kernels.conv import cntk  # noqa: E402
from ntkrepro.kernels.fc import fc_kernels  # noqa: E402
from ntkrepro.regression import kernel_regression  # noqa: E402


@pytest.mark.parametrize("bad_x,fragment", [
    (np.ones((3, 2)) + 1j, "x1 is complex"),
    (np.array([["a", "b"], ["c", "d"]]), "x1 must hold real numbers"),
    (np.array([[1, None], [2, 3]], dtype=object), "x1 must hold real numbers"),
    (np.ones((3, 2), dtype=bool), "x1 must hold real numbers"),
])
def test_kernels_refuse_non_real_inputs(bad_x, fragment):
    with pytest.raises(ValueError, match=fragment):
        fc_kernels(bad_x, depth=2)
    with pytest.raises(ValueError, match=fragment):
        cntk(np.broadcast_to(bad_x[:, :, None, None], (*bad_x.shape, 2, 1)), depth=2)


@settings(deadline=None, max_examples=15)
@given(st.floats(1e160, 1e300))
def test_an_overflowing_gram_is_an_error_naming_the_input_scale(scale):
    x = np.array([[1.0, 0.5], [0.2, 1.0]]) * scale
    with pytest.raises(ValueError, match="overflowed in its dtype at largest squared input norm"):
        fc_kernels(x, depth=3)


@settings(deadline=None, max_examples=15)
@given(st.integers(2, 6), st.floats(1e-6, 1.0), st.integers(0, 2**31 - 1))
def test_regression_refuses_a_non_symmetric_training_gram(n, eps, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    k = a @ a.T + n * np.eye(n)
    y = rng.normal(size=n)
    kernel_regression(k, y, k[:1])  # symmetric: accepted
    skew = k.copy()
    skew[0, 1] += eps * np.max(np.abs(k))
    with pytest.raises(ValueError, match="k_train is not symmetric"):
        kernel_regression(skew, y, k[:1])
    with pytest.raises(ValueError, match="ntk_train is not symmetric"):
        linearized_outputs(skew, y, np.zeros(n), t=1.0)


def test_regression_refuses_complex_kernels():
    k = np.eye(3) + 0j
    with pytest.raises(ValueError, match="k_train is complex"):
        kernel_regression(k, np.ones(3), np.ones((1, 3)))


def test_recording_estimates_collects_instead_of_refusing():
    from ntkrepro.checks import ConfigError, recording_estimates, refuse_oversized

    huge = [("params.n", 10**6, 8, 2, "an n x n float64 Gram")]
    with recording_estimates() as found:
        refuse_oversized(huge, memory=1)
    assert found == huge
    with pytest.raises(ConfigError, match=r"^error: params\.n: an n x n float64 Gram would need"):
        refuse_oversized(huge, memory=1)
