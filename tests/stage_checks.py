"""Shared by the bad-input tests of every stage (tests/experiments/test_bad_input_<paper>.py)."""
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
