"""The runner interface every backend implements (Polygraphy's runner shape).

Public methods check state and the feed; subclasses only implement the *_impl methods.
The feed is checked against the backend's own declared inputs before anything runs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Mapping, Optional, Sequence

import numpy as np

from deploy_parity.contracts import TensorMeta, check_feed
from deploy_parity.errors import ArtifactError, EmptyOutputError, HarnessError


class Runner(ABC):
    def __init__(self, name: str, backend: str, precision: str, output_names: Optional[Sequence[str]] = None):
        self.name = name  # e.g. "pose/onnxrt-cpu/fp32/192x320"
        self.backend = backend
        self.precision = precision
        self.output_names = list(output_names) if output_names else None
        self.is_active = False
        # Time spent inside the backend, so a run can report harness overhead.
        self.inference_seconds = 0.0
        self.inference_calls = 0
        self._metadata: Optional[dict] = None

    # ---- lifecycle
    def activate(self) -> "Runner":
        if self.is_active:
            raise HarnessError(f"{self.name}: activate() called twice")
        self.activate_impl()
        self.is_active = True
        self._metadata = dict(self.get_input_metadata_impl())
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        self.deactivate_impl()
        self.is_active = False
        self._metadata = None

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    # ---- contract and inference
    def get_input_metadata(self) -> Mapping[str, TensorMeta]:
        self._require_active()
        return self._metadata

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict:
        self._require_active()
        check_feed(self.name, self._metadata, feed)
        start = time.perf_counter()
        outputs = self.infer_impl(feed)
        self.inference_seconds += time.perf_counter() - start
        self.inference_calls += 1
        self._check_outputs(outputs)
        return outputs

    def adopt_output_names(self, available: Sequence[str], artifact, what: str) -> None:
        """On activate: the requested outputs must be among the artifact's (`what` names it
        in the error: "graph", "engine"); none requested means all of them."""
        available = list(available)
        if self.output_names:
            missing = [n for n in self.output_names if n not in available]
            if missing:
                raise ArtifactError(artifact, f"{what} lacks outputs {missing}; it has {available}")
            extra = [n for n in available if n not in self.output_names]
            if extra:  # never trimmed in silence: an output nothing compares is a finding
                raise ArtifactError(artifact, f"{what} has outputs {extra} the case does not declare (it declares "
                                              f"{self.output_names}); declare them (kind 'raw' compares a tensor) "
                                              f"or remove them from the {what}")
        else:
            self.output_names = available

    def _check_outputs(self, outputs: Mapping[str, np.ndarray]) -> None:
        if not outputs:
            raise EmptyOutputError(f"{self.name}: the backend returned no outputs")
        if self.output_names:
            missing = [n for n in self.output_names if n not in outputs]
            if missing:
                raise EmptyOutputError(
                    f"{self.name}: outputs {missing} missing; expected {self.output_names}, got {list(outputs)}"
                )
        for key, value in outputs.items():
            if not isinstance(value, np.ndarray):
                raise EmptyOutputError(f"{self.name}: output '{key}' is {type(value).__name__}, not an array")

    def _require_active(self):
        if not self.is_active:
            raise HarnessError(f"{self.name}: call activate() before using the runner")

    # ---- backend-specific
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def get_input_metadata_impl(self) -> Mapping[str, TensorMeta]: ...

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict: ...

    def deactivate_impl(self) -> None:
        pass
