"""The package's shape: no arrow out of deploy_parity/, no import cycle inside it.

deploy_parity/ is what the wheel installs (pyproject.toml packages `deploy_parity*` only);
reports/, fixtures/, models/, tools/, suites/ and tests/ are the repository around it. An
import from the package into one of them works in a checkout and fails in an installed
copy, so it is checked statically (every import, inside functions too) and by running
the package from outside the repository.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.suite_runs import REPO, suite_env

PACKAGE = REPO / "deploy_parity"
TOP_LEVEL = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"deploy_parity"}


def _modules() -> dict:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path) -> list:
    """(imported module, line) for every import statement of the module, functions included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_nothing_in_the_package_imports_a_top_level_folder_of_the_repository():
    outside = [f"{path.relative_to(REPO)}:{line} imports {target}"
               for name, path in _modules().items() for target, line in _imports(name, path)
               if target.split(".")[0] in TOP_LEVEL]
    assert not outside, "the installed package would not have these: " + "; ".join(outside)


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path):
            while target and target not in modules:  # `from a.b import C`: C may be a name in a.b
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                graph[name].add(target)
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_installed_package_runs_its_benchmarks_from_outside_the_repository(tmp_path):
    """From a folder with no checkout around it, only the installed package is importable:
    the overhead benchmark's import path and its verdict digest work there."""
    results = tmp_path / "results.jsonl"
    results.write_text('{"check": "parity", "model": "m", "backend": "b", "height": 64, "width": 96, "batch": 1, '
                       '"dtypes": ["float32"], "seed": 3, "verdict": "pass"}\n')
    env = {k: v for k, v in suite_env().items() if k != "PYTHONPATH"}
    code = ("import importlib.util, sys; "
            "assert importlib.util.find_spec('reports') is None, 'reports/ is importable: not outside the repo'; "
            "import deploy_parity.benchmarks.overhead as overhead, deploy_parity.benchmarks.latency, "
            "deploy_parity.benchmarks.comparators, deploy_parity.benchmarks.process; "
            "from deploy_parity.records import verdict_digest; from pathlib import Path; "
            f"print(verdict_digest(Path({str(results)!r})), overhead.format_tables({{'runs': []}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.split()[0]) == 12
    helped = subprocess.run([sys.executable, "-m", "deploy_parity.benchmarks.overhead", "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--against" in helped.stdout, helped.stderr[-2000:]
