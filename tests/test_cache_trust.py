"""The caches verify before they trust: a poisoned, truncated or swapped entry is rebuilt
with a warning naming it, and the broken variant still fails; two processes wanting one
entry build it once; no name writes outside its cache folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import onnx
import pytest

from deploy_parity.backends import BACKENDS
from deploy_parity.check import check_parity
from deploy_parity.compare.verdict import Verdict
from deploy_parity.errors import CacheEntryRebuilt, HarnessError, ModelCaseError
from deploy_parity.export import onnx_exporter
from deploy_parity.export.onnx_exporter import export_onnx, sidecar_path, verify_entry
from deploy_parity.hashing import sha256_file
from deploy_parity.registry import Registry, build_registry
from deploy_parity.strategies import ParityExample
from deploy_parity.backends.tensorrt.engine_cache import EngineCache, EngineEnv, make_key
from tests.suite_runs import REPO, run_suite, suite_env
from tests.tiny_cases import tiny_case

# Bug class 1 shows at any rectangular size: the broken variant's transposed prior grid.
FAILING = ParityExample(64, 96, 1, ("float32",), 0)


@pytest.fixture(scope="module")
def pose_pair():
    registry = build_registry()
    return registry.get("pose-rtmo"), registry.get("pose-rtmo-broken")


@pytest.fixture
def entries(pose_pair, tmp_path):
    """Both variants exported for one size into a fresh cache: (good path, broken path)."""
    good, broken = pose_pair
    target = good.deploy_target(FAILING.height, FAILING.width, FAILING.dtypes)
    return export_onnx(good, target, cache_dir=tmp_path), export_onnx(broken, target, cache_dir=tmp_path)


def broken_verdict(pose_pair, pool) -> Verdict:
    """The parity verdict on the broken variant, with graphs from the pool's cache."""
    return check_parity(pool, pose_pair[1], BACKENDS["onnxrt-cpu"], FAILING).verdict


def lookup_again(pose_pair, cache):
    broken = pose_pair[1]
    target = broken.deploy_target(FAILING.height, FAILING.width, FAILING.dtypes)
    onnx_exporter._VERIFIED.clear()  # as a new process would find the cache
    return export_onnx(broken, target, cache_dir=cache)


def test_correct_graph_copied_over_the_broken_variants_entry_is_rebuilt_and_still_fails(pose_pair, entries,
                                                                                          tmp_path, pool):
    good, broken = entries
    assert sha256_file(good) != sha256_file(broken)
    # The hostile user's move: the correct graph and its sidecar over the broken variant's entry.
    shutil.copyfile(good, broken)
    shutil.copyfile(sidecar_path(good), sidecar_path(broken))
    with pytest.warns(CacheEntryRebuilt, match=rf"export cache entry .*{broken.name} not trusted: its sidecar names "
                                               r"key '\w+', not this entry's"):
        again = lookup_again(pose_pair, tmp_path)
    assert again == broken and sha256_file(again) != sha256_file(good)
    assert any(broken.name in line for line in onnx_exporter.STATS.rebuilt)
    assert broken_verdict(pose_pair, pool) == Verdict.FAIL


def test_truncated_entry_is_rebuilt_and_the_broken_variant_still_fails(pose_pair, entries, tmp_path, pool):
    _, broken = entries
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.warns(CacheEntryRebuilt, match=rf"{broken.name} not trusted: the graph's bytes do not match the "
                                               "sha256 in its sidecar"):
        lookup_again(pose_pair, tmp_path)
    assert broken.read_bytes() == data  # exported again, whole
    assert verify_entry(broken, json.loads(sidecar_path(broken).read_text())["key"]) == ""
    assert broken_verdict(pose_pair, pool) == Verdict.FAIL


def test_nan_graph_swapped_in_is_rebuilt(pose_pair, entries, tmp_path, pool):
    _, broken = entries
    model = onnx.load(str(broken))
    weights = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    nan = np.full(onnx.numpy_helper.to_array(weights).shape, np.nan, dtype=np.float32)
    weights.CopyFrom(onnx.numpy_helper.from_array(nan, weights.name))
    onnx.save(model, str(broken))  # a valid graph, the same inputs and outputs, NaN everywhere
    with pytest.warns(CacheEntryRebuilt, match="do not match the sha256"):
        lookup_again(pose_pair, tmp_path)
    assert broken_verdict(pose_pair, pool) == Verdict.FAIL


def test_entry_without_a_sidecar_or_from_an_older_harness_is_rebuilt(tmp_path):
    case = tiny_case()
    target = case.deploy_target(48, 64, ("float32",))
    path = export_onnx(case, target, cache_dir=tmp_path)
    key = json.loads(sidecar_path(path).read_text())["key"]
    assert verify_entry(path, key) == ""
    sidecar_path(path).write_text(json.dumps({"case": case.name}))  # what the harness wrote before
    assert "older harness" in verify_entry(path, key)
    sidecar_path(path).unlink()
    assert verify_entry(path, key) == "no readable sidecar JSON next to it"
    onnx_exporter._VERIFIED.clear()
    with pytest.warns(CacheEntryRebuilt, match="no readable sidecar"):
        export_onnx(case, target, cache_dir=tmp_path)
    assert verify_entry(path, key) == ""


@pytest.mark.slow
def test_poisoned_cache_cannot_turn_the_broken_variants_suite_green(pose_pair, entries, tmp_path):
    """The probe as a user runs it: the suite, on a cache whose broken entry holds the correct graph."""
    good, broken = entries
    shutil.copyfile(good, broken)
    shutil.copyfile(sidecar_path(good), sidecar_path(broken))
    run = run_suite(tmp_path, "--model", "pose-rtmo-broken", "--backend", "onnxrt-cpu", "--replay",
                    FAILING.replay_arg(), cache_dir=tmp_path, target="suites/test_parity.py::test_parity")
    assert run.returncode == 1, run.output[-3000:]  # still fails
    assert f"export cache: rebuilt {broken.name}: its sidecar names key" in run.output
    assert [r["verdict"] for r in run.records()] == ["fail"]


def test_a_name_that_would_leave_the_cache_folder_is_refused(tmp_path):
    with pytest.raises(ModelCaseError, match=r"model case name '\.\./\.\./escaped' contains '/', a path separator; "
                                             r"expected 1-64 characters"):
        tiny_case("../../escaped")
    case = tiny_case()
    case.name = "../../escaped"  # renamed after it was checked: the paths are checked too
    with pytest.raises(HarnessError, match="refusing the file name"):
        export_onnx(case, case.deploy_target(48, 64, ("float32",)), cache_dir=tmp_path / "cache")
    assert not list(tmp_path.rglob("*.onnx")) and not (tmp_path.parent / "escaped").exists()
    with pytest.raises(ModelCaseError, match=r"model case name '\.\./\.\./escaped' contains '/'"):
        Registry().register(case, origin="my_cases.py")
    with pytest.raises(ModelCaseError, match="model case name 'team/det' contains '/', a path separator"):
        replace(tiny_case(), name="team/det")


EXPORT_ONCE = """
import sys
from tests.tiny_cases import tiny_case
from deploy_parity.export import onnx_exporter
case = tiny_case("tiny-race", sleep_seconds=1.0)  # tracing calls forward: each export takes over a second
onnx_exporter.export_onnx(case, case.deploy_target(48, 64, ("float32",)), cache_dir=sys.argv[1])
print("EXPORTS", onnx_exporter.STATS.exports, "HITS", onnx_exporter.STATS.cache_hits)
"""


@pytest.mark.slow
def test_two_processes_exporting_one_entry_export_it_once(tmp_path):
    cache = tmp_path / "cache"
    processes = [subprocess.Popen([sys.executable, "-c", EXPORT_ONCE, str(cache)], cwd=REPO, env=suite_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    counts = sorted(line.split()[1:] for out in outputs for line in out.splitlines() if line.startswith("EXPORTS"))
    assert counts == [["0", "HITS", "1"], ["1", "HITS", "0"]], outputs  # one exported, the other waited and hit
    [graph] = (cache / "onnx").glob("*.onnx")
    assert verify_entry(graph, json.loads(sidecar_path(graph).read_text())["key"]) == ""
    assert not list((cache / "onnx").glob(".*tmp*"))  # nothing half-written left behind


ENV = EngineEnv(tensorrt="10.3.0", gpu="NVIDIA H200")


def engine_key():
    return make_key("a" * 64, "fp16", {"fp16": True}, [], ENV)


def test_engine_copied_from_another_entry_is_rebuilt_with_a_warning(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    other = make_key("b" * 64, "fp16", {"fp16": True}, [], ENV)
    cache.get_or_build(other, lambda: b"engine for another graph")
    for suffix in ("", ".json"):  # the other entry's engine and sidecar copied over this one's
        shutil.copyfile(f"{cache.engine_path(other)}{suffix}", f"{cache.engine_path(engine_key())}{suffix}")
    with pytest.warns(CacheEntryRebuilt, match=rf"engine cache entry .*{cache.engine_path(engine_key()).name} not "
                                               r"trusted: key part 'onnx_sha256' differs"):
        assert cache.get_or_build(engine_key(), lambda: b"the right engine") == b"the right engine"
    assert cache.lookup(engine_key()) is not None


def test_two_builders_of_one_engine_build_it_once(tmp_path):
    builds = []

    def slow_build():
        builds.append(threading.current_thread().name)
        time.sleep(0.5)
        return b"engine"

    # Two caches on one folder, as two processes would have; flock serialises them as it
    # serialises processes (each open() is its own lock holder).
    results = []
    threads = [threading.Thread(target=lambda: results.append(EngineCache(tmp_path).get_or_build(engine_key(),
                                                                                                  slow_build)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"engine", b"engine"] and len(builds) == 1
