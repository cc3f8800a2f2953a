"""Input contract check before any run: does the artifact take what the case will feed?

`check_feed` (contracts.py) refuses one bad feed at inference time. This module asks
the question once, up front, for a whole (model case, deploy target): per input, the
dtype the case feeds against the dtype the ONNX graph / TensorRT engine binds (an
int64 buffer handed to an int32 binding reads [[w, h]] as [[w, 0]]: bug class 2),
the rank, and the shape against the graph's static dims or the engine's profile
(bug class 5: an engine built for one size). It runs before an engine is built
(minutes saved) and when an engine is loaded, before its first inference.

The ONNX side needs only `onnx.load`: no session, no execution provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Union

from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import DimRange, TensorMeta, dim_why_not, metas_for_case
from deploy_parity.errors import ArtifactError, InputContractError, UnsupportedShapeError


@dataclass(frozen=True)
class ContractProblem:
    input_name: str
    problem: str
    expected: str  # what the graph / engine declares
    got: str  # what the case feeds
    shape: bool = False  # a shape / profile problem: UnsupportedShapeError

    def to_error(self, backend: str, others: Iterable["ContractProblem"] = ()) -> InputContractError:
        problem = self.problem
        others = list(others)
        if others:
            problem += "; also " + "; ".join(f"input '{o.input_name}': {o.problem}" for o in others)
        cls = UnsupportedShapeError if self.shape else InputContractError
        return cls(backend, self.input_name, problem, self.expected, self.got)


# ------------------------------------------------------------------ ONNX graph inputs


def onnx_input_metas(path) -> dict:
    """The graph's inputs as TensorMeta (names, dtype, dims) read with onnx.load alone.

    Static dims are ints, symbolic dims keep their name (str), unknown dims are None.
    Initializers listed as graph inputs (old exporters) are not inputs.
    """
    import onnx
    from onnx import helper

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "ONNX file not found", "export it first or fix the model case's onnx_path")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ArtifactError(path, f"not a readable ONNX model: {exc}".splitlines()[0]) from exc
    initializers = {init.name for init in graph.initializer}
    metas = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise ArtifactError(path, f"input '{value.name}' is not a tensor")
        tensor_type = value.type.tensor_type
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        except Exception as exc:
            raise ArtifactError(
                path, f"input '{value.name}' has element type {tensor_type.elem_type}, which numpy cannot hold"
            ) from exc
        dims = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        metas[value.name] = TensorMeta(value.name, (dtype,), tuple(dims))
    return metas


# ------------------------------------------------------------------------- the check


def _dim_text(dim) -> str:
    return "?" if dim is None else str(dim)


def _axis_problem(axis: int, fed, declared, source: str) -> str:
    """Why the case's declared dim `fed` cannot go into the artifact's dim `declared`."""
    if declared is None or isinstance(declared, str):
        return ""  # the artifact takes any size here
    if isinstance(fed, int):
        why = dim_why_not(declared, fed)
        return f"dimension {axis}: the case feeds {fed}, which the {source} refuses ({why})" if why else ""
    if isinstance(fed, DimRange):
        if isinstance(declared, int):
            if fed.why_not(declared):
                return f"dimension {axis}: the {source} takes only {declared}, which the case never feeds ({fed})"
            return ""
        lo, hi = max(fed.min, declared.min), min(fed.max, declared.max)
        if lo > hi:
            return f"dimension {axis}: the case's {fed} and the {source}'s {declared} do not overlap"
    return ""


def compare_metas(
    expected: Mapping[str, TensorMeta],
    declared: Mapping[str, TensorMeta],
    source: str = "graph",
    examples: Iterable[tuple] = (),
) -> List[ContractProblem]:
    """Every mismatch between what will be fed (`expected`, first dtype of each) and
    what the artifact declares. `examples`: concrete (height, width, batch) sizes to
    check against the artifact's dims (e.g. the export size, or the size about to run)."""
    problems: List[ContractProblem] = []
    for name, want in expected.items():
        have = declared.get(name)
        if have is None:
            problems.append(ContractProblem(name, f"input missing from the {source}",
                                            f"{source} inputs {list(declared)}", f"the case feeds '{name}'"))
            continue
        fed = want.dtypes[0]
        if fed not in have.dtypes:
            note = ""
            if fed == "int64" and "int32" in have.dtypes:
                note = " (an int64 buffer read as int32 turns [[w, h]] into [[w, 0]]: bug class 2)"
            problems.append(ContractProblem(
                name, f"wrong dtype: the {source} binds {' or '.join(have.dtypes)} but the case feeds {fed}{note}",
                " or ".join(have.dtypes), fed))
        if len(have.shape) != len(want.shape):
            problems.append(ContractProblem(
                name, f"wrong rank: the {source} declares rank {len(have.shape)}, the case feeds rank {len(want.shape)}",
                f"rank {len(have.shape)} {have.describe_shape()}", f"rank {len(want.shape)} {want.describe_shape()}"))
            continue
        for axis, (fed_dim, declared_dim) in enumerate(zip(want.shape, have.shape)):
            why = _axis_problem(axis, fed_dim, declared_dim, source)
            if why:
                problems.append(ContractProblem(name, why, f"shape {have.describe_shape()}",
                                                f"shape {want.describe_shape()}", shape=True))
    for name in declared:
        if name not in expected:
            problems.append(ContractProblem(name, f"the {source} has an input the case does not feed",
                                            f"inputs {list(declared)}", f"inputs {list(expected)}"))
    for height, width, batch in examples:
        for name, want in expected.items():
            have = declared.get(name)
            if have is None or len(have.shape) != len(want.shape):
                continue
            shape = (batch, want.shape[1], height, width) if len(want.shape) == 4 else (batch,) + tuple(want.shape[1:])
            for axis, (declared_dim, value) in enumerate(zip(have.shape, shape)):
                if not isinstance(value, int):
                    continue
                why = dim_why_not(declared_dim, value)
                if why:
                    problems.append(ContractProblem(
                        name, f"{height}x{width} (HxW) batch {batch}: dimension {axis} = {value} {why} in the {source}",
                        f"shape {have.describe_shape()}", f"shape {tuple(shape)}", shape=True))
                    break
    return problems


def _declared(artifact, source: Optional[str]):
    if isinstance(artifact, (str, Path)):
        return onnx_input_metas(artifact), source or f"graph {Path(artifact).name}"
    return dict(artifact), source or "engine"


def check_input_contract(
    case: ModelCase,
    target: DeployTarget,
    artifact: Union[str, Path, Mapping[str, TensorMeta]],
    examples: Iterable[tuple] = (),
    source: Optional[str] = None,
) -> List[ContractProblem]:
    """Problems with feeding `case` at `target` to `artifact` (an .onnx path, or the
    TensorMeta an engine publishes). Empty when everything matches."""
    declared, source = _declared(artifact, source)
    return compare_metas(metas_for_case(case, target), declared, source, examples)


def assert_input_contract(
    backend: str,
    case: ModelCase,
    target: DeployTarget,
    artifact: Union[str, Path, Mapping[str, TensorMeta]],
    examples: Iterable[tuple] = (),
    source: Optional[str] = None,
) -> None:
    """Raise InputContractError (UnsupportedShapeError for shapes) naming the first input
    at fault, with the other problems listed in the same message."""
    raise_for(backend, check_input_contract(case, target, artifact, examples, source))


def checked_graph_inputs(backend: str, case: ModelCase, target: DeployTarget, onnx_path) -> dict:
    """The graph's input TensorMeta, once it is shown to take what the case feeds at
    `target` (raises as assert_input_contract). For the TensorRT backends: before a build
    that can take minutes, and the profile is then derived from the same metas."""
    graph = onnx_input_metas(onnx_path)
    assert_input_contract(backend, case, target, graph, source=f"graph {Path(onnx_path).name}")
    return graph


def raise_for(backend: str, problems: List[ContractProblem]) -> None:
    if problems:
        # Dtype / name problems first: they make every shape question moot.
        ordered = sorted(problems, key=lambda p: p.shape)
        raise ordered[0].to_error(backend, ordered[1:])
