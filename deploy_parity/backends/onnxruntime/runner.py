"""ONNX Runtime runner. The session is built on activate from a path (loader split).

Provider set-up (what a provider needs loaded, whether it really opens) is providers.py.

Whether a provider can run is known only from an opened session:
`get_available_providers()` lists what the installed build was compiled with
(onnxruntime-gpu lists CUDA and TensorRT everywhere), even where their libraries do not
load; ONNX Runtime then logs the failure and runs the session on the CPU.
`providers.open_provider()` opens a one-node graph built in memory with the provider and reads
`session.get_providers()`; `load_session()` refuses a session whose first provider is
not the one asked for.

An opened session still does not say which nodes each provider runs: TensorRT's provider
takes only the subgraphs TensorRT supports and leaves the rest to the next provider.
For such a provider (`required_provider`) the runner profiles its session's first run
(placement.py) and refuses the session when that provider ran none of the graph.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

from deploy_parity.contracts import DimRange, TensorMeta
from deploy_parity.errors import ArtifactError, BackendUnavailable
from deploy_parity.backends.onnxruntime.placement import Placement, enable_profiling, read_placement, require_placement
from deploy_parity.backends.onnxruntime.providers import GPU_STACK_HINT, TRT_PROVIDER, prepare_providers
from deploy_parity.backends.runner import Runner

# ONNX Runtime type strings -> numpy dtype names.
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

# Providers that take only the subgraphs they support and hand the rest to the next
# provider: a result counts as theirs only where a run shows they ran part of the graph.
PARTITIONING_PROVIDERS = (TRT_PROVIDER,)


def load_session(path: Path, providers: Sequence, profile_dir: Optional[Path] = None):
    """Open an ONNX Runtime session, turning every failure into an ArtifactError/BackendUnavailable.
    `profile_dir`: profile the session into that folder (placement.py), until end_profiling()."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "ONNX file not found", "export it first or fix the model case's onnx_path")
    wanted = [p if isinstance(p, str) else p[0] for p in providers]
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailable(f"ONNX Runtime provider(s) {missing} not available (have {available}); {GPU_STACK_HINT}")
    prepare_providers(wanted)
    options = ort.SessionOptions()
    # Fixed thread count: results and timings do not depend on the host's core count.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if profile_dir is not None:
        enable_profiling(options, profile_dir)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise ArtifactError(path, f"ONNX Runtime cannot load it: {exc}".splitlines()[0]) from exc
    # ORT silently falls back to CPU when a provider fails to initialise: refuse that.
    active = session.get_providers()
    if wanted[0] not in active:
        raise BackendUnavailable(f"ONNX Runtime fell back to {active} instead of {wanted[0]} for {path.name}: "
                                 f"the provider's libraries did not load (ONNX Runtime's log above says which)")
    return session


class OnnxRuntimeRunner(Runner):
    """Runs an .onnx file with the given providers.

    The contract is read from the graph (names, dtypes, static dims). Symbolic dims
    (dynamic batch/H/W) are bounded by the model case's `dim_bounds`, because ONNX
    records no range for them.

    `required_provider`: the provider that must run part of the graph for a result to count
    as its own; by default the first provider when it partitions the graph (TensorRT), else
    none. Each session's first successful run is profiled, once: the provider ran none of the
    graph -> that infer and every later one raise ArtifactError; some -> `placement` and
    `placement_note` (one line: partitions, coverage, what fell back where) say how much.
    """

    def __init__(
        self,
        name: str,
        onnx_path: Path,
        providers: Sequence = ("CPUExecutionProvider",),
        output_names: Optional[Sequence[str]] = None,
        dim_bounds: Optional[Mapping[str, TensorMeta]] = None,
        backend: str = "onnxrt-cpu",
        precision: str = "fp32",
        required_provider: Optional[str] = None,
    ):
        super().__init__(name, backend, precision, output_names)
        self.onnx_path = Path(onnx_path)
        self.providers = list(providers)
        self.dim_bounds = dict(dim_bounds or {})
        self.session = None
        first = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
        self.required_provider = required_provider or (first if first in PARTITIONING_PROVIDERS else None)
        self.placement: Optional[Placement] = None
        self.placement_note = ""
        self._profile_dir: Optional[Path] = None  # set while the session is profiled
        self._refusal = ""  # the rule's verdict on this session's placement, repeated on every infer

    def activate_impl(self):
        self.placement, self.placement_note, self._refusal = None, "", ""
        if self.required_provider is not None:
            self._profile_dir = Path(tempfile.mkdtemp(prefix="ort-placement-"))
        try:
            self.session = load_session(self.onnx_path, self.providers, profile_dir=self._profile_dir)
            self.adopt_output_names([o.name for o in self.session.get_outputs()], self.onnx_path, "graph")
        except BaseException:
            self.deactivate_impl()
            raise

    def get_input_metadata_impl(self):
        metas = {}
        for arg in self.session.get_inputs():
            if arg.type not in ORT_TYPES:
                raise ArtifactError(self.onnx_path, f"input {arg.name} has unsupported type {arg.type}")
            bounds = self.dim_bounds.get(arg.name)
            shape = []
            for axis, dim in enumerate(arg.shape):
                if isinstance(dim, int):
                    shape.append(dim)
                elif bounds is not None and axis < len(bounds.shape) and isinstance(bounds.shape[axis], DimRange):
                    shape.append(bounds.shape[axis])
                else:
                    shape.append(dim)
            metas[arg.name] = TensorMeta(arg.name, (ORT_TYPES[arg.type],), tuple(shape))
        return metas

    def infer_impl(self, feed):
        if self._refusal:
            raise ArtifactError(self.onnx_path, self._refusal)
        values = self.session.run(self.output_names, dict(feed))
        if self._profile_dir is not None:
            self._measure_placement()
        return dict(zip(self.output_names, values))

    def _measure_placement(self):
        """After the session's first successful run: stop profiling (later runs are not
        recorded), read where the run's nodes went, apply the rule."""
        try:
            profile = self.session.end_profiling()
            # The profile ends with this run; a run that raised before it left its own
            # (partial) events, so this run is the profile's last.
            self.placement = read_placement(profile, self.onnx_path, run=-1)
            self.placement_note = require_placement(self.placement, self.required_provider, self.backend)
        except ArtifactError as error:
            self._refusal = error.problem
            raise
        except Exception as error:  # an unreadable profile: the placement is unknown, so is whose result it is
            self._refusal = (f"{self.backend}: where ONNX Runtime ran the graph could not be read from its profile "
                             f"({type(error).__name__}: {error})").splitlines()[0]
            raise ArtifactError(self.onnx_path, self._refusal) from error
        finally:
            self._drop_profile()

    def _drop_profile(self):
        if self._profile_dir is not None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None

    def deactivate_impl(self):
        if self.session is not None and self._profile_dir is not None:
            self.session.end_profiling()  # written now, not when the session is collected after its folder is gone
        self.session = None
        self._drop_profile()
