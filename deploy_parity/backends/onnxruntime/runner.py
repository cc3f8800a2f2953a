"""ONNX Runtime runner. The session is built on activate from a path (loader split).

Provider set-up (what a provider needs loaded, whether it really opens) is providers.py.

Whether a provider can run is known only from an opened session:
`get_available_providers()` lists what the installed build was compiled with
(onnxruntime-gpu lists CUDA and TensorRT everywhere), even where their libraries do not
load; ONNX Runtime then logs the failure and runs the session on the CPU.
`providers.open_provider()` opens a one-node graph built in memory with the provider and reads
`session.get_providers()`; `load_session()` refuses a session whose first provider is
not the one asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from deploy_parity.contracts import DimRange, TensorMeta
from deploy_parity.errors import ArtifactError, BackendUnavailable
from deploy_parity.backends.onnxruntime.providers import GPU_STACK_HINT, prepare_providers
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


def load_session(path: Path, providers: Sequence):
    """Open an ONNX Runtime session, turning every failure into an ArtifactError/BackendUnavailable."""
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
    ):
        super().__init__(name, backend, precision, output_names)
        self.onnx_path = Path(onnx_path)
        self.providers = list(providers)
        self.dim_bounds = dict(dim_bounds or {})
        self.session = None

    def activate_impl(self):
        self.session = load_session(self.onnx_path, self.providers)
        self.adopt_output_names([o.name for o in self.session.get_outputs()], self.onnx_path, "graph")

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
        values = self.session.run(self.output_names, dict(feed))
        return dict(zip(self.output_names, values))

    def deactivate_impl(self):
        self.session = None
