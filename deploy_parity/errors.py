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


class EmptyOutputError(HarnessError):
    """A backend returned an output with no elements, or no outputs at all."""


class UnknownNameError(HarnessError):
    """A --model/--backend (or similar) name that nobody registered."""

    def __init__(self, what: str, unknown, known):
        self.unknown = sorted(unknown)
        self.known = sorted(known)
        super().__init__(
            f"unknown {what} {', '.join(self.unknown)}; known {what}s: {', '.join(self.known)}"
        )


class BackendUnavailable(HarnessError):
    """A backend's library or device is missing. The message says how to get it."""


class ModelCaseError(HarnessError):
    """A model case description is inconsistent (caught at registration)."""
