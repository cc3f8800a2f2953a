"""Where a failing case breaks: the stage, then the first divergent node or module, or
"not localised" and why.

Run once per failing test, on its final shrunk example. The chain

    eager reference -> deploy module in PyTorch -> graph on ONNX Runtime CPU -> backend

is compared link by link with the case's own comparators; the first link that breaks is
the stage: the deploy rewrite (eager vs deploy module), the export (deploy module vs
graph) or the runtime (graph on CPU vs the backend under test). A user's own .onnx with
no deploy builder skips the first link.

Inside the breaking link (a wrong name sends people the wrong way; "not localised",
with the reason, is an honest answer and the only other one given):
- deploy rewrite: forward hooks on both module trees (modules.py); the first module whose
  output leaves its limit while its inputs agree.
- export, a graph that is not the harness's own export of the deploy module (the user's
  .onnx, a self-test mutant): the graph against a fresh export, tensor by tensor
  (graph_diff.py), when one is an edit of the other; the first node that departs.
- export otherwise: the deploy module's recorded tensors against the graph's, modules
  mapped to nodes by their full scope path and compared at their boundary (scopes.py,
  modules.py).
- runtime: the graph's tensors on both ONNX Runtime providers, node by node.
Where no mapping exists (a graph with no scope names, a TensorRT engine) it says so.

Limits: each tensor is judged against the model's own rounding (the float32 module
against its float64 run) where torch can run it, else the table's fixed row; both in the
tolerance table's ("layer", *, *) row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from deploy_parity.localize.graph_diff import (first_departing_node, first_divergent_node_between_runtimes,
                                               run_with_intermediates, structurally_aligned)
from deploy_parity.localize.modules import capture, first_divergent_module, first_divergent_module_in_graph
from deploy_parity.localize.scopes import node_scope

__all__ = ["Link", "Localisation", "localise", "node_scope", "capture", "first_divergent_module",
           "first_divergent_module_in_graph", "first_departing_node", "run_with_intermediates"]


@dataclass
class Link:
    stage: str  # "deploy rewrite" | "export" | "runtime"
    left: str
    right: str
    broken: bool
    detail: str = ""


@dataclass
class Localisation:
    stage: Optional[str] = None
    links: list = field(default_factory=list)
    layer: Optional[dict] = None
    note: str = ""
    seconds: float = 0.0

    @property
    def localised(self) -> bool:
        return self.layer is not None

    def describe(self) -> str:
        chain = "; ".join(f"{l.left} vs {l.right}: {'BREAKS' if l.broken else 'agrees'}" for l in self.links)
        if self.stage is None:
            head = f"stage: not found (every link agrees on this example: {chain})"
        else:
            head = f"stage: the {self.stage} breaks ({chain})"
        lines = [head]
        if self.layer:
            lines.append(describe_layer(self.layer))
        elif self.stage is not None and not self.note:
            lines.append("first divergent layer: not localised")
        if self.note:
            lines.append(self.note if self.note.startswith("not localised") or self.layer
                         else f"first divergent layer: {self.note}")
        lines.append(f"localised in {self.seconds:.1f}s")
        return "\n".join(lines)

    def to_record(self) -> dict:
        return {"stage": self.stage, "links": [l.__dict__ for l in self.links], "layer": self.layer,
                "note": self.note, "seconds": round(self.seconds, 3)}


def describe_layer(layer: dict) -> str:
    if layer.get("own_code"):
        where = f"module '' (the root: {layer['own_code']})"
    elif layer.get("node"):
        scope = layer.get("module")
        scope = (f" in module '{scope}'" if scope is not None
                 else f" (no module scope; nearest scoped node upstream: '{layer['nearest_scope']}')"
                 if layer.get("nearest_scope") is not None else " (no module scope)")
        where = f"ONNX node {layer['node']} ({layer['op']}){scope}"
    else:
        where = f"module '{layer['module']}'"
    cls = f" ({layer['class']})" if layer.get("class") else ""
    text = f"first divergent layer: {where}{cls}: {layer['difference']}"
    if layer.get("departs"):
        text += f"; it departs from the export: {layer['departs']}"
    if layer.get("resize"):
        text += f"; {layer['resize']}"
    text += "; its inputs agree" if layer.get("inputs_agree") else "; its inputs already differ"
    return text


def layer_row():
    from deploy_parity.compare.tolerances import lookup

    return lookup("layer", "*", "*").values


# ------------------------------------------------------------------------------- chain


def localise(pool, case, backend, example, compare) -> Localisation:
    """Attribute a failing example to a stage and, inside it, a first divergent layer.

    compare(left_outputs, right_outputs, backend_name, precision) -> bool (True: agrees),
    the case's own comparators at the given backend's tolerance.
    """
    from deploy_parity.backends import BACKENDS, onnx_for
    from deploy_parity.check import feed_for

    start = time.perf_counter()
    result = Localisation()
    feed = feed_for(case, example)
    target = case.deploy_target(example.height, example.width, example.dtypes)
    eager = pool.reference(case).infer(feed)
    outputs = {"eager": eager}
    chain = []
    if not case.deploy_is_reference:
        outputs["deploy"] = pool.get(case, BACKENDS["torch-cpu"], target).infer(feed)
        chain.append(("deploy rewrite", "eager", "deploy", "torch-cpu", "fp32"))
    first = "deploy" if "deploy" in outputs else "eager"
    if backend.name != "torch-cpu" and backend.artifact != "torch":
        outputs["graph"] = pool.get(case, BACKENDS["onnxrt-cpu"], target).infer(feed)
        chain.append(("export", first, "graph", "onnxrt-cpu", "fp32"))
        if backend.name != "onnxrt-cpu":
            outputs["backend"] = pool.get(case, backend, target).infer(feed)
            chain.append(("runtime", "graph", "backend", backend.name, backend.precision))
    elif backend.artifact == "torch" and backend.name != "torch-cpu":
        outputs["backend"] = pool.get(case, backend, target).infer(feed)
        chain.append(("runtime", first, "backend", backend.name, backend.precision))
    labels = {"eager": "eager reference", "deploy": "deploy module (PyTorch)", "graph": "graph on ONNX Runtime CPU",
              "backend": f"{backend.name}"}
    for stage, left, right, name, precision in chain:
        agrees = compare(outputs[left], outputs[right], name, precision)
        result.links.append(Link(stage, labels[left], labels[right], not agrees))
        if not agrees:
            result.stage = stage
            break
    if result.stage is None:
        result.seconds = time.perf_counter() - start
        return result

    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in case.input_names]
    row = layer_row()
    try:
        if result.stage == "deploy rewrite":
            reference = case.reference_module().eval()
            reference_records = capture(reference, args)
            reference64, why = _float64_records(reference, args)
            deploy_records = capture(case.deploy_module(target).eval(), args)
            result.layer = first_divergent_module(reference_records, deploy_records, row, reference64)
            if result.layer is None:
                result.note = ("not localised: no module both trees share differs while its inputs agree: the "
                               "difference is in code outside the modules both trees share")
            elif why:
                result.layer["how"] += f"; {why}"
        elif result.stage == "export":
            result.layer, result.note = _localise_export(pool, case, target, feed, args, outputs[first], compare, row)
        elif result.stage == "runtime" and backend.name.startswith("onnxrt-"):
            runner = pool.get(case, backend, target)
            providers = getattr(runner, "providers", None)
            if providers:
                result.layer, result.note = first_divergent_node_between_runtimes(
                    onnx_for(case, target, pool.context), feed, ["CPUExecutionProvider"], providers, row)
        else:
            result.note = (f"not localised: no layer-level search inside {backend.name} (no intermediate outputs "
                           "to read)")
    except Exception as error:  # localisation is a diagnosis: it must never hide the failure itself
        result.layer = None
        result.note = f"not localised: the layer search failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result.seconds = time.perf_counter() - start
    return result


def _float64_records(module, args) -> tuple:
    """The module's records in float64 (its own rounding), or None and why not."""
    try:
        return capture(module, args, float64=True), ""
    except Exception as error:  # an op without float64: fixed limits, said in the record
        return None, f"no float64 run ({type(error).__name__}: {str(error).splitlines()[0][:120]}): fixed limits"


def _localise_export(pool, case, target, feed, args, left, compare, row) -> tuple[Optional[dict], str]:
    """Inside the export link: node by node against a fresh export when the graph is an
    edit of one, else module by module through the scope names."""
    import onnx

    from deploy_parity.backends import onnx_for

    candidate_path = onnx_for(case, target, pool.context)
    candidate = onnx.load(str(candidate_path))
    module = case.deploy_module(target).eval()
    modules = [name for name, _ in module.named_modules(remove_duplicate=False)]
    candidate_values = run_with_intermediates(candidate, feed)
    why_not_diff = ""
    if case.onnx_path is not None:
        layer, why_not_diff = _against_fresh_export(pool, case, target, feed, candidate, candidate_values, left,
                                                    compare, modules)
        if layer is not None:
            return layer, ""
    deploy = capture(module, args)
    deploy64, why = _float64_records(module, args)
    layer, note = first_divergent_module_in_graph(candidate.graph, candidate_values, deploy, feed, row, deploy64)
    if layer is not None and why:
        layer["how"] += f"; {why}"
    if why_not_diff and note:
        note += f" (no node-level comparison: {why_not_diff.removeprefix('not localised: ')})"
    return layer, note


def _against_fresh_export(pool, case, target, feed, candidate, candidate_values, left, compare, modules):
    """(layer, "") where the user's graph departs from a fresh export; (None, why) when no
    fresh export can stand as the node-level reference."""
    from dataclasses import replace

    import onnx

    from deploy_parity.backends import onnx_for

    fresh_case = replace(case, onnx_path=None, engine_path=None)  # its export cache entry, as the suite's own
    try:
        fresh_path = onnx_for(fresh_case, target, pool.context)
    except Exception as error:
        return None, f"no fresh export of the deploy module to compare with ({type(error).__name__}: {error})"
    fresh = onnx.load(str(fresh_path))
    if fresh.graph.SerializeToString() == candidate.graph.SerializeToString():
        return None, "the graph is the harness's own export"
    aligned, how = structurally_aligned(candidate.graph, fresh.graph)
    if not aligned:
        return None, f"the graph is not an edit of the harness's export ({how})"
    fresh_values = run_with_intermediates(fresh, feed)
    fresh_outputs = {o.name: fresh_values[o.name] for o in fresh.graph.output if o.name in fresh_values}
    if not compare(left, fresh_outputs, "onnxrt-cpu", "fp32"):
        return None, ("not localised: a fresh export of the deploy module differs from the deploy module on this "
                      "feed too, so it cannot stand as the reference for the graph's nodes")
    return first_departing_node(candidate.graph, candidate_values, fresh.graph, fresh_values, modules)
