"""A per-case time limit: a hung or runaway inference becomes a TIMEOUT verdict.

`time_limit(seconds, what)` arms a real-time interval timer (signal.setitimer); when it
fires, the SIGALRM handler raises `CaseTimeout` on the main thread, wherever Python is
running: inside torch's module code, a case's own to_instances, a comparator, time.sleep.

Limits of the approach, by design of CPython's signal handling: a handler runs between
Python bytecodes, so a C call that never returns to Python (an ONNX Runtime or TensorRT
kernel stuck in a loop, a deadlocked native lock) is interrupted only when it returns;
one that never returns hangs the run as before (pytest's own faulthandler_timeout ini
option can then dump the stacks). Only the main thread can take signals: elsewhere (a
check run from a worker thread) no limit is armed. Nested limits are not stacked: an
inner time_limit inside an armed one leaves the outer limit in charge.

CaseTimeout derives from BaseException, not Exception, so no `except Exception` between
the timer and the check (an exporter wrapping errors, a case's own try/except) can
swallow it; deploy_parity.check turns it into a TIMEOUT result.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from typing import Optional

ENV_VAR = "PARITY_CASE_TIMEOUT"
DEFAULT_CASE_TIMEOUT = 300.0  # seconds; generous: the first case of a model also exports it


class CaseTimeout(BaseException):
    """A check ran past its time limit (raised by the SIGALRM handler)."""

    def __init__(self, seconds: float, what: str = "", where: str = ""):
        self.seconds = seconds
        self.what = what
        self.where = where
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.what or 'the check'} ran past the time limit of {self.seconds:g} s (--case-timeout)"
        if self.where:
            text += f"; interrupted in {self.where}"
        return text


def parse_seconds(value, source: str) -> Optional[float]:
    """A time limit from an option or the environment: seconds > 0, or 0/'off' for none.
    ValueError naming `source` and what is expected otherwise."""
    text = str(value).strip().lower()
    if text in ("0", "off", "none"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{source} {value!r}: expected a number of seconds > 0 (or 0/off for no limit)") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{source} {value!r}: expected a number of seconds > 0 (or 0/off for no limit)")
    return seconds


def default_case_timeout() -> Optional[float]:
    """PARITY_CASE_TIMEOUT, else DEFAULT_CASE_TIMEOUT (ValueError when the variable is malformed)."""
    value = os.environ.get(ENV_VAR)
    if value is None or not value.strip():
        return DEFAULT_CASE_TIMEOUT
    return parse_seconds(value, ENV_VAR)


def _where(frame) -> str:
    if frame is None:
        return ""
    stack = traceback.extract_stack(frame, limit=1)
    if not stack:
        return ""
    last = stack[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def can_interrupt() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str = ""):
    """Raise CaseTimeout inside the block once it has run `seconds` (None: no limit)."""
    if not seconds or not can_interrupt() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(seconds, what, _where(frame))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _disarm(previous)


def _disarm(previous, rearm: float = 0.0) -> None:
    """Stop the timer, put the previous SIGALRM handler back, and re-arm what was left of
    an outer limit (`rearm` seconds)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)
    if rearm > 0:
        signal.setitimer(signal.ITIMER_REAL, rearm)


BUILD_ENV_VAR = "PARITY_BUILD_TIMEOUT"
DEFAULT_BUILD_TIMEOUT = 1800.0  # seconds: a cold export of a big detector, or a TensorRT engine build


def build_timeout() -> Optional[float]:
    """PARITY_BUILD_TIMEOUT, else DEFAULT_BUILD_TIMEOUT (ValueError when malformed)."""
    value = os.environ.get(BUILD_ENV_VAR)
    if value is None or not value.strip():
        return DEFAULT_BUILD_TIMEOUT
    return parse_seconds(value, BUILD_ENV_VAR)


class BuildTimeout(CaseTimeout):
    def describe(self) -> str:
        text = f"{self.what or 'the build'} ran past the build time limit of {self.seconds:g} s ({BUILD_ENV_VAR})"
        return text + (f"; interrupted in {self.where}" if self.where else "")


@contextlib.contextmanager
def outside_case_limit(what: str):
    """Run an export or engine build outside the case's time limit: the case's timer is
    paused (and re-armed with what it had left afterwards) and the build gets its own
    limit, PARITY_BUILD_TIMEOUT. A cold cache then never turns the first case of a model
    into a TIMEOUT, and a finished build is stored before the case's clock runs again."""
    if not can_interrupt():
        yield
        return
    left = signal.getitimer(signal.ITIMER_REAL)[0]
    previous = signal.getsignal(signal.SIGALRM)
    signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = build_timeout()

    def on_alarm(signum, frame):
        raise BuildTimeout(seconds, what, _where(frame))

    if seconds:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _disarm(previous, left)
