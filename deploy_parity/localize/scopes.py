"""Which PyTorch module each ONNX node belongs to, and what a module reads and returns
in the graph.

torch.onnx writes a node's module scope into its name, one segment per level:
`/inner/detector/backbone/body/layer4/layer4.2/conv1/Conv`. A segment is the module's
name from its last non-numeric part on (`layer4.2` is child `2` of `layer4`,
`stem.0.0` child `0` of `stem.0`), and a module called a second time gets `_1`. So a
path is rebuilt level by level, each level checked against the module tree, never
guessed from its last name (two decoder layers both have a `self_attn`).

A module's output in the graph is not "the last node of its scope" (that may be a
Flatten of its input, or a shape it computed): it is the set of tensors its nodes
produce that something outside the module reads, its *boundary outputs*; its inputs
are the tensors its nodes read that come from outside (weights and constants aside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

_CALL_SUFFIX = re.compile(r"_\d+$")


def node_scope(node_name: str) -> Optional[str]:
    """The innermost scope segment the exporter wrote in a node's name:
    '/stem/stem.0/stem.0.0/Conv' -> 'stem.0.0'; '/Cast' -> '' (the root); None if the
    name has no scope form (a node inserted by hand, a graph from another exporter)."""
    if not node_name.startswith("/"):
        return None
    parts = node_name.strip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def scope_segments(node_name: str) -> Optional[list]:
    """'/inner/detector/rpn/Conv' -> ['inner', 'detector', 'rpn']; None without scope form."""
    if not node_name.startswith("/"):
        return None
    return node_name.strip("/").split("/")[:-1]


def _resolve(segments: list, modules: Optional[set], start: list) -> tuple[list, bool]:
    """Module path parts for `segments`; (parts, True) when every level resolved to a module
    in `modules` (or, with no module tree, by the naming rule alone)."""
    parts = list(start)
    for segment in segments:
        found = None
        for seg in (segment, _CALL_SUFFIX.sub("", segment)):
            comps = seg.split(".")
            for k in range(min(len(parts), len(comps) - 1), -1, -1):
                if k and parts[-k:] != comps[:k]:
                    continue
                candidate = parts + comps[k:]
                if modules is None or ".".join(candidate) in modules:
                    found = candidate
                    break
            if found is not None:
                break
        if found is None:
            return parts, False
        parts = found
    return parts, True


@dataclass
class ScopeMap:
    """Node name -> module path (in the module tree given), for the nodes whose every scope
    level resolved; `nearest` holds the deepest module reached for every scoped node."""

    module_of: dict = field(default_factory=dict)
    nearest: dict = field(default_factory=dict)
    strip: int = 0  # leading graph segments dropped (the exporter's own wrapper, `inner`)
    prefix: str = ""  # prepended to reach the module tree (a deploy module that holds the model)
    scoped: int = 0

    @property
    def resolved(self) -> int:
        return len(self.module_of)


def map_scopes(node_names: list, module_names: Optional[list] = None) -> ScopeMap:
    """Resolve every node's scope against the module tree, choosing the one alignment (a
    wrapper level dropped on the graph side, a holder module added on the torch side) under
    which the most nodes resolve fully."""
    segments = {name: scope_segments(name) for name in node_names}
    scoped = {n: s for n, s in segments.items() if s is not None}
    if module_names is None:
        best = ScopeMap(scoped=len(scoped))
        for name, segs in scoped.items():
            parts, _ = _resolve(segs, None, [])
            best.module_of[name] = best.nearest[name] = ".".join(parts)
        return best
    modules = set(module_names)
    tops = sorted({m.split(".")[0] for m in modules if m})
    best = ScopeMap(scoped=len(scoped))
    for strip in (0, 1):
        for prefix in [""] + [t + "." for t in tops]:
            start = prefix.rstrip(".").split(".") if prefix else []
            trial = ScopeMap(strip=strip, prefix=prefix, scoped=len(scoped))
            for name, segs in scoped.items():
                if len(segs) < strip:
                    continue
                parts, complete = _resolve(segs[strip:], modules, start)
                trial.nearest[name] = ".".join(parts)
                if complete:
                    trial.module_of[name] = ".".join(parts)
            if trial.resolved > best.resolved:
                best = trial
    return best


@dataclass
class Boundary:
    nodes: list  # the module's nodes, graph order
    outputs: list  # tensor names read outside the module (or graph outputs), graph order
    inputs: list  # tensor names its nodes read from outside (weights and constants aside)
    producer: dict  # output tensor name -> node


def module_boundaries(graph, scopes: ScopeMap) -> dict:
    """{module path: Boundary} for every module that owns at least one node (its own or a
    descendant's)."""
    initializers = {i.name for i in graph.initializer}
    constants = {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    owners: dict = {}  # module path -> [node index]
    for index, node in enumerate(graph.node):
        path = scopes.module_of.get(node.name)
        if path is None:
            continue
        parts = path.split(".") if path else []
        for k in range(len(parts) + 1):
            owners.setdefault(".".join(parts[:k]), []).append(index)
    consumers: dict = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(index)
    result = {}
    for path, indices in owners.items():
        inside = set(indices)
        produced = {}
        for index in indices:
            for out in graph.node[index].output:
                if out:
                    produced[out] = graph.node[index]
        outputs = [out for out, _ in produced.items()
                   if out in graph_outputs or any(c not in inside for c in consumers.get(out, ()))]
        inputs = []
        for index in indices:
            for name in graph.node[index].input:
                if name and name not in produced and name not in initializers and name not in constants \
                        and name not in inputs:
                    inputs.append(name)
        result[path] = Boundary([graph.node[i] for i in indices], outputs, inputs,
                                {o: produced[o] for o in outputs})
    return result
