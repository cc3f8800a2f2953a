"""Runners: one per backend, all with activate / infer / deactivate.

Only the CPU runners are imported here; GPU and TensorRT runners live in their own
modules and import their libraries lazily.
"""

from deploy_parity.runners.base import Runner
