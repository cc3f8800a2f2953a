"""The deps phase: what the harness failed to import in the stack probe, made up from the
wheels in `.whl/` (extracted into a temporary folder put on the children's PYTHONPATH,
nothing installed), a second probe to see what is still missing, and the zoo the run will
use. -> deps.json"""

from __future__ import annotations

import zipfile

from .files import write_json
from .plan import DEFAULT_ZOO
from .stack import run_probe
from .wheels import wheels_to_extract


def deps_phase(run) -> None:
    stack = run.summary["stack"] or {}
    harness = stack.get("harness", {})
    deps = {"missing_in_image": sorted(harness.get("missing", {})), "missing_detail": harness.get("missing", {}),
            "import_errors": harness.get("errors", {}), "extracted": [], "site": None}
    run.summary["deps"] = deps
    present = stack.get("find_spec", {})
    missing = set(harness.get("missing", {}))
    if not harness:  # the probe died before it got there: assume the usual suspects
        missing = {name for name in ("pytest", "scipy") if present.get(name) is False}
        run.summary["problems"].append(f"harness import probe gave nothing; assuming missing: {sorted(missing)}")
    if missing:
        # The wheels that provide what is missing, and the wheels those require that
        # are here and whose modules the image lacks (pytest -> pluggy, iniconfig, ...).
        wheels = run.wheels()
        chosen = wheels_to_extract(missing, wheels, lambda name: bool(present.get(name)))
        uncovered = sorted(m for m in missing if not any(m in tops for _, tops in chosen))
        if chosen:
            run.site = run.work / "site"
            for wheel, tops in chosen:
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(run.site)
                deps["extracted"].append({"wheel": wheel.name, "modules": tops})
                run.log(f"deps: extracted {wheel.name} ({', '.join(tops)})")
            deps["site"] = str(run.site)
        if uncovered:
            note = (f"missing in the image and in {run.wheels_dir()}: {', '.join(uncovered)} "
                    f"(python tools/gpu_smoke.py --prepare-wheels .whl, then carry .whl)")
            run.summary["problems"].append(note)
            run.log("deps: " + note)
        if chosen:
            again = run_probe(run, False, [], "after-wheels", min(run.args.probe_timeout, run.remaining() - 30))
            deps["after_fallback"] = {"missing": again.get("harness", {}).get("missing", {}),
                                      "errors": again.get("harness", {}).get("errors", {})}
            for key in ("models", "default_models", "backends"):
                if key in again.get("harness", {}):
                    harness[key] = again["harness"][key]
            run.log(f"deps: after extracting, still missing {sorted(deps['after_fallback']['missing']) or 'nothing'}"
                    + (f"; import errors {deps['after_fallback']['errors']}" if deps['after_fallback']['errors'] else ""))
    else:
        run.log("deps: the harness imports everything it needs from the image; no wheels extracted")
    mods = stack.get("modules", {})
    matplotlib_ok = mods.get("matplotlib", {}).get("ok", False) or any(
        "matplotlib" in e["modules"] for e in deps["extracted"])
    deps["html_report"] = bool(matplotlib_ok)
    if not matplotlib_ok:
        run.summary["notes"].append("matplotlib absent: parity runs with --no-html-report (run.json, results.jsonl "
                                    "and the terminal summary are still written; no plots or case pictures)")
    for name in ("pycocotools", "onnxscript", "polygraphy"):
        if mods and not mods.get(name, {}).get("ok"):
            run.summary["notes"].append(f"{name} absent: not needed by the suites or the bench "
                                        "(training / dynamo exporter / TensorRT only)")
    # The zoo, as `pytest suites --list-models` would list it (same registry).
    run.zoo = list(harness.get("default_models") or DEFAULT_ZOO)
    deps["default_models"] = run.zoo
    deps["backends"] = harness.get("backends")
    if not harness.get("default_models"):
        run.summary["problems"].append(f"registry probe failed ({harness.get('errors', {}).get('registry')}); "
                                       f"using the built-in list {list(DEFAULT_ZOO)}")
    write_json(run.out / "deps.json", deps)
