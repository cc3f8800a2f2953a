"""The built-in model zoo: each module defines CASES (see deploy_parity.case.ModelCase)."""
