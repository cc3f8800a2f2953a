"""Module-level search: PyTorch module trees read through forward hooks, against another
module tree (the deploy rewrite) or against the graph's tensors mapped by scope (the
export). A module is named only where its output differs while its inputs agree; a
module whose tensors cannot be read on both sides is passed over, never guessed at."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from deploy_parity.localize.scopes import map_scopes, module_boundaries
from deploy_parity.localize.tensors import Gap, gap, leaves, shape_text, snapshot


@dataclass
class Record:
    inputs: list  # numpy copies of the input leaves
    outputs: list
    cls: str


class Records(dict):
    """{module path: Record}, in the order outputs were produced; `names` holds every
    path of the module tree, a module shared under several names under each of them
    (the graph's scopes name each use); `resizes`, every F.interpolate call in order as
    (innermost module path, input shape, output shape): a resize is no module, and
    "resized to 319x320 in the graph, 320x320 here" is the fact a user needs."""

    names: list = []
    resizes: list = []


def _resize_recorder(torch, stack: list, resizes: list):
    """A TorchFunctionMode noting each F.interpolate's shapes and the module it ran in."""
    from torch.overrides import TorchFunctionMode

    interpolate = torch.nn.functional.interpolate

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if func is interpolate and args and isinstance(result, torch.Tensor):
                resizes.append((stack[-1] if stack else "", tuple(args[0].shape), tuple(result.shape)))
            return result

    return Recorder()


def _enter(stack: list, name: str, module, inputs) -> None:
    stack.append(name)


def _leave(stack: list, module, inputs, output) -> None:  # returns None: the output stays the module's
    if stack:
        stack.pop()


def capture(module, args, float64: bool = False) -> Records:
    """{module path: Record} in the order outputs were produced (a module called twice:
    its first call). float64: the module run as the reference's float64 shadow (the
    model's own rounding is the float32 record's distance from it)."""
    import torch

    from deploy_parity.backends.pytorch.runner import _default_dtype, _float64_shadow

    if float64:
        module = _float64_shadow(module, torch)
        args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    records = Records()
    records.names = [name for name, _ in module.named_modules(remove_duplicate=False)]
    uses: dict = {}
    for _, sub in module.named_modules(remove_duplicate=False):
        uses[id(sub)] = uses.get(id(sub), 0) + 1
    handles = []
    stack: list = []
    records.resizes = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(functools.partial(_enter, stack, name)))
        handles.append(sub.register_forward_hook(functools.partial(_leave, stack)))
        if uses[id(sub)] > 1:
            # One module under several names (Ultralytics' shared default SiLU): its calls
            # cannot be told apart, so it is recorded under none of them.
            continue

        def hook(mod, inputs, output, name=name):
            if name not in records:
                records[name] = Record([snapshot(t, float64) for t in leaves(inputs)],
                                       [snapshot(t, float64) for t in leaves(output)], type(mod).__name__)
        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.inference_mode(), _resize_recorder(torch, stack, records.resizes):
            if float64:
                with _default_dtype(torch, torch.float64):
                    module(*args)
            else:
                module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _own(shadow: Optional[dict], name: str, which: str, index: int):
    if not shadow or name not in shadow:
        return None
    values = getattr(shadow[name], which)
    return values[index] if index < len(values) else None


def align_trees(names_a: list, names_b: list) -> dict:
    """Tree A's module paths -> tree B's, by whole paths only, allowing one holder level on
    either side (a deploy module that keeps the reference as `model` or `detector`)."""
    b = set(names_b)
    tops_a = sorted({n.split(".")[0] for n in names_a if n})
    tops_b = sorted({n.split(".")[0] for n in names_b if n})
    best: dict = {}
    for strip in [""] + [t + "." for t in tops_a]:
        for add in [""] + [t + "." for t in tops_b]:
            mapping = {}
            for name in names_a:
                if not name or not name.startswith(strip):
                    continue
                mapped = add + name[len(strip):]
                if mapped.endswith("."):
                    mapped = mapped[:-1]
                if mapped in b:
                    mapping[name] = mapped
            if len(mapping) > len(best):
                best = mapping
    if "" in names_a and "" in b:
        best.setdefault("", "")
    return best


def _leaves_gap(ours: list, theirs: list, row, own: list) -> tuple[Optional[Gap], bool]:
    """(worst gap, compared) for two recorded leaf lists of one module."""
    if len(ours) != len(theirs):
        return Gap(shapes=((len(ours),), (len(theirs),))), True
    worst = None
    for i, (a, b) in enumerate(zip(ours, theirs)):
        g = gap(a, b, row, own=own[i] if own and i < len(own) else None, sides=("deploy module", "reference"))
        if worst is None or not g.agrees:
            worst = g
            if not g.agrees:
                break
    return worst, worst is not None


def first_divergent_module(reference: dict, deploy: dict, row, reference64: Optional[dict] = None) -> Optional[dict]:
    """The first module in the deploy module's output order whose output leaves its limit
    while its inputs agree; None when every shared module agrees."""
    mapping = align_trees(list(deploy), list(reference))
    for name, record in deploy.items():
        ref_name = mapping.get(name)
        if ref_name is None or not record.outputs:
            continue
        ref = reference[ref_name]
        own_out = reference64[ref_name].outputs if reference64 and ref_name in reference64 else None
        out_gap, _ = _leaves_gap(record.outputs, ref.outputs, row, own_out)
        if out_gap is None or out_gap.agrees:
            continue
        own_in = reference64[ref_name].inputs if reference64 and ref_name in reference64 else None
        in_gap, compared = _leaves_gap(record.inputs, ref.inputs, row, own_in)
        inputs_agree = compared and in_gap.agrees
        if not inputs_agree and name:  # not the first: the difference came from before it
            continue
        found = {"module": name, "class": record.cls, "difference": out_gap.text("deploy module", "reference"),
                 "inputs_agree": inputs_agree, "how": "forward hooks on both module trees"}
        if not name:
            shared = sum(1 for n in deploy if n and n in mapping)
            found["own_code"] = (f"the deploy module's own forward(), outside its submodules ({shared} shared "
                                 "submodules agree)")
        return found
    return None


# ------------------------------------------------------------------ the export: scope mapping


@dataclass
class ModuleInGraph:
    status: str  # "agrees" | "differs" | "unmapped" | "unsure" | "folded"
    gap: Optional[Gap] = None
    node: object = None  # the graph node whose output was compared
    tensor: Optional[str] = None  # the graph tensor that differs


def _judge_leaves(leaves_torch: list, own: Optional[list], tensors: dict, names: list, row,
                  producer: Optional[dict] = None) -> ModuleInGraph:
    """Recorded leaves against the graph tensors `names` (a module's boundary): each float
    leaf against the same-shaped tensors; one of them agreeing is a match. A leaf with no
    tensor of its shape but exactly one float tensor of its rank is a shape difference."""
    values = {n: tensors[n] for n in names if n in tensors}
    compared, worst = 0, None
    for i, leaf in enumerate(leaves_torch):
        if not np.issubdtype(leaf.dtype, np.floating) or leaf.ndim == 0:
            continue
        same = [n for n, v in values.items() if np.shape(v) == leaf.shape and np.issubdtype(np.asarray(v).dtype, np.floating)]
        if same:
            gaps = [(gap(values[n], leaf, row, own=own[i] if own and i < len(own) else None), n) for n in same]
            good = [g for g in gaps if g[0].agrees]
            compared += 1
            if not good:
                g, n = min(gaps, key=lambda item: item[0].error)
                return ModuleInGraph("differs", g, producer.get(n) if producer else None, n)
            best = min((g for g, _ in good), key=lambda g: g.error)
            if worst is None or best.error * worst.limit > worst.error * best.limit:
                worst = best  # the closest call among the leaves that agree
            continue
        rank = [n for n, v in values.items() if np.ndim(v) == leaf.ndim and np.issubdtype(np.asarray(v).dtype, np.floating)]
        if len(rank) == 1:
            n = rank[0]
            return ModuleInGraph("differs", Gap(shapes=(np.shape(values[n]), leaf.shape)),
                                 producer.get(n) if producer else None, n)
    return ModuleInGraph("agrees" if compared else "unmapped", worst)


def reads_the_feed(inputs: list, feed: dict) -> bool:
    """Every input leaf is one of the feed's arrays, or one image of a feed's batch."""
    arrays = [np.asarray(value) for value in feed.values()]

    def same(a, b) -> bool:
        return a.shape == b.shape and np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))

    def is_fed(leaf) -> bool:
        return any(same(array, leaf) or (leaf.shape == array.shape[1:] and any(same(image, leaf) for image in array))
                   for array in arrays)

    return bool(inputs) and all(is_fed(leaf) for leaf in inputs)


def first_divergent_module_in_graph(graph, tensors: dict, deploy: dict, feed: dict, row,
                                    deploy64: Optional[dict] = None) -> tuple[Optional[dict], str]:
    """Deploy module (hooks) against the graph's tensors by scope. Returns (layer, note):
    the module whose output differs while its inputs agree, or None and why not."""
    tensors = {**feed, **tensors}  # the graph's inputs are tensors a module may read
    scopes = map_scopes([n.name for n in graph.node], getattr(deploy, "names", None) or list(deploy))
    if not scopes.scoped:
        return None, ("not localised: the graph's node names carry no module scopes (not exported by torch.onnx, "
                      "or renamed), so no node maps to a PyTorch module")
    if not scopes.resolved:
        return None, (f"not localised: none of the graph's {scopes.scoped} scoped node names resolves to a module "
                      "of the deploy module (another module tree was exported)")
    boundaries = module_boundaries(graph, scopes)
    status = module_outputs_in_graph(boundaries, tensors, deploy, row, deploy64, {o.name for o in graph.output})
    differing = [n for n in deploy if n in status and status[n].status == "differs"]
    if not differing:
        agreeing = sum(1 for s in status.values() if s.status == "agrees")
        makers = [repr(n) for n in deploy if n in status and status[n].status == "unsure"]
        where = (f"in the module(s) that make the graph's outputs ({', '.join(makers[:3])}), whose outputs the case's "
                 "comparators judge, not element by element, or in nodes no module owns" if makers
                 else "in nodes no module owns")
        return None, (f"not localised: all {agreeing} modules whose output could be read in the graph agree; the "
                      f"difference arises {where} ({len(graph.node) - scopes.resolved} of {len(graph.node)} nodes are "
                      "unscoped or unresolved)")
    unsure = []
    for name in differing:
        ancestor = _nearest_mapped_ancestor(name, status)
        if ancestor is not None and status[ancestor].status == "agrees":
            continue  # its enclosing module agrees: the export folded it (a BatchNorm into its Conv), not a break
        b = boundaries[name]
        record = deploy[name]
        inputs = _judge_leaves(record.inputs, deploy64[name].inputs if deploy64 and name in deploy64 else None,
                               tensors, b.inputs, row)
        if inputs.status == "differs":
            # What it reads already differs: made by a node no module owns (a user's inserted
            # node, a deploy-time edit) from tensors that still agree? Then that node is the place.
            found = _unowned_producer(graph, scopes, boundaries, status, inputs, tensors, feed)
            if found is not None:
                return found, ""
        if inputs.status == "agrees" or (inputs.status == "unmapped" and reads_the_feed(record.inputs, feed)):
            found = status[name]
            node = found.node
            layer = {"module": name, "class": record.cls, "difference": found.gap.text("graph", "deploy module"),
                     "inputs_agree": True, "how": f"module outputs read from the graph by scope ({scopes.resolved} "
                                                  f"of {len(graph.node)} nodes mapped)"}
            if node is not None:
                layer.update(node=node.name, op=node.op_type)
            if found.gap.shapes is not None:
                layer["shapes"] = {"graph": list(found.gap.shapes[0]), "deploy module": list(found.gap.shapes[1])}
            resize = _resize_in(name, b.nodes, tensors, getattr(deploy, "resizes", []))
            if resize:
                layer["resize"] = resize
            return layer, ""
        unsure.append((name, inputs.status))
    if not unsure:
        return None, (f"not localised: the {len(differing)} module(s) whose graph output differs each sit inside a "
                      "module whose output agrees (the export folded them, e.g. a BatchNorm into its Conv)")
    name, why = unsure[0]
    return None, (f"not localised: the first module whose output differs, '{name}', has inputs that "
                  f"{'already differ' if why == 'differs' else 'cannot be read in the graph'}, and no module before "
                  "it differs with agreeing inputs")


def module_outputs_in_graph(boundaries: dict, tensors: dict, deploy: dict, row, deploy64=None,
                            graph_outputs=frozenset()) -> dict:
    """{module path: ModuleInGraph} for every recorded module that owns nodes. A module
    that makes the graph's own outputs and differs is "unsure": those outputs are the
    case's, judged by its comparators (detections may come in another order when two
    scores tie), never element by element."""
    status = {}
    for name, record in deploy.items():
        if name not in boundaries or not record.outputs:
            continue
        b = boundaries[name]
        found = _judge_leaves(record.outputs, deploy64[name].outputs if deploy64 and name in deploy64 else None,
                              tensors, b.outputs, row, b.producer)
        if found.status == "differs" and graph_outputs.intersection(b.outputs):
            found.status = "unsure"
        if found.status == "differs" and found.node is not None and _folded(name, found, deploy, boundaries, tensors,
                                                                             row, deploy64):
            found.status = "folded"
        status[name] = found
    return status


def _folded(name: str, found, deploy: dict, boundaries: dict, tensors: dict, row, deploy64) -> bool:
    """The module's graph output is what a module right after it returns, one the graph has
    no node for: the export folded that module (a BatchNorm) into this one (its Conv)."""
    order = list(deploy)
    after = order[order.index(name) + 1:order.index(name) + 4]
    produced = [o for o in found.node.output if o in tensors]
    for other in after:
        if other in boundaries:
            continue
        for i, leaf in enumerate(deploy[other].outputs):
            own = deploy64[other].outputs[i] if deploy64 and other in deploy64 else None
            if any(np.shape(tensors[o]) == leaf.shape and gap(tensors[o], leaf, row, own=own).agrees for o in produced):
                return True
    return False


def _unowned_producer(graph, scopes, boundaries: dict, status: dict, inputs: "ModuleInGraph", tensors: dict,
                      feed: dict) -> Optional[dict]:
    """The node that made a module's differing input, when no module owns it and every
    tensor it reads agrees (a graph input, or the output of a module that agrees)."""
    producer = next((n for n in graph.node if inputs.tensor in n.output), None)
    if producer is None or scopes.module_of.get(producer.name) is not None:
        return None
    initializers = {i.name for i in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    agreeing = {o for name, b in boundaries.items() if status.get(name) is not None
                and status[name].status == "agrees" for o in b.outputs}
    reads = [i for i in producer.input if i and i not in initializers and i not in constants]
    if not reads or not all(i in feed or i in agreeing for i in reads):
        return None
    upstream = next((n for n in graph.node if reads[0] in n.output), None)
    return {"node": producer.name, "op": producer.op_type, "inputs": list(producer.input), "module": None,
            "nearest_scope": scopes.nearest.get(upstream.name) if upstream is not None else None,
            "difference": f"{inputs.tensor}: {inputs.gap.text('graph', 'deploy module')}",
            "inputs_agree": True,
            "how": "no module owns this node; what it reads agrees with the deploy module and what it makes does not"}


def _nearest_mapped_ancestor(name: str, status: dict) -> Optional[str]:
    parts = name.split(".") if name else []
    for k in range(len(parts) - 1, -1, -1):
        parent = ".".join(parts[:k])
        if parent in status and status[parent].status not in ("unmapped", "unsure"):
            return parent
    return None


def _resize_in(name: str, nodes: list, tensors: dict, eager: list) -> str:
    """'the graph resizes 1x3x97x97 to 1x3x319x320 (node /transform/Resize), the deploy module
    to 1x3x320x320': the module's resizes in order, graph against torch, the first pair
    whose output sizes differ; or a graph resize whose result has no torch counterpart."""
    ours = []
    for node in nodes:
        if node.op_type == "Resize" and node.input and node.output:
            src, dst = tensors.get(node.input[0]), tensors.get(node.output[0])
            if src is not None and dst is not None:
                ours.append((node.name, np.shape(src), np.shape(dst)))
    theirs = [(src, dst) for where, src, dst in eager if where == name or where.startswith(name + ".") or not name]
    for (node, src, dst), (eager_src, eager_dst) in zip(ours, theirs):
        if tuple(dst) != tuple(eager_dst):
            return (f"the graph resizes {shape_text(src)} to {shape_text(dst)} (node {node}), the deploy module "
                    f"{shape_text(eager_src)} to {shape_text(eager_dst)}")
    return ""
