"""Strategies draw only accepted shapes, cover rectangles, and replay exactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_parity.contracts.bounds import ShapeBounds, case_bounds
from deploy_parity.errors import HarnessError
from deploy_parity.registry import build_registry
from deploy_parity.strategies import ParityExample, export_size_example, parity_examples, square_control

BOUNDS = [
    ShapeBounds(min_side=64, max_side=320, multiple_of=32, max_aspect=4.0, max_batch=4),
    ShapeBounds(min_side=33, max_side=257, multiple_of=1, max_aspect=2.5, max_batch=1),
    ShapeBounds(min_side=64, max_side=320, multiple_of=32, max_aspect=4.0, max_batch=2, fixed_height=160,
                fixed_width=224),
]


@pytest.mark.parametrize("bounds", BOUNDS, ids=["stride32", "any-size", "fixed"])
def test_every_drawn_example_is_accepted(bounds):
    case = build_registry().get("pose-rtmo")

    @settings(max_examples=150, derandomize=True)
    @given(parity_examples(case, bounds))
    def check(example):
        assert not bounds.why_not(example.height, example.width, example.batch), example
        assert example.dtypes[0] in case.inputs[0].dtypes

    check()


def test_rectangles_extreme_aspects_and_odd_sizes_come_up():
    seen = []

    case = build_registry().get("pose-rtmo")

    @settings(max_examples=300, derandomize=True)
    @given(parity_examples(case, BOUNDS[1]))
    def collect(example):
        seen.append((example.height, example.width))

    collect()
    assert sum(h != w for h, w in seen) > len(seen) / 2
    assert any(max(h, w) / min(h, w) > 2.0 for h, w in seen)
    assert any(h % 2 or w % 2 for h, w in seen)  # non-multiples where the model takes any size


def test_controls_are_the_square_and_export_size():
    case = build_registry().get("pose-rtmo")
    bounds = case_bounds(case)
    square = square_control(case, bounds)
    assert (square.height, square.width, square.batch) == (192, 192, 1)
    export = export_size_example(case, bounds)
    assert (export.height, export.width) == (case.sizes.export_height, case.sizes.export_width)


@given(st.builds(ParityExample, st.integers(1, 999), st.integers(1, 999), st.integers(1, 8),
                 st.tuples(st.sampled_from(["float32", "uint8", "int64"])), st.integers(0, 2**16)))
def test_replay_round_trips(example):
    assert ParityExample.parse(example.replay_arg()) == example


def test_bad_replay_says_what_it_expects():
    with pytest.raises(HarnessError, match="expected 'h=H,w=W,batch=B,dtypes=D1\\+D2,seed=S'"):
        ParityExample.parse("h=1,w=2")


def test_drawn_examples_do_not_depend_on_which_local_modules_were_imported(tmp_path, monkeypatch):
    """Hypothesis draws now and then a literal found in the process's "local" modules; the
    harness empties that pool (hypothesis_profiles.steady_generation), else a run of one
    model drew other sizes than a run of the zoo, and --shard could not reproduce the
    unsharded run (detr-tiny drew heights 196 against 200 before this was fixed)."""
    case = build_registry().get("detr-tiny")
    bounds = case_bounds(case)

    def draws():
        seen = []

        @settings(max_examples=60, derandomize=True, database=None)
        @given(parity_examples(case, bounds))
        def collect(example):
            seen.append(example)

        collect()
        return seen

    before = draws()
    # A module full of numbers Hypothesis could take as constants: every side step and seed in range.
    module = tmp_path / "many_constants.py"
    steps = range(bounds.min_side, bounds.max_side + 1)
    module.write_text("VALUES = [" + ", ".join(str(v) for v in [*steps, *range(0, 300)]) + "]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("many_constants")
    assert draws() == before
