"""An ONNX graph whose float compute is float16, for TensorRT 11's strongly typed networks.

TensorRT 11 takes every tensor's type from the network; with no FP16 builder flag left,
an fp16 engine needs an fp16 graph. The general converters do not survive this zoo's
graphs: Polygraphy's ConvertToFp16 (onnxconverter-common, shape inference off) hands
Resize a float16 `scales` and leaves `Cast(to=FLOAT)` nodes feeding float16 math;
onnxruntime.transformers.float16 handles those but rewrites If/Loop bodies and breaks
their outer-scope references (every R-CNN graph here has If and Loop).

What this conversion does, on the main graph:

- inputs and outputs keep their types: a float32 input is cast to float16 where float16
  nodes read it, a float output is cast back, so the engine binds the feed the case
  declares and returns float32 (the names do not change);
- float32 initializers, Constant / ConstantOfShape values and Cast(to=FLOAT) become
  float16, and the float16 propagates through every op between them;
- float32 stays where float16 is wrong or illegal: control flow (If/Loop/Scan bodies are
  left as they are, reading float32 through Casts, outer-scope references included),
  Resize's `scales` and NonMaxSuppression's inputs (tensor(float) only in ONNX), a float
  Range, (De)QuantizeLinear, custom-domain ops, and every node whose float results only
  feed those or a cast to an integer type (shape and index arithmetic stays exact).

The result is checked with ONNX's strict shape and type inference before it is used.
Nothing here imports TensorRT (onnx and numpy only).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Set, Tuple

import numpy as np

from deploy_parity.errors import HarnessError

SUFFIX16, SUFFIX32 = "__fp16", "__fp32"
FP16_MAX = float(np.finfo(np.float16).max)
CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
FLOAT_ONLY_OPS = {"NonMaxSuppression", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_ONLY_SLOTS = {"Resize": (2,), "Upsample": (1,)}  # inputs ONNX types as tensor(float) only
SOURCE_DTYPE_ATTRS = {"Cast": "to", "RandomNormal": "dtype", "RandomUniform": "dtype", "RandomNormalLike": "dtype",
                      "RandomUniformLike": "dtype", "EyeLike": "dtype", "Multinomial": None, "Bernoulli": "dtype"}


def _onnx():
    import onnx

    return onnx


def _subgraphs(node) -> list:
    onnx = _onnx()
    graphs = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def _outer_references(graph) -> Set[str]:
    """Names a (sub)graph reads but does not define: its outer-scope references, nested graphs included."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in _subgraphs(node):
            used.update(_outer_references(sub))
        defined.update(node.output)
    return used - defined


def _rename_references(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in _subgraphs(node):
            if old not in {v.name for v in sub.input} | {t.name for t in sub.initializer}:
                _rename_references(sub, old, new)


def _float_value_names(model) -> Set[str]:
    """Main-graph values of type float32, from ONNX's shape and type inference."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise HarnessError(f"fp16 graph: ONNX shape inference fails on the float32 graph: {exc}".splitlines()[0]) from exc
    floats = set()
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            floats.add(value.name)
    floats.update(t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    for node in model.graph.node:
        if node.op_type == "Constant" and _constant_is_float(node):
            floats.add(node.output[0])
    return floats


def _constant_is_float(node) -> bool:
    onnx = _onnx()
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t.data_type == onnx.TensorProto.FLOAT
        if attribute.name in ("value_float", "value_floats"):
            return True
    return False


def _to_fp16_tensor(tensor, name=None):
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    finite = np.isfinite(array)
    # Finite float32 values outside float16's range saturate to its largest finite value, not to inf.
    array = np.where(finite, np.clip(array, -FP16_MAX, FP16_MAX), array).astype(np.float16)
    return numpy_helper.from_array(array, name if name is not None else tensor.name)


def _convert_source(node) -> None:
    """A float32-producing source node made to produce float16."""
    onnx = _onnx()
    from onnx import numpy_helper

    if node.op_type == "Constant":
        for attribute in node.attribute:
            if attribute.name == "value":
                attribute.t.CopyFrom(_to_fp16_tensor(attribute.t, attribute.t.name))
            elif attribute.name in ("value_float", "value_floats"):
                values = [attribute.f] if attribute.name == "value_float" else list(attribute.floats)
                shape = () if attribute.name == "value_float" else (len(values),)
                tensor = numpy_helper.from_array(np.array(values, np.float16).reshape(shape))
                node.attribute.remove(attribute)
                node.attribute.append(onnx.helper.make_attribute("value", tensor))
                break
    elif node.op_type == "ConstantOfShape":
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type == onnx.TensorProto.FLOAT:
                attribute.t.CopyFrom(_to_fp16_tensor(attribute.t, attribute.t.name))
    elif SOURCE_DTYPE_ATTRS.get(node.op_type):
        for attribute in node.attribute:
            if attribute.name == SOURCE_DTYPE_ATTRS[node.op_type] and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16


def convert_to_fp16_graph(model, keep_ops=(), keep_nodes=()):
    """A copy of `model` (onnx.ModelProto) computing in float16, with float32 inputs and outputs.

    keep_ops / keep_nodes: op types / node names to keep in float32 as well (with what only feeds them).
    """
    onnx = _onnx()
    original = model
    model = onnx.ModelProto()
    model.CopyFrom(original)
    graph = model.graph
    floats = _float_value_names(model)
    integer_types = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                     onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32,
                     onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}

    nodes = list(graph.node)
    uses: Dict[str, List[Tuple[int, int]]] = defaultdict(list)  # value -> (node index, input slot); slot -1: implicit
    for index, node in enumerate(nodes):
        for slot, name in enumerate(node.input):
            if name:
                uses[name].append((index, slot))
        for sub in _subgraphs(node):
            for name in _outer_references(sub):
                uses[name].append((index, -1))
    outputs = {v.name for v in graph.output}

    def pinned(index) -> bool:
        node = nodes[index]
        if node.op_type in CONTROL_FLOW or _subgraphs(node) or node.domain not in ("", "ai.onnx"):
            return True
        if node.op_type in FLOAT_ONLY_OPS or node.op_type in keep_ops or node.name in keep_nodes:
            return True
        return node.op_type == "Range" and any(name in floats for name in node.input)

    keep32 = {index for index in range(len(nodes)) if pinned(index)}

    def needs_fp32(index, slot) -> bool:
        node = nodes[index]
        if index in keep32:
            return True
        if slot in FLOAT_ONLY_SLOTS.get(node.op_type, ()):
            return True
        if node.op_type == "Cast" and slot == 0:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            return to in integer_types
        return False

    changed = True
    while changed:  # a node whose float results only feed float32 places computes in float32 too
        changed = False
        for index in reversed(range(len(nodes))):
            if index in keep32:
                continue
            float_outputs = [name for name in nodes[index].output if name in floats]
            if not float_outputs:
                continue
            value_uses = [use for name in float_outputs for use in uses.get(name, [])]
            if value_uses and all(needs_fp32(*use) for use in value_uses):
                keep32.add(index)
                changed = True

    producer = {name: index for index, node in enumerate(nodes) for name in node.output}
    graph_inputs = {v.name for v in graph.input}
    initializers = {t.name: t for t in graph.initializer}

    def available16(name) -> bool:
        """Is `name` float16 once converted (produced by a converted node)?"""
        return name in floats and name in producer and producer[name] not in keep32

    casts_after: Dict[int, list] = defaultdict(list)  # producer index (-1: graph start) -> Cast nodes
    made: Dict[Tuple[str, int], str] = {}
    new_initializers = []

    def value_as(name, want16) -> str:
        if name not in floats or available16(name) == want16:
            return name
        if name in initializers and want16:
            new = name + SUFFIX16
            if (name, 16) not in made:
                new_initializers.append(_to_fp16_tensor(initializers[name], new))
                made[(name, 16)] = new
            return made[(name, 16)]
        key = (name, 16 if want16 else 32)
        if key not in made:
            new = name + (SUFFIX16 if want16 else SUFFIX32)
            to = onnx.TensorProto.FLOAT16 if want16 else onnx.TensorProto.FLOAT
            cast = onnx.helper.make_node("Cast", [name], [new], name=new + "_cast", to=to)
            casts_after[producer.get(name, -1)].append(cast)
            made[key] = new
        return made[key]

    for index, node in enumerate(nodes):
        fp32_node = index in keep32
        if not fp32_node and any(name in floats for name in node.output):
            _convert_source(node)
        for slot, name in enumerate(node.input):
            if name:
                node.input[slot] = value_as(name, want16=not needs_fp32(index, slot))
        for sub in _subgraphs(node):  # control flow reads float32, its bodies unchanged
            for name in _outer_references(sub):
                target = value_as(name, want16=False)
                if target != name:
                    _rename_references(sub, name, target)

    # Float outputs keep their names and float32: cast back what became float16.
    for value in graph.output:
        if available16(value.name):
            index = producer[value.name]
            inner = value.name + SUFFIX16 + "_out"
            nodes[index].output[list(nodes[index].output).index(value.name)] = inner
            for use_index, slot in uses.get(value.name, []):
                if slot >= 0 and nodes[use_index].input[slot] == value.name:
                    nodes[use_index].input[slot] = inner
            for casts in casts_after.values():
                for cast in casts:
                    if cast.input[0] == value.name:
                        cast.input[0] = inner
            casts_after[index].append(onnx.helper.make_node("Cast", [inner], [value.name], name=value.name + "_cast",
                                                            to=onnx.TensorProto.FLOAT))

    ordered = list(casts_after.get(-1, []))
    for index, node in enumerate(nodes):
        ordered.append(node)
        ordered.extend(casts_after.get(index, []))
    del graph.node[:]
    graph.node.extend(ordered)
    # Drop float16 copies nothing reads and originals only float16 nodes read.
    read = {name for node in graph.node for name in node.input} | _outer_references(graph) | outputs
    graph.initializer.extend(new_initializers)
    kept = [t for t in graph.initializer if t.name in read or t.name in graph_inputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale types; TensorRT and ONNX Runtime infer them

    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise HarnessError(f"fp16 graph: the converted graph does not type-check: {exc}".splitlines()[0]) from exc
    return model



def fp16_graph_bytes(onnx_path) -> bytes:
    """The float16 graph of an .onnx file (external data loaded), serialized."""
    onnx = _onnx()
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:
        raise HarnessError(f"fp16 graph: cannot load {onnx_path}: {exc}".splitlines()[0]) from exc
    return convert_to_fp16_graph(model).SerializeToString()
