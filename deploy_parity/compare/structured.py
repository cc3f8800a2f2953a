"""One image's structured outputs: boxes first, then keypoints and masks over the same matching."""

from __future__ import annotations

from typing import Mapping, Optional

from .boxes import compare_boxes
from .instances import Instances
from .keypoints import compare_keypoints
from .masks import compare_masks
from .tolerances import lookup
from .verdict import Comparison, Verdict, side_name


def _presence_failure(kind, output, ref_value, cand_value, tol) -> Comparison:
    has, lacks = ("reference", "candidate") if ref_value is not None else ("candidate", "reference")
    return Comparison(
        kind=kind,
        output=output,
        verdict=Verdict.FAIL,
        message=f"the {side_name(has)} has {kind} and the {side_name(lacks)} has none",
        tolerance=dict(tol.values),
        tolerance_source=tol.source,
    )


def compare_instances(
    ref: Instances,
    cand: Instances,
    *,
    backend: str,
    precision: str,
    model: str = "",
    overrides: Optional[Mapping] = None,
    score_threshold: Optional[float] = None,
    topk: Optional[int] = None,
    sigmas=None,
    index_wise_keypoints: bool = False,
    label: str = "",
    deltas=None,
    nms_iou_threshold: Optional[float] = None,
) -> list[Comparison]:
    """Compare one image's instances; one Comparison per kind present on either side.

    Keypoints and masks are paired through the box matching, so instance order never
    matters. sigmas=None uses the COCO sigmas for 17 keypoints.
    """

    def name(kind):
        return f"{label} / {kind}" if label else kind

    def tolerance(kind):
        return lookup(kind, backend, precision, overrides, model)

    box_comparison, matching = compare_boxes(
        ref, cand, tolerance("boxes"), score_threshold=score_threshold, topk=topk, output=name("boxes"), nms_iou_threshold=nms_iou_threshold
    )
    comparisons = [box_comparison]
    if deltas is not None:
        deltas.add_boxes(ref, cand, matching, tolerance("boxes"))

    if ref.keypoints is not None or cand.keypoints is not None:
        tol = tolerance("keypoints")
        if ref.keypoints is None or cand.keypoints is None:
            comparisons.append(
                _presence_failure("keypoints", name("keypoints"), ref.keypoints, cand.keypoints, tol)
            )
        else:
            comparisons.append(
                compare_keypoints(
                    ref, cand, matching, tol,
                    sigmas=sigmas, output=name("keypoints"), index_wise=index_wise_keypoints,
                    score_threshold=score_threshold, deltas=deltas,
                )
            )

    if ref.masks is not None or cand.masks is not None:
        tol = tolerance("masks")
        if ref.masks is None or cand.masks is None:
            comparisons.append(_presence_failure("masks", name("masks"), ref.masks, cand.masks, tol))
        else:
            comparisons.append(compare_masks(ref, cand, matching, tol, output=name("masks")))

    return comparisons
