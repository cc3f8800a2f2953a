"""Compare one batch of a model case's outputs: structure first, then per image."""

from __future__ import annotations

from deploy_parity.compare.shift import PointDeltas, compare_systematic_shift
from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Comparison, Verdict
from deploy_parity.errors import UnreadOutputError


class ReadTracking(dict):
    """A model's outputs, handed to a case's `to_instances`, that remember which outputs
    it read: by `[key]`, `.get`, `.items()`, `.values()`, copies and `**` unpacking.

    `__iter__` is overridden on purpose: CPython copies a dict subclass that keeps dict's
    own iterator (dict(d), {**d}) without calling `__getitem__`, which would read
    everything unseen; with it overridden, copies go through `keys()` and `__getitem__`.
    """

    def __init__(self, outputs):
        super().__init__(outputs)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __iter__(self):
        return iter(list(super().keys()))

    def _read_all(self):
        self.read.update(super().keys())

    def items(self):
        self._read_all()
        return super().items()

    def values(self):
        self._read_all()
        return super().values()

    def copy(self):
        self._read_all()
        return dict(super().items())

    def pop(self, key, *default):
        self.read.add(key)
        return super().pop(key, *default)

    def setdefault(self, key, default=None):
        self.read.add(key)
        return super().setdefault(key, default)

    def popitem(self):
        self._read_all()
        return super().popitem()

    def __or__(self, other):
        self._read_all()
        return dict(super().items()) | other

    def __ror__(self, other):
        self._read_all()
        return other | dict(super().items())

    def __reduce__(self):  # pickle / copy.copy / copy.deepcopy
        self._read_all()
        return dict, (dict(super().items()),)


def unread_outputs(case, read: set) -> list:
    """Declared outputs no comparator reads: not raw (compared as tensors) and not read by to_instances."""
    return [spec for spec in case.outputs if spec.kind != "raw" and spec.name not in read]


def read_by_to_instances(case, batches, image_size, batch: int) -> set:
    """Names of the outputs `case.to_instances` reads, over every sample of every batch of outputs."""
    read: set = set()
    for outputs in batches:
        for index in range(batch):
            tracked = ReadTracking(outputs)
            case.to_instances(tracked, index, image_size)
            read |= tracked.read
    return read


def check_outputs_compared(case, ref: dict, cand: dict, image_size, batch: int) -> None:
    """Raise UnreadOutputError naming every declared output that nothing compares.

    The suites' coverage test runs it on one reference and one candidate inference
    before any property; compare_case_outputs runs it the first time it sees a case."""
    unread = unread_outputs(case, read_by_to_instances(case, (ref, cand), image_size, batch))
    if unread:
        raise UnreadOutputError(case.name, unread)


# id(case) -> case, for the cases whose to_instances was seen reading every output.
_READ_CHECKED: dict = {}


def compare_case_outputs(case, ref: dict, cand: dict, *, backend: str, precision: str, image_size, batch: int,
                         label: str = "") -> list:
    """Every comparison for one example: output presence, then structured per-sample
    comparison (boxes, keypoints, masks) via the case's `to_instances`, then any raw outputs.

    The first time a case is compared, its to_instances gets outputs that track which
    of them it reads: a declared output that nothing compares is an UnreadOutputError."""
    from deploy_parity.compare.structured import compare_instances

    comparisons = []
    for name in case.output_names:
        if name not in cand:
            comparisons.append(Comparison("tensor", name, Verdict.FAIL, message=f"{name}: missing from candidate outputs"))
    if comparisons:
        return comparisons
    tracking = _READ_CHECKED.get(id(case)) is not case
    if tracking:
        ref, cand = ReadTracking(ref), ReadTracking(cand)
    prefix = f"{label} " if label else ""
    # Signed errors of every matched point of the example, for one systematic-shift check.
    deltas = PointDeltas()
    for index in range(batch):
        comparisons += compare_instances(
            case.to_instances(ref, index, image_size),
            case.to_instances(cand, index, image_size),
            backend=backend,
            precision=precision,
            model=case.name,
            overrides=case.tolerance_overrides,
            score_threshold=case.score_threshold,
            topk=case.topk,
            sigmas=case.keypoint_sigmas,
            index_wise_keypoints=case.index_wise_keypoints,
            label=f"{prefix}sample {index}",
            deltas=deltas,
            nms_iou_threshold=case.nms_iou_threshold,
        )
    shift = compare_systematic_shift(deltas, backend=backend, precision=precision, model=case.name,
                                     overrides=case.tolerance_overrides, output=f"{prefix}all samples / shift")
    if shift is not None:
        comparisons.append(shift)
    if tracking:
        unread = unread_outputs(case, ref.read | cand.read)
        if unread:
            raise UnreadOutputError(case.name, unread)
        _READ_CHECKED[id(case)] = case
    for spec in case.outputs:
        if spec.kind == "raw":
            tol = lookup("tensor", backend, precision, case.tolerance_overrides, case.name)
            comparisons.append(compare_tensors(ref[spec.name], cand[spec.name], tol, f"{prefix}{spec.name}"))
    return comparisons


def compare_all_tensors(case, first: dict, second: dict, *, kind: str, backend: str, precision: str) -> list:
    """Raw comparison of every output (determinism: the same backend twice)."""
    tol = lookup(kind, backend, precision, case.tolerance_overrides, case.name)
    return [compare_tensors(first[name], second[name], tol, name, kind=kind) for name in case.output_names]
