"""Timing primitives: a clock that waits for the device, and latency statistics."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np


def no_sync() -> None:
    """CPU backends return when the work is done: nothing to wait for."""


def device_synchronizer(backend) -> Callable[[], None]:
    """What to call before starting and after stopping a clock around `backend`'s work.

    GPU work is queued asynchronously: without torch.cuda.synchronize() a clock measures
    the queueing, not the work. torch is imported here only for GPU backends, and CUDA
    is only touched when it is there, so a CPU benchmark never initialises it.
    """
    if not getattr(backend, "gpu", False):
        return no_sync
    import torch

    if not torch.cuda.is_available():
        return no_sync
    return torch.cuda.synchronize


def timed(call: Callable, sync: Callable[[], None]) -> tuple:
    """(seconds, result) of one call, the device synchronised on both sides."""
    sync()
    start = time.perf_counter()
    result = call()
    sync()
    return time.perf_counter() - start, result


def latency_stats(seconds: list) -> dict:
    """Mean, median, p99, min, max and standard deviation, in milliseconds.

    p99 is interpolated between order statistics: over fewer than 100 runs it sits
    between the two slowest runs, so report the run count beside it.
    """
    if not seconds:
        raise ValueError("latency_stats needs at least one timing")
    ms = np.asarray(seconds, dtype=float) * 1000.0
    return {
        "runs": len(ms),
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "stdev_ms": float(statistics.stdev(ms)) if len(ms) > 1 else 0.0,
    }
