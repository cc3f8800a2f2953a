"""Model/backend selection: defaults, unknown names, user-supplied model modules."""

from __future__ import annotations

import textwrap

import pytest

from deploy_parity.backends import select_backends
from deploy_parity.errors import HarnessError, ModelCaseError, UnknownNameError
from deploy_parity.registry import build_registry
from tests.suite_runs import run_pytest


def test_default_run_leaves_broken_variants_out():
    names = [c.name for c in build_registry().select(None)]
    assert "pose-rtmo" in names
    assert not [n for n in names if n.endswith("-broken")]


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown model nope; known models: .*pose-rtmo"):
        build_registry().select(["pose-rtmo", "nope"])


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown backend tensorflow; known backends: .*onnxrt-cpu"):
        select_backends(["tensorflow"])


def test_unknown_model_option_is_a_usage_error():
    done = run_pytest("--model", "nope", "--collect-only")
    assert done.returncode == 4  # pytest's usage-error exit code, not "no tests" (5)
    assert "unknown model nope; known models:" in done.stderr


USER_MODULE = """
from dataclasses import replace
from models.pose_rtmo import CASE

from deploy_parity.case import ZooEntry

CASES = [replace(CASE, name="my-pose", description="a user's own case", zoo=ZooEntry(default=False))]
"""


def test_user_module_by_path_and_env(tmp_path, monkeypatch):
    module = tmp_path / "my_cases.py"
    module.write_text(textwrap.dedent(USER_MODULE))
    assert "my-pose" in build_registry([str(module)]).names()
    monkeypatch.setenv("PARITY_MODEL_MODULES", str(module))
    assert "my-pose" in build_registry().names()
    done = run_pytest("--model-module", str(module), "--list-models", env={"PARITY_MODEL_MODULES": str(module)})
    assert done.returncode == 0, done.stderr
    assert "my-pose" in done.stdout and "onnxrt-cpu" in done.stdout
    done = run_pytest("--model-module", str(module), "--model", "my-pose", "--collect-only", "-q",
                      env={"PARITY_MODEL_MODULES": str(module)})
    assert "test_parity[my-pose@onnxrt-cpu]" in done.stdout


def test_module_without_cases_is_refused(tmp_path):
    empty = tmp_path / "empty_cases.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ModelCaseError, match="defines no CASES"):
        build_registry([str(empty)])


def test_model_module_alone_collects_no_zoo_case_and_imports_no_zoo(tmp_path):
    empty = tmp_path / "no_cases_yet.py"
    empty.write_text("CASES = []\n")
    probe = tmp_path / "conftest_probe.py"
    # The zoo imports torchvision; a user's run must not (Ultralytics would switch to
    # torchvision's NMS inside pytest). Record what got imported at the end of collection.
    probe.write_text(textwrap.dedent("""
        import sys

        def pytest_unconfigure(config):  # runs after the usage error, so it sees every import
            zoo = sorted(m for m in sys.modules if m == "models" or m.startswith("models."))
            print("ZOO MODULES:", zoo, "TORCHVISION:", "torchvision" in sys.modules)
    """))
    done = run_pytest("-p", "conftest_probe", "--model-module", str(empty), "--collect-only", "-q",
                      env={"PYTHONPATH": str(tmp_path)})
    assert "ZOO MODULES: [] TORCHVISION: False" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 4, done.stdout + done.stderr  # a usage error, not a quiet "no tests" (5)
    assert f"no model case to run: {empty} defines none in its default run" in done.stderr


def test_the_zoo_index_names_every_case_its_module_defines_and_the_default_run():
    """models.INDEX lets a run import only what it selects; it must agree with the modules."""
    import models

    registry = build_registry()  # every module, imported
    assert sorted(models.INDEX) == registry.names()
    for name in registry.names():
        assert registry._origin[name] == f"models.{models.INDEX[name]}", name
    assert sorted(models.DEFAULT_RUN) == [case.name for case in registry.select(None)]


def test_a_run_of_one_model_imports_only_its_module(tmp_path):
    probe = tmp_path / "conftest_probe.py"
    probe.write_text(textwrap.dedent("""
        import sys

        def pytest_unconfigure(config):
            zoo = sorted(m for m in sys.modules if m.startswith("models.") and m.count(".") == 1
                         and m.split(".")[1] not in ("scenes", "training", "rcnn_decoding"))
            print("ZOO MODULES:", zoo, "TORCHVISION:", "torchvision" in sys.modules)
    """))
    done = run_pytest("-p", "conftest_probe", "--model", "pose-rtmo", "--collect-only", "-q",
                      env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ZOO MODULES: ['models.pose_rtmo'] TORCHVISION: False" in done.stdout, done.stdout + done.stderr
    assert "pose-rtmo@onnxrt-cpu" in done.stdout


def test_an_unknown_model_still_lists_every_zoo_case():
    with pytest.raises(UnknownNameError) as error:
        build_registry(wanted=["pose-rmto"]).select(["pose-rmto"])
    assert "yolo-seg" in str(error.value) and "pose-rtmo" in str(error.value)


def test_cases_bringing_their_own_graph_export_nothing_until_a_test_opens_it(tmp_path):
    """onnx_path given as a function: importing, listing and collecting make no graph."""
    cache = tmp_path / "cache"
    done = run_pytest("--collect-only", "-q", "--model", "yolo-pose-fixed-export,tv-fcos-fixed-export",
                      "--parity-cache-dir", str(cache), "--reports-dir", str(tmp_path / "reports"),
                      env={"PARITY_CACHE_DIR": str(cache), "YOLO_CONFIG_DIR": str(tmp_path / "yolo")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "yolo-pose-fixed-export@onnxrt-cpu" in done.stdout and "tv-fcos-fixed-export@onnxrt-cpu" in done.stdout
    assert not list(tmp_path.rglob("*.onnx")), sorted(tmp_path.rglob("*"))


RESNET50_CASES = """
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from deploy_parity import InputSpec, ModelCase, SizeSpace, adapters

def build():
    if torch.empty(0).device.type != "meta":  # a real build (weights made): noted for the test
        open(__file__ + ".built", "a").write("built\\n")
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, fixed_size=(128, 128)).eval()

CASES = [ModelCase(name="my-resnet50-detector", build_reference=build,
                   inputs=(InputSpec("images", "image", ("float32",)),),
                   sizes=SizeSpace(min_side=96, max_side=192, export_height=128, export_width=128),
                   adapter=adapters.TorchvisionDetection.for_model(build))]
"""


def test_listing_a_resnet50_detector_case_builds_no_model(tmp_path):
    """for_model(build) reads the detector's heads and thresholds on the meta device: the
    README's user example no longer builds a ResNet-50 to list its case."""
    module = tmp_path / "my_detectors.py"
    module.write_text(textwrap.dedent(RESNET50_CASES))
    done = run_pytest("--model-module", str(module), "--list-models")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "my-resnet50-detector" in done.stdout
    assert not (tmp_path / "my_detectors.py.built").exists()
    [case] = build_registry([str(module)]).select(["my-resnet50-detector"])
    assert case.score_threshold == 0.05 and case.topk == 100 and not case.adapter.has_masks


# ------------------------------------------------------------------ the zoo's index, read


def _index_of(tmp_path, source):
    from deploy_parity.registry import read_cases_index

    (tmp_path / "some_cases.py").write_text(source)
    return read_cases_index(tmp_path)


def test_the_zoo_index_is_read_from_source_with_replace_and_zoo_defaults(tmp_path):
    index, default_run = _index_of(tmp_path, (
        "from dataclasses import replace\n"
        "A = ModelCase(name='a', zoo=ZooEntry(source_files=()))\n"
        "B = replace(A, name='b', zoo=ZooEntry(default=False))\n"
        "C = replace(B, name='c')  # keeps B's zoo entry: not in the default run\n"
        "CASES = [A, B, C]\n"))
    assert index == {"a": "some_cases", "b": "some_cases", "c": "some_cases"} and default_run == ("a",)


@pytest.mark.parametrize("source, why", [
    ("NAME = 'x'\nA = ModelCase(name=NAME)\nCASES = [A]\n", "some_cases.py:2: the name of case A is not a string"),
    ("A = ModelCase(name='a', zoo=ZooEntry(default=SLOW))\nCASES = [A]\n", "is not True or False"),
    ("A = ModelCase(name='a', zoo=ENTRY)\nCASES = [A]\n", "zoo= of case A is not ZooEntry(...) written out"),
    ("A = ModelCase(name='a')\nCASES = [A, make_case()]\n", "some_cases.py:2: CASES lists something other"),
    ("A = ModelCase(name='a')\nB = replace(A)\nCASES = [A, B]\n", "keeps the name of the case it copies"),
])
def test_a_zoo_module_the_index_cannot_read_is_one_line_naming_the_line(tmp_path, source, why):
    with pytest.raises(HarnessError) as raised:
        _index_of(tmp_path, source)
    assert why in str(raised.value) and "\n" not in str(raised.value)


def test_the_public_front_exports_what_a_cases_module_needs_and_nothing_of_the_zoos():
    import deploy_parity

    assert set(deploy_parity.__all__) == {"DeployTarget", "InputSpec", "Instances", "Judging", "ModelCase",
                                          "OutputSpec", "SizeSpace", "Tolerance", "adapters", "scene_feed"}
    assert not hasattr(deploy_parity, "ZooEntry")


def test_a_case_sets_the_keypoint_visibility_threshold_its_judge_uses():
    from dataclasses import replace

    from deploy_parity import Judging
    from deploy_parity.compare.judge import Judge

    case = build_registry(wanted=["pose-rtmo"]).get("pose-rtmo")
    judged = replace(case, judging=replace(case.judging or Judging(), keypoint_visibility_threshold=0.35))
    assert Judge.for_case(judged, "onnxrt-cpu", "fp32").visibility_threshold == 0.35
    assert Judge.for_case(case, "onnxrt-cpu", "fp32").visibility_threshold == (
        case.judging.keypoint_visibility_threshold if case.judging else None)
