"""Bad input to the Arora et al. 2019 stages: each refused before any data or compute with one line
``error: <parameter>: ...`` naming the parameter — the typed ``Params`` of each stage (types, bounds,
nested blocks, unknown keys, cross-field checks) and, for what depends on ``data`` (split sizes, image
sides, the Grams' and activations' memory), ``Params.check_config``, run by the same validation.
Every registered scale passes. Memory refusals are estimated from the config, never allocated; the
tests fix the machine's memory so that the estimates and the limits are exact."""

from __future__ import annotations

import pytest
from stage_checks import refused

from ntkrepro.config import ConfigError, compose, validate
from ntkrepro.stage import stage_module

GIB = 2**30
STAGES = ("table1", "table2", "theory_checks")


def _memory(monkeypatch, gib: int) -> None:
    monkeypatch.setattr("ntkrepro.checks.physical_memory", lambda: gib * GIB)


def refused_before_loading(artifact: str, overrides: list[str]) -> str:
    """The one-line error of the stage's data check (``Params.check_config``, run by the validation)."""
    return refused(f"arora2019/{artifact}", overrides)


# (overrides, the parameter named, a fragment of what would be accepted): refused by the typed Params
BAD = {
    "table1": [
        (["params.filter_size='3'"], "params.filter_size", "must be an integer"),
        (["params.filter_size=4"], "params.filter_size", "must be odd"),
        (["params.downsample=0"], "params.downsample", "must be >= 1"),
        (["params.ridge=-1"], "params.ridge", "must be >= 0"),
        (["params.ridge=nan"], "params.ridge", "must be a finite number"),
        (["params.label_pos=-0.5"], "params.label_pos", "must be > params.label_neg = -0.1"),
        (["params.label_neg=0.9"], "params.label_pos", "must be > params.label_neg = 0.9"),
        (["params.subset.n_train=0"], "params.subset.n_train", "must be >= 1"),
        (["params.subset.seed=-1"], "params.subset.seed", "must be >= 0"),
        (["params.vanilla.depths=[]"], "params.vanilla.depths", "needs at least 1 value(s)"),
        (["params.vanilla.depths=[1,3]"], "params.vanilla.depths", "every value must be >= 2"),
        (["params.gap.depths=[]"], "params.gap.depths", "needs at least 1 value(s)"),
        (["params.gap.depths=[2,3]"], "params.gap.depths", "every value must be >= 3"),
        (["params.gap.depths=[3,3]"], "params.gap.depths", "values must be distinct"),
        (["params.vanilla=3"], "params.vanilla", "must be a mapping with keys depths"),
        (["params.gram_tile=0"], "params.gram_tile", "must be >= 1"),
        (["params.cnn.depths=[]"], "params.cnn.depths", "needs at least 1 value(s)"),
        (["params.cnn.depths=[0]"], "params.cnn.depths", "every value must be >= 3"),
        (["params.cnn.channels=[]"], "params.cnn.channels", "needs at least 1 value(s)"),
        (["params.cnn.channels=[-8]"], "params.cnn.channels", "every value must be >= 1"),
        (["params.cnn.channels=[32,32]"], "params.cnn.channels", "values must be distinct"),
        (["params.cnn.lrs=[]"], "params.cnn.lrs", "needs at least 1 value(s)"),
        (["params.cnn.lrs=[1.0,inf]"], "params.cnn.lrs[1]", "must be a finite number"),
        (["params.cnn.lrs=[-1.0]"], "params.cnn.lrs", "every value must be > 0"),
        (["params.cnn.kappa=[]"], "params.cnn.kappa", "needs at least 1 value(s)"),
        (["params.cnn.kappa=[0.0]"], "params.cnn.kappa", "every value must be > 0"),
        (["params.cnn.epochs=no"], "params.cnn.epochs", "must be an integer"),
        (["params.cnn.batch_size=0"], "params.cnn.batch_size", "must be >= 1"),
        (["params.cnn.n_val=0"], "params.cnn.n_val", "must be >= 1"),
        (["params.cnn.n_val=-5"], "params.cnn.n_val", "must be >= 1"),
        (["params.cnn.lr_probe=2.5"], "params.cnn.lr_probe", "must be an integer"),
        (["+params.cnn.momentum=0.9"], "params.cnn.momentum", "unknown parameter (accepted: depths, channels"),
        (["+params.activation=tanh"], "params.activation", "unknown parameter (accepted: filter_size"),
        (["params.cnn.channels=[32,100000]"], "params.cnn.channels", "the weights of the widest CNN"),
        (["data.name=circle"], "data.name", "must be an image dataset"),
    ],
    "table2": [
        (["params.depths=[]"], "params.depths", "needs at least 1 value(s)"),
        (["params.depths=[2,3]"], "params.depths", "every value must be >= 3"),
        (["params.depths=[3,3]"], "params.depths", "values must be distinct"),
        (["params.channels=0"], "params.channels", "must be >= 1"),
        (["params.channels='128'"], "params.channels", "must be an integer"),
        (["params.n_draws=0"], "params.n_draws", "must be >= 1"),
        (["params.ridge=-0.1"], "params.ridge", "must be >= 0"),
        (["params.label_pos=nan"], "params.label_pos", "must be a finite number"),
        (["params.label_neg=0.9"], "params.label_pos", "must be > params.label_neg = 0.9"),
        (["params.filter_size=2"], "params.filter_size", "must be odd"),
        (["params.downsample=-4"], "params.downsample", "must be >= 1"),
        (["params.gram_tile=-1"], "params.gram_tile", "must be >= 1"),
        (["params.seed=1.5"], "params.seed", "must be an integer"),
        (["+params.width=5"], "params.width", "unknown parameter (accepted: filter_size"),
        (["params.channels=1000000"], "params.channels", "one image's Jacobian row of the deepest"),
        (["data.substitute=fashion_mnist_shirt"], "data.substitute", "must be a registered dataset"),
        (["data.classes=[1]"], "data.classes", "needs at least 2 value(s)"),
        (["data.classes=[0,0]"], "data.classes", "values must be distinct"),
        (["data.classes=[0,5]"], "data.classes", "must be labels 0..1 of cifar2"),
        (["data.substitute=gaussian"], "data.substitute", "must be an image dataset"),
    ],
    "theory_checks": [
        (["params.init.widths=[32]"], "params.init.widths", "needs at least 2 value(s)"),
        (["params.init.widths=[]"], "params.init.widths", "needs at least 2 value(s)"),
        (["params.trained.widths=[16,16]"], "params.trained.widths", "values must be distinct"),
        (["params.trained.widths=[16,-32]"], "params.trained.widths", "every value must be >= 1"),
        (["params.init.depth=2"], "params.init.depth", "must be >= 3"),
        (["params.trained.depth=0"], "params.trained.depth", "must be >= 2"),
        (["params.trained.lr=2.0"], "params.trained.lr", "must be < 2"),
        (["params.trained.lr=-0.5"], "params.trained.lr", "must be > 0"),
        (["params.trained.steps=0"], "params.trained.steps", "must be >= 1"),
        (["params.init.n_seeds=0"], "params.init.n_seeds", "must be >= 1"),
        (["params.seed=no"], "params.seed", "must be an integer"),
        (["params.filter_size=0"], "params.filter_size", "must be >= 1"),
        (["params.label_pos=-0.1"], "params.label_pos", "must be > params.label_neg = -0.1"),
        (["params.trained=5"], "params.trained", "must be a mapping with keys depth, widths"),
        (["+params.init.readout=gap"], "params.init.readout", "unknown parameter (accepted: depth, widths"),
        (["params.init.widths=[32,1000000]"], "params.init.widths", "one image's Jacobian row at the widest"),
        (["params.trained.widths=[16,1000000]"], "params.trained.widths", "the weights of the widest trained"),
    ],
}

# refused by Params.check_config, before the data are loaded (quick: data.n_train 200 / 120 / 16)
BAD_DATA = {
    "table1": [
        (["params.cnn.n_val=200"], "params.cnn.n_val", "must be in [1, data.n_train - 1 = 199]"),
        (["params.cnn.batch_size=161"], "params.cnn.batch_size", "must be <= the 160 images the CNNs train on"),
        (["params.cnn.lr_probe=161"], "params.cnn.lr_probe", "must be <= the 160 images the CNNs train on"),
        (["params.subset.n_train=201"], "params.subset.n_train", "must be <= data.n_train = 200"),
        (["params.downsample=3"], "params.downsample",
         "must divide the image sides of 32x32 (data.name = cifar10) or 28x28 (data.substitute = fashion_mnist)"),
        (["data.n_train=10000000", "params.downsample=1"], "data.n_train", "the training CNTK Gram"),
        (["data.n_test=100000000"], "data.n_test", "the test-train CNTK Gram (n_test x n_train = 200"),
        (["data.n_test=5000000"], "params.cnn.channels", "one CNN layer's activations over the 5000000 test"),
        (["data.n_train=20000", "params.cnn.batch_size=19000", "params.cnn.channels=[256]", "params.cnn.depths=[21]"],
         "params.cnn.batch_size", "the CNN activations of one batch kept for backpropagation"),
    ],
    "table2": [
        (["params.downsample=5"], "params.downsample", "must divide the image sides of 32x32 (data.name = cifar2)"),
        (["data.n_train=1000000", "params.downsample=1"], "data.n_train", "the training CNTK Gram"),
        (["data.n_test=100000000"], "data.n_test", "the test-train CNTK Gram (n_test x n_train = 120"),
    ],
    "theory_checks": [
        (["params.downsample=3"], "params.downsample", "must divide the image sides of 32x32"),
        (["data.n_train=1000000"], "data.n_train", "the training CNTK Gram"),
        (["data.n_train=30000", "params.downsample=1"], "data.n_train",
         "the activations of full-batch GD kept for backpropagation"),
    ],
}


@pytest.mark.parametrize(("artifact", "overrides", "path", "fragment"),
                         [(a, *case) for a, cases in BAD_DATA.items() for case in cases],
                         ids=[f"{a}:{' '.join(c[0])}" for a, cases in BAD_DATA.items() for c in cases])
def test_sizes_that_depend_on_the_data_are_refused_before_loading(memory_16gib, artifact, overrides, path,
                                                                  fragment):
    message = refused_before_loading(artifact, overrides)
    assert message.startswith(f"error: {path}: "), message
    assert fragment in message, message


def test_a_training_gram_that_exhausts_memory_is_refused_with_its_estimate(memory_16gib):
    """data.n_train = 10^7 at native resolution: above ntkrepro.gram.LARGE_GRAM_BYTES the training Gram is
    kept in the run's precision (table1: float32) and factored in place, a 10^7 x 10^7 float32 Gram
    (4e14 bytes); 16 GiB hold the Gram of at most floor(sqrt(16 GiB / 4)) = 65536 images."""
    message = refused_before_loading("table1", ["data.n_train=10000000", "params.downsample=1"])
    assert message == (
        f"error: data.n_train: the training CNTK Gram (n_train x n_train, float32) would need ~{4e14 / GIB:.3g} "
        "GiB, more than this machine's 16 GiB of memory (at most 65536 would fit) (got 10000000)")
    module = stage_module("arora2019/table1")
    validate(compose("arora2019/table1", ["scale=quick", "data.n_train=65536"]), module.Params)
    with pytest.raises(ConfigError, match="error: data.n_train: the training CNTK Gram"):
        validate(compose("arora2019/table1", ["scale=quick", "data.n_train=65537"]), module.Params)


def test_the_papers_table_1_fits_a_16_gib_machine_in_float32_only(memory_16gib):
    """All 50,000 CIFAR-10 training images: in the authors' float32, factored in place, the training Gram is
    50000^2 x 4 bytes = 9.3 GiB and passes; in float64 it is 18.6 GiB and is refused."""
    module = stage_module("arora2019/table1")
    validate(compose("arora2019/table1", ["scale=paper"]), module.Params)
    cfg = compose("arora2019/table1", ["scale=paper", "precision=float64"])
    with pytest.raises(ConfigError, match=r"error: data.n_train: the training CNTK Gram .*float64.* ~18.6 GiB"):
        validate(cfg, module.Params)


def test_the_widest_cnn_estimate_is_quadratic_in_the_channels(memory_16gib):
    """quick: deepest CNN depth 6 -> 4 hidden 3x3 convolutions: 4 x 9 x c^2 x 4 bytes; 16 GiB hold
    c <= floor(sqrt(16 GiB / 144)) = 10922 channels."""
    module = stage_module("arora2019/table1")
    validate(compose("arora2019/table1", ["scale=quick", "params.cnn.channels=[10922]"]), module.Params)
    message = refused("arora2019/table1", ["params.cnn.channels=[32,10923]"])
    assert message.startswith("error: params.cnn.channels: the weights of the widest CNN (the 4 hidden "
                              "convolutions of depth 6: 3^2 x channels^2 each, float32) would need ~16 GiB")
    assert "(at most 10922 would fit) (got 10923)" in message


@pytest.mark.parametrize("artifact", STAGES)
def test_the_stage_refuses_before_loading_the_data(monkeypatch, memory_16gib, tmp_path, artifact):
    """The stage wrapper validates (Params and check_config) before run() reads any split."""
    from ntkrepro.stage import execute

    module = stage_module(f"arora2019/{artifact}")

    def no_data(*a, **k):
        raise AssertionError("data loaded before refusing")

    monkeypatch.setattr("ntkrepro.data.load", no_data)  # the one loader every stage's load_split calls
    cfg = compose(f"arora2019/{artifact}", ["scale=quick", "params.downsample=5", "tracking.enabled=false"])
    with pytest.raises(ConfigError, match="error: params.downsample: must divide"):
        execute(cfg, module.run, out_dir=tmp_path / "out", params_schema=module.Params)
    assert not (tmp_path / "out").exists()
