"""Declarative description of one model under test: a `ModelCase`.

A case says how to build the reference PyTorch model and the module that gets
exported, what inputs it accepts (names, dtypes, layout, size and batch space), what
its outputs are and how to read them as boxes / keypoints / masks, and, optionally,
which already-exported .onnx / .engine files to load instead of exporting.

Sizes are always (height, width) inside the harness, spelled out by name wherever
they cross an API: the pose bug this harness was built for came from mixing the two.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from deploy_parity.errors import ArtifactError, ModelCaseError, UnsupportedShapeError

# How a deploy graph's spatial size is bound.
#  dynamic:  one graph, dynamic H and W within the case's SizeSpace.
#  per-size: the deploy module is specialised to one input size (precomputed priors, as
#            in MMDeploy static configs); the harness exports one graph per size it tests.
#  fixed:    one graph for one size only (the export size); other sizes are refused.
SPATIAL_BINDINGS = ("dynamic", "per-size", "fixed")

INPUT_ROLES = (
    "image",  # (N, C, H, W)
    "image_size_wh",  # (N, 2) = [width, height] of each image, integer
)

OUTPUT_KINDS = ("boxes", "scores", "labels", "keypoints", "masks", "count", "raw")

# A model case's name becomes part of file names (exported graphs, engines), test ids
# ("name@backend") and option values (--model a,b): it must be safe in all three.
NAME_MAX_LENGTH = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
NAME_RULE = (f"1-{NAME_MAX_LENGTH} characters from letters, digits and . _ + -, starting with a letter or digit "
             "(the name is used in cache file names, test ids and --model)")


def name_problem(name) -> str:
    """Why `name` cannot name a model case ("" when it can)."""
    if not isinstance(name, str):
        return f"is not a string (it is {type(name).__name__})"
    if not name:
        return "is empty"
    for char in name:
        if char in "/\\":
            return f"contains {char!r}, a path separator"
        if not char.isprintable() or char.isspace():
            return f"contains {char!r}, a blank or non-printable character"
    if name.startswith("."):
        return "starts with '.'"
    if len(name) > NAME_MAX_LENGTH:
        return f"is {len(name)} characters long"
    bad = next((c for c in name if not re.fullmatch(r"[A-Za-z0-9._+-]", c)), None)
    if bad is not None:
        return f"contains {bad!r}"
    if not NAME_PATTERN.fullmatch(name):
        return f"starts with {name[0]!r}"
    return ""


def check_name(name, what: str = "model case name") -> str:
    """`name`, or ModelCaseError saying what is wrong with it and what is expected."""
    problem = name_problem(name)
    if problem:
        raise ModelCaseError(f"{what} {name!r} {problem}; expected {NAME_RULE}")
    return name

# What the harness can feed per input role (deploy_parity/inputs.py): images are uint8
# in [0, 255] or floats in [0, 1]; sizes are numbers.
_ROLE_DTYPES = {
    "image": ("uint8 or a float dtype (float32, float16, ...)", lambda dt: dt == np.uint8 or dt.kind == "f"),
    "image_size_wh": ("an integer or float dtype (int64, int32, float32, ...)", lambda dt: dt.kind in "iuf"),
}


@dataclass(frozen=True)
class SizeSpace:
    """Image sizes a model accepts. Strategies draw from it; runners refuse outside it."""

    min_side: int
    max_side: int
    multiple_of: int = 1  # 1 = any size; e.g. 32 for a model whose deploy grid needs it
    max_aspect: float = 4.0
    export_height: int = 0  # the size the model is exported/validated at (an @example)
    export_width: int = 0

    def __post_init__(self):
        for label in ("min_side", "max_side", "multiple_of", "export_height", "export_width"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ModelCaseError(f"SizeSpace: {label} {value!r} is not an integer; expected a whole number of "
                                     "pixels")
        if not (0 < self.min_side <= self.max_side):
            raise ModelCaseError(f"SizeSpace: min_side {self.min_side}, max_side {self.max_side}: expected "
                                 "0 < min_side <= max_side")
        if self.multiple_of < 1:
            raise ModelCaseError(f"SizeSpace: multiple_of {self.multiple_of}: expected an integer >= 1 (1: any size)")
        if isinstance(self.max_aspect, bool) or not isinstance(self.max_aspect, (int, float)) \
                or not (self.max_aspect >= 1.0) or math.isinf(self.max_aspect):
            raise ModelCaseError(f"SizeSpace: max_aspect {self.max_aspect!r}: expected a number >= 1 (the longer side "
                                 "over the shorter one; 1.0 allows square sizes only)")
        lowest = -(-self.min_side // self.multiple_of) * self.multiple_of
        if lowest > self.max_side:
            below = (self.min_side // self.multiple_of) * self.multiple_of
            raise ModelCaseError(f"SizeSpace: no side in [{self.min_side}, {self.max_side}] is a multiple of "
                                 f"{self.multiple_of} (the nearest are {below} and {lowest}); expected a range "
                                 "holding at least one, e.g. widen it or change multiple_of")
        if bool(self.export_height) != bool(self.export_width):
            raise ModelCaseError(f"SizeSpace: export_height {self.export_height}, export_width {self.export_width}: "
                                 "expected both (the export size) or neither")
        if self.export_height and not self.accepts(self.export_height, self.export_width):
            raise ModelCaseError(f"SizeSpace: export size {self.export_height}x{self.export_width} (HxW) is outside "
                                 f"the space: {self.why_not(self.export_height, self.export_width)}; expected "
                                 f"{self.describe()}")

    def accepts(self, height: int, width: int) -> bool:
        return not self.why_not(height, width)

    def why_not(self, height: int, width: int) -> str:
        """Empty if (height, width) is accepted, else the reason."""
        for label, side in (("height", height), ("width", width)):
            if not (self.min_side <= side <= self.max_side):
                return f"{label} {side} outside [{self.min_side}, {self.max_side}]"
            if side % self.multiple_of:
                return f"{label} {side} is not a multiple of {self.multiple_of}"
        aspect = max(height, width) / min(height, width)
        if aspect > self.max_aspect + 1e-9:
            return f"aspect {aspect:.2f} exceeds {self.max_aspect}"
        return ""

    def describe(self) -> str:
        mult = f", multiples of {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"sides in [{self.min_side}, {self.max_side}]{mult}, aspect <= {self.max_aspect}"


@dataclass(frozen=True)
class InputSpec:
    name: str
    role: str
    dtypes: tuple  # accepted numpy dtype names; the first is the export default
    channels: int = 3

    def __post_init__(self):
        if self.role not in INPUT_ROLES:
            raise ModelCaseError(f"input {self.name!r}: role {self.role!r}; expected one of {', '.join(INPUT_ROLES)}")
        if isinstance(self.dtypes, str):
            raise ModelCaseError(f"input {self.name!r}: dtypes {self.dtypes!r} is a string; expected a tuple of dtype "
                                 f"names, e.g. ({self.dtypes!r},)")
        if not self.dtypes:
            raise ModelCaseError(f"input {self.name!r}: no dtypes; expected at least one, e.g. ('float32',)")
        expected, feedable = _ROLE_DTYPES[self.role]
        for dt in self.dtypes:
            try:
                dtype = np.dtype(dt)
            except TypeError:
                raise ModelCaseError(f"input {self.name!r}: dtype {dt!r} is not a numpy dtype name; expected "
                                     f"{expected}") from None
            if not isinstance(dt, str) or dtype.name != dt:
                raise ModelCaseError(f"input {self.name!r}: dtype {dt!r}; expected a dtype name as numpy spells it "
                                     f"({dtype.name!r})")
            if not feedable(dtype):
                raise ModelCaseError(f"input {self.name!r} (role {self.role}): dtype {dt!r} cannot be fed; expected "
                                     f"{expected}")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str
    description: str = ""

    def __post_init__(self):
        if self.kind not in OUTPUT_KINDS:
            raise ModelCaseError(f"output {self.name}: kind {self.kind!r} not in {OUTPUT_KINDS}")


@dataclass(frozen=True)
class DeployTarget:
    """What a deploy module / exported graph is specialised to."""

    height: Optional[int]  # None when the graph is dynamic in H/W
    width: Optional[int]
    dtypes: tuple  # one dtype name per input, in input order

    def key(self) -> str:
        size = "dyn" if self.height is None else f"{self.height}x{self.width}"
        return f"{size}-{'-'.join(self.dtypes)}"


@dataclass(frozen=True)
class Judging:
    """How a case's outputs are judged, beyond the tolerance table. Most cases need none
    of it: an adapter supplies the score threshold and top-k of its own format.

    score_threshold: the model's own confidence cut; instances within the ambiguity
        margin of it may appear on one side only (AMBIGUOUS), and a top-k output with no
        reference instance above it is VACUOUS.
    topk: the fixed number of instances per image, when the model keeps top-k.
    nms_iou_threshold: the model's NMS IoU threshold; a box on one side only that
        overlaps a same-label box of the other at that IoU is AMBIGUOUS (rounding decided
        whether NMS suppressed it).
    keypoint_sigmas: OKS falloff per keypoint (None: COCO's for 17 keypoints).
    index_wise_keypoints: keypoints are paired by position, not through box matching.
    keypoint_visibility_threshold: reference keypoints scoring below it are judged on
        their score only, not their position (None: every keypoint is judged).
    tolerance_overrides: rows replacing fields of the tolerance table for this case,
        keyed like deploy_parity.compare.tolerances.TOLERANCES ((kind, backend,
        precision), "*" for any) or by kind alone, each a Tolerance with its reason:
        {"keypoints": Tolerance({"pixel": 0.05}, "bicubic heatmap resize differs by ...")}
    """

    score_threshold: Optional[float] = None
    topk: Optional[int] = None
    nms_iou_threshold: Optional[float] = None
    keypoint_sigmas: Optional[np.ndarray] = None
    index_wise_keypoints: bool = False
    keypoint_visibility_threshold: Optional[float] = None
    tolerance_overrides: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class ZooEntry:
    """Bookkeeping of the built-in zoo; a user's case needs none of it.

    default: part of the default run (broken variants and slow cases are not).
    source_files: files, besides the deploy module's own source, whose content keys the
        export cache (a decoder the module imports).
    """

    default: bool = True
    source_files: Sequence[str] = ()


class ArtifactOnFirstUse(os.PathLike):
    """A case's own artifact given as a function: made when the harness first opens it
    (os.fspath), not when the cases module is imported, and made again if its file is
    gone. What the function raises or returns wrong is an ArtifactError naming the case."""

    def __init__(self, case_name: str, field_name: str, make: Callable[[], "os.PathLike | str"]):
        self.case_name, self.field_name, self.make = case_name, field_name, make
        self._path: Optional[Path] = None

    def __fspath__(self) -> str:
        if self._path is None or not self._path.is_file():
            where = f"{self.case_name}.{self.field_name} ({getattr(self.make, '__qualname__', self.make)!r})"
            expected = "expected the function to return the path of the file it made"
            try:
                made = self.make()
            except ArtifactError as error:  # already names the file; add the case
                raise ArtifactError(where, f"making it failed: {error}".splitlines()[0]) from error
            except Exception as error:  # noqa: BLE001 - the user's function: said against its case
                raise ArtifactError(where, f"making it raised {type(error).__name__}: {error}".splitlines()[0],
                                    expected) from error
            if not isinstance(made, (str, os.PathLike)):
                raise ArtifactError(where, f"the function returned {type(made).__name__}, not a path", expected)
            if not Path(made).is_file():
                raise ArtifactError(where, f"the function returned {os.fspath(made)}, where there is no file",
                                    expected)
            self._path = Path(made)
        return str(self._path)

    def __str__(self) -> str:
        return self.__fspath__()

    def __repr__(self) -> str:
        return f"ArtifactOnFirstUse({self.case_name!r}, {self.field_name!r}, made={self._path})"


def _artifact_path(case_name: str, field_name: str, value):
    if value is None or value == "":
        return None
    if isinstance(value, ArtifactOnFirstUse):  # dataclasses.replace() passes it on
        return value if value.case_name == case_name else ArtifactOnFirstUse(case_name, field_name, value.make)
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    if callable(value):
        return ArtifactOnFirstUse(case_name, field_name, value)
    raise ModelCaseError(f"{case_name}: {field_name} is of type {type(value).__name__}; expected a path (str or "
                         "pathlib.Path) or a function returning one")


@dataclass
class ModelCase:
    """One model under test: a name, the reference, what gets deployed, its inputs, the
    sizes it takes, and how to read its outputs.

    Required: name, build_reference, inputs, sizes, and either `adapter` (a declared
    output format: deploy_parity.adapters) or `outputs` + `to_instances`.

    build_reference: () -> torch.nn.Module in eval mode, the eager reference.
    build_deploy: (DeployTarget) -> the torch.nn.Module that gets exported; default: the
        reference itself. Not needed when you bring your own `onnx_path`.
    int8_onnx_path: your own INT8 (QDQ or QOperator) graph for the onnxrt-cpu-int8 backend,
        used instead of the one the harness quantizes from the fp32 export.
    onnx_path / engine_path: your own exported artifacts, loaded instead of exporting;
        a path, or a function returning one, called when the harness first opens the
        artifact (so listing or selecting cases makes nothing).
    inputs: declared once; feeds are built from them (images: float32 in [0, 1] or
        uint8 in [0, 255], NCHW, RGB; see deploy_parity/inputs.py), or by `make_feed`.
    max_batch: the largest batch the case declares; artifacts must take it.
    spatial_binding: "dynamic" (one graph, any size in `sizes`), "per-size" (one export
        per size) or "fixed" (the export size only).
    make_feed: (height, width, batch, seed, dtypes) -> {input name: array}, replacing
        seeded noise (e.g. rendered scenes, so a detector has something to find).
    judging: a Judging, when the adapter's defaults are not right.
    zoo: ZooEntry, for the built-in zoo only.
    """

    name: str
    build_reference: Callable[[], "object"]
    inputs: Sequence[InputSpec]
    sizes: SizeSpace
    adapter: Optional[object] = None
    outputs: Optional[Sequence[OutputSpec]] = None
    # (outputs of one batch, sample index, image (height, width)) -> Instances
    to_instances: Optional[Callable] = None
    build_deploy: Optional[Callable[[DeployTarget], "object"]] = None
    onnx_path: "Optional[Path | Callable[[], Path]]" = None
    engine_path: "Optional[Path | Callable[[], Path]]" = None
    int8_onnx_path: "Optional[Path | Callable[[], Path]]" = None
    description: str = ""
    max_batch: int = 1
    spatial_binding: str = "dynamic"
    make_feed: Optional[Callable] = None
    judging: Judging = field(default_factory=Judging)
    zoo: ZooEntry = field(default_factory=ZooEntry)

    def __post_init__(self):
        check_name(self.name)
        if self.spatial_binding not in SPATIAL_BINDINGS:
            raise ModelCaseError(f"{self.name}: spatial_binding {self.spatial_binding!r} not in {SPATIAL_BINDINGS}")
        if self.max_batch < 1:
            raise ModelCaseError(f"{self.name}: max_batch must be >= 1")
        if self.spatial_binding == "fixed" and not self.sizes.export_height:
            raise ModelCaseError(f"{self.name}: a fixed-size case must name its export size")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ModelCaseError(f"{self.name}: duplicate input names {names}; expected each input declared once")
        if not any(i.role == "image" for i in self.inputs):
            raise ModelCaseError(f"{self.name}: needs one input with role 'image'")
        if self.adapter is not None:
            if self.outputs is None:
                self.outputs = tuple(self.adapter.outputs)
            if self.to_instances is None:
                self.to_instances = self.adapter.to_instances
        if not self.outputs or self.to_instances is None:
            raise ModelCaseError(f"{self.name}: declare an adapter (deploy_parity.adapters), or outputs and "
                                 "to_instances")
        outputs = [o.name for o in self.outputs]
        duplicates = sorted({n for n in outputs if outputs.count(n) > 1})
        if duplicates:
            raise ModelCaseError(f"{self.name}: output names {duplicates} declared more than once; expected each "
                                 "output declared once")
        if self.build_deploy is None:
            build = self.build_reference

            def deploy_is_the_reference(target):
                return build()

            deploy_is_the_reference.is_reference = True  # survives dataclasses.replace
            self.build_deploy = deploy_is_the_reference
        self.onnx_path = _artifact_path(self.name, "onnx_path", self.onnx_path)
        self.engine_path = _artifact_path(self.name, "engine_path", self.engine_path)
        self.int8_onnx_path = _artifact_path(self.name, "int8_onnx_path", self.int8_onnx_path)

    # ---- the modules, checked: a build function that returns something else is one line ----

    def reference_module(self):
        """build_reference(), checked to return a torch.nn.Module."""
        return self._checked(self.build_reference(), self.build_reference, "reference")

    def deploy_module(self, target: "DeployTarget"):
        """build_deploy(target), checked to return a torch.nn.Module."""
        return self._checked(self.build_deploy(target), self.build_deploy, "deploy")

    def _checked(self, module, function, what: str):
        import torch

        if not isinstance(module, torch.nn.Module):
            name = getattr(function, "__qualname__", None) or repr(function)
            if getattr(function, "is_reference", False):
                name, what = getattr(self.build_reference, "__qualname__", name), "reference"
            raise ModelCaseError(f"{self.name}: the {what} build function {name} returned {type(module).__name__}; "
                                 "expected a torch.nn.Module (a missing return?)")
        return module

    # ---- what the harness reads (judging knobs fall back to the adapter's) ----

    def _judging_or_adapter(self, knob: str):
        """The case's own Judging value of `knob`, else its adapter's (None when neither sets it)."""
        value = getattr(self.judging, knob)
        return value if value is not None else getattr(self.adapter, knob, None)

    @property
    def score_threshold(self) -> Optional[float]:
        return self._judging_or_adapter("score_threshold")

    @property
    def topk(self) -> Optional[int]:
        return self._judging_or_adapter("topk")

    @property
    def deploy_is_reference(self) -> bool:
        """No deploy builder was given: what gets exported is the reference itself."""
        return getattr(self.build_deploy, "is_reference", False)

    @property
    def nms_iou_threshold(self) -> Optional[float]:
        return self._judging_or_adapter("nms_iou_threshold")

    @property
    def keypoint_sigmas(self):
        return self.judging.keypoint_sigmas

    @property
    def index_wise_keypoints(self) -> bool:
        return self.judging.index_wise_keypoints

    @property
    def tolerance_overrides(self) -> Mapping:
        return self.judging.tolerance_overrides

    @property
    def default(self) -> bool:
        return self.zoo.default

    @property
    def source_files(self) -> Sequence[str]:
        return self.zoo.source_files

    def named_outputs(self, result) -> dict:
        """A torch module's result as {output name: tensor}: through the adapter, which
        knows its format's nesting (a list of per-image dicts, a (prediction, features)
        tuple), else by name for a dict and by position for a tensor or tuple."""
        if self.adapter is not None and hasattr(self.adapter, "named_outputs"):
            return dict(self.adapter.named_outputs(result))
        import torch

        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, dict):
            missing = [n for n in self.output_names if n not in result]
            if missing:
                raise ModelCaseError(f"{self.name}: the module returned a dict without {missing}; it has "
                                     f"{sorted(result)}")
            extra = sorted(str(k) for k in result if k not in self.output_names)
            if extra:  # the reference and the deploy module alike: nothing trimmed in silence
                raise ModelCaseError(f"{self.name}: the module returned outputs {extra} the case does not declare "
                                     f"(it declares {self.output_names}); declare them or stop returning them")
            return {n: result[n] for n in self.output_names}
        result = tuple(result)
        if len(result) != len(self.output_names):
            raise ModelCaseError(f"{self.name}: the module returned {len(result)} outputs, the case declares "
                                 f"{len(self.output_names)} ({self.output_names}); declare an adapter for nested "
                                 "outputs")
        return dict(zip(self.output_names, result))

    @property
    def input_names(self) -> list:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list:
        return [o.name for o in self.outputs]

    def default_dtypes(self) -> tuple:
        return tuple(i.dtypes[0] for i in self.inputs)

    def deploy_target(self, height: int, width: int, dtypes: Sequence[str]) -> DeployTarget:
        """The graph that serves this (size, dtypes): per-size graphs are keyed by size."""
        if self.spatial_binding == "dynamic":
            return DeployTarget(None, None, tuple(dtypes))
        if self.spatial_binding == "fixed":
            return DeployTarget(self.sizes.export_height, self.sizes.export_width, tuple(dtypes))
        why = self.sizes.why_not(height, width)
        if why:  # a per-size deploy module would be built with a grid that cannot fit
            image = next(i.name for i in self.inputs if i.role == "image")
            raise UnsupportedShapeError(self.name, image, f"no deploy graph for {height}x{width}: {why}",
                                        self.sizes.describe(), f"{height}x{width}")
        return DeployTarget(height, width, tuple(dtypes))
