"""Hypothesis profiles: `make test` (and so CI) runs "ci", a fixed example sequence per test, so that a
green run here is the run CI repeats; plain `pytest` runs "explore", fresh random examples each time."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))


def refused(experiment: str, overrides: list[str]) -> str:
    """The one-line error with which ``experiment`` refuses ``overrides`` before any data or compute: its
    composed config checked against the stage's typed ``Params`` (ntkrepro.checks) and the data schema."""
    import pytest

    from ntkrepro.config import ConfigError, compose, validate
    from ntkrepro.stage import stage_module

    module = stage_module(experiment)
    cfg = compose(experiment, ["scale=quick", *overrides])
    with pytest.raises(ConfigError) as info:
        validate(cfg, getattr(module, "Params", None))
    message = str(info.value)
    assert message.startswith("error: ") and "\n" not in message, message
    return message
