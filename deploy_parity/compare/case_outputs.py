"""Compare one batch of a model case's outputs: structure first, then per image."""

from __future__ import annotations

from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Comparison, Verdict


def compare_case_outputs(case, ref: dict, cand: dict, *, backend: str, precision: str, image_size, batch: int,
                         label: str = "") -> list:
    """Every comparison for one example: output presence, then structured per-sample
    comparison (boxes, keypoints, masks) via the case's `to_instances`, then any raw outputs."""
    from deploy_parity.compare.structured import compare_instances

    comparisons = []
    for name in case.output_names:
        if name not in cand:
            comparisons.append(Comparison("tensor", name, Verdict.FAIL, message=f"{name}: missing from candidate outputs"))
    if comparisons:
        return comparisons
    prefix = f"{label} " if label else ""
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
        )
    for spec in case.outputs:
        if spec.kind == "raw":
            tol = lookup("tensor", backend, precision, case.tolerance_overrides, case.name)
            comparisons.append(compare_tensors(ref[spec.name], cand[spec.name], tol, f"{prefix}{spec.name}"))
    return comparisons


def compare_all_tensors(case, first: dict, second: dict, *, kind: str, backend: str, precision: str) -> list:
    """Raw comparison of every output (determinism: the same backend twice)."""
    tol = lookup(kind, backend, precision, case.tolerance_overrides, case.name)
    return [compare_tensors(first[name], second[name], tol, name, kind=kind) for name in case.output_names]
