"""The built-in model zoo: each module defines CASES (see deploy_parity.case.ModelCase).

INDEX names every case and the module that defines it, so a run imports only the
modules of the cases it runs (a pose-rtmo run never imports torchvision); DEFAULT_RUN is
the default run. Both are read from the modules' source, not typed here a second time
(deploy_parity.registry.read_cases_index); tests/test_registry_and_options.py checks them
against the modules' own CASES once imported.
"""

from pathlib import Path

from deploy_parity.registry import read_cases_index

INDEX, DEFAULT_RUN = read_cases_index(Path(__file__).parent)
