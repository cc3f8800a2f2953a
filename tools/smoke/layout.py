"""Where the smoke run stands: the checkout it tests and the entry script it re-runs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The probe child is this script again with --probe: the same command line as ever in
# logs/probe-*.log, and a child that can hang or crash on a broken CUDA stack alone.
ENTRY_SCRIPT = REPO / "tools" / "gpu_smoke.py"
