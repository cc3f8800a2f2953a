"""What the run will do, decided after the stack phase: the GPU plan (the default zoo on the
three torch CUDA backends, the ci profile, full bench settings) or, without CUDA or with
--dry-run, the dry run (one model on CPU backends, a 2-example profile, a tiny bench)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DEADLINE_S = 450.0  # 7.5 minutes, everything included
DRY_DEADLINE_S = 150.0
CUDA_BACKENDS = ("torch-cuda-fp32", "torch-cuda-fp16", "torch-cuda-autocast")
COMPARISON_BACKEND = "onnxrt-cpu"
DEFAULT_ZOO = ("detr-tiny", "keypoint-rcnn", "mask-rcnn", "mask-rcnn-fixed", "pose-rtmo")  # if the probe fails
DRY_MODEL = "pose-rtmo"
SMOKE_PROFILE = "gpu_smoke"  # registered by a generated pytest plugin (dry run)


@dataclass
class Plan:
    dry: bool
    models: list
    parity_backends: list
    bench_backends: list
    comparison_backends: list  # benchmarked after bench_backends, while time is left
    profile: str  # the Hypothesis profile of the parity runs
    bench_args: list  # deploy_parity.benchmarks.latency's options for every pair


def split_values(values) -> list:
    """Repeated, comma-separated option values as one list."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def choose_plan(run) -> Plan:
    """The plan for `run` (a runner.SmokeRun past its stack and deps phases); says it in the
    summary ("mode", "plan", a note when the dry run stands in for a missing GPU) and the log."""
    args, summary = run.args, run.summary
    torch_info = (summary["stack"] or {}).get("torch") or {}
    cuda = bool(torch_info.get("cuda_available"))
    dry = args.dry_run or not (cuda or args.rehearse)
    if not args.dry_run and not cuda and not args.rehearse:
        summary["notes"].append("no CUDA device visible to torch: ran the DRY RUN (CPU backends) instead")
        run.log("no CUDA device: switching to the dry run (CPU backends, tiny budget)")
    summary["mode"] = "dry-run" if dry else ("gpu" if cuda else "rehearsal (GPU plan, no CUDA)")
    models = run.zoo
    if args.models:
        models = [m for v in args.models for m in v.split(",") if m]
    elif dry:
        models = [DRY_MODEL]
    comparison = [] if args.no_comparison else [COMPARISON_BACKEND]
    if dry:
        plan = Plan(dry, models, split_values(args.backends) or ["torch-cpu"],
                    split_values(args.bench_backends) or ["torch-cpu"], comparison, args.profile or SMOKE_PROFILE,
                    ["--warmup", "1", "--runs", "5", "--throughput-runs", "2", "--batches", "1,2"])
    else:
        plan = Plan(dry, models, split_values(args.backends) or list(CUDA_BACKENDS),
                    split_values(args.bench_backends) or list(CUDA_BACKENDS), comparison, args.profile or "ci",
                    ["--warmup", "5", "--runs", "30", "--throughput-runs", "5", "--batches", "1,2,4,8"])
    summary["plan"] = {"models": plan.models, "parity_backends": plan.parity_backends,
                       "bench_backends": plan.bench_backends + plan.comparison_backends,
                       "hypothesis_profile": plan.profile, "bench_args": plan.bench_args}
    run.log(f"plan: {summary['mode']}; models {plan.models}; parity {plan.parity_backends} "
            f"(profile {plan.profile}); bench {plan.bench_backends} + {plan.comparison_backends}")
    return plan
