"""Wheels read as the zips they are: whether this interpreter can use one, which modules it
provides, which distributions it requires, and which to extract for what is missing.
Nothing is installed: the GPU image has no pip, so the deps phase unzips onto PYTHONPATH."""

from __future__ import annotations

import platform
import re
import sys
import zipfile
from pathlib import Path


def wheel_tags(path: Path):
    """(distribution, version, python tags, ABI tags, platform tags) from a wheel's file name."""
    parts = path.name[:-len(".whl")].split("-")
    if len(parts) < 5:
        return None
    return parts[0], parts[1], parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")


def wheel_compatible(path: Path, version=sys.version_info, machine: str = platform.machine()) -> bool:
    tags = wheel_tags(path)
    if tags is None:
        return False
    _, _, pys, abis, plats = tags
    cp = f"cp{version[0]}{version[1]}"
    py_ok = any(t in ("py3", f"py{version[0]}{version[1]}", cp) for t in pys)
    if not py_ok and "abi3" in abis:  # cp3X-abi3 runs on every later CPython 3
        py_ok = any(t.startswith("cp3") and t[2:].isdigit() and int(t[3:] or 0) <= version[1] for t in pys)
    abi_ok = any(a in ("none", "abi3", cp) for a in abis)
    plat_ok = any(p == "any" or (sys.platform.startswith("linux") and "linux" in p and p.endswith(machine))
                  for p in plats)
    return py_ok and abi_ok and plat_ok


def wheel_top_level(path: Path) -> list:
    """Top-level importable names in a wheel (packages, modules, extension modules)."""
    names = set()
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            first = entry.split("/", 1)[0]
            if first.endswith((".dist-info", ".data")) or first.endswith(".libs"):
                continue
            if "/" in entry:
                names.add(first)
            elif entry.endswith(".py"):
                names.add(entry[:-3])
            elif entry.endswith((".so", ".pyd")):
                names.add(entry.split(".", 1)[0])
    return sorted(n for n in names if n.isidentifier())


def normalise(name: str) -> str:
    """A distribution name as the wheel file names and Requires-Dist compare it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_requires(path: Path) -> list:
    """Distribution names a wheel requires (Requires-Dist without an `extra` marker)."""
    with zipfile.ZipFile(path) as archive:
        metadata = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
        text = archive.read(metadata).decode("utf-8", "replace") if metadata else ""
    names = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            if not line.strip():
                break  # the headers end at the first blank line
            continue
        requirement, _, marker = line[len("Requires-Dist:"):].partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(normalise(match.group(1)))
    return names


def wheels_to_extract(missing, wheels: list, present) -> list:
    """The wheels providing the `missing` modules, plus, transitively, the wheels they
    require that are among `wheels` and whose modules are not `present` (a predicate on
    a module name). Requirements met by the environment, or by no wheel here, are left."""
    by_dist = {normalise(w.name.split("-")[0]): (w, tops) for w, tops in wheels}
    queue = [(w, tops) for w, tops in wheels if set(tops) & set(missing)]
    chosen: dict = {}
    while queue:
        wheel, tops = queue.pop()
        if wheel.name in chosen:
            continue
        chosen[wheel.name] = (wheel, tops)
        for dist in wheel_requires(wheel):
            if dist in by_dist:
                dep, dep_tops = by_dist[dist]
                if dep_tops and not all(present(t) for t in dep_tops):
                    queue.append((dep, dep_tops))
    return sorted(chosen.values(), key=lambda item: item[0].name)


def usable_wheels(folder: Path, problems: list) -> list:
    """[(wheel, top-level names)] for the wheels in `folder` this interpreter can use; an
    unreadable one is told in `problems` and left out."""
    found = []
    for wheel in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        if wheel_compatible(wheel):
            try:
                found.append((wheel, wheel_top_level(wheel)))
            except (zipfile.BadZipFile, OSError) as error:
                problems.append(f"wheel {wheel.name} unreadable: {error}")
    return found
