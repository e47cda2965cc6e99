"""The test command's property tests must not depend on the machine's speed: Hypothesis'
default 200 ms deadline per example failed the Bradley–Terry property (G = 8) on a loaded
machine, so the derandomized `ci` profile (tests/conftest.py) has no deadline."""

from __future__ import annotations

import os

from hypothesis import settings


def test_the_ci_profile_has_no_deadline():
    assert settings.get_profile("ci").deadline is None
    assert settings.get_profile("ci").derandomize
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default is not None and settings.default.deadline is None
