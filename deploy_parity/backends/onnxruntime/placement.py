"""Where ONNX Runtime ran a graph's nodes, read from its own profiler.

TensorRT's execution provider takes the subgraphs TensorRT supports and leaves the rest to
the next provider (CUDA for onnxrt-trt), so a session opened with TensorRT first may run a
few nodes on TensorRT, or none, and still answer: the answer is then CUDA's, not TensorRT's.
Only a run tells where each node went, and ONNX Runtime's profiler records it.

The profile (SessionOptions.enable_profiling; `session.end_profiling()` writes it and returns
its path) is a JSON list of trace events. Observed with onnxruntime 1.32 on the CPU:

    {"cat": "Session", "name": "model_run", "ts": 8687, "dur": 163, "args": {}}   one per run,
        failed runs included
    {"cat": "Node", "name": "rs_kernel_time", "ts": 8820, "dur": 18,
     "args": {"op_name": "Resize", "provider": "CPUExecutionProvider", "node_index": "2", ...}}
        one per node per run, inside its run's model_run span; "<node name>_kernel_time";
        nodes of an If/Loop body too, when they run

Older releases also wrote "<node>_fence_before" / "_fence_after" Node events, with op_name
and no provider; only kernel events say where a node ran.

A partition that a provider compiled runs as one fused node, which ONNX Runtime's graph
partitioner names "<provider>_<MetaDef name>_<id>" (onnxruntime/core/framework/
graph_partitioner.cc); the TensorRT provider's MetaDef name is
"TRTKernel_graph_<graph name>_<hash>_<index>" (onnxruntime/core/providers/tensorrt/
tensorrt_execution_provider.cc, GetSubGraph), hence nodes such as
TensorrtExecutionProvider_TRTKernel_graph_main_graph_12802227604276161730_0_0. Nodes the
provider did not take appear one by one under the provider that ran them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from deploy_parity.errors import ArtifactError

KERNEL_EVENT_SUFFIX = "_kernel_time"

# Nodes ONNX Runtime inserts to move tensors between devices (where a fallback node sits
# on another device than its neighbours): not the graph's nodes, so never a fallback.
COPY_OPS = frozenset({"MemcpyFromHost", "MemcpyToHost"})

# What a person calls the provider in a message.
PROVIDER_LABELS = {"TensorrtExecutionProvider": "TensorRT"}

# A description lists this many fallback op types, the most frequent first; more would not
# read as one line.
LISTED_FALLBACKS = 8


def provider_label(provider: str) -> str:
    return PROVIDER_LABELS.get(provider, provider)


@dataclass(frozen=True)
class PlacedNode:
    """One node of one run, as ONNX Runtime ran it (after its own graph optimisations)."""

    name: str
    op_type: str
    provider: str


@dataclass(frozen=True)
class Placement:
    """Where the nodes of one run went: each node once, in the order they ran."""

    graph: str  # the .onnx file
    graph_nodes: int  # nodes in that file, If/Loop bodies included
    nodes: Tuple[PlacedNode, ...]

    def nodes_by_provider(self) -> Dict[str, int]:
        """Node events per provider (ONNX Runtime's copy nodes included)."""
        return dict(Counter(node.provider for node in self.nodes))

    def graph_nodes_on(self, provider: str) -> List[PlacedNode]:
        """The nodes `provider` ran, less the copies ONNX Runtime inserted."""
        return [n for n in self.nodes if n.provider == provider and n.op_type not in COPY_OPS]

    def partitions(self, provider: str) -> List[PlacedNode]:
        """The fused nodes `provider` compiled (named "<provider>_..." by the partitioner)."""
        return [n for n in self.graph_nodes_on(provider) if n.name.startswith(provider + "_")]

    def fell_back(self, provider: str) -> Dict[Tuple[str, str], int]:
        """(op type, provider that ran it) -> how many nodes of that type `provider` left to another."""
        return dict(Counter((n.op_type, n.provider) for n in self.nodes
                            if n.provider != provider and n.op_type not in COPY_OPS))

    def covered(self, provider: str) -> int:
        """The graph's nodes less those that ran on another provider. ONNX Runtime optimises
        the graph before it partitions it and the profile shows the optimised nodes, so this
        is at most what `provider` ran: a node folded away counts as covered, and fallback
        nodes fused into one count once."""
        return max(self.graph_nodes - sum(self.fell_back(provider).values()), 0)

    def describe(self, provider: str) -> str:
        """One line: how much of the graph `provider` ran, and what fell back where."""
        label, total = provider_label(provider), self.graph_nodes
        partitions = self.partitions(provider)
        covered = self.covered(provider)
        amount = "all" if covered == total else f"{covered} of"
        if partitions:
            plural = "partition" if len(partitions) == 1 else "partitions"
            head = f"{label} ran {len(partitions)} {plural} covering {amount} {total} nodes"
        else:
            head = f"{label} ran {amount} {total} nodes"
        fallbacks = sorted(self.fell_back(provider).items(), key=lambda item: (-item[1], item[0]))
        if not fallbacks:
            return f"{head}; nothing fell back"
        listed = [f"{op}{f' x{count}' if count > 1 else ''} ({where})" for (op, where), count in fallbacks]
        if len(listed) > LISTED_FALLBACKS:
            listed = listed[:LISTED_FALLBACKS] + [f"{len(listed) - LISTED_FALLBACKS} more op types"]
        return f"{head}; fell back: {', '.join(listed)}"


def count_graph_nodes(onnx_path: Path) -> int:
    """Nodes in the .onnx file, those of If/Loop/Scan bodies included (the profile records
    them too). External weights are not read: only the graph's structure is needed."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def count(graph) -> int:
        total = 0
        for node in graph.node:
            total += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    total += count(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    total += sum(count(body) for body in attribute.graphs)
        return total

    return count(model.graph)


def run_nodes(events: Sequence[Mapping], run: int = 0) -> Tuple[PlacedNode, ...]:
    """The nodes of one run in a profile (`run` indexes its model_run events: 0 the first,
    -1 the last), each node once (a Loop body's nodes run many times)."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    kernels = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_EVENT_SUFFIX)
               and "provider" in e.get("args", {})]
    if runs:
        span = runs[run]
        kernels = [e for e in kernels if span["ts"] <= e["ts"] <= span["ts"] + span["dur"]]
    seen, nodes = set(), []
    for event in sorted(kernels, key=lambda e: e["ts"]):
        name = event["name"][: -len(KERNEL_EVENT_SUFFIX)]
        if name in seen:
            continue
        seen.add(name)
        nodes.append(PlacedNode(name, event["args"].get("op_name", "?"), event["args"]["provider"]))
    return tuple(nodes)


def placement_from_events(events: Sequence[Mapping], onnx_path: Path, graph_nodes: Optional[int] = None,
                          run: int = 0) -> Placement:
    graph_nodes = count_graph_nodes(onnx_path) if graph_nodes is None else graph_nodes
    return Placement(str(onnx_path), graph_nodes, run_nodes(events, run))


def read_placement(profile_path: Path, onnx_path: Path, run: int = 0) -> Placement:
    """The placement recorded in the profile ONNX Runtime wrote for a session of `onnx_path`."""
    with open(profile_path) as handle:
        events = json.load(handle)
    return placement_from_events(events, onnx_path, run=run)


def enable_profiling(options, directory: Path) -> None:
    """Profile a session opened with these SessionOptions, writing into `directory` (a folder of
    its own: ONNX Runtime appends a timestamp to the prefix)."""
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(directory) / "placement")


def require_placement(placement: Placement, wanted: str, backend: str) -> str:
    """The rule: a result counts as `wanted`'s only if `wanted` ran some of the graph's nodes.
    None -> ArtifactError naming the graph; some -> the one-line description."""
    if not placement.graph_nodes_on(wanted):
        elsewhere = Counter(n.provider for n in placement.nodes if n.op_type not in COPY_OPS)
        if len(elsewhere) == 1:
            where = f"all on {next(iter(elsewhere))}"
        elif elsewhere:
            where = ", ".join(f"{count} on {provider}" for provider, count in elsewhere.most_common())
        else:
            where = "ONNX Runtime's profile recorded no node"
        label = provider_label(wanted)
        raise ArtifactError(placement.graph, f"{backend}: {label} ran none of the graph's {placement.graph_nodes} "
                                             f"nodes ({where}): this is not a {label} result")
    return placement.describe(wanted)

