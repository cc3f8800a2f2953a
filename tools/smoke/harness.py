"""What the harness imports: every module the suites and the bench load, imported for real
(in the probe child), and the optional third-party modules it imports at module level,
read from the source (for --prepare-wheels, which must not import the harness)."""

from __future__ import annotations

import importlib
import sys

from .layout import REPO

# Harness packages whose modules the suites and the bench import (tools/ and tests/ are not needed).
HARNESS_PACKAGES = ("deploy_parity", "models", "fixtures", "reports")
# Training code (pycocotools; scipy in tools/train_*): never imported by the suites or the bench.
HARNESS_SKIP = ("deploy_parity.training", "models.training")


def probe_harness() -> dict:
    """Import every harness module the suites and the bench use; list the model zoo."""
    import pkgutil

    sys.path.insert(0, str(REPO))
    result = {"missing": {}, "errors": {}, "imported": 0}
    names = ["pytest", "hypothesis", "conftest", "deploy_parity.benchmarks.latency"]
    for package in HARNESS_PACKAGES:
        names.append(package)
        try:
            root = REPO / package
            for info in pkgutil.walk_packages([str(root)], prefix=f"{package}."):
                if not info.name.startswith(HARNESS_SKIP):
                    names.append(info.name)
        except Exception as error:  # noqa: BLE001
            result["errors"][package] = f"{type(error).__name__}: {error}"
    for name in names:
        try:
            importlib.import_module(name)
            result["imported"] += 1
        except ModuleNotFoundError as error:
            missing = (error.name or str(error)).split(".")[0]
            result["missing"].setdefault(missing, []).append(name)
        except BaseException as error:  # noqa: BLE001
            result["errors"][name] = f"{type(error).__name__}: {error}"[:400]
    try:
        from deploy_parity.backends import BACKENDS
        from deploy_parity.registry import build_registry

        registry = build_registry([])
        result["models"] = [{"name": n, "default": bool(registry.get(n).default)} for n in registry.names()]
        result["default_models"] = [c.name for c in registry.select([])]
        result["backends"] = {name: backend.unavailable() for name, backend in BACKENDS.items()}
    except BaseException as error:  # noqa: BLE001
        result["errors"]["registry"] = f"{type(error).__name__}: {error}"[:400]
    return result


def module_level_imports(modules) -> dict:
    """{module: [files]}: which of `modules` (top-level names) the harness imports at module
    level, so must be importable; lazy imports inside functions do not count."""
    import ast

    needs: dict = {}
    files = [REPO / "conftest.py"]
    for package in HARNESS_PACKAGES + ("suites",):
        files += sorted((REPO / package).rglob("*.py"))
    for file in files:
        relative = file.relative_to(REPO).as_posix()
        if relative.startswith(tuple(skip.replace(".", "/") + "/" for skip in HARNESS_SKIP)):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, OSError, UnicodeDecodeError):
            continue
        for node in tree.body:  # module level only: lazy imports inside functions do not count
            imported = []
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported = [node.module]
            for module in imported:
                top = module.split(".")[0]
                if top in modules:
                    needs.setdefault(top, []).append(relative)
    return needs
