"""One image's structured outputs: boxes first, then keypoints and masks over the same matching."""

from __future__ import annotations

from typing import Optional

from .boxes import compare_boxes
from .instances import Instances
from .judge import Judge
from .keypoints import compare_keypoints
from .masks import compare_masks
from .noise import NoiseFloor
from .verdict import Comparison, Verdict, side_name, side_names


def _presence_failure(kind, output, ref_value, cand_value, tol) -> Comparison:
    has, lacks = ("reference", "candidate") if ref_value is not None else ("candidate", "reference")
    return Comparison.judged(kind, output, tol, Verdict.FAIL, {},
                             f"the {side_name(has)} has {kind} and the {side_name(lacks)} has none")


def compare_instances(
    ref: Instances,
    cand: Instances,
    judge: Optional[Judge] = None,
    *,
    label: str = "",
    deltas=None,
    noise: Optional[NoiseFloor] = None,
    shadow: Optional[Instances] = None,
    unstable: Optional[dict] = None,
    **settings,
) -> list[Comparison]:
    """Compare one image's instances; one Comparison per kind present on either side.

    judge: the settings of the case and backend (deploy_parity/compare/judge.py); without
    one, `settings` build it (backend=, precision=, score_threshold=, ...).
    noise: the example's noise floor, which widens each limit to its factor x noise.
    shadow: the reference's own shadow-precision answer for this image: where the
    candidate fails against the float32 reference but agrees with the shadow, and the
    reference disagrees with its own shadow there, the reference sits on a rounding knife
    edge and the comparison is AMBIGUOUS with that evidence.
    unstable: NoiseFloor.unstable of this image, {reference instance: {"limits", "why"}}:
    instances whose own float32 / shadow difference stands far beyond the example's. A
    difference on one within its own limits is AMBIGUOUS (a knife edge); beyond them, a
    changed label or a lost instance still fails.

    Keypoints and masks are paired through the box matching, so instance order never
    matters. sigmas=None uses the COCO sigmas for 17 keypoints.
    """
    if judge is None:
        judge = Judge(**settings)
    elif settings:
        raise TypeError(f"compare_instances: pass settings in the judge, not as {sorted(settings)}")
    comparisons = _compare(ref, cand, judge, label, deltas, noise, unstable)
    if shadow is not None and any(c.verdict == Verdict.FAIL for c in comparisons):
        comparisons = _knife_edge(ref, cand, shadow, judge, label, noise, comparisons)
    return comparisons


def _compare(ref, cand, judge: Judge, label, deltas, noise, unstable=None) -> list[Comparison]:
    def name(kind):
        return f"{label} / {kind}" if label else kind

    boxes_tol = judge.tolerance("boxes", noise)
    box_comparison, matching = compare_boxes(
        ref, cand, boxes_tol, score_threshold=judge.score_threshold, topk=judge.topk, output=name("boxes"),
        nms_iou_threshold=judge.nms_iou_threshold, unstable=unstable,
    )
    comparisons = [box_comparison]
    if deltas is not None:
        deltas.add_boxes(ref, cand, matching, boxes_tol)

    if ref.keypoints is not None or cand.keypoints is not None:
        tol = judge.tolerance("keypoints", noise)
        if ref.keypoints is None or cand.keypoints is None:
            comparisons.append(
                _presence_failure("keypoints", name("keypoints"), ref.keypoints, cand.keypoints, tol)
            )
        else:
            comparisons.append(
                compare_keypoints(
                    ref, cand, matching, tol,
                    sigmas=judge.sigmas, output=name("keypoints"), index_wise=judge.index_wise_keypoints,
                    score_threshold=judge.score_threshold, deltas=deltas,
                    visibility_threshold=judge.visibility_threshold, unstable=unstable,
                )
            )

    if ref.masks is not None or cand.masks is not None:
        tol = judge.tolerance("masks", noise)
        if ref.masks is None or cand.masks is None:
            comparisons.append(_presence_failure("masks", name("masks"), ref.masks, cand.masks, tol))
        else:
            comparisons.append(compare_masks(ref, cand, matching, tol, output=name("masks"), unstable=unstable))

    return comparisons


def _knife_edge(ref, cand, shadow, judge, label, noise, comparisons) -> list[Comparison]:
    """Failing comparisons become AMBIGUOUS where the reference's float32 answer is the odd
    one out: it disagrees with its own shadow, and the candidate agrees with the shadow."""
    how = noise.how if noise is not None else "shadow"
    with side_names(f"reference ({how})", side_name("candidate")):
        against_shadow = {c.kind: c for c in _compare(shadow, cand, judge, label, None, noise)}
    with side_names("float32 reference", how):
        reference_vs_shadow = {c.kind: c for c in _compare(ref, shadow, judge, label, None, noise)}
    changed = []
    for comparison in comparisons:
        agrees = against_shadow.get(comparison.kind)
        own = reference_vs_shadow.get(comparison.kind)
        if (comparison.verdict == Verdict.FAIL and agrees is not None and own is not None
                and agrees.verdict in (Verdict.PASS, Verdict.AMBIGUOUS) and own.verdict in (Verdict.FAIL, Verdict.AMBIGUOUS)):
            comparison.verdict = Verdict.AMBIGUOUS
            comparison.evidence = {**comparison.evidence, "knife_edge": {
                "reference_vs_shadow": own.message, "candidate_vs_shadow": agrees.message,
                "against_reference": comparison.message}}
            comparison.message = (
                f"the reference sits on a rounding knife edge: its float32 answer disagrees with its own {how} "
                f"({own.message}), and the {side_name('candidate')} agrees with the {how} ({agrees.message}). "
                f"Against the float32 reference: {comparison.message}")
        changed.append(comparison)
    return changed
