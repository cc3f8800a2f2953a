"""Where a failing case breaks: the stage, then the first divergent module or node.

Run once per failing test, on its final shrunk example. The chain

    eager reference -> deploy module in PyTorch -> graph on ONNX Runtime CPU -> backend

is compared link by link with the case's own comparators; the first link that breaks is
the stage: the deploy rewrite (eager vs deploy module), the export (deploy module vs
graph) or the runtime (graph on CPU vs the backend under test). A user's own .onnx with
no deploy builder skips the first link.

Inside the breaking link:
- deploy rewrite: forward hooks on both module trees; the first module (in the order
  outputs are produced) whose output leaves the tensor tolerance while its inputs agree.
- export: the graph is copied (the user's file is never touched) with intermediate
  tensors added as outputs and run on ONNX Runtime CPU; nodes map to modules through
  the scope names the exporter writes (`/stem/stem.0/stem.0.0/Conv` belongs to module
  `stem.0.0`). A module's output is the last node of its scope; a divergence that its
  parent module no longer shows is an artifact of the mapping (a BatchNorm folded into
  the Conv before it) and is passed over.
- runtime: the same intermediate outputs on both ONNX Runtime sessions, node by node.
Where no mapping exists (a graph with no scope names, a TensorRT engine) it says so.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# Intermediate tensors marked as graph outputs at most (memory and time stay bounded).
MAX_MARKED = 3000


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

    def describe(self) -> str:
        chain = "; ".join(f"{l.left} vs {l.right}: {'BREAKS' if l.broken else 'agrees'}" for l in self.links)
        if self.stage is None:
            head = f"stage: not found (every link agrees on this example: {chain})"
        else:
            head = f"stage: the {self.stage} breaks ({chain})"
        lines = [head]
        if self.layer:
            layer = self.layer
            where = f"module '{layer['module']}'" if layer.get("module") is not None else "a node"
            if layer.get("own_code"):
                where = f"module '' (the root: {layer['own_code']})"
            node = f", ONNX node {layer['node']} ({layer['op']})" if layer.get("node") else ""
            cls = f" ({layer['class']})" if layer.get("class") else ""
            inputs = ("its inputs still agree" if layer.get("inputs_agree")
                      else "its inputs already differ")
            lines.append(f"first divergent layer: {where}{cls}{node}: max abs error {layer['error']:.3g} "
                         f"(tolerance {layer['tolerance']}); {inputs}")
        if self.note:
            lines.append(self.note)
        lines.append(f"localised in {self.seconds:.1f}s")
        return "\n".join(lines)

    def to_record(self) -> dict:
        return {"stage": self.stage, "links": [l.__dict__ for l in self.links], "layer": self.layer,
                "note": self.note, "seconds": round(self.seconds, 3)}


# ------------------------------------------------------------------------ tensor helpers

ATOL, RTOL = 1e-4, 1e-4  # the fp32 tensor row: kernels differ by summation order only


def _leaves(value, _path: tuple = ()) -> list:
    """The tensors in a module's inputs or output, in order: tensors, lists, tuples and
    dicts of them, and plain objects holding them (torchvision's ImageList, the
    transform's output: the resized, padded batch). An object is not entered again
    inside itself (a cycle), and plain objects only two levels deep: what a module
    returns, not everything reachable from it."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, dict):
        items = value.values()
    elif (hasattr(value, "__dict__") and sum(not isinstance(v, (list, tuple, dict)) for v in _path) < 2
          and not isinstance(value, (torch.nn.Module, type, types.ModuleType, types.FunctionType,
                                     types.MethodType))):
        items = vars(value).values()
    else:
        return []
    if any(value is outer for outer in _path):
        return []
    return [t for v in list(items) for t in _leaves(v, _path + (value,))]


def _error(a, b) -> float:
    """Max |a - b| beyond atol + rtol|a| (0 when within), inf on a shape mismatch."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    excess = diff - (ATOL + RTOL * np.abs(np.nan_to_num(a)))
    excess = np.nan_to_num(excess, nan=np.inf)
    return float(diff.max()) if (excess > 0).any() else 0.0


def _numpy(tensor):
    return tensor.detach().float().cpu().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()


def capture(module, args) -> dict:
    """{module path: (input leaves, output leaves)} in the order outputs were produced."""
    import torch

    records: dict = {}
    handles = []
    for name, sub in module.named_modules():
        def hook(mod, inputs, output, name=name):
            if name not in records:  # a module called twice: its first call
                records[name] = ([_numpy(t) for t in _leaves(inputs)], [_numpy(t) for t in _leaves(output)],
                                 type(mod).__name__)
        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _align(names_a, names_b) -> dict:
    """Map names of tree A to names of tree B, allowing a wrapper prefix on either side
    (a deploy module that holds the reference as `model`, the exporter's `inner`)."""
    b = set(names_b)

    def variants(name):
        parts = name.split(".") if name else []
        yield name
        for k in range(1, min(3, len(parts)) + 1):
            yield ".".join(parts[k:])

    best, best_score = {}, (-1, -1)
    for prefix in ("", "model.", "inner.", "module.", "inner.model."):
        mapping = {}
        for name in names_a:
            # The whole name under this prefix first; a shortened one only when the whole
            # name has no match under it (a shortened name can hit an unrelated module).
            for v in variants(name):
                if prefix + v in b:
                    mapping[name] = prefix + v
                    break
        exact = sum(1 for name, mapped in mapping.items() if mapped == prefix + name)
        if (exact, len(mapping)) > best_score:
            best, best_score = mapping, (exact, len(mapping))
    return best


def first_divergent_module(reference_records: dict, deploy_records: dict) -> Optional[dict]:
    """First module in the deploy module's output order whose output leaves the tolerance
    while its inputs agree; None when every shared module agrees."""
    mapping = _align(list(deploy_records), list(reference_records))
    for name, (inputs, outputs, cls) in deploy_records.items():
        ref_name = mapping.get(name)
        if ref_name is None or not outputs:
            continue
        ref_inputs, ref_outputs, _ = reference_records[ref_name]
        errors = [_error(r, d) for r, d in zip(ref_outputs, outputs)]
        if len(ref_outputs) != len(outputs):
            errors.append(float("inf"))
        if max(errors, default=0.0) == 0.0:
            continue
        input_errors = [_error(r, d) for r, d in zip(ref_inputs, inputs)]
        inputs_agree = len(ref_inputs) == len(inputs) and max(input_errors, default=0.0) == 0.0
        if not inputs_agree and name:  # not the first: the difference came from before it
            continue
        shared = sum(1 for n in deploy_records if n and n in mapping)
        found = {"module": name, "class": cls, "error": max(errors), "inputs_agree": inputs_agree,
                 "tolerance": f"atol {ATOL:g} + rtol {RTOL:g}", "how": "forward hooks on both module trees"}
        if not name:
            # Every shared submodule agrees and the whole differs: the deploy module's own
            # forward() code (a decode, a prior grid, a gather) is where it breaks.
            found["own_code"] = f"the deploy module's own forward(), outside its submodules ({shared} shared submodules agree)"
        return found
    return None


# --------------------------------------------------------------------------- ONNX side


def node_scope(node_name: str) -> Optional[str]:
    """The module path the TorchScript-based exporter encoded in a node's name:
    '/stem/stem.0/stem.0.0/Conv' -> 'stem.0.0'; '/Cast' -> '' (the root); None if the
    name has no scope form."""
    if not node_name.startswith("/"):
        return None
    parts = node_name.strip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def run_with_intermediates(onnx_path, feed: dict, names: list, providers=("CPUExecutionProvider",)) -> dict:
    """Outputs of the graph plus the tensors `names`, from a copy of the graph in memory."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    # Marked outputs must keep their meaning: no fusion may swallow them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    wanted = [o.name for o in session.get_outputs()]
    inputs = {i.name: feed[i.name] for i in session.get_inputs()}
    return dict(zip(wanted, session.run(wanted, inputs)))


def _reads_the_feed(inputs: list, feed: dict) -> bool:
    """Every input leaf is one of the feed's arrays, or one image of a feed's batch."""
    arrays = [np.asarray(value) for value in feed.values()]

    def is_fed(leaf) -> bool:
        for array in arrays:
            if leaf.shape == array.shape and _error(array, leaf) == 0.0:
                return True
            if leaf.shape == array.shape[1:] and any(_error(image, leaf) == 0.0 for image in array):
                return True
        return False

    return bool(inputs) and all(is_fed(leaf) for leaf in inputs)


def first_divergent_node(onnx_path, feed: dict, deploy_records: dict) -> tuple[Optional[dict], str]:
    """Deploy module (hooks) against the graph (intermediate outputs) by scope names."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    scoped = [(node, node_scope(node.name)) for node in graph.node]
    if not any(scope for _, scope in scoped):
        return None, ("the graph's node names carry no module scopes (not exported by torch.onnx, or renamed): "
                      "no mapping from nodes to PyTorch modules; the export link cannot be searched inside")
    # Each module's output: the last node (graph order is topological) inside its scope.
    last_node: dict = {}
    for node, scope in scoped:
        if scope is None:
            continue
        parts = scope.split(".") if scope else []
        for k in range(len(parts) + 1):
            last_node[".".join(parts[:k])] = node
    graph_modules = list(last_node)
    mapping = _align(list(deploy_records), graph_modules)
    chosen = {name: last_node[g] for name, g in mapping.items() if name and deploy_records[name][1]}
    marked = [n.output[0] for n in chosen.values() if n.output][:MAX_MARKED]
    values = run_with_intermediates(onnx_path, feed, marked)
    verdicts = {}
    for name, node in chosen.items():
        tensor = values.get(node.output[0]) if node.output else None
        if tensor is None:
            continue
        # The scope's last node must be one of the module's outputs: one of the same rank
        # (a size of it may differ: that is a divergence). None of that rank: the node is
        # something else the module computed (e.g. the transform's image sizes after its
        # padded batch), so the module stays unmapped rather than blamed.
        outputs = [o for o in deploy_records[name][1] if np.ndim(o) == np.ndim(tensor)]
        if not outputs:
            continue
        verdicts[name] = (min(_error(o, tensor) for o in outputs), node)
    previous_ok, first = None, True
    for name in deploy_records:  # torch's output order: topological
        if name not in verdicts:
            continue
        error, node = verdicts[name]
        if error == 0.0:
            previous_ok, first = name, False
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if parent in verdicts and verdicts[parent][0] == 0.0:
            first = False
            continue  # the parent agrees: a mapping artifact (e.g. a folded BatchNorm), not a divergence
        # No mapped module before it: its inputs agree when they are the feed itself, which
        # both sides read (torchvision's transform takes the images of the batch one by one).
        inputs_agree = previous_ok is not None or (first and _reads_the_feed(deploy_records[name][0], feed))
        return ({"module": name, "class": deploy_records[name][2], "node": node.name, "op": node.op_type,
                 "error": error, "inputs_agree": inputs_agree,
                 "tolerance": f"atol {ATOL:g} + rtol {RTOL:g}",
                 "how": f"graph copy with {len(marked)} intermediate outputs, nodes mapped by scope name",
                 "last_agreeing_module": previous_ok}, "")
    return None, f"all {len(verdicts)} mapped modules agree; the difference arises in unscoped nodes"


def first_divergent_node_between_runtimes(onnx_path, feed, providers_a, providers_b) -> tuple[Optional[dict], str]:
    """Graph on one ONNX Runtime provider against another, node by node."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [out for node in graph.node for out in node.output if out][:MAX_MARKED]
    a = run_with_intermediates(onnx_path, feed, names, providers_a)
    b = run_with_intermediates(onnx_path, feed, names, providers_b)
    for node in graph.node:
        outs = [o for o in node.output if o in a and o in b]
        if not outs:
            continue
        error = max(_error(a[o], b[o]) for o in outs)
        if error > 0.0:
            inputs_agree = all(_error(a[i], b[i]) == 0.0 for i in node.input if i in a and i in b)
            if inputs_agree:
                return ({"module": node_scope(node.name), "node": node.name, "op": node.op_type, "error": error,
                         "inputs_agree": True, "tolerance": f"atol {ATOL:g} + rtol {RTOL:g}",
                         "how": "intermediate outputs on both runtimes"}, "")
    return None, "no single node diverges with agreeing inputs"


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
    try:
        if result.stage == "deploy rewrite":
            reference_records = capture(case.build_reference().eval(), args)
            deploy_records = capture(case.build_deploy(target).eval(), args)
            result.layer = first_divergent_module(reference_records, deploy_records)
            if result.layer is None:
                result.note = "no shared module diverges: the difference is in code outside the modules both trees share"
        elif result.stage == "export":
            module = case.build_deploy(target).eval()
            deploy_records = capture(module, args)
            result.layer, result.note = first_divergent_node(onnx_for(case, target, pool.context), feed,
                                                             deploy_records)
        elif result.stage == "runtime" and backend.name.startswith("onnxrt-"):
            runner = pool.get(case, backend, target)
            providers = getattr(runner, "providers", None)
            if providers:
                result.layer, result.note = first_divergent_node_between_runtimes(
                    onnx_for(case, target, pool.context), feed, ["CPUExecutionProvider"], providers)
        else:
            result.note = f"no layer-level search inside {backend.name} (no intermediate outputs to read)"
    except Exception as error:  # localisation is a diagnosis: it must never hide the failure itself
        result.note = f"layer search failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result.seconds = time.perf_counter() - start
    return result
