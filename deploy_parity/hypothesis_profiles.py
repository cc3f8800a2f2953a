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


def steady_generation() -> bool:
    """Examples that depend only on the test and its profile, not on what else ran in the process.

    Recent Hypothesis (6.170 here) now and then draws a number it found as a literal in the
    "local" modules (outside site-packages) imported so far: this harness, the zoo, the
    user's cases module. That pool grows as model modules are imported, so the same
    derandomized test drew other sizes in a run of one model than in a run of the zoo
    (detr-tiny: heights 196 against 200), and a run split into shards could not give the
    unsharded run's cases. The pool is emptied for good here; Hypothesis's own boundary
    constants stay. Returns False where this Hypothesis has no such pool (nothing to do).
    """
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a Hypothesis without the providers module
        return False
    if not hasattr(providers, "_get_local_constants") or not hasattr(providers, "Constants"):
        return False
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    return True


def register_profiles() -> None:
    steady_generation()
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
