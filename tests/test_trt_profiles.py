"""Optimization profiles from model cases, and engine shapes back into contracts and bounds.

Pure Python: no TensorRT. The backward direction is fed the shapes an engine reports
(declared shape with -1 for dynamic dims, profile min/max), here those of the profile
we would build it with.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy_parity.contracts.bounds import ShapeBounds, case_bounds
from deploy_parity.case import DeployTarget, InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.contracts import DimRange, TensorMeta, check_feed, metas_for_case
from deploy_parity.errors import HarnessError, UnsupportedShapeError
from deploy_parity.strategies import parity_examples
from deploy_parity.backends.tensorrt.profiles import (
    EngineProfile,
    ShapeRange,
    bounds_from_engine_metas,
    derive_profile,
    engine_tensor_meta,
    metas_from_profile,
    numpy_dtype_for_trt,
)
from models.pose_rtmo import CASE as POSE


def small_case(**changes) -> ModelCase:
    """A detector-like case: dynamic H/W in multiples of 16, batch up to 3, an int size input."""
    fields = dict(
        name="tiny-detector",
        description="profile tests",
        build_reference=lambda: None,
        build_deploy=lambda target: None,
        inputs=(InputSpec("images", "image", ("float32",)), InputSpec("orig_target_sizes", "image_size_wh", ("int32",))),
        outputs=(OutputSpec("boxes", "boxes"),),
        sizes=SizeSpace(min_side=30, max_side=200, multiple_of=16, max_aspect=3.0, export_height=64, export_width=96),
        to_instances=lambda outputs, index, size: None,
        max_batch=3,
        spatial_binding="dynamic",
    )
    fields.update(changes)
    return ModelCase(**fields)


DYNAMIC = DeployTarget(None, None, ("float32", "int32"))


def test_pose_case_per_size_target_pins_height_and_width_and_spans_the_batch():
    target = POSE.deploy_target(192, 256, ("float32",))
    profile = derive_profile(POSE, target)
    assert profile.names() == ["images"]
    assert profile["images"] == ShapeRange((1, 3, 192, 256), (1, 3, 192, 256), (4, 3, 192, 256))


def test_dynamic_case_rounds_sides_inwards_to_the_multiple_and_optimises_for_the_export_size():
    profile = derive_profile(small_case(), DYNAMIC)
    images = profile["images"]
    assert images.min == (1, 3, 32, 32)  # 30 rounded up to a multiple of 16
    assert images.max == (3, 3, 192, 192)  # 200 rounded down
    assert images.opt == (1, 3, 64, 96)  # the export size
    assert profile["orig_target_sizes"] == ShapeRange((1, 2), (1, 2), (3, 2))


def test_fixed_case_builds_only_its_export_size():
    case = small_case(spatial_binding="fixed")
    profile = derive_profile(case, case.deploy_target(64, 96, ("float32", "int32")))
    assert profile["images"].min[1:] == profile["images"].max[1:] == (3, 64, 96)
    assert (profile["images"].min[0], profile["images"].max[0]) == (1, 3)


def test_narrower_bounds_narrow_the_profile():
    case = small_case()
    capped = ShapeBounds(**{**case_bounds(case).__dict__, "max_batch": 1, "max_side": 100})
    profile = derive_profile(case, DYNAMIC, bounds=capped)
    assert profile["images"].max == (1, 3, 96, 96)
    assert profile["orig_target_sizes"].max == (1, 2)


def test_static_dims_of_the_graph_are_pinned():
    graph = {
        "images": TensorMeta("images", ("float32",), (2, 3, "height", "width")),
        "orig_target_sizes": TensorMeta("orig_target_sizes", ("int32",), (2, 2)),
    }
    profile = derive_profile(small_case(), DYNAMIC, graph_metas=graph)
    assert profile["images"].min[0] == profile["images"].max[0] == 2
    assert profile["images"].min[2:] == (32, 32) and profile["images"].max[2:] == (192, 192)


def test_no_side_in_range_is_an_error_not_an_empty_profile():
    # Refused where it is declared (deploy_parity/case.py), before any profile is derived.
    with pytest.raises(HarnessError, match=r"SizeSpace: no side in \[33, 40\] is a multiple of 16"):
        small_case(sizes=SizeSpace(min_side=33, max_side=40, multiple_of=16))


def test_invalid_shape_ranges_are_refused():
    with pytest.raises(HarnessError, match="min <= opt <= max"):
        ShapeRange((1, 3, 64, 64), (1, 3, 32, 64), (1, 3, 64, 64))
    with pytest.raises(HarnessError, match="batch range"):
        EngineProfile((("a", ShapeRange((1, 2), (1, 2), (4, 2))), ("b", ShapeRange((1, 2), (1, 2), (2, 2)))))


def test_onnxruntime_trt_provider_options_spell_the_profile():
    options = derive_profile(small_case(), DYNAMIC).ort_trt_options()
    assert options["trt_profile_min_shapes"] == "images:1x3x32x32,orig_target_sizes:1x2"
    assert options["trt_profile_max_shapes"] == "images:3x3x192x192,orig_target_sizes:3x2"


def test_trt_dtype_names_map_to_numpy_and_unknown_ones_are_refused():
    assert numpy_dtype_for_trt("INT32") == "int32"
    assert numpy_dtype_for_trt("DataType.INT64") == "int64"
    assert numpy_dtype_for_trt("HALF") == "float16"
    with pytest.raises(HarnessError, match="input 'x'.*BF16"):
        numpy_dtype_for_trt("BF16", "x")


def test_engine_shapes_become_dim_ranges_with_the_cases_multiple_and_label():
    case = small_case()
    case_meta = metas_for_case(case, DYNAMIC)["images"]
    meta = engine_tensor_meta("images", "float32", (-1, 3, -1, -1), (1, 3, 32, 32), (3, 3, 192, 192), case_meta)
    batch, channels, height, width = meta.shape
    assert channels == 3
    assert (batch.min, batch.max) == (1, 3) and "engine profile" in batch.label
    assert height == DimRange(32, 192, 16, "height (engine profile)")
    # A dynamic dim whose profile has min == max is static in practice.
    assert engine_tensor_meta("x", "int32", (-1, 2), (2, 2), (2, 2)).shape == (2, 2)


def test_engine_metas_refuse_shapes_outside_the_profile():
    profile = derive_profile(POSE, POSE.deploy_target(192, 256, ("float32",)))
    metas = metas_from_profile(profile, {"images": "float32"})
    check_feed("trt", metas, {"images": np.zeros((4, 3, 192, 256), np.float32)})
    with pytest.raises(UnsupportedShapeError, match="input 'images'.*dimension 0 = 5 outside \\[1, 4\\]"):
        check_feed("trt", metas, {"images": np.zeros((5, 3, 192, 256), np.float32)})
    with pytest.raises(UnsupportedShapeError, match="dimension 3 = 192 must be 256"):
        check_feed("trt", metas, {"images": np.zeros((1, 3, 192, 192), np.float32)})


@pytest.mark.parametrize("target", [DYNAMIC, DeployTarget(64, 96, ("float32", "int32"))], ids=["dynamic", "per-size"])
def test_profile_round_trips_to_the_bounds_it_was_derived_from(target):
    case = small_case(spatial_binding="dynamic" if target.height is None else "per-size")
    profile = derive_profile(case, target)
    metas = metas_from_profile(profile, {"images": "float32", "orig_target_sizes": "int32"},
                               metas_for_case(case, target))
    bounds = bounds_from_engine_metas(case, metas)
    expected = case_bounds(case)
    if target.height is None:
        assert (bounds.min_side, bounds.max_side) == (32, 192)  # the multiples of 16 inside [30, 200]
        assert bounds.fixed_height is None
    else:
        assert (bounds.fixed_height, bounds.fixed_width) == (64, 96)
    assert (bounds.min_batch, bounds.max_batch) == (expected.min_batch, expected.max_batch)
    assert (bounds.multiple_of, bounds.max_aspect) == (expected.multiple_of, expected.max_aspect)
    assert "engine profile" in bounds.source


def test_an_engine_capped_at_batch_one_narrows_the_bounds():
    metas = {
        "images": TensorMeta("images", ("float32",), (1, 3, DimRange(32, 128, 16), DimRange(32, 128, 16))),
        "orig_target_sizes": TensorMeta("orig_target_sizes", ("int32",), (1, 2)),
    }
    bounds = bounds_from_engine_metas(small_case(), metas)
    assert (bounds.min_batch, bounds.max_batch) == (1, 1)
    assert (bounds.min_side, bounds.max_side) == (32, 128)


CAPPED_ENGINE = {
    "images": TensorMeta("images", ("float32",), (DimRange(1, 2, 1, "batch"), 3, DimRange(48, 144, 16, "height"),
                                                  DimRange(48, 144, 16, "width"))),
    "orig_target_sizes": TensorMeta("orig_target_sizes", ("int32",), (DimRange(1, 2, 1, "batch"), 2)),
}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_strategies_drawing_from_engine_bounds_never_draw_a_shape_the_engine_refuses(data):
    bounds = bounds_from_engine_metas(small_case(), CAPPED_ENGINE)
    example = data.draw(parity_examples(small_case(), bounds))
    height, width, batch = example.height, example.width, example.batch
    feed = {
        "images": np.zeros((batch, 3, height, width), np.float32),
        "orig_target_sizes": np.zeros((batch, 2), np.int32),
    }
    check_feed("trt", CAPPED_ENGINE, feed)  # raises if the strategy drew outside the profile
