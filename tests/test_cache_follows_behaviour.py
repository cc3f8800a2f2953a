"""The export cache follows what the deploy module does, not only its files: a setting
read from an environment variable, a config file, a helper module's constant, or a
constructor argument, changed between two runs on one cache dir, exports again; nothing
changed is a hit that exports nothing (deploy_parity/export/onnx_exporter.py)."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace

import pytest
import torch

from deploy_parity.export import onnx_exporter
from deploy_parity.export.onnx_exporter import STATS, export_onnx
from tests.tiny_cases import TinyDetector, tiny_case


class Shifted(TinyDetector):
    """TinyDetector whose boxes move by whatever `setting()` says at forward time."""

    def __init__(self, setting, offset: float = 0.0):
        super().__init__(offset=offset)
        self.setting = setting  # a function: not a value the attribute hash could see

    def forward(self, images):
        out = super().forward(images)
        return out + torch.tensor([self.setting(), 0.0, self.setting(), 0.0, 0.0])


def new_process(monkeypatch):
    """What a second run starts without: the fingerprints and verified entries of this one."""
    monkeypatch.setattr(onnx_exporter, "_FINGERPRINTS", {})
    monkeypatch.setattr(onnx_exporter, "_VERIFIED", {})


def exports_of(case, cache, monkeypatch) -> tuple:
    new_process(monkeypatch)
    before = STATS.exports
    target = case.deploy_target(48, 64, ("float32",))
    path = export_onnx(case, target, cache_dir=cache)
    return path, STATS.exports - before


def case_with(build_deploy):
    return replace(tiny_case("behaviour"), build_deploy=build_deploy)


def test_an_environment_variable_read_in_forward_misses_the_cache(tmp_path, monkeypatch):
    import os

    case = case_with(lambda target: Shifted(lambda: float(os.environ.get("PARITY_TEST_SHIFT", "0"))).eval())
    monkeypatch.setenv("PARITY_TEST_SHIFT", "0")
    first, exported = exports_of(case, tmp_path, monkeypatch)
    assert exported == 1
    assert exports_of(case, tmp_path, monkeypatch) == (first, 0)  # unchanged: a hit, nothing exported
    monkeypatch.setenv("PARITY_TEST_SHIFT", "3")
    second, exported = exports_of(case, tmp_path, monkeypatch)
    assert exported == 1 and second != first


def test_a_config_file_read_at_build_misses_the_cache(tmp_path, monkeypatch):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"offset": 0.0}))
    case = case_with(lambda target: TinyDetector(offset=json.loads(config.read_text())["offset"]).eval())
    first, _ = exports_of(case, tmp_path / "cache", monkeypatch)
    assert exports_of(case, tmp_path / "cache", monkeypatch) == (first, 0)
    config.write_text(json.dumps({"offset": 3.0}))
    second, exported = exports_of(case, tmp_path / "cache", monkeypatch)
    assert exported == 1 and second != first


def test_a_helper_modules_constant_misses_the_cache(tmp_path, monkeypatch):
    helper = tmp_path / "parity_test_helper.py"
    helper.write_text("SHIFT = 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # No .pyc: it is keyed by the source's mtime (whole seconds) and size, and the edit below
    # lands within the same second, so a reload could read the old constant from it.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module = importlib.import_module("parity_test_helper")
    case = case_with(lambda target: Shifted(lambda: module.SHIFT).eval())
    first, _ = exports_of(case, tmp_path / "cache", monkeypatch)
    helper.write_text("SHIFT = 3.25\n")
    importlib.reload(module)
    assert module.SHIFT == 3.25
    second, exported = exports_of(case, tmp_path / "cache", monkeypatch)
    assert exported == 1 and second != first
    sys.modules.pop("parity_test_helper", None)


def test_a_constructor_argument_misses_the_cache(tmp_path, monkeypatch):
    settings = {"offset": 0.0}
    case = case_with(lambda target: TinyDetector(offset=settings["offset"]).eval())
    first, _ = exports_of(case, tmp_path, monkeypatch)
    settings["offset"] = 3.0
    second, exported = exports_of(case, tmp_path, monkeypatch)
    assert exported == 1 and second != first
    settings["offset"] = 0.0
    assert exports_of(case, tmp_path, monkeypatch) == (first, 0)  # back: the first entry again


def test_a_module_with_random_ops_in_forward_still_hits(tmp_path, monkeypatch):
    """An answer that changes between two probe runs is left out of the key (said in it),
    so such a model is not re-exported on every run."""
    case = case_with(lambda target: Shifted(lambda: float(torch.rand(()))).eval())
    first, _ = exports_of(case, tmp_path, monkeypatch)
    assert exports_of(case, tmp_path, monkeypatch) == (first, 0)


def test_a_build_function_returning_none_is_one_line_naming_it(tmp_path):
    from deploy_parity.errors import ModelCaseError

    def build_deploy(target):
        TinyDetector().eval()  # forgot to return it

    case = case_with(build_deploy)
    with pytest.raises(ModelCaseError) as error:
        export_onnx(case, case.deploy_target(48, 64, ("float32",)), cache_dir=tmp_path)
    assert str(error.value) == ("behaviour: the deploy build function "
                                "test_a_build_function_returning_none_is_one_line_naming_it.<locals>.build_deploy "
                                "returned NoneType; expected a torch.nn.Module (a missing return?)")


def test_a_full_cache_stops_the_export_once_and_is_not_retried(tmp_path, monkeypatch):
    import errno

    from deploy_parity.errors import StorageFull

    calls = []

    def no_room(*args, **kwargs):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", no_room)
    monkeypatch.setattr(onnx_exporter, "_UNWRITABLE", {})
    case = tiny_case("full-disk")
    target = case.deploy_target(48, 64, ("float32",))
    for _ in range(3):
        with pytest.raises(StorageFull) as error:
            export_onnx(case, target, cache_dir=tmp_path)
        assert "has no room for full-disk's graph" in str(error.value) and "No space left" in str(error.value)
    assert len(calls) == 1  # the later lookups say the same at once


FULL_DISK_CASES = """
import errno
import torch

def _no_room(*args, **kwargs):  # what a full disk does to the export's write
    raise OSError(errno.ENOSPC, "No space left on device")

torch.onnx.export = _no_room
CASES = [tiny_case("first"), tiny_case("second")]
"""


def test_a_full_cache_disk_fails_the_run_once_with_the_reason(tmp_path):
    from tests.suite_runs import PARITY_ONLY, run_suite
    from tests.tiny_cases import write_cases_module

    module = write_cases_module(tmp_path / "cases.py", FULL_DISK_CASES)
    run = run_suite(tmp_path, "--model-module", str(module), "--backend", "onnxrt-cpu", target=PARITY_ONLY,
                    timeout=300)
    assert run.returncode == 2, run.output[-3000:]  # pytest's "interrupted": the run stopped itself
    assert "has no room for first's graph" in run.output and "1 failed" in run.output, run.output[-3000:]
    assert "run failed: stopped: export cache" in run.output and "Ctrl-C" not in run.output, run.output[-3000:]
    assert "second" not in run.output.split("short test summary")[-1], run.output[-3000:]  # not run at all


def test_a_sidecar_that_is_a_folder_is_rebuilt_once(tmp_path, monkeypatch):
    from deploy_parity.export.onnx_exporter import sidecar_path

    case = tiny_case("odd-sidecar")
    first, exported = exports_of(case, tmp_path, monkeypatch)
    assert exported == 1
    sidecar = sidecar_path(first)
    sidecar.unlink()
    (sidecar / "inside").mkdir(parents=True)  # something else standing where the sidecar goes
    with pytest.warns(Warning, match="not trusted: no readable sidecar"):
        again, exported = exports_of(case, tmp_path, monkeypatch)
    assert (again, exported) == (first, 1) and sidecar.is_file()
    assert exports_of(case, tmp_path, monkeypatch) == (first, 0)


def test_the_profiles_leave_out_hypothesis_explain_phase():
    """Its "these lines were always and only run by failing test cases: deploy_parity/..."
    points into the harness, not at the user's model."""
    from hypothesis import Phase, settings

    from deploy_parity.hypothesis_profiles import register_profiles

    register_profiles()
    for name in ("dev", "ci", "nightly", "replay"):
        assert Phase.explain not in settings.get_profile(name).phases, name
