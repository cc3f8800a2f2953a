"""The harness's overhead figures (deploy_parity/benchmarks/process.py) in words: one line each."""

from __future__ import annotations


def format_phases(figures: dict) -> str:
    """One line: where a case's time goes, and what was reused."""
    phases, reuse = figures.get("phases"), figures.get("reuse")
    if not phases or not phases.get("cases"):
        return ""
    per_case = ", ".join(f"{name} {ms:.1f}" for name, ms in phases["ms_per_case"].items())
    line = f"ms per case ({phases['cases']} cases): {per_case}"
    if reuse:
        line += (f"; feeds rendered {reuse['feeds_rendered']} for {reuse['feeds_served']} uses "
                 f"({reuse['feeds_distinct']} distinct); runners activated {reuse['runner_activations']} "
                 f"for {reuse['distinct_artifacts']} distinct artifacts")
    return line


def format_overhead(figures: dict) -> str:
    inside = figures["inference_seconds"]
    if figures["workers"]:
        where = (f"wall {figures['wall_seconds']:.1f}s on {figures['workers']} xdist workers "
                 f"({figures['process_seconds']:.1f}s of worker time)")
    else:
        where = f"wall {figures['wall_seconds']:.1f}s"
    if figures["wall_per_backend_second"] is None:
        return f"{where}; no time inside backends"
    return (f"{where}, inside backends {inside:.1f}s: harness overhead ratio "
            f"{figures['wall_per_backend_second']:.2f} ({figures['backend_share']:.0%} of the time inside backends)")
