"""ntkrepro.stats against independent references: scipy's linregress, numpy's moments, exact power laws."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from ntkrepro.stats import line_fit, local_slopes, loglog_fit, mean_se, relative_error

finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=3, max_size=20, unique=True), st.integers(0, 2**31 - 1))
def test_line_fit_matches_scipy_linregress(xs, seed):
    x = np.asarray(xs)
    y = 0.7 * x + np.random.default_rng(seed).normal(size=x.size)
    fit, ref = line_fit(x, y), sps.linregress(x, y)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-9, abs=1e-9)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-9, abs=1e-7)
    assert fit.slope_se == pytest.approx(ref.stderr, rel=1e-7, abs=1e-12)
    assert fit.n == x.size


@given(st.lists(finite, min_size=1, max_size=30))
def test_mean_se_matches_numpy(values):
    est = mean_se(values, over="seeds")
    assert est.value == pytest.approx(np.mean(values), abs=1e-9)
    if len(values) > 1:
        assert est.se == pytest.approx(np.std(values, ddof=1) / np.sqrt(len(values)), abs=1e-9)
    else:
        assert np.isnan(est.se)
    assert est.record() == {"se": est.se, "n": len(values), "over": "seeds"}


def test_loglog_fit_recovers_an_exact_power_law_with_zero_error():
    x = np.array([10.0, 30.0, 100.0, 1000.0])
    fit = loglog_fit(x, 3.0 * x**-0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12) and fit.slope_se == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(local_slopes(x, 3.0 * x**-0.5), -0.5)


def test_local_slopes_show_what_a_fit_hides():
    """Arora's Thm 3.1 case: a 'slope -0.5' fit over points whose consecutive slopes drift."""
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    y = np.exp(np.cumsum([0.0, -0.03 * np.log(10), -0.25 * np.log(10), -1.34 * np.log(10)]))
    assert np.allclose(local_slopes(x, y), [-0.03, -0.25, -1.34])
    fit = loglog_fit(x, y)
    assert fit.slope_se > 0.15  # the drift shows up as a large standard error


@pytest.mark.parametrize("args,msg", [(([1.0], [1.0]), "length >= 2"), (([1.0, 1.0], [1.0, 2.0]), "distinct"),
                                      (([1.0, np.nan], [1.0, 2.0]), "finite")])
def test_line_fit_rejects_degenerate_input(args, msg):
    with pytest.raises(ValueError, match=msg):
        line_fit(*args)


def test_relative_error():
    assert relative_error([[3.0, 4.0]], [[0.0, 0.0001]]) > 1
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.0, 0.0], [0.0, 1.0]) == pytest.approx(np.sqrt(2))
