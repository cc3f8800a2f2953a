"""Hypothesis settings profiles: dev (quick), ci (derandomized, fast), nightly (deep).

Chosen with Hypothesis's own `--hypothesis-profile NAME` option or HYPOTHESIS_PROFILE.
Exports and model runs are slow next to Hypothesis's defaults, so deadlines are off
everywhere (speed is measured in benchmarks, never asserted in tests).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

PROFILES = ("dev", "ci", "nightly", "replay")
ENV_VAR = "HYPOTHESIS_PROFILE"

# Model tests draw a handful of expensive examples; a fixture per model/backend is
# shared across examples on purpose (runners are stateless between calls).
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
# Every phase but `explain`: its "these lines were always and only run by failing test
# cases: deploy_parity/check.py:62 ..." points into the harness, not the user's model;
# the failure message already says which example, which output and where it breaks.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]


def register_profiles() -> None:
    settings.register_profile("dev", max_examples=8, deadline=None, phases=_PHASES, suppress_health_check=_SUPPRESSED)
    settings.register_profile(
        "ci",
        # ~1 minute for the whole zoo on 2 CPU cores: deep enough to shrink real failures,
        # far inside CI's budget. The nightly profile goes 4x deeper on random seeds.
        max_examples=25,
        deadline=None,
        derandomize=True,  # the same examples on every run and machine
        database=None,  # nothing remembered between runs: CI must not depend on history
        print_blob=True,
        phases=_PHASES,
        suppress_health_check=_SUPPRESSED,
    )
    settings.register_profile(
        "nightly",
        max_examples=100,
        deadline=None,
        print_blob=True,
        phases=_PHASES,
        suppress_health_check=_SUPPRESSED,
    )
    # --replay runs exactly one given case: no explicit examples, one generated one.
    settings.register_profile(
        "replay",
        max_examples=1,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=_SUPPRESSED,
    )


def is_registered(name: str) -> bool:
    from hypothesis.errors import InvalidArgument

    try:
        settings.get_profile(name)
    except InvalidArgument:
        return False
    return True


def load_default_profile() -> str:
    """Load HYPOTHESIS_PROFILE (or dev). --hypothesis-profile, if given, loads later and wins.

    Never raises: it runs while conftest.py is imported, where an exception is a traceback.
    An unknown name loads dev; `profile_problem` (called from the plugin's
    pytest_configure) turns it into a one-line usage error."""
    name = os.environ.get(ENV_VAR, "dev")
    settings.load_profile(name if is_registered(name) else "dev")
    return name


def profile_problem(option: str = None) -> str:
    """Why the chosen profile cannot be loaded ("" when it can): the option's value, else
    HYPOTHESIS_PROFILE's."""
    known = ", ".join(PROFILES)
    if option:
        if not is_registered(option):
            return f"--hypothesis-profile {option!r}: no such Hypothesis profile; expected one of {known}"
        return ""
    name = os.environ.get(ENV_VAR)
    if name is not None and not is_registered(name):
        return f"{ENV_VAR}={name!r}: no such Hypothesis profile; expected one of {known}"
    return ""
