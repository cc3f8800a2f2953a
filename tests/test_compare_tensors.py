"""The raw tensor comparator: order of checks, NaN, tolerances, the needed-atol figure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import ANY, TOLERANCES, Tolerance, lookup
from deploy_parity.compare.verdict import Verdict

TOL = lookup("tensor", "onnxrt-cpu", "fp32")
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
                    elements=st.floats(-100, 100, width=32))


@given(arrays)
def test_identical_passes_and_reports_zero_error(a):
    result = compare_tensors(a, a.copy(), TOL, "out")
    assert result.verdict == Verdict.PASS
    assert result.metrics["max_abs"] == 0.0


@given(arrays, st.data())
def test_nan_anywhere_fails(a, data):
    index = data.draw(st.tuples(*(st.integers(0, s - 1) for s in a.shape)))
    b = a.copy()
    b[index] = np.nan
    assert compare_tensors(a, b, TOL, "out").verdict == Verdict.FAIL
    assert compare_tensors(b, a, TOL, "out").verdict == Verdict.FAIL  # NaN in the reference too
    assert compare_tensors(b, b.copy(), TOL, "out").verdict == Verdict.FAIL  # NaN == NaN is no pass


@given(arrays, st.data())
def test_one_element_beyond_tolerance_fails_and_is_located(a, data):
    index = data.draw(st.tuples(*(st.integers(0, s - 1) for s in a.shape)))
    b = a.copy()
    b[index] += 1.0 + abs(float(a[index])) * 1e-3
    result = compare_tensors(a, b, TOL, "out")
    assert result.verdict == Verdict.FAIL
    assert str(tuple(int(i) for i in index)) in result.message
    assert result.metrics["atol_needed"] > TOL["atol"]


def test_shape_mismatch_fails_before_values():
    result = compare_tensors(np.zeros((2, 3)), np.zeros((3, 2)), TOL, "dets")
    assert result.verdict == Verdict.FAIL and "shape (3, 2) != reference (2, 3)" in result.message


def test_empty_against_empty_is_vacuous():
    assert compare_tensors(np.zeros((0, 4)), np.zeros((0, 4)), TOL, "boxes").verdict == Verdict.VACUOUS


def test_every_table_row_gives_a_reason():
    for key, row in TOLERANCES.items():
        assert isinstance(row, Tolerance) and len(row.reason) > 20, key


def test_override_is_visible_in_the_source():
    overrides = {("tensor", ANY, "fp32"): Tolerance({"atol": 1e-2}, "bicubic resize differs between runtimes")}
    resolved = lookup("tensor", "onnxrt-cpu", "fp32", overrides, model="m")
    assert resolved["atol"] == 1e-2 and resolved["rtol"] == TOL["rtol"]
    assert "override by model m" in resolved.source and "bicubic" in resolved.reason


def test_missing_row_says_where_to_add_it():
    with pytest.raises(KeyError, match="add a row to deploy_parity/compare/tolerances.py"):
        lookup("histogram", "onnxrt-cpu", "fp32")
