"""The mutation self-test: `python -m deploy_parity.mutate MODEL ...` (selftest.py)."""

from deploy_parity.mutate.operators import OPERATORS, Mutant, plant
from deploy_parity.mutate.selftest import MutantResult, SelfTest, self_test

__all__ = ["OPERATORS", "Mutant", "MutantResult", "SelfTest", "plant", "self_test"]
