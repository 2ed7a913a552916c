"""Shared test set-up: hypothesis profiles.

`HYPOTHESIS_PROFILE=long` runs the fuzz targets with at least 10,000 examples each; the default
`ci` profile keeps the whole suite within a few minutes.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
