"""Bad input to the Hayou et al. 2020 stages: each refused before any data or compute with one line
``error: <parameter>: ...`` naming the parameter (the typed ``Params`` of each stage; Table 2's sizes that
depend on ``data`` and ``precision`` in ``Params.check_config``, run by the same validation). Every
registered scale passes. Memory refusals are estimated from the config, never allocated; the tests fix the
machine's memory so that the estimates and the limits are exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stage_checks import refused

from ntkrepro.config import ConfigError, compose, validate
from ntkrepro.stage import stage_module

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
STAGES = ("eoc_curves", "fig1", "theorem_checks", "cnn_checks", "table1", "table2")


BAD = {
    "eoc_curves": [
        (["params.q_min=-1"], "params.q_min", "must be > 0"),  # was "math domain error"
        (["params.q_min=0"], "params.q_min", "must be > 0"),
        (["params.q_min=10", "params.q_max=1"], "params.q_max", "must be > params.q_min = 10"),  # ran, exit 0
        (["params.q_max=1e-8"], "params.q_max", "must be > params.q_min = 1e-08"),
        (["params.q_max=nan"], "params.q_max", "must be a finite number"),
        (["params.q_max='1e4'"], "params.q_max", "must be a finite number"),
        (["params.q_max=no"], "params.q_max", "must be a finite number"),
        (["params.n_q=1"], "params.n_q", "must be >= 2"),
        (["params.n_q=0"], "params.n_q", "must be >= 2"),
        (["params.n_q=2.5"], "params.n_q", "must be an integer"),
        (["params.activations=[]"], "params.activations", "needs at least 1 value(s)"),
        (["params.activations=[relu,relu]"], "params.activations", "values must be distinct"),
        (["params.activations=[relu,swish]"], "params.activations[1]", "must be a registered activation"),
        (["params.paper_points.0.sigma_b=-0.2"], "params.paper_points[0].sigma_b", "must be >= 0"),
        (["params.paper_points.2.sigma_w=-1.2"], "params.paper_points[2].sigma_w", "must be > 0"),
        (["params.paper_points.2.sigma_w=0"], "params.paper_points[2].sigma_w", "must be > 0"),
        (["params.paper_points.3.activation=swish"], "params.paper_points[3].activation",
         "must be a registered activation"),
        (["params.paper_points.1.name=relu"], "params.paper_points[1]", "names must be distinct"),
        (["params.paper_points.1.sigma_b=0.2"], "params.paper_points[1].sigma_w",
         "null (the EOC value) needs an EOC point: leaky_relu:0.01 is ReLU-like: its only EOC point has sigma_b2 = 0"),
        (["params.paper_points=[{name: s, activation: softplus, sigma_b: 0.0, sigma_w: null}]"],
         "params.paper_points[0].sigma_w", "softplus has phi(0) != 0, so sigma_b2 = 0 has no EOC point"),
        (["+params.paper_points.0.sigma_w2=2.0"], "params.paper_points[0].sigma_w2", "unknown parameter"),
        (["+params.eoc_tol=-1"], "params.eoc_tol", "unknown parameter (accepted: activations, q_min"),
        (["params.n_q=10000000000"], "params.n_q", "the quadrature of one EOC curve (n_q x 64 Gauss nodes"),
    ],
    "fig1": [
        # depths not on the grid: an IndexError after compute before issue 16
        (["params.fit_range=[100,3000]"], "params.fit_range",
         "must be depths of the grid (params.max_depth, params.per_decade); 3000 is not, the nearest are 2818 "
         "and 3162"),
        (["params.fit_range=[150,1000000]"], "params.fit_range", "150 is not, the nearest are 141 and 158"),
        (["params.fit_range=[10,11]"], "params.fit_range", "holds 2 depth(s) of the grid; a slope with a standard "
                                                            "error needs at least 3"),
        (["params.fit_range=[10000,10000000]"], "params.fit_range", "must lie in [1, params.max_depth = 1000000]"),
        (["params.fit_range=[1000,10]"], "params.fit_range", "must be strictly increasing"),
        (["params.fit_range=[10]"], "params.fit_range", "needs at least 2 value(s)"),
        (["params.fit_range=[0,1000]"], "params.fit_range", "every value must be >= 1"),
        (["params.max_depth=1000", "params.fit_range=[10000,1000000]"], "params.fit_range",
         "must lie in [1, params.max_depth = 1000]"),
        (["params.max_depth=2"], "params.max_depth", "gives a default fit range (the last two decades of the grid, "
                                                     "[1, 2]) that holds 2 depth(s)"),
        (["params.max_depth=0"], "params.max_depth", "must be >= 1"),
        (["params.max_depth=1e6"], "params.max_depth", "must be an integer"),
        (["params.max_depth=100000000000000000000"], "params.max_depth", "must be <= 2^53"),
        (["params.per_decade=0"], "params.per_decade", "must be >= 1"),
        (["params.per_decade=no"], "params.per_decade", "must be an integer"),
        (["params.resnet_sigma_w2=[-1]"], "params.resnet_sigma_w2", "every value must be > 0"),  # after compute before
        (["params.resnet_sigma_w2=[0.5,0]"], "params.resnet_sigma_w2", "every value must be > 0"),
        (["params.resnet_sigma_w2=[]"], "params.resnet_sigma_w2", "needs at least 1 value(s)"),
        (["params.resnet_sigma_w2=[1.0,1.0]"], "params.resnet_sigma_w2", "values must be distinct"),
        (["params.resnet_sigma_w2=['2.0']"], "params.resnet_sigma_w2[0]", "must be a finite number"),
        (["params.resnet_sigma_w2=2.0"], "params.resnet_sigma_w2", "must be a list of a finite number"),
        (["params.eoc=[]"], "params.eoc", "needs at least 1 value(s)"),
        (["params.eoc.0.sigma_b2=0.1"], "params.eoc[0].sigma_b2",
         "relu is ReLU-like: its only EOC point has sigma_b2 = 0"),
        (["params.eoc.1.sigma_b2=-0.04"], "params.eoc[1].sigma_b2", "must be >= 0"),
        (["params.eoc.2.activation=swish"], "params.eoc[2].activation", "must be a registered activation"),
        (["params.eoc.2.activation=elu"], "params.eoc[2]", "activations must be distinct"),
        (["params.eoc=[{activation: softplus, sigma_b2: 0.0}]"], "params.eoc[0].sigma_b2",
         "softplus has phi(0) != 0, so sigma_b2 = 0 has no EOC point"),
        (["+params.eoc.0.sigma_w2=2.0"], "params.eoc[0].sigma_w2",
         "unknown parameter (accepted: activation, sigma_b2)"),
        (["params.ordered.0.sigma_w2=-1.5"], "params.ordered[0].sigma_w2", "must be > 0"),  # values inside lists
        (["params.ordered.1.sigma_b2=nan"], "params.ordered[1].sigma_b2", "must be a finite number"),
        (["params.ordered.1.activation=relu"], "params.ordered[1]", "activations must be distinct"),
        (["params.pair.cos=1.0"], "params.pair.cos", "must be < 1"),
        (["params.pair.norm2=[1.0,0.0]"], "params.pair.norm2", "every value must be > 0"),
        (["params.pair.norm2=[1.0]"], "params.pair.norm2", "needs at least 2 value(s)"),
        (["params.ordered_depth=20"], "params.ordered_depth", "must be >= 2 params.ordered_fit_start + 2 = 22"),
        (["params.ordered_fit_start=0"], "params.ordered_fit_start", "must be >= 1"),
        (["params.ordered_depth=-200"], "params.ordered_depth", "must be >= 1"),
        (["+params.eoc_tol=-1"], "params.eoc_tol", "unknown parameter"),  # no longer exists
        (["params.per_decade=100000000000"], "params.per_decade", "the depth grid and the kernels recorded on it"),
        (["params.ordered_depth=100000000000"], "params.ordered_depth", "the kernels of the general recursion"),
    ],
    "theorem_checks": [
        (["params.max_depth=1050"], "params.max_depth", "must be a multiple of 100"),
        (["params.max_depth=10"], "params.max_depth", "must be >= 100"),
        (["params.max_depth='1e6'"], "params.max_depth", "must be an integer"),
        (["params.per_decade=-20"], "params.per_decade", "must be >= 1"),
        (["params.max_depth=no"], "params.max_depth", "must be an integer"),
        (["params.pairs=[]"], "params.pairs", "needs at least 1 value(s)"),
        (["params.pairs.1.cos=-1"], "params.pairs[1].cos", "must be > -1"),
        (["params.pairs.3.norm2=[0.5,-2.0]"], "params.pairs[3].norm2", "every value must be > 0"),
        (["params.eoc.1.sigma_b2=-0.04"], "params.eoc[1].sigma_b2", "must be >= 0"),
        (["params.eoc.0.sigma_b2=0.04"], "params.eoc[0].sigma_b2", "relu is ReLU-like"),
        (["params.ordered.0.sigma_w2=0"], "params.ordered[0].sigma_w2", "must be > 0"),
        (["params.chaotic.0.sigma_w2=-4.0"], "params.chaotic[0].sigma_w2", "must be > 0"),
        (["params.chaotic.0.activation=swish"], "params.chaotic[0].activation", "must be a registered activation"),
        (["params.phase_depth=10"], "params.phase_depth", "must be >= 2 params.phase_fit_start + 2 = 22"),
        (["params.phase_fit_start=0"], "params.phase_fit_start", "must be >= 1"),
        (["params.resnet_sigma_w2=[-1]"], "params.resnet_sigma_w2", "every value must be > 0"),
        (["params.resnet_sigma_w2=[]"], "params.resnet_sigma_w2", "needs at least 1 value(s)"),
        (["params.resnet_sigma_w2=[0.5,'2.0']"], "params.resnet_sigma_w2[1]", "must be a finite number"),
        (["+params.all_depths=no"], "params.all_depths", "unknown parameter"),
        (["params.phase_depth=100000000000"], "params.phase_depth", "the kernels of the general recursion"),
    ],
    "cnn_checks": [
        (["params.max_depth=150"], "params.max_depth", "must be a multiple of 100"),
        (["params.max_depth=1e5"], "params.max_depth", "must be an integer"),
        (["params.positions=1"], "params.positions", "must be >= 2"),
        (["params.half_width=0"], "params.half_width", "must be >= 1"),
        (["params.in_channels=0"], "params.in_channels", "must be >= 1"),
        (["params.n_inputs=1"], "params.n_inputs", "must be >= 2"),
        (["params.mc_samples=1"], "params.mc_samples", "must be >= 2"),
        (["params.mc_depth=1"], "params.mc_depth", "must be >= 2"),
        (["params.eoc=[]"], "params.eoc", "needs at least 1 value(s)"),
        (["params.eoc.0.activation=elu"], "params.eoc[0].activation", "the CNN deep path has ReLU-like closed forms"),
        (["params.eoc.0.sigma_b2=0.1"], "params.eoc[0].sigma_b2", "relu is ReLU-like: its only EOC point"),
        (["params.eoc.1.sigma_b2=0.0"], "params.eoc[1].sigma_b2", "must be > 0 for tanh"),
        (["params.eoc.1.activation=relu"], "params.eoc[1]", "activations must be distinct"),
        (["params.resnet_sigma_w2=[]"], "params.resnet_sigma_w2", "needs at least 1 value(s)"),
        (["params.resnet_sigma_w2=[0.5,0]"], "params.resnet_sigma_w2", "every value must be > 0"),
        (["params.mc=[]"], "params.mc", "needs at least 1 value(s)"),
        (["params.mc.1.name=relu"], "params.mc[1]", "names must be distinct"),
        (["params.mc.0.activation=swish"], "params.mc[0].activation", "must be a registered activation"),
        (["params.mc.0.sigma_w2=0"], "params.mc[0].sigma_w2", "must be > 0"),
        (["params.mc.0.residual=maybe"], "params.mc[0].residual", "must be"),
        (["params.mc_channels=10000000"], "params.mc_channels", "the Jacobian of the Monte Carlo net's outputs"),
        (["params.positions=10000000"], "params.positions", "the kernels of every input pair recorded"),
    ],
    "table1": [
        (["params.depth=0"], "params.depth", "must be >= 2"),
        (["params.depth=1"], "params.depth", "must be >= 2"),
        (["params.width=-32"], "params.width", "must be >= 1"),
        (["params.lr=-0.01"], "params.lr", "must be > 0"),
        (["params.lr='0.01'"], "params.lr", "must be a finite number"),
        (["params.n_seeds=0"], "params.n_seeds", "must be >= 1"),
        (["params.batch_size=0"], "params.batch_size", "must be >= 1"),
        (["params.batch_size=100000"], "params.batch_size", "must be <= params.datasets.mnist.n_train = 4096"),
        (["params.epochs.late=7"], "params.epochs.late", "must be a multiple of params.epochs.early = 5"),
        (["params.epochs.early=0"], "params.epochs.early", "must be >= 1"),
        (["params.run_datasets=[]"], "params.run_datasets", "needs at least 1 value(s)"),
        (["params.run_datasets=[svhn]"], "params.run_datasets[0]", "must be a key of params.datasets (mnist, cifar10)"),
        (["params.datasets.mnist.balanced=no"], "params.datasets.mnist.balanced", "must be true or false"),
        (["params.datasets.mnist.name=mnsit"], "params.datasets.mnist.name", "must be a registered dataset"),
        (["params.datasets.mnist.n_train=0"], "params.datasets.mnist.n_train", "must be >= 1"),
        (["params.models=[]"], "params.models", "needs at least 1 value(s)"),
        (["params.models.3.activation=swish"], "params.models[3].activation", "must be a registered activation"),
        (["params.models.3.sigma_w=-1.225"], "params.models[3].sigma_w", "must be > 0"),
        (["params.models.4.sigma_b=-0.2"], "params.models[4].sigma_b", "must be >= 0"),
        (["params.models.1.name=relu"], "params.models[1]", "names must be distinct"),
        (["params.models.1.sigma_b=0.2"], "params.models[1].sigma_w",
         "null (the EOC value), but on mnist: leaky_relu:0.01 is ReLU-like"),
        (["params.models.2.init_slope=null"], "params.models[2].init_slope", "is required for prelu"),
        (["+params.models.0.init_slope=0.25"], "params.models[0].init_slope", "applies to prelu only"),
        (["params.models.5.by_dataset.cifar10.sigma_w=-1"], "params.models[5].by_dataset.cifar10.sigma_w",
         "must be > 0"),
        (["+params.models.5.by_dataset.svhn={sigma_w: 1.0}"], "params.models[5].by_dataset.svhn",
         "must be a key of params.datasets"),
        (["+params.models.5.by_dataset.cifar10.sigma_w2=1.0"], "params.models[5].by_dataset.cifar10.sigma_w2",
         "unknown parameter"),
        (["+params.momentum=0.9"], "params.momentum", "unknown parameter"),
        (["params.width=10000000"], "params.width", "one hidden weight matrix of the net (width x width, float64)"),
        (["params.depth=100000000"], "params.depth",
         "the hidden weight matrices of the net (at most depth x width x width"),
    ],
    "table2": [
        (["params.model.sigma_w2='2.0'"], "params.model.sigma_w2", "must be a finite number"),  # was accepted
        (["params.model.sigma_w2=-0.5"], "params.model.sigma_w2", "must be > 0"),
        (["params.model.sigma_b2=-1"], "params.model.sigma_b2", "must be >= 0"),
        (["params.model.batch_norm=no"], "params.model.batch_norm", "must be true or false"),
        (["params.model.kind=cnn"], "params.model.kind", "must be one of 'fc_resnet', 'cifar_resnet'"),
        (["params.model.kind=cifar_resnet"], "params.depths[0]", "must be 6n + 2 >= 8 for a CIFAR ResNet"),
        (["params.model.width=-64"], "params.model.width", "must be >= 1"),
        (["+params.model.activation=tanh"], "params.model.activation", "unknown parameter"),
        (["params.depths=[]"], "params.depths", "needs at least 1 value(s)"),
        (["params.depths=[0,4]"], "params.depths", "every value must be >= 2"),
        (["params.depths=[1,4]"], "params.depths", "every value must be >= 2"),
        (["params.depths=[4,4]"], "params.depths", "values must be distinct"),
        (["params.depths=[4,nan]"], "params.depths[1]", "must be an integer"),
        (["params.epochs.early=3"], "params.epochs.late", "must be a multiple of params.epochs.early = 3"),
        (["params.epochs.late=0"], "params.epochs.late", "must be >= 1"),
        (["params.lr=0"], "params.lr", "must be > 0"),
        (["params.lr_decay_epochs=[6,4]"], "params.lr_decay_epochs", "must be strictly increasing"),
        (["params.lr_decay_epochs=[4,8]"], "params.lr_decay_epochs", "every value must be < params.epochs.late = 8"),
        (["params.lr_decay_factor=0"], "params.lr_decay_factor", "must be > 0"),
        (["params.lr_decay_factor=10"], "params.lr_decay_factor", "must be <= 1"),
        (["params.n_seeds=0"], "params.n_seeds", "must be >= 1"),
        (["params.batch_size=5000"], "params.batch_size", "must be <= data.n_train = 4096"),
        (["data.n_train=100"], "params.batch_size", "must be <= data.n_train = 100"),
        (["data.n_train=0"], "data.n_train", "must be >= 1"),
        (["data.balanced=no"], "data.balanced", "must be true or false"),
        (["params.model.width=10000000"], "params.model.width", "one hidden weight matrix of the deepest ResNet"),
        (["params.depths=[4,100000000]"], "params.depths", "the hidden weight matrices of the deepest ResNet"),
        (["params.model.kind=cifar_resnet", "params.depths=[32,600000002]"], "params.depths",
         "the activations of the deepest ResNet kept for backpropagation"),
    ],
}


@pytest.mark.parametrize("max_depth", [1000, 10000])
def test_the_readme_sweep_over_max_depth_passes(max_depth):
    """README: ``python experiments/hayou2020/fig1.py -m params.max_depth=1000,10000`` (the fit range follows)."""
    module = stage_module("hayou2020/fig1")
    for scale in ("smoke", "quick", "paper"):
        validate(compose("hayou2020/fig1", [f"scale={scale}", f"params.max_depth={max_depth}"]), module.Params)


def test_a_fit_range_on_the_grid_passes():
    module = stage_module("hayou2020/fig1")
    depths = module.depth_grid(10**6, 20)
    lo, hi = int(depths[np.searchsorted(depths, 150)]), int(depths[np.searchsorted(depths, 3000)])
    validate(compose("hayou2020/fig1", ["scale=quick", f"params.fit_range=[{lo},{hi}]"]), module.Params)


def test_the_largest_depth_that_fits_passes(memory_16gib):
    """Table 1 at width 32: at most depth matrices of 32 x 32 float64, 8 KiB each: 16 GiB holds depth 2^21."""
    module = stage_module("hayou2020/table1")
    fits = 16 * GIB // (8 * 32**2)
    validate(compose("hayou2020/table1", ["scale=quick", "params.width=32", f"params.depth={fits}"]), module.Params)
    message = refused("hayou2020/table1", ["params.width=32", f"params.depth={fits + 1}"])
    assert message == ("error: params.depth: the hidden weight matrices of the net (at most depth x width x width at "
                       f"width 32, float64) would need ~{8 * 32**2 * (fits + 1) / GIB:.3g} GiB, more than this "
                       f"machine's 16 GiB of memory (at most {fits} would fit) (got {fits + 1})")
    # a width whose one matrix alone exceeds the memory is named, whatever the depth
    assert refused("hayou2020/table1", ["params.width=46341", "params.depth=2"]).startswith(
        "error: params.width: one hidden weight matrix of the net (width x width, float64) would need ~16 GiB")


def test_table2_memory_follows_the_precision(memory_16gib):
    """fc_resnet at width 64: depth x 64^2 x itemsize bytes; float64 halves the depth that fits."""
    f32 = refused("hayou2020/table2", ["params.depths=[4,2000000]", "precision=float32"])
    f64 = refused("hayou2020/table2", ["params.depths=[4,2000000]", "precision=float64"])
    assert f"at most {16 * GIB // (4 * 64**2)} would fit" in f32 and "float32" in f32
    assert f"at most {16 * GIB // (8 * 64**2)} would fit" in f64 and "float64" in f64


def test_the_stage_exits_with_one_line_before_any_compute(tmp_path):
    """The issue's case through the stage itself: exit 2, the one line last on stderr, no traceback, no outputs."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/hayou2020/fig1.py"), "params.fit_range=[100,3000]",
         "tracking.enabled=false", "threads=1", f"results_root={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: params.fit_range: must be depths of the grid")
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_an_unknown_key_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="accepted: max_depth, per_decade, pair, eoc, ordered"):
        validate(compose("hayou2020/fig1", ["scale=quick", "+params.fit_lo=10"]), stage_module("hayou2020/fig1").Params)
