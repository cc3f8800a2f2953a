"""Node-level search: two runs of ONNX graphs compared tensor by tensor.

- A graph against a fresh export of the same deploy module (a user's graph edited by
  hand or by a tool, a mutant of the self-test): both run on ONNX Runtime CPU, one
  thread, no graph optimisation, so a node neither graph changed gives bit-identical
  output. The first node, in the graph's order, whose output differs while everything
  it reads agrees is where the graph departs; it is named with what departs (a weight,
  an attribute, an input wired elsewhere, a node the export does not have, a node the
  graph lacks) and its nearest module scope.
- One graph on two ONNX Runtime providers (the runtime link): the same walk, judged
  against the table's fixed layer row (kernels differ by rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from deploy_parity.localize.scopes import map_scopes
from deploy_parity.localize.tensors import gap, shape_text

# Intermediate tensors read at most per run (memory and time stay bounded).
MAX_MARKED = 20000


def run_with_intermediates(model_or_path, feed: dict, names: Optional[list] = None,
                           providers=("CPUExecutionProvider",)) -> dict:
    """Every tensor `names` (all node outputs when None) and the graph's outputs, from a
    copy of the graph in memory (the file is never touched)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if names is None:
        names = [out for node in model.graph.node for out in node.output if out]
    existing = {o.name for o in model.graph.output}
    for name in names[:MAX_MARKED]:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    # Marked outputs must keep their meaning: no fusion may swallow them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    wanted = [o.name for o in session.get_outputs()]
    inputs = {i.name: feed[i.name] for i in session.get_inputs()}
    return dict(zip(wanted, session.run(wanted, inputs)))


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class _Side:
    graph: object
    values: dict
    nodes: dict = field(default_factory=dict)  # name -> node
    producer: dict = field(default_factory=dict)  # tensor -> node
    initializers: dict = field(default_factory=dict)
    consumers: dict = field(default_factory=dict)  # tensor -> [(node, input position)]

    def __post_init__(self):
        from onnx import numpy_helper

        for node in self.graph.node:
            self.nodes[node.name] = node
            for out in node.output:
                self.producer[out] = node
            for position, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, position))
        for init in self.graph.initializer:
            self.initializers[init.name] = numpy_helper.to_array(init)
        for node in self.graph.node:  # a Constant node is a weight too
            if node.op_type == "Constant" and node.output:
                value = _attributes(node).get("value")
                if value is not None:
                    self.initializers[node.output[0]] = numpy_helper.to_array(value)


def structurally_aligned(graph, other, minimum: float = 0.9) -> tuple[bool, str]:
    """Do the two graphs share their node names and op types (one is an edit of the other)?"""
    ours = {n.name: n.op_type for n in graph.node}
    theirs = {n.name: n.op_type for n in other.node}
    shared = sum(1 for name, op in ours.items() if theirs.get(name) == op)
    fraction = shared / max(1, min(len(ours), len(theirs)))
    return fraction >= minimum, f"{shared} of {len(ours)} nodes share a name and op type with the {len(theirs)}-node export"


def first_departing_node(candidate_graph, candidate_values: dict, export_graph, export_values: dict,
                         module_names: Optional[list] = None) -> tuple[Optional[dict], str]:
    """Where `candidate_graph` departs from the fresh export it was made from, on one feed."""
    ours = _Side(candidate_graph, candidate_values)
    theirs = _Side(export_graph, export_values)
    names = [n.name for n in candidate_graph.node]
    scopes = map_scopes(names + [n.name for n in export_graph.node if n.name not in ours.nodes], module_names)
    clean: dict = {}  # tensor -> None (agrees) or the reason it differs

    def counterpart(tensor: str) -> Optional[str]:
        """The export's tensor that plays this one's part: the same name, else what the
        export feeds at the same input position of the same consumer."""
        if tensor in theirs.values or tensor in theirs.initializers:
            return tensor
        for node, position in ours.consumers.get(tensor, []):
            their_node = theirs.nodes.get(node.name)
            if their_node is not None and position < len(their_node.input):
                return their_node.input[position]
        return None

    def state(tensor: str):
        """None: agrees with the export; else a Gap or a reason."""
        if tensor in clean:
            return clean[tensor]
        mine = ours.values.get(tensor, ours.initializers.get(tensor))
        other_name = counterpart(tensor)
        other = None if other_name is None else theirs.values.get(other_name, theirs.initializers.get(other_name))
        if mine is None:
            result = None  # not read (an optional input, a tensor past MAX_MARKED): nothing to say
        elif other is None:
            result = "no counterpart in the export"
        else:
            g = gap(mine, other, None, exact=True, sides=("graph", "export"))
            result = None if g.agrees else g
        clean[tensor] = result
        return result

    graph_inputs = {i.name for i in candidate_graph.input}
    for node in candidate_graph.node:
        if node.op_type == "Constant":
            continue
        outs = [o for o in node.output if o]
        differing = [(o, state(o)) for o in outs if state(o) is not None]
        if not differing:
            continue
        activations = [i for i in node.input if i and i not in ours.initializers]
        weights = [i for i in node.input if i and i in ours.initializers]
        if any(i not in graph_inputs and state(i) is not None for i in activations):
            continue  # downstream of the departure
        unread = [i for i in activations if i not in graph_inputs and i not in ours.values]
        if unread:  # an input that could not be read cannot be vouched for
            return None, (f"not localised: node {node.name} ({node.op_type}) is the first whose output differs, but "
                          f"its input '{unread[0]}' was not read from the graph (past {MAX_MARKED} marked tensors)")
        their_node = theirs.nodes.get(node.name)
        departs = []
        if their_node is None or their_node.op_type != node.op_type:
            producer = next((ours.producer[i] for i in activations if i in ours.producer), None)
            after = f" after node {producer.name}" if producer is not None else ""
            departs.append(f"a {node.op_type} node the export does not have, inserted{after}")
        else:
            changed = [w for w in weights if state(w) is not None]
            if changed:
                departs.append("its weight or constant input " + ", ".join(f"'{w}'" for w in changed)
                               + " differs from the export's")
            ours_attr, their_attr = _attributes(node), _attributes(their_node)
            if ours_attr != their_attr:
                keys = sorted(k for k in set(ours_attr) | set(their_attr) if ours_attr.get(k) != their_attr.get(k))
                departs.append("attribute " + "; ".join(f"{k}: {_show(ours_attr.get(k))} here, "
                                                      f"{_show(their_attr.get(k))} in the export" for k in keys))
            rewired = [(p, mine, their_node.input[p]) for p, mine in enumerate(node.input)
                       if p < len(their_node.input) and mine != their_node.input[p] and mine not in ours.initializers]
            for position, mine, other in rewired:
                missing = theirs.producer.get(other)
                lost = (f" (node {missing.name} ({missing.op_type}), which makes it, is missing here)"
                        if missing is not None and missing.name not in ours.nodes else "")
                departs.append(f"input {position} reads '{mine}' where the export reads '{other}'{lost}")
                if lost:
                    return _found(node, differing, departs, scopes, ours, missing=missing), ""
        if not departs:
            departs.append("its inputs, weights and attributes equal the export's")
        return _found(node, differing, departs, scopes, ours), ""
    return None, "every tensor of the graph equals the export's on this feed"


def _show(value) -> str:
    if isinstance(value, bytes):
        return repr(value.decode(errors="replace"))
    return repr(value)


def _found(node, differing, departs, scopes, ours, missing=None) -> dict:
    tensor, difference = differing[0]
    text = difference.text("graph", "export") if hasattr(difference, "text") else str(difference)
    layer = {"node": node.name, "op": node.op_type, "inputs": list(node.input), "difference": f"{tensor}: {text}",
             "departs": "; ".join(departs), "inputs_agree": True,
             "module": scopes.module_of.get(node.name), "nearest_scope": _nearest_scope(node, scopes, ours),
             "how": "the graph against a fresh export of the deploy module, tensor by tensor (bit-identical "
                    "where neither changed)"}
    if missing is not None:
        layer["missing"] = {"node": missing.name, "op": missing.op_type}
        layer["module"] = scopes.module_of.get(missing.name, layer["module"])
    if getattr(difference, "shapes", None) is not None:
        layer["shapes"] = {"graph": list(difference.shapes[0]), "export": list(difference.shapes[1])}
        if node.op_type == "Resize":
            layer["resize"] = (f"the graph resizes to {shape_text(difference.shapes[0])}, the export to "
                               f"{shape_text(difference.shapes[1])} (node {node.name})")
    return layer


def _nearest_scope(node, scopes, ours, depth: int = 50) -> Optional[str]:
    """The node's module scope, or for a node without one (inserted by hand) the scope of
    the nearest node upstream that has one: where in the model it sits."""
    seen = set()
    frontier = [node]
    while frontier and depth:
        depth -= 1
        current = frontier.pop(0)
        if current.name in seen:
            continue
        seen.add(current.name)
        if current.name in scopes.nearest:
            return scopes.nearest[current.name]
        frontier.extend(ours.producer[i] for i in current.input if i in ours.producer)
    return None


def first_divergent_node_between_runtimes(onnx_path, feed, providers_a, providers_b, row) -> tuple[Optional[dict], str]:
    """Graph on one ONNX Runtime provider against another, node by node."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    a = run_with_intermediates(onnx_path, feed, None, providers_a)
    b = run_with_intermediates(onnx_path, feed, None, providers_b)
    scopes = map_scopes([n.name for n in graph.node])
    for node in graph.node:
        outs = [o for o in node.output if o in a and o in b]
        gaps = [(o, gap(b[o], a[o], row, sides=("backend", "CPU"))) for o in outs]
        bad = [(o, g) for o, g in gaps if not g.agrees]
        if not bad:
            continue
        if all(gap(b[i], a[i], row).agrees for i in node.input if i in a and i in b):
            o, g = bad[0]
            return ({"node": node.name, "op": node.op_type, "module": scopes.module_of.get(node.name),
                     "nearest_scope": scopes.nearest.get(node.name), "inputs": list(node.input),
                     "difference": f"{o}: {g.text('backend', 'CPU provider')}", "inputs_agree": True,
                     "how": "intermediate outputs on both runtimes"}, "")
        return None, (f"not localised: node {node.name} ({node.op_type}) is the first to differ between the runtimes "
                      "but its inputs already differ (a difference below the layer limit grew here)")
    return None, "not localised: no node differs between the runtimes beyond the layer limit"
