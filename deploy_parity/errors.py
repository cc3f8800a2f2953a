"""Errors the harness raises. Each names the thing that was wrong and what was expected."""


class HarnessError(Exception):
    """Base class for every error the harness raises on purpose."""


class InputContractError(HarnessError):
    """A feed does not match what a backend declares it accepts (name, dtype, rank, shape)."""

    def __init__(self, backend: str, input_name: str, problem: str, expected: str, got: str):
        self.backend = backend
        self.input_name = input_name
        self.problem = problem
        self.expected = expected
        self.got = got
        super().__init__(
            f"[{backend}] input '{input_name}': {problem}; expected {expected}, got {got}. "
            "The harness never casts, pads or truncates a feed: fix the feed or the artifact."
        )


class UnsupportedShapeError(InputContractError):
    """The feed's shape lies outside the shapes a graph, engine or model case accepts.

    Kept distinct so suites can report "refused" (the artifact cannot take this size)
    rather than a parity failure or, worse, a pass.
    """


class ArtifactError(HarnessError):
    """An .onnx or .engine file is missing, unreadable or invalid."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        msg = f"artifact {self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class CacheEntryRebuilt(UserWarning):
    """A cache entry (an exported graph, an engine) failed verification and was built again.
    A warning, not an error: the run goes on with a fresh entry; the message names it and why."""


class EmptyOutputError(HarnessError):
    """A backend returned an output with no elements, or no outputs at all."""


class UnknownNameError(HarnessError):
    """A --model/--backend (or similar) name that nobody registered."""

    def __init__(self, what: str, unknown, known, note: str = ""):
        self.unknown = sorted(unknown)
        self.known = sorted(known)
        super().__init__(
            f"unknown {what} {', '.join(self.unknown)}; known {what}s: {', '.join(self.known)}"
            + (f" ({note})" if note else "")
        )


# What a GPU backend that cannot run tells the user to do (the backends word their skips with it).
GPU_STACK_HINT = ("install a GPU stack: pip install -r requirements/gpu-cu13.txt (or gpu-cu12.txt), then "
                  "pip install --no-deps -e . (docs/gpu.md)")


class BackendUnavailable(HarnessError):
    """A backend's library or device is missing. The message says how to get it."""


class ModelCaseError(HarnessError):
    """A model case description is inconsistent (caught at registration)."""


class UnreadOutputError(ModelCaseError):
    """A declared output that no comparator reads: it would never be checked.

    Outputs of every kind but "raw" are compared only through the case's to_instances;
    one it never reads is silently left out of every verdict.
    """

    def __init__(self, case: str, outputs):
        self.case = case
        self.outputs = [(o.name, o.kind) for o in outputs]
        named = ", ".join(f"'{name}' (kind {kind})" for name, kind in self.outputs)
        if len(self.outputs) == 1:
            text = (f"model case {case}: output {named} is declared but nothing compares it: to_instances never "
                    "reads it; read it there, or declare it kind 'raw' to compare it as a tensor")
        else:
            text = (f"model case {case}: outputs {named} are declared but nothing compares them: to_instances "
                    "never reads them; read them there, or declare them kind 'raw' to compare them as tensors")
        super().__init__(text)


class StorageFull(BaseException):
    """A cache folder ran out of space (or past a file-size limit) while writing an
    artifact. Every later case would fail the same way, so it stops the run once with the
    reason: a BaseException, so neither the check (ERROR per case) nor Hypothesis (a
    failure to shrink, each step another write) takes it for a result."""


NO_SPACE_ERRNOS = (28, 27, 122)  # ENOSPC, EFBIG, EDQUOT


def no_space(error: BaseException) -> bool:
    """Is `error`, or an exception it was raised from, a write that found no room?"""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            return True
        if "No space left on device" in str(error) or "File too large" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
