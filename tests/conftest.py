"""Hypothesis profiles: `make test` (and so CI) runs "ci", a fixed example sequence per test, so that a
green run here is the run CI repeats; plain `pytest` runs "explore", fresh random examples each time."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))

