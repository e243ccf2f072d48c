"""Bad input to the Jacot et al. 2018 stages: each refused before any data or compute with one line
``error: <parameter>: ...`` naming the parameter (the typed ``Params`` of each stage, and for the sizes
that depend on ``data``, ``Params.check_config``, run by the same validation). Every registered
scale passes. Memory refusals are estimated from the config, never allocated; the tests fix the
machine's memory so that the estimates and the limits are exact."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from stage_checks import refused

from ntkrepro.config import ConfigError, compose, validate
from ntkrepro.stage import stage_module

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
STAGES = ("fig1", "fig2", "fig3", "ntk_pd")


def refused_before_loading(artifact: str, overrides: list[str]) -> str:
    """The one-line error of the stage's data-size check (``Params.check_config``)."""
    return refused(f"jacot2018/{artifact}", overrides)


BAD = {
    "fig1": [
        (["params.depth='3'"], "params.depth", "must be an integer"),
        (["params.depth=0"], "params.depth", "must be >= 2"),
        (["params.depth=1"], "params.depth", "must be >= 2"),  # no hidden layer: no width to compare
        (["params.beta=-0.1"], "params.beta", "must be >= 0"),
        (["params.beta=nan"], "params.beta", "must be a finite number"),
        (["params.lr=0"], "params.lr", "must be > 0"),
        (["params.steps=0"], "params.steps", "must be >= 1"),
        (["params.steps=2.5"], "params.steps", "must be an integer"),
        (["params.widths=[500,-1]"], "params.widths", "every value must be >= 1"),
        (["params.widths=[500]"], "params.widths", "needs at least 2 value(s)"),
        (["params.widths=[]"], "params.widths", "needs at least 2 value(s)"),
        (["params.widths=[500,500]"], "params.widths", "values must be distinct"),
        (["params.widths=no"], "params.widths", "must be a list of an integer"),
        (["params.n_inits=1"], "params.n_inits", "must be >= 2"),
        (["params.x0=[1.0,0.0,0.0]"], "params.x0", "takes at most 2 value(s)"),
        (["params.x0=[1.0,a]"], "params.x0[1]", "must be a finite number"),
        (["params.n_grid=1"], "params.n_grid", "must be >= 2"),
        (["+params.activation=tanh"], "params.activation", "unknown parameter (accepted: depth, beta"),
        (["params.beta=0", "params.x0=[0,0]"], "params.x0", "must not be the origin when params.beta = 0"),
        (["params.widths=[500,1000000]"], "params.widths", "a hidden weight matrix of the widest width"),
        (["params.n_grid=100000000"], "params.n_grid", "the activations of the grid"),
        (["params.n_inits=100000000000"], "params.n_inits", "the kernel rows of one width"),
    ],
    "fig2": [
        (["params.depth=0"], "params.depth", "must be >= 1"),
        (["params.steps='1000'"], "params.steps", "must be an integer"),
        (["params.beta=-1"], "params.beta", "must be >= 0"),
        (["params.lr=-1.0"], "params.lr", "must be > 0"),
        (["params.lr=inf"], "params.lr", "must be a finite number"),
        (["params.widths=[]"], "params.widths", "needs at least 1 value(s)"),
        (["params.widths=[-50]"], "params.widths", "every value must be >= 1"),
        (["params.widths=[50,50]"], "params.widths", "values must be distinct"),
        (["params.n_inits=1"], "params.n_inits", "must be >= 2"),
        (["params.train_angles=[]"], "params.train_angles", "needs at least 1 value(s)"),
        (["params.train_angles=[0.5,0.5,1.0]"], "params.train_angles", "must be distinct points of the circle"),
        (["params.train_angles=[0.0,6.283185307179586]"], "params.train_angles", "modulo 2 pi"),
        (["params.target=sine"], "params.target", "must be one of 'product'"),
        (["params.n_grid=1"], "params.n_grid", "must be >= 2"),
        (["params.n_grid=nan"], "params.n_grid", "must be an integer"),
        (["+params.x0=[1.0,0.0]"], "params.x0", "unknown parameter"),
        (["params.n_grid=1000000"], "params.n_grid", "the grid's kernel (n_grid x n_grid"),
        (["params.widths=[50,10000000]"], "params.widths", "a hidden weight matrix of the widest width"),
        ([f"params.n_grid=1{'0' * 400}"], "params.n_grid", "would need ~inf GiB"),  # beyond any float
    ],
    "fig3": [
        (["params.depth=0"], "params.depth", "must be >= 1"),
        (["params.depth=7"], "params.depth", "must be <= params.max_depth_table = 6"),
        (["params.max_depth_table=0"], "params.max_depth_table", "must be >= 1"),
        (["params.lr=fast"], "params.lr", "must be a finite number"),
        (["params.beta=-0.1"], "params.beta", "must be >= 0"),
        (["params.beta_footnote=0.1"], "params.beta_footnote", "must differ from params.beta = 0.1"),
        (["params.n_components=2"], "params.n_components", "must be >= 3"),
        (["params.amplitude=0"], "params.amplitude", "must be > 0"),
        (["params.amplitude=-0.5"], "params.amplitude", "must be > 0"),
        (["params.widths=[]"], "params.widths", "needs at least 1 value(s)"),
        (["params.widths=[100,100]"], "params.widths", "values must be distinct"),
        (["params.widths=[100,-300]"], "params.widths", "every value must be >= 1"),
        (["params.n_trials=0"], "params.n_trials", "must be >= 1"),
        (["params.record_every=0"], "params.record_every", "must be >= 1"),
        (["params.steps=10"], "params.steps", "must be >= params.record_every = 20"),
        (["params.record_every=7"], "params.steps", "must be a multiple of params.record_every = 7"),
        (["params.steps=null"], "params.steps", "must be an integer"),
        (["+params.sigma_w2=2.0"], "params.sigma_w2", "unknown parameter"),
        (["params.widths=[100,10000000]"], "params.widths", "a hidden weight matrix of the widest width"),
    ],
    "ntk_pd": [
        (["params.beta=-0.1"], "params.beta", "must be >= 0"),
        (["params.beta=nan"], "params.beta", "must be a finite number"),
        (["params.input_dim=1"], "params.input_dim", "must be >= 2"),  # S^0: two points
        (["params.input_dim=2.5"], "params.input_dim", "must be an integer"),
        (["params.n_points=[]"], "params.n_points", "needs at least 1 value(s)"),
        (["params.n_points=[4,1]"], "params.n_points", "every value must be >= 2"),
        (["params.n_points=[8,8]"], "params.n_points", "values must be distinct"),
        (["params.n_points=[3,4]"], "params.n_points", "needs a size > params.input_dim + 1 = 4"),
        (["params.input_dim=40"], "params.n_points", "needs a size > params.input_dim + 1 = 41"),
        (["params.max_depth=1"], "params.max_depth", "must be >= 2"),
        (["params.max_depth='6'"], "params.max_depth", "must be an integer"),
        (["params.activations=[]"], "params.activations", "needs at least 1 value(s)"),
        (["params.activations=[relu,relu]"], "params.activations", "values must be distinct"),
        (["params.activations=[relu,swish]"], "params.activations", "must be a registered activation"),
        (["params.activations=[relu,identity]"], "params.activations", "'identity' is a polynomial"),
        (["params.activations=['relu_like:0.5,0.5']"], "params.activations", "'relu_like:0.5,0.5' is a polynomial"),
        (["params.polynomial_activations=[tanh]"], "params.polynomial_activations", "'tanh' is not a polynomial"),
        (["params.polynomial_activations=[]"], "params.polynomial_activations", "needs at least 1 value(s)"),
        (["params.polynomial_activations=[cubic]"], "params.polynomial_activations",
         "must be a registered activation"),
        (["+params.width=100"], "params.width", "unknown parameter (accepted: beta, input_dim"),
        (["params.n_points=[4,100000]"], "params.n_points", "the NNGP and NTK of one depth"),
        (["params.max_depth=100000000"], "params.max_depth", "the NNGP and NTK of every depth"),
        (["params.n_points=[4,'32']"], "params.n_points[1]", "must be an integer"),
    ],
}


def test_a_training_set_that_exhausts_memory_is_refused_with_its_estimate(memory_16gib):
    """The issue's case: data.n_train=10000000 (Fig. 1 at quick: depth 4, widths 500 and 1000)."""
    message = refused_before_loading("fig1", ["data.n_train=10000000"])
    # 3 hidden layers x 10^7 inputs x 1000 units x 8 bytes = 2.4e11 bytes; 16 GiB / (3 x 1000 x 8) inputs fit
    assert message == (
        "error: data.n_train: the hidden activations kept for backpropagation ((depth - 1) x n_train x widest "
        f"width, float64) would need ~{2.4e11 / GIB:.3g} GiB, more than this machine's 16 GiB of memory "
        f"(at most {16 * GIB // 24000} would fit) (got 10000000)")
    half = refused_before_loading("fig1", ["data.n_train=10000000", "precision=float32"])
    assert f"~{1.2e11 / GIB:.3g} GiB" in half and f"at most {16 * GIB // 12000} would fit" in half


def test_the_largest_training_set_that_fits_passes(memory_16gib):
    module = stage_module("jacot2018/fig1")
    fits = 16 * GIB // 24000
    validate(compose("jacot2018/fig1", ["scale=quick", f"data.n_train={fits}"]), module.Params)
    with pytest.raises(ConfigError, match="data.n_train"):
        validate(compose("jacot2018/fig1", ["scale=quick", f"data.n_train={fits + 1}"]), module.Params)


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["data.n_train=2"], "must be >= params.n_components = 3"),
    (["data.n_train=100000"], "the NTKs of the tabulated depths (max_depth_table x N x N"),
    (["data.n_train=10000000"], "the NTKs of the tabulated depths"),
])
def test_fig3_refuses_a_batch_too_small_or_too_large(memory_16gib, overrides, fragment):
    message = refused_before_loading("fig3", overrides)
    assert message.startswith("error: data.n_train: ") and fragment in message, message


def test_fig3_refuses_recorded_residuals_that_exhaust_memory(memory_16gib):
    message = refused_before_loading("fig3", ["params.steps=10000000000", "params.record_every=1"])
    assert message.startswith("error: params.steps: the recorded residuals of one width"), message


def test_fig2_targets_are_the_implemented_ones():
    module = stage_module("jacot2018/fig2")
    assert set(typing.get_args(typing.get_type_hints(module.Params)["target"])) == set(module.TARGETS)


def test_the_stage_exits_with_one_line_before_loading_data(tmp_path):
    """The stage itself: exit 2, the one line last on stderr, no traceback, no outputs."""
    need = 3 * 10**7 * 1000 * 8
    if os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >= need:
        pytest.skip("this machine's memory holds the estimate")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/jacot2018/fig1.py"), "data.n_train=10000000",
         "tracking.enabled=false", "threads=1", f"results_root={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.n_train: the hidden activations")
    assert "Traceback" not in proc.stderr and "computed in" not in proc.stdout
    assert not list(tmp_path.rglob("metrics.json"))
