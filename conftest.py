"""Top-level conftest: Hypothesis profiles and the deploy_parity pytest plugins.

Profiles are registered at import, before Hypothesis's own plugin reads
--hypothesis-profile; HYPOTHESIS_PROFILE picks one when the option is absent. An unknown
name in either is a one-line usage error from fixtures/selection.py, never a traceback.
"""

from deploy_parity.hypothesis_profiles import load_default_profile, register_profiles

register_profiles()
load_default_profile()

pytest_plugins = ["fixtures.selection", "fixtures.harness", "fixtures.reporting", "fixtures.parallel",
                  "fixtures.sharding", "fixtures.engine_plan"]
