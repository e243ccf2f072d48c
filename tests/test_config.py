"""Config composition, the schema, the by_scale resolver, and one-line validation errors."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ntkrepro.config import ConfigError, experiments, flatten, premise_config, validate
from ntkrepro.config import compose as compose_experiment
from ntkrepro.stage import CONF_DIR


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


BASE = ["paper=testpaper", "artifact=a"]


def test_defaults_and_out_dir():
    cfg = _compose(BASE)
    assert cfg.scale.name == "quick"
    assert cfg.out_dir == "results/quick/testpaper/a"
    assert cfg.tracking.uri == "sqlite:///results/mlflow/mlflow.db"
    validate(cfg)


@pytest.mark.parametrize("scale,expected", [("smoke", 1), ("quick", 2), ("paper", 3), ("rehearsal", 3)])
def test_by_scale_resolver(scale, expected):
    cfg = _compose([*BASE, f"scale={scale}", "+params.width=${by_scale:1,2,3}"])
    assert cfg.params.width == expected


@pytest.mark.parametrize("scale,expected", [("quick", 2), ("paper", 3), ("rehearsal", 4)])
def test_by_scale_takes_a_rehearsal_value_when_given(scale, expected):
    cfg = _compose([*BASE, f"scale={scale}", "+params.width=${by_scale:1,2,3,4}"])
    assert cfg.params.width == expected


@pytest.mark.parametrize("experiment", experiments())
def test_the_rehearsal_has_the_papers_premise_with_stand_ins_allowed(experiment):
    """Every stage's rehearsal config equals its paper config on every premise key (so its claims are judged
    as at paper scale, and a stand-in makes them data unavailable), differs only in the scale and the
    stand-ins, writes under <results_root>/rehearsal/ and validates."""
    paper, rehearsal = (flatten(compose_experiment(experiment, [f"scale={s}"])) for s in ("paper", "rehearsal"))
    assert premise_config(rehearsal) == premise_config(paper)
    differing = {k for k in paper.keys() | rehearsal.keys() if paper.get(k) != rehearsal.get(k)}
    assert differing <= {"scale.name", "scale.allow_substitute", "out_dir", "data.substitute"}
    assert rehearsal["scale.allow_substitute"] and not paper["scale.allow_substitute"]
    assert rehearsal["out_dir"] == paper["out_dir"].replace("/paper/", "/rehearsal/", 1)
    validate(compose_experiment(experiment, ["scale=rehearsal"]))


def test_the_rehearsal_stands_in_for_cifar10_with_its_shape_and_for_mnist_with_fashion_mnist():
    from ntkrepro.data.registry import REGISTRY

    table1, table2 = (compose_experiment(f"feng2020_deq/{a}", ["scale=rehearsal"]) for a in ("table1", "table2"))
    assert (table1.data.name, table1.data.substitute) == ("mnist", "fashion_mnist")
    assert (table2.data.name, table2.data.substitute) == ("cifar10", "cifar10_shaped")
    real, shaped = REGISTRY["cifar10"], REGISTRY["cifar10_shaped"]
    assert (shaped.image_shape, shaped.num_classes, dict(shaped.sizes), shaped.pixel_max) == \
        (real.image_shape, real.num_classes, dict(real.sizes), real.pixel_max)
    quick = compose_experiment("feng2020_deq/table2", ["scale=quick"])
    assert quick.data.substitute == "fashion_mnist"  # the reduced scales keep their stand-in


def test_unknown_top_level_key_is_rejected():
    with pytest.raises(Exception, match="dpeth"):
        _compose([*BASE, "dpeth=3"])


def test_unknown_scale_is_rejected():
    with pytest.raises(Exception, match="huge"):
        _compose([*BASE, "scale=huge"])


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("+params.sigma_w2=-1.0", "error: params.sigma_w2: must be a finite number >= 0 (a variance) (got -1.0)"),
        ("+params.depth=0", "error: params.depth: must be an integer >= 1 (got 0)"),
        ("+params.depths=[1,0]", "error: params.depths: must be an integer >= 1 (got 0)"),
        ("+params.widths=[10,2.5]", "error: params.widths: must be an integer >= 1 (got 2.5)"),
        ("+params.activation=swishy", "error: params.activation: must be a registered activation (got 'swishy')"),
        ("+params.lr=0", "error: params.lr: must be a positive number (got 0)"),
        ("precision=float16", "error: precision: must be one of float32, float64 (got 'float16')"),
    ],
)
def test_bad_values_give_one_line_errors(override, fragment):
    cfg = _compose([*BASE, override])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_nested_params_are_validated():
    cfg = _compose([*BASE, "+params.net.sigma_b2=-0.1"])
    with pytest.raises(ConfigError, match="params.net.sigma_b2"):
        validate(cfg)


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}


def test_one_id_one_path():
    """The experiment id comes from the stage file's location; Hydra's out_dir and Snakemake's out() both
    come from config.stage_dir, the Gram cache from config.gram_cache_root."""
    from ntkrepro.config import compose, experiment_of, gram_cache_root, stage_dir

    assert experiment_of("experiments/hayou2020/fig1.py") == "hayou2020/fig1"
    cfg = compose("hayou2020/fig1", ["scale=smoke", "results_root=/r"])
    assert cfg.out_dir == stage_dir("/r", "smoke", "hayou2020", "fig1") == "/r/smoke/hayou2020/fig1"
    assert gram_cache_root("/r") == "/r/cache"
    root = Path(__file__).resolve().parents[1]
    stages = sorted(root.glob("experiments/*/*.py"))
    scripts = [p for p in stages if 'if __name__ == "__main__":\n    main(run, params=Params)' in p.read_text()]
    assert len(scripts) >= 20 and all((root / "conf/experiment" / f"{experiment_of(p)}.yaml").is_file()
                                      for p in scripts)
    assert not [p for p in stages if 'experiment="' in p.read_text()]  # nowhere spelled by hand


def test_every_experiment_config_is_a_file_under_its_id_and_states_no_id():
    """The id is the file's location: no conf/experiment/<paper>/<artifact>.yaml states paper or artifact (a
    second spelling), and experiments() lists exactly those files (the stage scripts check their own)."""
    import yaml

    files = sorted((CONF_DIR / "experiment").glob("*/*.yaml"))
    assert [f"{f.parent.name}/{f.stem}" for f in files] == experiments() and len(files) >= 20
    stating = [f.name for f in files if {"paper", "artifact"} & set(yaml.safe_load(f.read_text()) or {})]
    assert stating == []


@pytest.mark.parametrize("experiment", experiments())
def test_composing_an_id_sets_paper_and_artifact_from_it(experiment):
    """compose(id) and Hydra's own compose API with experiment=<id> (as a test or a sweep job composes)
    both give cfg.paper / cfg.artifact equal to the id, and out_dir under it (config.stage_dir)."""
    from ntkrepro.config import compose, stage_dir

    paper, artifact = experiment.split("/")
    direct = _compose([f"experiment={experiment}", "scale=smoke", "results_root=/r"])
    for cfg in (compose(experiment, ["scale=smoke", "results_root=/r"]), direct):
        assert (cfg.paper, cfg.artifact) == (paper, artifact)
        assert cfg.out_dir == stage_dir("/r", "smoke", paper, artifact) == f"/r/smoke/{experiment}"


@pytest.mark.parametrize("override", ["paper=jacot2018", "artifact=fig1", "+paper=x", "experiment_id=jacot2018/fig1",
                                      "experiment=jacot2018/fig1", "~experiment"])
def test_an_override_that_changes_the_id_is_refused_in_one_line(override):
    from ntkrepro.config import compose

    with pytest.raises(ConfigError) as info:
        compose("hayou2020/fig1", ["scale=smoke", override])
    assert str(info.value) == ("error: this stage runs experiment=hayou2020/fig1 (paper and artifact come from "
                               f"it); got {override}")
    assert compose("hayou2020/fig1", ["experiment=hayou2020/fig1"]).artifact == "fig1"  # its own id: fine


def test_a_config_without_an_id_is_refused_in_one_line():
    """Composed without experiment= (nor, as the bare test configs here, paper= and artifact=), a config
    has no id: validate says so in one line instead of failing on a missing value later."""
    with pytest.raises(ConfigError, match=r"^error: experiment: no experiment id \(compose with "
                                          r"experiment=<paper>/<artifact>, which sets paper and artifact\)$"):
        validate(_compose(["scale=smoke"]))
