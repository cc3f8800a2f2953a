"""ONNX Runtime's execution providers: what each needs loaded, and whether it really opens.

`get_available_providers()` lists what the installed build was compiled with
(onnxruntime-gpu lists CUDA and TensorRT everywhere), even where their libraries do not
load; ONNX Runtime then logs the failure and runs the session on the CPU. Only an opened
session's `get_providers()` tells, so `open_provider()` opens a one-node graph built in
memory with the provider.
"""

from __future__ import annotations

import functools
from typing import Sequence, Tuple

from deploy_parity.errors import GPU_STACK_HINT
from deploy_parity.errors import BackendUnavailable

TRT_PROVIDER = "TensorrtExecutionProvider"


def prepare_providers(wanted: Sequence[str]) -> None:
    """What a provider needs loaded before ONNX Runtime dlopens it: TensorRT's libraries for the TensorRT provider."""
    if TRT_PROVIDER in wanted:
        from deploy_parity.backends.tensorrt.libs import load_tensorrt_libraries

        try:
            load_tensorrt_libraries()
        except Exception as exc:  # an installed but broken TensorRT
            raise BackendUnavailable(f"TensorRT is installed but does not import: {exc}".splitlines()[0]) from exc


def tiny_model_bytes() -> bytes:
    """A one-node ONNX graph (y = relu(x), x float32 [1, 8]) built in memory."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "provider_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # every onnxruntime this harness supports reads IR 8
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def open_provider(provider: str, options: Tuple = ()) -> Tuple[bool, str]:
    """(True, "") if a session really runs on `provider`; else (False, why). Cached per process.

    `options`: the provider options as sorted (key, value) pairs.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed"
    listed = ort.get_available_providers()
    if provider not in listed:
        return False, f"this onnxruntime build ({ort.__version__}) has no {provider} (it lists {listed}): {GPU_STACK_HINT}"
    try:
        prepare_providers([provider])
        session = ort.InferenceSession(tiny_model_bytes(), providers=[(provider, dict(options))])
    except Exception as exc:
        return False, f"a session with {provider} cannot be opened: {exc}".splitlines()[0]
    active = session.get_providers()
    if not active or active[0] != provider:
        libs = ("TensorRT's libnvinfer.so.10 / libnvonnxparser.so.10 (TensorRT 10, the stack's pinned one)"
                if provider == TRT_PROVIDER else "CUDA's and cuDNN's libraries of the onnxruntime-gpu build's CUDA major")
        return False, (f"onnxruntime {ort.__version__} lists {provider} but an opened session runs on {active}: "
                       f"its libraries did not load (it needs {libs}, and ONNX Runtime's log above names the missing one). "
                       "python -m deploy_parity.gpu_stack runtime --stack <cu12|cu13> checks the whole stack")
    return True, ""



# TF32 off: the CUDA provider is an fp32 backend (its tolerance rows are fp32's).
CUDA_PROVIDER = ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})
