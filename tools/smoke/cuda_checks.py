"""torch's build and devices, and a few CUDA sanity checks the harness depends on (TF32
switch, fp16 conv, autocast, torchvision NMS in half). Runs inside the probe child: a
broken CUDA stack may hang or crash here without costing the run."""

from __future__ import annotations

import sys
import time

from .layout import REPO


def probe_torch() -> dict:
    import torch

    info = {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": bool(torch.cuda.is_available()), "threads": torch.get_num_threads(), "checks": {}}
    for label, read in (("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                        ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
                        ("cudnn.conv.fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
                        ("cuda.matmul.fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision)):
        try:
            info.setdefault("tf32_defaults", {})[label] = read()
        except Exception as error:  # noqa: BLE001
            info.setdefault("tf32_defaults", {})[label] = f"{type(error).__name__}: {error}"[:200]
    if not info["cuda_available"]:
        return info
    start = time.perf_counter()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    info["cuda_init_seconds"] = round(time.perf_counter() - start, 2)
    info["devices"] = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["devices"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                                "memory_gib": round(props.total_memory / 2**30, 1)})
    checks = info["checks"]

    def check(name, fn):
        try:
            checks[name] = fn()
        except BaseException as error:  # noqa: BLE001
            checks[name] = {"error": f"{type(error).__name__}: {error}"[:400]}

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 96, 128, generator=generator)
    weight = torch.randn(64, 64, 3, 3, generator=generator) * 0.05
    reference = torch.nn.functional.conv2d(x.double(), weight.double(), padding=1)

    def conv_error():
        with torch.inference_mode():
            y = torch.nn.functional.conv2d(x.cuda(), weight.cuda(), padding=1).double().cpu()
        return float((y - reference).abs().max())

    def tf32_switch():
        sys.path.insert(0, str(REPO))
        from deploy_parity.backends.pytorch.runner import ieee_fp32

        default_error = conv_error()
        with ieee_fp32(torch):
            ieee_error = conv_error()
            try:
                legacy = torch.backends.cudnn.allow_tf32  # must not raise inside ieee_fp32
            except Exception as error:  # noqa: BLE001
                legacy = f"RAISES {type(error).__name__}: {str(error)[:160]}"
        return {"conv_max_err_default": default_error, "conv_max_err_ieee_fp32": ieee_error,
                "legacy_allow_tf32_read_inside": legacy,
                "note": "TF32 in the default if its error is ~1e-3 and the ieee one ~1e-6"}

    def half_conv():
        with torch.inference_mode():
            y = torch.nn.functional.conv2d(x.cuda().half(), weight.cuda().half(), padding=1).double().cpu()
        return {"conv_fp16_max_err": float((y - reference).abs().max())}

    def autocast_conv():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            y = torch.nn.functional.conv2d(x.cuda(), weight.cuda(), padding=1)
        return {"dtype": str(y.dtype), "max_err": float((y.double().cpu() - reference).abs().max())}

    def nms_half():
        import torchvision

        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float16, device="cuda")
        scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float16, device="cuda")
        return {"kept": torchvision.ops.nms(boxes, scores, 0.5).tolist()}

    def full_like_half_min():  # the keypoint decoding fills fp16 maps with float32's min
        maps = torch.zeros(2, device="cuda", dtype=torch.float16)
        return {"value": float(torch.full_like(maps, torch.finfo(torch.float32).min)[0])}

    check("tf32_switch", tf32_switch)
    check("fp16_conv", half_conv)
    check("autocast_conv", autocast_conv)
    check("torchvision_nms_fp16", nms_half)
    check("full_like_fp16_with_fp32_min", full_like_half_min)
    return info
