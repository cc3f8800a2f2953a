"""onnxrt-trt counts as TensorRT only where TensorRT ran part of the graph (issue 22, item 7).

ONNX Runtime's TensorRT provider takes the subgraphs TensorRT supports and leaves the rest
to CUDA; a session where it took nothing still answers. The runner profiles the first run
of a session (deploy_parity/backends/onnxruntime/placement.py) and refuses the session when
the wanted provider ran none of the graph. Here everything runs on the real onnxruntime on
the CPU, with the wanted provider as a parameter; the GPU test with TensorRT itself is in
tests/test_gpu_runners.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import deploy_parity.backends.onnxruntime.runner as ort_runner
from deploy_parity.backends.onnxruntime.placement import (
    COPY_OPS, LISTED_FALLBACKS, PlacedNode, Placement, count_graph_nodes, enable_profiling, placement_from_events,
    read_placement, require_placement)
from deploy_parity.backends.onnxruntime.providers import TRT_PROVIDER
from deploy_parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploy_parity.check import CaseResult, placement_note
from deploy_parity.compare.verdict import Verdict
from deploy_parity.errors import ArtifactError
from deploy_parity.export.onnx_exporter import export_onnx
from deploy_parity.inputs import make_feed
from deploy_parity.registry import build_registry
from deploy_parity.strategies import ParityExample
from reports.html import ReportPage, render
from reports.summary import summarise

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def two_resizes_graph() -> onnx.ModelProto:
    """Six named nodes ONNX Runtime runs one by one on the CPU (nothing here is fused or folded):
    relu -> scale -> up1 (Resize) -> add -> up2 (Resize) -> squash."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Mul", ["a", "two"], ["b"], name="scale"),
        helper.make_node("Resize", ["b", "", "scales"], ["c"], name="up1", mode="nearest"),
        helper.make_node("Add", ["c", "c"], ["d"], name="add"),
        helper.make_node("Resize", ["d", "", "scales"], ["e"], name="up2", mode="nearest"),
        helper.make_node("Sigmoid", ["e"], ["y"], name="squash"),
    ]
    graph = helper.make_graph(
        nodes, "two_resizes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                     helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


FEED = {"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)}


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "two_resizes.onnx"
    onnx.save(two_resizes_graph(), str(path))
    return path


def profile_on_cpu(onnx_path: Path, directory: Path, runs: int = 1) -> Path:
    """A real CPU session of `onnx_path`, profiled over `runs` runs; the profile's path."""
    options = ort.SessionOptions()
    enable_profiling(options, directory)
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=[CPU])
    for _ in range(runs):
        session.run(None, FEED)
    return Path(session.end_profiling())


# --------------------------------------------------- (a) a real CPU session, profiled


def test_a_profiled_cpu_session_places_every_node_of_a_small_graph_on_the_cpu(small_graph, tmp_path):
    placement = read_placement(profile_on_cpu(small_graph, tmp_path), small_graph)
    nodes = len(onnx.load(str(small_graph)).graph.node)
    assert placement.graph_nodes == nodes
    assert placement.nodes_by_provider() == {CPU: nodes}
    assert [n.name for n in placement.nodes] == [n.name for n in onnx.load(str(small_graph)).graph.node]
    assert placement.fell_back(CPU) == {} and placement.covered(CPU) == nodes
    assert placement.describe(CPU) == f"{CPU} ran all {nodes} nodes; nothing fell back"


@pytest.fixture(scope="module")
def pose_graph(tmp_path_factory):
    pose = build_registry().get("pose-rtmo")
    target = pose.deploy_target(64, 96, ("float32",))
    return pose, export_onnx(pose, target, cache_dir=tmp_path_factory.mktemp("cache"))


def test_an_exported_model_profiled_on_the_cpu_ran_all_its_nodes_there(pose_graph):
    """A real export: ONNX Runtime folds and fuses part of it before it runs, so fewer nodes
    run than the file holds; none ran elsewhere, so the CPU covers all of them."""
    pose, path = pose_graph
    with OnnxRuntimeRunner("pose-rtmo/onnxrt-cpu", path, required_provider=CPU) as runner:
        runner.infer(make_feed(pose, 64, 96, 1, seed=0, dtypes=("float32",)))
    placement = runner.placement
    assert placement.graph_nodes == count_graph_nodes(path) >= len(onnx.load(str(path)).graph.node)
    assert set(placement.nodes_by_provider()) == {CPU} and 0 < len(placement.nodes) <= placement.graph_nodes
    assert placement.fell_back(CPU) == {} and placement.covered(CPU) == placement.graph_nodes
    assert runner.placement_note == f"{CPU} ran all {placement.graph_nodes} nodes; nothing fell back"


# ---------------------------------------- (b) the rule: TensorRT ran none -> ArtifactError


def test_the_rule_refuses_a_placement_where_tensorrt_ran_none_of_the_graph(small_graph, tmp_path):
    placement = read_placement(profile_on_cpu(small_graph, tmp_path), small_graph)
    with pytest.raises(ArtifactError) as info:
        require_placement(placement, TRT_PROVIDER, "onnxrt-trt")
    message = str(info.value)
    assert message == (f"artifact {small_graph}: onnxrt-trt: TensorRT ran none of the graph's "
                       f"{placement.graph_nodes} nodes (all on {CPU}): this is not a TensorRT result")
    assert "\n" not in message


def test_a_runner_wanting_tensorrt_refuses_a_session_that_ran_everything_elsewhere(small_graph):
    """The runner applies the rule on its first run, and every later infer of that session
    refuses too: the answer would still be the other provider's."""
    runner = OnnxRuntimeRunner("two_resizes/onnxrt-trt", small_graph, providers=[CPU], backend="onnxrt-trt",
                               required_provider=TRT_PROVIDER)
    with runner:
        for _ in range(2):
            with pytest.raises(ArtifactError, match=r"onnxrt-trt: TensorRT ran none of the graph's 6 nodes "
                                                    rf"\(all on {CPU}\): this is not a TensorRT result"):
                runner.infer(FEED)
        assert runner.placement is not None and runner.placement_note == ""


def test_a_profile_that_cannot_be_read_refuses_the_session(small_graph, monkeypatch):
    """Unknown placement, unknown whose result it is: refused, not counted."""

    def unreadable(profile, onnx_path, run=0):
        with open(profile) as handle:
            json.loads(handle.read()[:-2])  # as if ONNX Runtime had stopped writing two bytes short

    monkeypatch.setattr(ort_runner, "read_placement", unreadable)
    with OnnxRuntimeRunner("two_resizes/onnxrt-trt", small_graph, backend="onnxrt-trt",
                           required_provider=TRT_PROVIDER) as runner:
        for _ in range(2):
            with pytest.raises(ArtifactError, match="onnxrt-trt: where ONNX Runtime ran the graph could not be read "
                                                    r"from its profile \(JSONDecodeError: "):
                runner.infer(FEED)


def test_onnxrt_trt_runners_want_tensorrt_and_others_measure_nothing(small_graph):
    """Whose first provider is TensorRT's is held to the rule; a CPU or CUDA runner is not profiled."""
    trt = OnnxRuntimeRunner("g/onnxrt-trt", small_graph, providers=[(TRT_PROVIDER, {}), (CUDA, {})])
    assert trt.required_provider == TRT_PROVIDER
    assert OnnxRuntimeRunner("g/onnxrt-cpu", small_graph).required_provider is None
    with OnnxRuntimeRunner("g/onnxrt-cpu", small_graph) as plain:
        plain.infer(FEED)
        assert plain.placement is None and plain.placement_note == "" and placement_note(plain) == ""


# ---------------------- (c) TensorRT partitions and fallbacks, parsed from a profile


MODEL_HASH = "5986799580881147499"  # the TensorRT provider's id of the graph (TRTGenerateId)


def as_if_on_tensorrt(events: list, graph_name: str) -> list:
    """The real CPU profile of two_resizes_graph rewritten as a TensorRT session's.

    No real profile of a TensorRT session was found in public sources, so this keeps the
    event format observed on the CPU (the events themselves) and changes what a TensorRT
    run changes, as ONNX Runtime's sources name it: TensorRT fuses the nodes it takes into
    one node per partition, named "<provider>_<MetaDef name>_<id>" (graph_partitioner.cc)
    with MetaDef name "TRTKernel_graph_<graph>_<hash>_<index>" (tensorrt_execution_provider.cc);
    the rest keep their own node under the provider that ran them. Here TensorRT takes
    relu+scale and add, both Resizes fall back to CUDA, squash to the CPU behind a copy to
    the host (the TensorRT provider registers MemcpyToHost/MemcpyFromHost kernels)."""
    partition_of = {"relu": 0, "scale": 0, "add": 1}
    provider_of = {"up1": CUDA, "up2": CUDA, "squash": CPU}
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])

    def run_of(event) -> int:
        return next(i for i, run in enumerate(runs) if run["ts"] <= event["ts"] <= run["ts"] + run["dur"])

    rewritten, fused = [], set()
    for event in events:
        if event.get("cat") != "Node":
            rewritten.append(event)
            continue
        node = event["name"][: -len("_kernel_time")]
        event = copy.deepcopy(event)
        if node in partition_of:
            index = partition_of[node]
            meta_def = f"TRTKernel_graph_{graph_name}_{MODEL_HASH}_{index}"
            name = f"{TRT_PROVIDER}_{meta_def}_{index}"
            if (name, run_of(event)) in fused:  # the partition's first node stands for the fused one
                continue
            fused.add((name, run_of(event)))
            event["name"] = f"{name}_kernel_time"
            event["args"].update(op_name=meta_def, provider=TRT_PROVIDER)
        else:
            event["args"]["provider"] = provider_of[node]
        if node == "squash":
            rewritten.append({**event, "name": "Memcpy_kernel_time",
                              "args": {**event["args"], "op_name": "MemcpyToHost", "provider": TRT_PROVIDER}})
        rewritten.append(event)
    return rewritten


def test_a_profile_with_tensorrt_partitions_and_fallbacks(small_graph, tmp_path):
    with open(profile_on_cpu(small_graph, tmp_path, runs=2)) as handle:
        events = as_if_on_tensorrt(json.load(handle), "two_resizes")
    placement = placement_from_events(events, small_graph)
    # First run only, each node once: two partitions, three fallbacks, one copy.
    assert placement.nodes_by_provider() == {TRT_PROVIDER: 3, CUDA: 2, CPU: 1}
    assert [n.name for n in placement.partitions(TRT_PROVIDER)] == [
        f"{TRT_PROVIDER}_TRTKernel_graph_two_resizes_{MODEL_HASH}_0_0",
        f"{TRT_PROVIDER}_TRTKernel_graph_two_resizes_{MODEL_HASH}_1_1"]
    assert placement.fell_back(TRT_PROVIDER) == {("Resize", CUDA): 2, ("Sigmoid", CPU): 1}
    assert not any(n.op_type in COPY_OPS for n in placement.graph_nodes_on(TRT_PROVIDER))
    assert placement.covered(TRT_PROVIDER) == 6 - 3
    note = require_placement(placement, TRT_PROVIDER, "onnxrt-trt")
    assert note == (f"TensorRT ran 2 partitions covering 3 of 6 nodes; fell back: Resize x2 ({CUDA}), "
                    f"Sigmoid ({CPU})")
    # The second run's events are the same nodes again: counting them would double everything.
    assert placement_from_events(events, small_graph, run=1).nodes == placement.nodes


def test_a_long_fallback_list_stays_one_line():
    ops = [f"Op{i}" for i in range(LISTED_FALLBACKS + 3)]
    nodes = (PlacedNode(f"{TRT_PROVIDER}_TRTKernel_graph_g_1_0_0", "TRTKernel_graph_g_1_0", TRT_PROVIDER),
             *(PlacedNode(op.lower(), op, CUDA) for op in ops))
    note = Placement("g.onnx", 40, nodes).describe(TRT_PROVIDER)
    assert "\n" not in note and note.endswith("3 more op types")
    assert note.startswith(f"TensorRT ran 1 partition covering {40 - len(ops)} of 40 nodes; fell back: ")


# ------------------------------------- (d) profiled once per session, not on every infer


def test_only_the_first_infer_of_a_session_is_profiled(small_graph, monkeypatch):
    reads = []
    real_read = ort_runner.read_placement

    def counted_read(*args, **kwargs):
        reads.append(args)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(ort_runner, "read_placement", counted_read)
    runner = OnnxRuntimeRunner("two_resizes/onnxrt-cpu", small_graph, required_provider=CPU).activate()
    profile_dir = runner._profile_dir
    assert profile_dir is not None and profile_dir.is_dir()
    first = runner.infer(FEED)
    measured = runner.placement
    for _ in range(3):
        again = runner.infer(FEED)
        np.testing.assert_array_equal(again["y"], first["y"])
    assert len(reads) == 1 and runner.placement is measured
    # ONNX Runtime itself says its profiler is off: there is nothing left to end.
    assert runner.session.end_profiling() == ""
    assert not profile_dir.exists()
    runner.deactivate()

    # A new session (the pool re-activates a retired runner) is measured once again.
    runner.activate()
    assert runner.placement is None
    runner.infer(FEED)
    runner.infer(FEED)
    assert len(reads) == 2 and runner.placement == measured
    runner.deactivate()


def test_a_session_closed_before_any_run_leaves_no_profile_behind(small_graph):
    runner = OnnxRuntimeRunner("two_resizes/onnxrt-cpu", small_graph, required_provider=CPU).activate()
    profile_dir = runner._profile_dir
    runner.deactivate()
    assert not profile_dir.exists() and runner.placement is None


# --------------------------------------------------------- the record and the report


def test_the_record_carries_the_placement_only_when_the_runner_measured_one():
    example = ParityExample(64, 96, 1, ("float32",), 0)
    note = f"TensorRT ran 1 partition covering 200 of 222 nodes; fell back: Resize x2 ({CUDA})"
    measured = CaseResult("parity", "pose-rtmo", "onnxrt-trt", "tf32", example, Verdict.PASS, placement=note)
    plain = CaseResult("parity", "pose-rtmo", "onnxrt-cpu", "fp32", example, Verdict.PASS)
    assert measured.to_record()["placement"] == note and "placement" not in plain.to_record()

    record = json.loads(json.dumps(measured.to_record()))
    page = render(ReportPage(run={"status": "complete"}, rows=summarise([record]), records=[record]))
    matrix = page[page.index("id='matrix'"):page.index("id='summary'")]
    assert f"<span class='note'>TensorRT ran 1 partition covering 200 of 222 nodes; fell back: Resize x2 " \
           f"({CUDA})</span>" in matrix
