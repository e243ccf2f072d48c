"""Bad input to the Golikov et al. 2022 stages: each refused before any data or compute with one line
``error: <parameter>: ...`` naming the parameter (the typed ``Params`` of each stage; for what depends on
``data``, mc_vs_exact's ``Params.check_config``, run by the same validation). Every registered scale passes.
Memory refusals are estimated from the config, never allocated; the tests fix the machine's memory at
16 GiB."""

from __future__ import annotations

import pytest
from stage_checks import refused

from ntkrepro.config import ConfigError, compose, validate
from ntkrepro.stage import stage_module

GIB = 2**30
STAGES = ("gram_cost", "training_costs", "mc_vs_exact", "printed_formulas")


def refused_before_loading(overrides: list[str]) -> str:
    """The one-line error of mc_vs_exact's data check, for a config its typed params accept."""
    module = stage_module("golikov2022/mc_vs_exact")
    cfg = compose("golikov2022/mc_vs_exact", ["scale=quick", *overrides])
    with pytest.raises(ConfigError) as info:
        validate(cfg, module.Params)
    message = str(info.value)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


BAD = {
    "gram_cost": [
        (["params.depth=1"], "params.depth", "must be >= 2"),
        (["params.depth='3'"], "params.depth", "must be an integer"),
        (["params.fc_input_dim=-3072"], "params.fc_input_dim", "must be >= 1"),
        (["params.channels=0"], "params.channels", "must be >= 1"),
        (["params.repeats=0"], "params.repeats", "must be >= 1"),
        (["params.repeats=nan"], "params.repeats", "must be an integer"),
        (["params.fit_top=1"], "params.fit_top", "must be >= 2"),
        (["params.fit_top=5"], "params.fc.m_values", "needs at least params.fit_top = 5 sizes"),
        (["params.fc.m_values=[]"], "params.fc.m_values", "needs at least 2 value(s)"),
        (["params.fc.m_values=[250]"], "params.fc.m_values", "needs at least 2 value(s)"),
        (["params.fc.m_values=[250,500,500]"], "params.fc.m_values", "values must be distinct"),
        (["params.fc.m_values=[250,-500,1000]"], "params.fc.m_values", "every value must be >= 1"),
        (["+params.fc.d_values=[4,8,16]"], "params.fc.d_values", "unknown parameter (accepted: m_values)"),
        (["params.cntk_v.batch_size_m=0"], "params.cntk_v.batch_size_m", "must be >= 1"),
        (["params.cntk_gap.batch_size_d=auto"], "params.cntk_gap.batch_size_d", "must be an integer"),
        (["params.cntk_v.side_for_m=0"], "params.cntk_v.side_for_m", "must be >= 1"),
        (["params.cntk_gap.m_for_d=-2"], "params.cntk_gap.m_for_d", "must be >= 1"),
        (["params.cntk_gap.d_values=[16,24]"], "params.cntk_gap.d_values", "needs at least params.fit_top = 3"),
        (["params.cntk_v.d_values=[16,32,32]"], "params.cntk_v.d_values", "values must be distinct"),
        (["params.extrapolate.m=0"], "params.extrapolate.m", "must be >= 1"),
        (["params.extrapolate.side=32.5"], "params.extrapolate.side", "must be an integer"),
        (["+params.widths=[1,2]"], "params.widths", "unknown parameter (accepted: depth, fc_input_dim"),
        (["params.fc.m_values=[250,500,1000,10000000]"], "params.fc.m_values", "the FC Gram of the largest m"),
        (["params.fc_input_dim=10000000000"], "params.fc_input_dim", "the FC inputs"),
        (["params.cntk_gap.d_values=[16,24,1000000]"], "params.cntk_gap.d_values", "the images of the d sweep"),
        (["params.cntk_v.m_values=[64,128,100000000]"], "params.cntk_v.m_values", "the cntk_v Gram of the largest m"),
    ],
    "training_costs": [
        (["params.m=0"], "params.m", "must be >= 1"),
        (["params.steps=-1"], "params.steps", "must be >= 1"),
        (["params.steps=1e4"], "params.steps", "must be an integer"),
        (["params.integration_m=0"], "params.integration_m", "must be >= 1"),
        (["params.timed_steps=0"], "params.timed_steps", "must be >= 1"),
        (["params.depth=1"], "params.depth", "must be >= 2"),
        (["params.side=0"], "params.side", "must be >= 1"),
        (["params.channels=0"], "params.channels", "must be >= 1"),
        (["params.block=0"], "params.block", "must be >= 1"),
        (["params.block=24"], "params.block", "must be a multiple of 16"),
        (["params.fc_m=1"], "params.fc_m", "must be >= 2"),
        (["params.fc_input_dim=0"], "params.fc_input_dim", "must be >= 1"),
        (["params.repeats=1"], "params.repeats", "must be >= 2"),
        (["+params.readout=gap"], "params.readout", "unknown parameter"),
        (["params.integration_m=10000000"], "params.integration_m", "the integrated Gram (float32"),
        (["params.fc_m=10000000"], "params.fc_m", "the FC Grams"),
        (["params.side=100000"], "params.side", "a CNTK block's live pair arrays"),
    ],
    "mc_vs_exact": [
        (["params.archs=[rnn]"], "params.archs[0]", "must be one of 'fc', 'cnn'"),
        (["params.archs=[]"], "params.archs", "needs at least 1 value(s)"),
        (["params.archs=[fc,fc]"], "params.archs", "values must be distinct"),
        (["params.activations=[relu,swishy]"], "params.activations", "must be a registered activation"),
        (["params.activations=[]"], "params.activations", "needs at least 1 value(s)"),
        (["params.depth=2"], "params.depth", "must be >= 3"),
        (["params.depth=three"], "params.depth", "must be an integer"),
        (["params.control_depth=1"], "params.control_depth", "must be >= 2"),
        (["params.depth=4", "params.control_depth=4"], "params.control_depth", "must be < params.depth = 4"),
        (["params.net_precision=float16"], "params.net_precision", "must be one of 'float32', 'float64'"),
        (["params.n_samples=[2,4]"], "params.n_samples", "must include M = 1"),
        (["params.n_samples=[]"], "params.n_samples", "needs at least 1 value(s)"),
        (["params.n_samples=[1,2,2]"], "params.n_samples", "values must be distinct"),
        (["params.n_samples=[1,0]"], "params.n_samples", "every value must be >= 1"),
        (["params.ridge_rel=-1e-6"], "params.ridge_rel", "must be >= 0"),
        (["params.ridge_rel=nan"], "params.ridge_rel", "must be a finite number"),
        (["params.label_pos=-0.1"], "params.label_pos", "must be > params.label_neg = -0.1"),
        (["params.fc.widths=[]"], "params.fc.widths", "needs at least 1 value(s)"),
        (["params.fc.widths=[16,-32,64,128,256]"], "params.fc.widths", "every value must be >= 1"),
        (["params.fc.n_reps=[6,4,3,3]"], "params.fc.n_reps", "needs one entry per width"),
        (["params.cnn.n_reps=[6,4,3,1]"], "params.cnn.n_reps", "every value must be >= 2"),
        (["params.fc.bias_probe.n_groups=1"], "params.fc.bias_probe.n_groups", "must be >= 2"),
        (["params.cnn.bias_probe.group_size=1"], "params.cnn.bias_probe.group_size", "must be >= 2"),
        (["params.fc.bias_probe.n_points=1"], "params.fc.bias_probe.n_points", "must be >= 2"),
        (["params.cnn.bias_probe.batch=0"], "params.cnn.bias_probe.batch", "must be >= 1"),
        (["params.cnn.bias_probe.width='8'"], "params.cnn.bias_probe.width", "must be an integer"),
        (["params.cnn.readout=max"], "params.cnn.readout", "must be one of 'vanilla', 'gap'"),
        (["+params.fc.readout=vanilla"], "params.fc.readout", "unknown parameter (accepted: widths, n_reps"),
        (["+params.sigma_w2=2.0"], "params.sigma_w2", "unknown parameter"),
        (["params.fc.bias_probe.batch=10000000"], "params.fc.bias_probe.batch", "one batch of probed Grams"),
        (["params.cnn.widths=[16,32,64,10000000]"], "params.cnn.widths", "a hidden weight of the widest net"),
        (["data.balanced=no"], "data.balanced", "must be true or false"),
    ],
    "printed_formulas": [
        (["params.activations=[tanh]"], "params.activations[0]", "must be one of 'relu', 'erf'"),
        (["params.activations=[]"], "params.activations", "needs at least 1 value(s)"),
        (["params.activations=[relu,relu]"], "params.activations", "values must be distinct"),
        (["params.relu.lambdas=[0.99]"], "params.relu.lambdas", "every value must be <= 0.95"),
        (["params.relu.variances=[[1.0]]"], "params.relu.variances[0]", "must be a pair of positive variances"),
        (["params.relu.variances=[[1.0,-2.0]]"], "params.relu.variances[0]", "must be a pair of positive variances"),
        (["params.relu.mc_samples=10"], "params.relu.mc_samples", "must be >= 100"),
        (["params.scalar.inputs=[1.0]"], "params.scalar.inputs", "needs at least 2 value(s)"),
        (["params.scalar.draws=1"], "params.scalar.draws", "must be >= 2"),
        (["params.fc.input_dim=1"], "params.fc.input_dim", "must be >= 2"),
        (["params.fc.depth=1"], "params.fc.depth", "must be >= 2"),
        (["params.cnn.pixels=1"], "params.cnn.pixels", "must be >= 2"),
        (["params.cnn.convs=1"], "params.cnn.convs", "must be >= 2"),
        (["params.cnn.batch=0"], "params.cnn.batch", "must be >= 1"),
        (["params.cnn.width=wide"], "params.cnn.width", "must be an integer"),
        (["+params.widths=[1]"], "params.widths", "unknown parameter (accepted: activations, relu, scalar, fc, cnn)"),
    ],
}


def test_the_largest_fc_gram_that_fits_passes(memory_16gib):
    module = stage_module("golikov2022/gram_cost")
    fits = int((16 * GIB / 4) ** 0.5)
    validate(compose("golikov2022/gram_cost", ["scale=quick", f"params.fc.m_values=[250,500,{fits}]"]),
             module.Params)
    message = refused("golikov2022/gram_cost", [f"params.fc.m_values=[250,500,{fits + 1}]"])
    assert message.startswith("error: params.fc.m_values: the FC Gram of the largest m (m x m, float32) would "
                              f"need ~16 GiB, more than this machine's 16 GiB of memory (at most {fits} would fit)")


def test_mc_vs_exact_refuses_probed_points_outside_the_train_set():
    message = refused_before_loading(["params.fc.bias_probe.n_points=101"])  # quick: data.n_train = 100
    assert message.startswith("error: params.fc.bias_probe.n_points: must be <= data.n_train = 100"), message


def test_mc_vs_exact_refuses_kept_draws_that_exhaust_memory(memory_16gib):
    message = refused_before_loading(["data.n_train=100000", "data.n_test=100000"])
    # quick: 6 reps x M = 8 -> 48 draws x 2e5 x 1e5 x 8 bytes = 7.7e12 bytes
    assert message.startswith(f"error: data.n_train: the kept Monte Carlo draws of one width (48 draws x "
                              f"(n_train + n_test) x n_train, float64) would need ~{48 * 2e5 * 1e5 * 8 / GIB:.3g} "
                              "GiB"), message
