"""Hypothesis profiles: `make test` (and so CI) runs "ci", a fixed example sequence per test, so that a
green run here is the run CI repeats; plain `pytest` runs "explore", fresh random examples each time."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))


@pytest.fixture
def memory_16gib(monkeypatch):
    """This machine's physical memory, as the stages' estimates see it, fixed at 16 GiB (exact limits)."""
    monkeypatch.setattr("ntkrepro.checks.physical_memory", lambda: 16 * 2**30)
