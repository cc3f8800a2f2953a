"""`gpu_smoke.py --prepare-wheels DIR`, run here before the GPU run: downloads the wheels
the GPU image lacks (pytest and what it imports; scipy or matplotlib only when the harness
imports them at module level) and checks they fit what travels with the tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .harness import module_level_imports
from .wheels import normalise, wheel_compatible

# Distributions --prepare-wheels downloads: pytest and what it imports. scipy or
# matplotlib only when the harness imports them at module level (see module_level_imports).
PYTEST_WHEELS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")
OPTIONAL_WHEELS = ("scipy", "matplotlib")
WHEEL_LIMIT_MIB = 55.0  # the carried paths travel in 64 MiB together with the tree


def prepare_wheels(directory: str, python_version: str, extra: list, pip: list) -> int:
    """Download (no deps, binary only, manylinux x86_64) what the GPU image lacks."""
    import importlib.metadata as md

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    needs = module_level_imports(OPTIONAL_WHEELS)
    packages = list(PYTEST_WHEELS) + [p for p in OPTIONAL_WHEELS if p in needs] + list(extra)
    for name in OPTIONAL_WHEELS:
        if name in needs:
            print(f"{name}: imported at module level by {', '.join(needs[name][:3])}: included")
        elif name not in extra:
            print(f"{name}: not imported at module level by the harness: left out")
    specs = []
    for name in dict.fromkeys(packages):
        try:
            specs.append(f"{name}=={md.version(name)}")  # the version tested here
        except md.PackageNotFoundError:
            specs.append(name)
    command = [*pip, "download", "--only-binary=:all:", "--python-version", python_version,
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux_2_28_x86_64", "--no-deps", "-d", str(target), *specs]
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        print(f"pip download failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    wanted = {normalise(s.split("==")[0]) for s in specs}
    version = tuple(int(v) for v in python_version.split(".")[:2])
    total = 0
    for wheel in sorted(target.glob("*.whl")):
        size = wheel.stat().st_size
        total += size
        dist = normalise(wheel.name.split("-")[0])
        note = "" if dist in wanted else "   (not asked for this time: delete it if unneeded)"
        if not wheel_compatible(wheel, version=version, machine="x86_64"):
            note += f"   (NOT installable on CPython {python_version} x86_64 Linux)"
        print(f"{size / 2**20:8.2f} MiB  {wheel.name}{note}")
    print(f"{total / 2**20:8.2f} MiB  total in {target}")
    if total / 2**20 > WHEEL_LIMIT_MIB:
        print(f"too large: the carried paths travel in 64 MiB with the tree; keep {target} under "
              f"{WHEEL_LIMIT_MIB:.0f} MiB", file=sys.stderr)
        return 1
    return 0
