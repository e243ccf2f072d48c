"""Bad input to the Feng & Kolter (DEQ-NTK) stages: each refused before any data or compute with one line
``error: <parameter>: ...`` naming the parameter (the typed ``Params`` of each stage; for what depends on
``data``, the stage's data check run before the data are loaded). Every registered scale passes. Memory
refusals are estimated from the config, never allocated; the tests fix the machine's memory at 16 GiB."""

from __future__ import annotations

import pytest
from stage_checks import refused

from ntkrepro.config import ConfigError, compose, validate
from ntkrepro.stage import stage_module

GIB = 2**30
STAGES = ("fig1", "table1", "table2", "cdeq_cost")


def data_check(artifact: str):
    """The stage's checks of its data config (``Params.check_config``, run by the validation)."""
    module = stage_module(f"feng2020_deq/{artifact}")
    return lambda cfg: validate(cfg, module.Params)


def refused_before_loading(artifact: str, overrides: list[str]) -> str:
    """The one-line error of the stage's data check, for a config its typed params accept."""
    cfg = compose(f"feng2020_deq/{artifact}", ["scale=quick", *overrides])
    with pytest.raises(ConfigError) as info:
        data_check(artifact)(cfg)
    message = str(info.value)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


TABLE = [  # the DEQ-NTK rows shared by Tables 1 and 2 (deq_eval.TableParams)
    (["params.settings=[]"], "params.settings", "needs at least 1 value(s)"),
    (["params.settings=[{sigma_w2:0.25,sigma_u2:0.25,sigma_b2:0.5},{sigma_w2:0.25,sigma_u2:0.25,sigma_b2:0.5}]"],
     "params.settings", "values must be distinct"),
    (["params.settings=[{sigma_w2:1.0,sigma_u2:0.0,sigma_b2:0.0}]"], "params.settings[0].sigma_w2", "must be < 1"),
    (["params.settings=[{sigma_w2:0.5,sigma_u2:-0.25,sigma_b2:0.75}]"], "params.settings[0].sigma_u2",
     "must be >= 0"),
    (["params.settings=[{sigma_w2:0.25,sigma_u2:0.25,sigma_b2:0.25}]"], "params.settings[0]",
     "needs sigma_w2 + sigma_u2 + sigma_b2 = 1"),
    (["params.settings=[{sigma_w2:0.25,sigma_u2:0.75}]"], "params.settings[0].sigma_b2", "is required"),
    (["params.settings=[{sigma_w2:0.25,sigma_u2:0.25,sigma_b2:0.5,sigma_v2:0.0}]"], "params.settings[0].sigma_v2",
     "unknown parameter"),
    (["params.settings=[{sigma_w2:'0.25',sigma_u2:0.25,sigma_b2:0.5}]"], "params.settings[0].sigma_w2",
     "must be a finite number"),
    (["params.ridge=-1e-3"], "params.ridge", "must be >= 0"),
    (["params.ridge=nan"], "params.ridge", "must be a finite number"),
    (["params.label_pos=-0.1", "params.label_neg=0.9"], "params.label_pos", "must be > params.label_neg = 0.9"),
    (["params.tile=0"], "params.tile", "must be >= 1"),
    (["params.tile=2048.5"], "params.tile", "must be an integer"),
    (["params.solve_warmup_max_n=no"], "params.solve_warmup_max_n", "must be an integer"),
    (["params.extrapolate_to.n_train=-60000"], "params.extrapolate_to.n_train", "must be >= 1"),
    (["+params.extrapolate_to.n_val=1"], "params.extrapolate_to.n_val", "unknown parameter"),
    (["+params.sigma_w2=0.5"], "params.sigma_w2", "unknown parameter (accepted: settings, ridge"),
    (["data.balanced=no"], "data.balanced", "must be true or false"),  # issue 16: read as True before
    (["data.n_train=-5"], "data.n_train", "must be >= 1"),
    (["data.name=mnits"], "data.name", "must be a registered dataset"),
]

BAD = {
    "fig1": [
        (["params.n_train=1"], "params.n_train", "must be >= 2"),
        (["params.n_train='400'"], "params.n_train", "must be an integer"),
        (["params.n_test=0"], "params.n_test", "must be >= 1"),
        (["params.n_draws=1"], "params.n_draws", "must be >= 2"),
        (["params.panels=[]"], "params.panels", "needs at least 1 value(s)"),
        (["params.panels=[{sigma_w2:0.5,sigma_b2:0.5},{sigma_w2:0.5,sigma_b2:0.5}]"], "params.panels",
         "values must be distinct"),
        (["params.panels=[{sigma_w2:0.5,sigma_b2:-0.5}]"], "params.panels[0].sigma_b2", "must be >= 0"),
        (["params.panels=[{sigma_w2:1.5,sigma_b2:0.5}]"], "params.panels[0].sigma_w2", "must be < 1"),
        (["params.panels=[{sigma_w2:0.95,sigma_b2:0.05}]"], "params.panels[0].sigma_b2",
         "must be >= params.deq_sigma_b2 = 0.1"),
        (["params.panels=[{sigma_w2:0.5,sigma_b2:0.4}]"], "params.panels[0]", "needs sigma_w2 + sigma_b2 = 1"),
        (["params.panels=[{sigma_w:0.5,sigma_b2:0.5}]"], "params.panels[0].sigma_w", "unknown parameter"),
        (["params.deq_sigma_b2=-0.1"], "params.deq_sigma_b2", "must be >= 0"),
        (["params.depths=[]"], "params.depths", "needs at least 2 value(s)"),
        (["params.depths=[8]"], "params.depths", "needs at least 2 value(s)"),
        (["params.depths=[8,8]"], "params.depths", "values must be distinct"),
        (["params.depths=[0,8]"], "params.depths", "every value must be >= 1"),
        (["params.depths=[1,2.5]"], "params.depths[1]", "must be an integer"),
        (["params.ridge_eps=nan"], "params.ridge_eps", "must be a finite number"),
        (["params.deq_ridge=-1"], "params.deq_ridge", "must be >= 0"),
        (["params.ci_level=95"], "params.ci_level", "must be < 1"),
        (["params.ci_level=0"], "params.ci_level", "must be > 0"),
        (["params.spectrum_draw=10"], "params.spectrum_draw", "must be one of the draws 0..9"),
        (["params.spectrum_draw=-1"], "params.spectrum_draw", "must be >= 0"),
        (["params.row_chunk=0"], "params.row_chunk", "must be >= 1"),
        (["params.label_pos=0.9", "params.label_neg=0.9"], "params.label_pos", "must be > params.label_neg"),
        (["+params.sigma_u2=0.1"], "params.sigma_u2", "unknown parameter (accepted: n_train, n_test"),
        (["params.n_train=1000000", "params.n_test=1"], "params.n_train",
         "the kernels of one draw at every depth"),
        (["params.depths=[1,100000000]"], "params.depths", "one block of the all-depths recursion"),
        (["data.balanced=no"], "data.balanced", "must be true or false"),
        (["params.test_points=random"], "params.test_points", "must be one of"),
    ],
    "table1": TABLE,
    "cdeq_cost": [
        (["params.sigma_w2=1.0"], "params.sigma_w2", "must be < 1"),
        (["params.sigma_w2=-0.1"], "params.sigma_w2", "must be >= 0"),
        (["params.sigma_u2=0.5"], "params", "needs sigma_w2 + sigma_u2 = 1"),
        (["params.preprocess=standardize"], "params.preprocess", "must be one of"),
        (["params.tol=0"], "params.tol", "must be > 0"),
        (["params.max_iter=0"], "params.max_iter", "must be >= 1"),
        (["params.cntk_depth=1"], "params.cntk_depth", "must be >= 2"),
        (["params.cntk_depth=2.5"], "params.cntk_depth", "must be an integer"),
        (["params.n_images=0"], "params.n_images", "must be >= 1"),
        (["params.repeats=1"], "params.repeats", "must be >= 2"),
        (["+params.readout=gap"], "params.readout", "unknown parameter"),
        (["params.n_images=1000000"], "params.n_images", "one block's live pair arrays"),
    ],
    "table2": [
        *TABLE,
        (["params.cdeq.sigma_w2=1.0"], "params.cdeq.sigma_w2", "must be < 1"),
        (["params.cdeq.sigma_u2=-0.35"], "params.cdeq.sigma_u2", "must be >= 0"),
        (["params.cdeq.sigma_u2=0.3"], "params.cdeq", "needs sigma_w2 + sigma_u2 = 1"),
        (["params.cdeq.preprocess=unit_norm"], "params.cdeq.preprocess", "must be one of 'pixel_unit_norm'"),
        (["params.cdeq.n_train=0"], "params.cdeq.n_train", "must be >= 1"),
        (["params.cdeq.n_test=true"], "params.cdeq.n_test", "must be an integer"),
        (["params.cdeq.tol=0"], "params.cdeq.tol", "must be > 0"),
        (["params.cdeq.tol=inf"], "params.cdeq.tol", "must be a finite number"),
        (["params.cdeq.max_iter=0"], "params.cdeq.max_iter", "must be >= 1"),
        (["+params.cdeq.sigma_b2=0.0"], "params.cdeq.sigma_b2", "unknown parameter"),
        (["params.cdeq_tile=-32"], "params.cdeq_tile", "must be >= 1"),
        (["params.cdeq.n_train=1000000"], "params.cdeq.n_train", "the CDEQ-NTK train Gram"),
        (["params.cdeq.iter_sample=0"], "params.cdeq.iter_sample", "must be >= 1"),
        (["params.cdeq.iter_sample=100000"], "params.cdeq.iter_sample", "must be <= params.cdeq.n_train = "),
    ],
}


def test_table1_refuses_balanced_no():
    """The issue's case: data.balanced=no was read as True (another subset, 76 % instead of 70 %)."""
    assert refused("feng2020_deq/table1", ["data.balanced=no"]) == (
        "error: data.balanced: must be true or false (got 'no')")


@pytest.mark.parametrize("artifact", ["fig1", "table1", "table2"])  # cdeq_cost: params.preprocess only
def test_inputs_off_the_unit_sphere_are_refused_before_loading(artifact):
    """The DEQ-NTK fixed point (Thm. 2) takes unit-norm inputs: another preprocessing failed only in compute."""
    message = refused_before_loading(artifact, ["data.preprocess=standardize"])
    assert message.startswith("error: data.preprocess: must be 'unit_norm'"), message


@pytest.mark.parametrize("split", ["train", "test"])
def test_fig1_refuses_a_draw_larger_than_its_pool(split):
    pool = compose("feng2020_deq/fig1", ["scale=quick"]).data[f"n_{split}"]
    message = refused_before_loading("fig1", [f"params.n_{split}={pool + 1}"])
    assert message.startswith(f"error: params.n_{split}: must be <= data.n_{split} = {pool}"), message


@pytest.mark.parametrize("artifact", ["table1", "table2"])
def test_a_train_gram_that_exhausts_memory_is_refused_with_its_estimate(memory_16gib, artifact):
    message = refused_before_loading(artifact, ["data.n_train=100000"])  # 1e10 entries x 8 bytes
    assert message == (
        f"error: data.n_train: the DEQ-NTK train Gram (n_train x n_train, float64) would need ~{8e10 / GIB:.3g} "
        f"GiB, more than this machine's 16 GiB of memory (at most {int((16 * GIB / 8) ** 0.5)} would fit) "
        "(got 100000)")
    fits = int((16 * GIB / 8) ** 0.5)
    data_check(artifact)(compose(f"feng2020_deq/{artifact}", ["scale=quick", f"data.n_train={fits}"]))
