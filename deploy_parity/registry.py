"""The model-case registry: the built-in zoo plus the user's own modules.

A module contributes cases by defining a list `CASES` (or a single `CASE`). The zoo
is the `models` package next to the suites; users add theirs with
`--model-module my_pkg.my_cases` (or a path to a .py file) or the environment
variable PARITY_MODEL_MODULES (comma-separated).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path
from typing import Iterable, Optional

from deploy_parity.case import ModelCase
from deploy_parity.errors import ModelCaseError, UnknownNameError

ENV_VAR = "PARITY_MODEL_MODULES"


# Zoo modules that need an optional extra; without it they are listed as unavailable
# (with the install command) instead of breaking the whole zoo.
OPTIONAL_ZOO_PACKAGES = {"ultralytics": "pip install -e '.[ultralytics]'"}


class Registry:
    def __init__(self):
        self._cases: dict[str, ModelCase] = {}
        self._origin: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}  # zoo module -> why it could not load

    def register(self, case: ModelCase, origin: str = "") -> None:
        if not isinstance(case, ModelCase):
            raise ModelCaseError(f"{origin}: {case!r} is not a ModelCase")
        if case.name in self._cases and self._origin[case.name] != origin:
            raise ModelCaseError(
                f"model case {case.name!r} registered twice ({self._origin[case.name]} and {origin})"
            )
        self._cases[case.name] = case
        self._origin[case.name] = origin

    def load_module(self, spec: str) -> None:
        """Import a module by dotted name or .py path and register its CASES."""
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec).resolve()
            if not path.is_file():
                raise ModelCaseError(f"model module {spec}: file not found")
            module_spec = importlib.util.spec_from_file_location(f"parity_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
        cases = getattr(module, "CASES", None)
        if cases is None and hasattr(module, "CASE"):
            cases = [module.CASE]
        if cases is None:
            raise ModelCaseError(f"model module {spec} defines no CASES (a list of ModelCase)")
        for case in cases:
            self.register(case, origin=spec)

    def load_zoo(self, package: str = "models") -> None:
        zoo = importlib.import_module(package)
        for info in pkgutil.iter_modules(zoo.__path__):
            # Case modules are plain modules; subpackages (scenes, training) are the zoo's tools.
            if not info.name.startswith("_") and not info.ispkg:
                try:
                    module = importlib.import_module(f"{package}.{info.name}")
                except ModuleNotFoundError as error:
                    missing = (error.name or "").split(".")[0]
                    if missing not in OPTIONAL_ZOO_PACKAGES:
                        raise
                    self.unavailable[f"{package}.{info.name}"] = (
                        f"needs {missing}, which is not installed: {OPTIONAL_ZOO_PACKAGES[missing]}")
                    continue
                if hasattr(module, "CASES") or hasattr(module, "CASE"):
                    self.load_module(f"{package}.{info.name}")

    def load_user_modules(self, specs: Iterable[str] = ()) -> None:
        from_env = [s for s in os.environ.get(ENV_VAR, "").split(",") if s.strip()]
        for spec in list(specs) + from_env:
            self.load_module(spec.strip())

    def names(self) -> list:
        return sorted(self._cases)

    def get(self, name: str) -> ModelCase:
        if name not in self._cases:
            raise UnknownNameError("model", [name], self._cases)
        return self._cases[name]

    def select(self, names: Optional[Iterable[str]]) -> list:
        """Cases named, or the default run (broken variants left out) when None."""
        if not names:
            return [c for n, c in sorted(self._cases.items()) if c.default]
        names = list(names)
        unknown = [n for n in names if n not in self._cases]
        if unknown:
            error = UnknownNameError("model", unknown, self._cases)
            if self.unavailable:
                extra = "; ".join(f"{module} {why}" for module, why in sorted(self.unavailable.items()))
                raise UnknownNameError("model", unknown, self._cases, note=f"not loaded: {extra}") from None
            raise error
        return [self._cases[n] for n in names]


def build_registry(user_modules: Iterable[str] = (), zoo: str = "models") -> Registry:
    """The user's modules when any are given (option or PARITY_MODEL_MODULES), else the zoo.

    A user's run never imports the zoo: its imports (torchvision, Ultralytics) change how
    other libraries behave (Ultralytics picks torchvision's NMS when it is importable),
    and its cases would run beside the user's. Name the zoo as a module to get both:
    --model-module models.pose_rtmo.
    """
    registry = Registry()
    user_modules = list(user_modules)
    from_env = [s for s in os.environ.get(ENV_VAR, "").split(",") if s.strip()]
    if user_modules or from_env:
        registry.load_user_modules(user_modules)
    else:
        registry.load_zoo(zoo)
    return registry
