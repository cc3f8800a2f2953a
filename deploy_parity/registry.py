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
import sys
import traceback
from pathlib import Path
from typing import Iterable, Optional

from deploy_parity.case import ModelCase, check_name
from deploy_parity.errors import HarnessError, ModelCaseError, UnknownNameError

ENV_VAR = "PARITY_MODEL_MODULES"


# Zoo modules that need an optional extra; without it they are listed as unavailable
# (with the install command) instead of breaking the whole zoo.
OPTIONAL_ZOO_PACKAGES = {"ultralytics": "pip install -e '.[ultralytics]'"}


def _one_line(text) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " / ".join(lines) if len(lines) <= 3 else " / ".join(lines[:3]) + " / ..."


def _line_in(error: BaseException, path: Optional[Path]) -> str:
    """' (at my_cases.py:12)' for the innermost frame of `error` inside `path` (the user's module)."""
    if path is None:
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f" (at {path.name}:{frames[-1].lineno})" if frames else ""


def import_cases_module(spec: str):
    """Import a cases module by dotted name or .py path. Whatever goes wrong (no such file
    or module, a missing package it imports, a syntax error, an exception at import, an
    invalid ModelCase) is one ModelCaseError line naming the module and what is expected."""
    path = None
    try:
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            path = Path(spec).resolve()
            if not path.is_file():
                raise ModelCaseError(f"model module {spec}: file not found; expected a path to a .py file defining "
                                     "CASES, or a dotted module name")
            # The module's own folder first on the import path, as `python my_cases.py` would
            # have it: a helper module beside it imports without a path hack (kept there, since
            # build functions may import it later).
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            module_spec = importlib.util.spec_from_file_location(f"parity_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except ModelCaseError as error:
        if str(error).startswith(f"model module {spec}"):
            raise
        raise ModelCaseError(f"model module {spec}{_line_in(error, path)}: {_one_line(error)}") from error
    except HarnessError as error:
        raise ModelCaseError(f"model module {spec}{_line_in(error, path)}: {_one_line(error)}") from error
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if path is None and missing and (spec == missing or spec.startswith(missing + ".")):
            raise ModelCaseError(f"model module {spec}: no module named {missing!r} on the import path; expected a "
                                 "dotted module name importable from here, or a path to a .py file") from error
        raise ModelCaseError(f"model module {spec}{_line_in(error, path)} imports {missing!r}, which is not "
                             f"installed; expected it importable (pip install it, or remove the import)") from error
    except SyntaxError as error:
        where = f"{Path(error.filename).name}:{error.lineno}" if error.filename else "?"
        raise ModelCaseError(f"model module {spec}: syntax error at {where}: {error.msg}; expected valid "
                             "Python") from error
    except Exception as error:  # noqa: BLE001 - the user's module raised while importing: say so in one line
        raise ModelCaseError(f"model module {spec}{_line_in(error, path)}: importing it raised "
                             f"{type(error).__name__}: {_one_line(error)}; expected it to import cleanly and "
                             "define CASES") from error


class Registry:
    def __init__(self):
        self._cases: dict[str, ModelCase] = {}
        self._origin: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}  # zoo module -> why it could not load
        self._loaded: set = set()
        self._where: dict[str, str] = {}  # case name -> "module CASES[i]"

    def register(self, case: ModelCase, origin: str = "", index: Optional[int] = None) -> None:
        if not isinstance(case, ModelCase):
            raise ModelCaseError(f"model module {origin}: CASES holds {type(case).__name__} {_one_line(repr(case))[:60]}"
                                 "; expected ModelCase objects")
        try:  # checked again: a ModelCase is mutable, its name may have changed since it was built
            check_name(case.name)
        except ModelCaseError as error:
            raise ModelCaseError(f"model module {origin}: {error}") from None
        where = f"{origin} CASES[{index}]" if index is not None else origin
        if case.name in self._cases:
            # Anywhere: two cases of one name in one module would leave only the last to run.
            raise ModelCaseError(
                f"model case {case.name!r} registered twice ({self._where[case.name]} and {where}); expected "
                "unique names"
            )
        self._cases[case.name] = case
        self._origin[case.name] = origin
        self._where[case.name] = where

    def load_module(self, spec: str) -> None:
        """Import a module by dotted name or .py path and register its CASES."""
        module = import_cases_module(spec)
        cases = getattr(module, "CASES", None)
        if cases is None and hasattr(module, "CASE"):
            cases = [module.CASE]
        if cases is None:
            raise ModelCaseError(f"model module {spec} defines no CASES (a list of ModelCase)")
        if isinstance(cases, ModelCase):
            cases = [cases]
        if not isinstance(cases, (list, tuple)):
            raise ModelCaseError(f"model module {spec}: CASES is a {type(cases).__name__}; expected a list of "
                                 "ModelCase")
        if spec in self._loaded:  # named twice (the option and PARITY_MODEL_MODULES): loaded once
            return
        self._loaded.add(spec)
        for index, case in enumerate(cases):
            self.register(case, origin=spec, index=index)

    def load_zoo(self, package: str = "models", wanted: Optional[Iterable[str]] = None) -> None:
        """Register the zoo's cases. With `wanted` (case names, or () for the default run)
        and a zoo INDEX, only the modules defining those cases are imported; an unknown
        name then loads everything, so the error lists every case."""
        zoo = importlib.import_module(package)
        names = self._zoo_modules(zoo, wanted)
        for info in pkgutil.iter_modules(zoo.__path__):
            # Case modules are plain modules; subpackages (scenes, training) are the zoo's tools.
            if not info.name.startswith("_") and not info.ispkg and (names is None or info.name in names):
                try:
                    module = import_cases_module(f"{package}.{info.name}")
                except ModelCaseError as error:
                    cause = error.__cause__
                    missing = (cause.name or "").split(".")[0] if isinstance(cause, ModuleNotFoundError) else ""
                    if missing not in OPTIONAL_ZOO_PACKAGES:
                        raise
                    self.unavailable[f"{package}.{info.name}"] = (
                        f"needs {missing}, which is not installed: {OPTIONAL_ZOO_PACKAGES[missing]}")
                    continue
                if hasattr(module, "CASES") or hasattr(module, "CASE"):
                    self.load_module(f"{package}.{info.name}")

    @staticmethod
    def _zoo_modules(zoo, wanted) -> Optional[set]:
        """Module names to import for `wanted`; None: all of them."""
        index = getattr(zoo, "INDEX", None)
        if wanted is None or index is None:
            return None
        wanted = list(wanted) or list(getattr(zoo, "DEFAULT_RUN", ()))
        if not wanted or any(name not in index for name in wanted):
            return None
        return {index[name] for name in wanted}

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


def build_registry(user_modules: Iterable[str] = (), zoo: str = "models",
                   wanted: Optional[Iterable[str]] = None) -> Registry:
    """The user's modules when any are given (option or PARITY_MODEL_MODULES), else the zoo.

    A user's run never imports the zoo: its imports (torchvision, Ultralytics) change how
    other libraries behave (Ultralytics picks torchvision's NMS when it is importable),
    and its cases would run beside the user's. Name the zoo as a module to get both:
    --model-module models.pose_rtmo.

    wanted: the case names a run selects (() for the default run): the zoo then imports
    only the modules that define them. None: every case (listing, tools).
    """
    registry = Registry()
    user_modules = list(user_modules)
    from_env = [s for s in os.environ.get(ENV_VAR, "").split(",") if s.strip()]
    if user_modules or from_env:
        registry.load_user_modules(user_modules)
    else:
        registry.load_zoo(zoo, wanted)
    return registry


# ------------------------------------------------------------- a zoo's index, read


def read_cases_index(folder) -> tuple:
    """({case name: module name}, (the default run's case names)) of the case modules in
    `folder`, read from their source without importing them: importing a module builds its
    models and imports its libraries (torchvision, Ultralytics), and a run imports only the
    modules of the cases it selects.

    What it reads, at module level: `X = ModelCase(name="...", ..., zoo=ZooEntry(default=...))`
    (no zoo, or no default: in the default run), `Y = replace(X, name="...", ...)` (X's zoo
    unless given), and `CASES = [X, Y, ...]` (or a single `CASE`). Anything else (a name
    computed at import, a default that is not True/False) is a HarnessError naming the
    module and line: write it as a literal, or the index would have to import the module.
    """
    import ast

    index, default_run = {}, []
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        module, where = path.stem, path.name
        cases: dict = {}  # variable -> (case name, default)
        listed = None
        for node in ast.parse(path.read_text(), str(path)).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            variable, value = node.targets[0].id, node.value
            if variable == "CASES" and isinstance(value, (ast.List, ast.Tuple)):
                listed = [(e.id if isinstance(e, ast.Name) else None, e.lineno) for e in value.elts]
                continue
            call = value if isinstance(value, ast.Call) else None
            callee = getattr(getattr(call, "func", None), "id", None) or getattr(getattr(call, "func", None), "attr",
                                                                                   None)
            if callee not in ("ModelCase", "replace"):
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            base = None
            if callee == "replace":
                first = call.args[0] if call.args else None
                if not isinstance(first, ast.Name) or first.id not in cases:
                    continue  # replace() of something that is not a case read above
                base = cases[first.id]
            name = keywords.get("name")
            if name is None and base is not None:
                raise HarnessError(f"{where}:{node.lineno}: {variable} = replace({call.args[0].id}, ...) keeps the "
                                   "name of the case it copies; give it its own name=\"...\"")
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                raise HarnessError(f"{where}:{node.lineno}: the name of case {variable} is not a string literal; "
                                   "the zoo's index is read without importing its modules: write name=\"...\"")
            default = base[1] if base is not None else True
            zoo = keywords.get("zoo")
            if zoo is not None:
                func = getattr(zoo, "func", None)
                if getattr(func, "id", None) != "ZooEntry" and getattr(func, "attr", None) != "ZooEntry":
                    raise HarnessError(f"{where}:{node.lineno}: zoo= of case {variable} is not ZooEntry(...) written "
                                       "out; the zoo's index is read without importing its modules")
                given = {k.arg: k.value for k in zoo.keywords}.get("default")
                if given is not None and not (isinstance(given, ast.Constant) and isinstance(given.value, bool)):
                    raise HarnessError(f"{where}:{node.lineno}: ZooEntry(default=...) of case {variable} is not "
                                       "True or False; the zoo's index is read without importing its modules")
                default = True if given is None else given.value  # ZooEntry's own default: in the default run
            cases[variable] = (name.value, default)
        if listed is None and "CASE" in cases:
            listed = [("CASE", 0)]
        for variable, line in listed or []:
            if variable not in cases:
                raise HarnessError(f"{where}:{line}: CASES lists something other than a case assigned above it "
                                   "(X = ModelCase(...) or X = replace(...)); the zoo's index reads it without "
                                   "importing the module")
            name, default = cases[variable]
            if name in index:
                raise HarnessError(f"{where}: case {name!r} is also defined in {index[name]}.py")
            index[name] = module
            if default:
                default_run.append(name)
    return index, tuple(sorted(default_run))
