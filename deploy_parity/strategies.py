"""Hypothesis strategies built from a model case's declared input space.

Everything a parity example needs is drawn here: image size (H != W, aspect up to the
case's limit, multiples of the stride where the model needs them, any size where it
claims to take any), batch size and one dtype per input. Integers shrink towards the
smallest accepted size and batch, so a failure shrinks to the smallest reproducing case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import strategies as st

from deploy_parity.contracts.bounds import ShapeBounds
from deploy_parity.errors import HarnessError


@dataclass(frozen=True)
class ParityExample:
    height: int
    width: int
    batch: int
    dtypes: tuple
    seed: int

    def replay_arg(self) -> str:
        return f"h={self.height},w={self.width},batch={self.batch},dtypes={'+'.join(self.dtypes)},seed={self.seed}"

    @classmethod
    def parse(cls, text: str) -> "ParityExample":
        """The example a --replay value names. HarnessError (one line, saying what is expected)
        for a value that does not parse; `check_replay` then checks it against the case."""
        expected = "expected 'h=H,w=W,batch=B,dtypes=D1+D2,seed=S'"
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        fields = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise HarnessError(f"--replay {text!r}: {part!r} is not key=value; {expected}")
            fields[key.strip()] = value.strip()
        unknown = sorted(set(fields) - {"h", "w", "batch", "dtypes", "seed"})
        missing = [k for k in ("h", "w", "batch", "dtypes", "seed") if k not in fields]
        if unknown or missing:
            what = ", ".join(([f"unknown {', '.join(unknown)}"] if unknown else [])
                             + ([f"missing {', '.join(missing)}"] if missing else []))
            raise HarnessError(f"--replay {text!r}: {what}; {expected}")
        numbers = {}
        for key in ("h", "w", "batch", "seed"):
            try:
                numbers[key] = int(fields[key])
            except ValueError:
                raise HarnessError(f"--replay {text!r}: {key}={fields[key]!r} is not an integer; {expected}") from None
        return cls(height=numbers["h"], width=numbers["w"], batch=numbers["batch"],
                   dtypes=tuple(d.strip() for d in fields["dtypes"].split("+")), seed=numbers["seed"])

    def check_replay(self, case) -> None:
        """HarnessError (one line) unless `case` declares this example: positive sizes and
        batch, a seed >= 0, one declared dtype per input, a size and batch in its space."""
        text = self.replay_arg()
        for key, value in (("h", self.height), ("w", self.width), ("batch", self.batch)):
            if value < 1:
                raise HarnessError(f"--replay {text!r}: {key}={value}; expected a positive integer")
        if self.seed < 0:
            raise HarnessError(f"--replay {text!r}: seed={self.seed}; expected an integer >= 0")
        names = case.input_names
        if len(self.dtypes) != len(names):
            raise HarnessError(f"--replay {text!r}: {len(self.dtypes)} dtype(s) for model case {case.name}, which has "
                               f"{len(names)} input(s) ({', '.join(names)}); expected one dtype per input, joined "
                               "with +")
        for spec, dtype in zip(case.inputs, self.dtypes):
            if dtype not in spec.dtypes:
                raise HarnessError(f"--replay {text!r}: dtype {dtype!r} for input '{spec.name}' of {case.name}; "
                                   f"expected one it declares: {', '.join(spec.dtypes)}")
        why = case.sizes.why_not(self.height, self.width)
        if why:
            raise HarnessError(f"--replay {text!r}: {self.height}x{self.width} (HxW) is not a size {case.name} "
                               f"declares ({why}); expected {case.sizes.describe()}")
        if self.batch > case.max_batch:
            raise HarnessError(f"--replay {text!r}: batch={self.batch}; {case.name} declares batch 1 to "
                               f"{case.max_batch}")

    def describe(self) -> str:
        return f"{self.height}x{self.width} (HxW) batch {self.batch} dtypes {'/'.join(self.dtypes)} seed {self.seed}"


def _side_steps(bounds: ShapeBounds):
    """(lo, hi): the sides a dynamic artifact takes, in steps of multiple_of."""
    m = bounds.multiple_of
    lo, hi = math.ceil(bounds.min_side / m), bounds.max_side // m
    if lo > hi:
        raise HarnessError(f"no size in {bounds}")
    return lo, hi


def _width_steps(bounds: ShapeBounds, height: int, lo: int, hi: int):
    """(lo, hi) of the width steps `height` allows: within the sides and max_aspect."""
    m = bounds.multiple_of
    return max(lo, math.ceil(height / bounds.max_aspect / m)), min(hi, math.floor(height * bounds.max_aspect / m))


def batch_sizes(bounds: ShapeBounds, min_batch: int = 0):
    return st.integers(max(bounds.min_batch, min_batch), bounds.max_batch)


def input_dtypes(case, bounds: ShapeBounds = None):
    """One dtype per input, from each input's declared dtypes that the artifact takes
    (a user's graph binds one dtype per input; `bounds.dtypes` says which). What the
    artifact leaves out fails the coverage test, never a parity property."""
    options = bounds.input_dtypes(case) if bounds is not None else tuple(tuple(s.dtypes) for s in case.inputs)
    return st.tuples(*(st.sampled_from(choices) for choices in options))


def parity_examples(case, bounds: ShapeBounds, min_batch: int = 1):
    """One example: a size, a batch, one dtype per input, a seed; the strategy every
    property draws from (`@given(parity_examples(...))`, the controls as `@example`s).

    The size: a height in steps of `multiple_of` within the sides, then a width within the
    sides and the aspect limit (so when the model takes any size, odd and non-stride
    sizes come up too); one of `bounds.sizes` when an engine budget fixes them. Built as
    one composite whose parts are made once (the width's range once per height), because
    Hypothesis validates every strategy object it is handed and a property draws hundreds
    of examples: a third of its cost per example."""
    m = bounds.multiple_of
    fixed = bounds.fixed_height is not None
    chosen = st.sampled_from(bounds.sizes) if bounds.sizes and not fixed else None  # shrinks to the first
    if not fixed and chosen is None:
        lo, hi = _side_steps(bounds)
        heights = st.integers(lo, hi)
    widths: dict = {}
    batches = batch_sizes(bounds, min_batch)
    dtype_choices = input_dtypes(case, bounds)
    seeds = st.integers(0, 2**16)

    @st.composite
    def examples(draw):
        if fixed:
            height, width = bounds.fixed_height, bounds.fixed_width
        elif chosen is not None:
            height, width = draw(chosen)
        else:
            height = m * draw(heights)
            if height not in widths:
                widths[height] = st.integers(*_width_steps(bounds, height, lo, hi))
            width = m * draw(widths[height])
        batch = draw(batches)
        dtypes = draw(dtype_choices)
        return ParityExample(height, width, batch, tuple(dtypes), draw(seeds))

    return examples()


def square_control(case, bounds: ShapeBounds) -> ParityExample:
    """The square, batch-1, default-dtype input that hid all five bug classes."""
    side = bounds.fixed_height or case.sizes.export_height or bounds.min_side
    if bounds.fixed_height is not None and bounds.fixed_height != bounds.fixed_width:
        # A fixed rectangular artifact has no square size: its one size is the control.
        return ParityExample(bounds.fixed_height, bounds.fixed_width, bounds.min_batch, bounds.default_dtypes(case), 0)
    return ParityExample(side, side, bounds.min_batch, bounds.default_dtypes(case), 0)


def export_size_example(case, bounds: ShapeBounds) -> ParityExample:
    height = bounds.fixed_height or case.sizes.export_height or bounds.min_side
    width = bounds.fixed_width or case.sizes.export_width or bounds.min_side
    return ParityExample(height, width, bounds.min_batch, bounds.default_dtypes(case), 1)


def refusal_examples(case, bounds: ShapeBounds) -> list:
    """Examples just outside what the artifact accepts: each must be refused clearly.

    One batch beyond the limit (an engine profile capped at batch 1, bug class 3), and
    sizes on every side of the accepted space (bug class 5: an engine built for one size
    fed a larger, a smaller, a transposed or a non-stride size).
    """
    control = export_size_example(case, bounds)
    dtypes = bounds.default_dtypes(case)
    step = max(bounds.multiple_of, 32)
    sizes = []
    if bounds.fixed_height is not None:
        h, w = bounds.fixed_height, bounds.fixed_width
        sizes += [(h + step, w), (h, w + step), (max(1, h - step), w)]
        if h != w:
            sizes.append((w, h))  # the (W, H) mix-up of bug class 1, against a fixed graph
    else:
        sizes += [(bounds.max_side + step, control.width), (control.height, bounds.max_side + step)]
        if bounds.min_side > 1:
            sizes.append((bounds.min_side - 1, control.width))
        # No aspect-ratio probe: max_aspect bounds what the strategies draw, but no graph
        # or engine contract can express it, so a dynamic artifact rightly runs it.
    if bounds.multiple_of > 1:
        sizes.append((control.height + bounds.multiple_of // 2, control.width))
    examples = [ParityExample(control.height, control.width, bounds.max_batch + 1, dtypes, 0)]
    examples += [ParityExample(h, w, bounds.min_batch, dtypes, 0) for h, w in sizes]
    return examples


def spread_sizes(case, bounds: ShapeBounds) -> list:
    """Accepted sizes spread over the space, most telling first: the export size, the
    smallest square, rectangles both ways up to the largest side (within the aspect
    limit), the largest square, the middle. The same on every run and machine."""
    if bounds.fixed_height is not None:
        return [(bounds.fixed_height, bounds.fixed_width)]
    m = bounds.multiple_of
    lo = -(-bounds.min_side // m) * m
    hi = bounds.max_side // m * m
    mid = (lo + hi) // 2 // m * m
    sizes = []
    for h, w in ((case.sizes.export_height or mid, case.sizes.export_width or mid), (lo, lo), (lo, mid),
                 (mid, lo), (mid, hi), (hi, mid), (hi, hi), (mid, mid)):
        while max(h, w) / min(h, w) > bounds.max_aspect:
            h, w = (h, max(lo, w - m)) if w > h else (max(lo, h - m), w)
        if not bounds.why_not(h, w, bounds.min_batch) and (h, w) not in sizes:
            sizes.append((h, w))
    return sizes


def agreement_examples(case, bounds: ShapeBounds, count: int = 8) -> list:
    """A fixed, seeded evaluation set for task agreement: the sizes of `spread_sizes` (those
    of an engine budget when the run draws from one) and the largest batch, `count`
    examples in all (the same on every run and machine)."""
    dtypes = bounds.default_dtypes(case)
    sizes = spread_sizes(case, bounds)
    if bounds.sizes:
        sizes = [size for size in sizes if size in bounds.sizes] or list(bounds.sizes)
    batch = max(bounds.min_batch, min(2, bounds.max_batch))
    examples = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        examples.append(ParityExample(h, w, batch if i % 3 == 2 else bounds.min_batch, dtypes, 7000 + i))
    return examples
