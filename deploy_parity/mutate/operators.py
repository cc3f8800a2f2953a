"""Single-node changes planted into an exported graph: the bugs the parity suite must catch
and the localiser must name.

Each operator edits a copy of the graph at one site and says which node a right answer
names: the node it changed, the node it inserted (inserted nodes carry no module scope,
like a user's hand edit), or the node it removed. Sites are picked in graph order at
fixed fractions of the candidates (deterministic: the same mutants on every run).

  scale-weight      a Conv / ConvTranspose / Gemm / MatMul weight times 1.05
  offset-output     an Add after a feature (a conv, matmul, activation, ... output): + 0.1 x
                    the tensor's mean magnitude on a feed
  swap-channels     a Gather after a conv's output (or the image input) swapping channels 0, 1
  drop-activation   a Relu / Sigmoid / LeakyRelu / HardSigmoid / HardSwish / Tanh / Clip removed
  resize-mode       a Resize's mode changed (linear <-> nearest, cubic -> linear)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SCALE = 1.05
OFFSET_FRACTION = 0.1
ACTIVATIONS = ("Relu", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh", "Clip")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class Mutant:
    operator: str
    node: str  # the node a right localisation names
    site: str  # the node or tensor the change was planted at
    description: str
    model: object  # onnx.ModelProto

    @property
    def id(self) -> str:
        return f"{self.operator}@{self.site}"


def _copy(model):
    import onnx

    return onnx.ModelProto.FromString(model.SerializeToString())


def _pick(candidates: list, per_operator: int) -> list:
    """`per_operator` sites spread over the candidates in graph order."""
    if not candidates:
        return []
    fractions = [0.5] if per_operator == 1 else list(np.linspace(0.15, 0.85, per_operator))
    chosen = []
    for f in fractions:
        site = candidates[min(len(candidates) - 1, int(f * len(candidates)))]
        if site not in chosen:
            chosen.append(site)
    return chosen


def _uses(graph) -> dict:
    counts: dict = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _rewire(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _insert_after(model, tensor: str, node, initializer=None):
    """Insert `node` (which reads `tensor`) so every consumer of `tensor` reads its output."""
    graph = model.graph
    _rewire(graph, tensor, node.output[0])  # before the insertion: the new node keeps reading `tensor`
    if initializer is not None:
        graph.initializer.append(initializer)
    position = next((i + 1 for i, n in enumerate(graph.node) if tensor in n.output), 0)
    graph.node.insert(position, node)


def scale_weight(model, values: dict, per_operator: int) -> list:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uses = _uses(model.graph)
    candidates = [n.name for n in model.graph.node if n.op_type in WEIGHTED and len(n.input) > 1
                  and n.input[1] in inits and uses.get(n.input[1]) == 1
                  and np.asarray(numpy_helper.to_array(inits[n.input[1]])).size > 1]
    mutants = []
    for site in _pick(candidates, per_operator):
        mutated = _copy(model)
        node = next(n for n in mutated.graph.node if n.name == site)
        init = next(i for i in mutated.graph.initializer if i.name == node.input[1])
        array = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array((array * np.asarray(SCALE, array.dtype)).astype(array.dtype), init.name))
        mutants.append(Mutant("scale-weight", site, site, f"weight {init.name} of {node.op_type} x {SCALE}", mutated))
    return mutants


# Nodes whose outputs are features (not index arithmetic, reshapes of logits or shapes):
# where an offset or a channel swap is a bug a user would have.
FEATURE_OPS = WEIGHTED + ACTIVATIONS + ("Mul", "Add", "BatchNormalization", "Resize", "Concat")


def _activation_tensors(model, values: dict, rank: int = 3, ops=FEATURE_OPS) -> list:
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in ops or not node.output or node.output[0] in outputs:
            continue
        value = values.get(node.output[0])
        if value is not None and np.issubdtype(np.asarray(value).dtype, np.floating) and np.ndim(value) >= rank \
                and np.asarray(value).size > 1:
            found.append(node.output[0])
    return found


def offset_output(model, values: dict, per_operator: int) -> list:
    import onnx
    from onnx import numpy_helper

    mutants = []
    for k, tensor in enumerate(_pick(_activation_tensors(model, values), per_operator)):
        value = np.asarray(values[tensor])
        offset = np.float32(OFFSET_FRACTION * float(np.mean(np.abs(value))) or 1e-3)
        mutated = _copy(model)
        name = f"mutant_offset_{k}"
        constant = numpy_helper.from_array(np.asarray(offset, dtype=value.dtype), f"{name}_value")
        node = onnx.helper.make_node("Add", [tensor, constant.name], [f"{name}_out"], name=name)
        _insert_after(mutated, tensor, node, constant)
        mutants.append(Mutant("offset-output", name, tensor, f"+{offset:.3g} after {tensor}", mutated))
    return mutants


def swap_channels(model, values: dict, per_operator: int) -> list:
    import onnx
    from onnx import numpy_helper

    image_inputs = [i.name for i in model.graph.input if np.ndim(values.get(i.name, np.zeros(0))) == 4]
    inner = [t for t in _activation_tensors(model, values, rank=4, ops=("Conv",)) if np.shape(values[t])[1] >= 2
             and not np.array_equal(np.asarray(values[t])[:, 0], np.asarray(values[t])[:, 1])]
    sites = image_inputs[:1] + _pick(inner, max(1, per_operator - 1))
    mutants = []
    for k, tensor in enumerate(sites):
        channels = int(np.shape(values[tensor])[1])
        order = np.arange(channels, dtype=np.int64)
        order[[0, 1]] = order[[1, 0]]
        mutated = _copy(model)
        name = f"mutant_swap_{k}"
        indices = numpy_helper.from_array(order, f"{name}_order")
        node = onnx.helper.make_node("Gather", [tensor, indices.name], [f"{name}_out"], name=name, axis=1)
        _insert_after(mutated, tensor, node, indices)
        mutants.append(Mutant("swap-channels", name, tensor, f"channels 0 and 1 of {tensor} swapped", mutated))
    return mutants


def drop_activation(model, values: dict, per_operator: int) -> list:
    outputs = {o.name for o in model.graph.output}
    candidates = [n.name for n in model.graph.node if n.op_type in ACTIVATIONS and n.output[0] not in outputs]
    mutants = []
    for site in _pick(candidates, per_operator):
        mutated = _copy(model)
        node = next(n for n in mutated.graph.node if n.name == site)
        _rewire(mutated.graph, node.output[0], node.input[0])
        mutated.graph.node.remove(node)
        mutants.append(Mutant("drop-activation", site, site, f"{node.op_type} removed", mutated))
    return mutants


def resize_mode(model, values: dict, per_operator: int) -> list:
    import onnx

    switch = {b"linear": b"nearest", b"nearest": b"linear", b"cubic": b"linear"}
    candidates = []
    for node in model.graph.node:
        if node.op_type == "Resize":
            mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
            if mode in switch:
                candidates.append(node.name)
    mutants = []
    for site in _pick(candidates, per_operator):
        mutated = _copy(model)
        node = next(n for n in mutated.graph.node if n.name == site)
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
        for attribute in list(node.attribute):
            if attribute.name in ("mode", "nearest_mode", "cubic_coeff_a"):
                node.attribute.remove(attribute)
        node.attribute.append(onnx.helper.make_attribute("mode", switch[mode].decode()))
        mutants.append(Mutant("resize-mode", site, site, f"mode {mode.decode()} -> {switch[mode].decode()}", mutated))
    return mutants


OPERATORS: dict[str, Callable] = {
    "scale-weight": scale_weight,
    "offset-output": offset_output,
    "swap-channels": swap_channels,
    "drop-activation": drop_activation,
    "resize-mode": resize_mode,
}


def plant(model, values: dict, operators=tuple(OPERATORS), per_operator: int = 2) -> list:
    """Every mutant of `model` (an onnx.ModelProto); `values`: its tensors on one feed
    (deploy_parity.localize.run_with_intermediates), to size offsets and pick live sites."""
    unknown = [o for o in operators if o not in OPERATORS]
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {unknown}; expected some of {list(OPERATORS)}")
    return [m for name in operators for m in OPERATORS[name](model, values, per_operator)]
