"""Compare one batch of a model case's outputs: structure first, then per image."""

from __future__ import annotations

from deploy_parity.compare.shift import PointDeltas, compare_systematic_shift
from deploy_parity.compare.tensors import compare_tensors
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


def read_by_to_instances(case, outputs, image_size, batch: int) -> set:
    """Names of the outputs `case.to_instances` reads from `outputs`, over every sample."""
    tracked = ReadTracking(outputs)
    for index in range(batch):
        case.to_instances(tracked, index, image_size)
    return tracked.read


def check_outputs_compared(case, ref: dict, cand: dict, image_size, batch: int) -> None:
    """Raise UnreadOutputError naming every declared output that nothing compares.

    Only the candidate's reads count: an output read from the reference alone (a value
    used to decide ties, say) is never checked against anything. The suites' coverage
    test runs this on one inference before any property; compare_case_outputs runs it
    the first time a judge compares a case."""
    unread = unread_outputs(case, read_by_to_instances(case, cand, image_size, batch))
    if unread:
        raise UnreadOutputError(case.name, unread)


def compare_case_outputs(case, ref: dict, cand: dict, *, image_size, batch: int, judge=None, backend: str = None,
                         precision: str = None, label: str = "", noise=None) -> list:
    """Every comparison for one example: output presence, then structured per-sample
    comparison (boxes, keypoints, masks) via the case's `to_instances`, then any raw outputs.

    judge: the case's Judge for this backend (built from backend= and precision= when
    not given). noise: the example's NoiseFloor (deploy_parity/compare/noise.py): every
    limit becomes max(row, factor x noise), and for the float32 rows the shadow's own
    instances are the knife-edge evidence. The first time a judge compares, the case's
    to_instances gets outputs that track which of them it reads: a declared output the
    candidate's reading never touches is an UnreadOutputError."""
    from deploy_parity.compare.judge import Judge
    from deploy_parity.compare.structured import compare_instances

    if judge is None:
        judge = Judge.for_case(case, backend, precision)
    comparisons = []
    for name in case.output_names:
        if name not in cand:
            comparisons.append(Comparison("tensor", name, Verdict.FAIL, message=f"{name}: missing from candidate outputs"))
    if comparisons:
        return comparisons
    tracking = not judge.outputs_checked
    if tracking:
        cand = ReadTracking(cand)
    prefix = f"{label} " if label else ""
    # Only a shadow more exact than the reference (float64 for fp32) can say the
    # reference is the odd one out.
    shadows = noise.instances if noise is not None and noise.instances and noise.precision == "fp32" else None
    # Signed errors of every matched point of the example, for one systematic-shift check.
    deltas = PointDeltas()
    for index in range(batch):
        comparisons += compare_instances(
            case.to_instances(ref, index, image_size),
            case.to_instances(cand, index, image_size),
            judge,
            label=f"{prefix}sample {index}",
            deltas=deltas,
            noise=noise,
            shadow=shadows[index] if shadows else None,
            unstable=noise.unstable.get(index) if noise is not None and noise.precision == "fp32" else None,
        )
    if noise is not None:
        from deploy_parity.compare.noise import robustness

        fragile = robustness(noise, judge.row)
        if fragile is not None:
            comparisons.append(fragile)
    shift = compare_systematic_shift(deltas, judge.row("shift"), output=f"{prefix}all samples / shift")
    if shift is not None:
        comparisons.append(shift)
    if tracking:
        unread = unread_outputs(case, cand.read)
        if unread:
            raise UnreadOutputError(case.name, unread)
        judge.outputs_checked = True
    for spec in case.outputs:
        if spec.kind == "raw":
            tol = judge.tolerance("tensor", noise)
            own = noise.tensors.get(spec.name) if noise is not None else None
            comparisons.append(compare_tensors(ref[spec.name], cand[spec.name], tol, f"{prefix}{spec.name}",
                                               noise=None if own is None else (own, noise.factor, noise.how)))
    return comparisons


def compare_all_tensors(case, first: dict, second: dict, *, kind: str, judge=None, backend: str = None,
                        precision: str = None) -> list:
    """Raw comparison of every output (determinism: the same backend twice)."""
    from deploy_parity.compare.judge import Judge

    tol = (judge or Judge.for_case(case, backend, precision)).row(kind)
    return [compare_tensors(first[name], second[name], tol, name, kind=kind) for name in case.output_names]
