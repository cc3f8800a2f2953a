"""INT8 graphs for ONNX Runtime's CPU provider: the fp32 export quantized statically
(QDQ, per-channel int8 weights, int8 activations, MinMax calibration) on feeds the case
makes itself, cached and verified like exports.

Calibration set: CALIBRATION_FEEDS seeded feeds from the case's own `make_feed` (scene
images for detectors), at sizes spread over what the graph serves (the target's size for
a per-size or fixed graph; for a dynamic graph, the export size and rectangles from the
smallest to the largest side), batch 1. A user who quantized their own graph gives it as
`int8_onnx_path`; the calibration mistakes users make (images in another range or
layout, blank images) are what the task-agreement check must catch.

The cache key covers the fp32 graph's bytes (sha256), the calibration set (sizes, seeds,
and a hash of the feeds themselves), the method and the library versions. Entries are
verified like exports (a sidecar with the key and the graph's sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from deploy_parity.errors import HarnessError
from deploy_parity.hashing import json_hash, sha256_file
from deploy_parity.safe_paths import file_lock, inside
from deploy_parity.watchdog import outside_case_limit

CALIBRATION_FEEDS = 16
# Only the layers that carry the weights and the arithmetic are quantized; elementwise
# ops, resizes and the box decoding stay float32 (quantized, they turned a TopK's input
# count in keypoint-rcnn's proposal code from 2 to 1: the graph could not run).
OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
METHOD = {"format": "QDQ", "per_channel": True, "activations": "QInt8", "weights": "QInt8", "calibration": "MinMax",
          "op_types": list(OP_TYPES)}
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Calibration:
    """The sizes and seeds the calibration feeds are made at, and an optional change to
    each feed (what a user's mistaken calibration pipeline did to it)."""

    sizes: tuple  # ((height, width, seed), ...)
    transform: Optional[Callable[[dict], dict]] = None
    name: str = "the case's own feeds"


def calibration_for(case, target, count: int = CALIBRATION_FEEDS) -> Calibration:
    """Seeded sizes spread over what the target's graph serves."""
    sizes = case.sizes
    if target.height is not None:
        return Calibration(tuple((target.height, target.width, 1000 + i) for i in range(count)))
    m = sizes.multiple_of
    lo = -(-sizes.min_side // m) * m
    hi = sizes.max_side // m * m
    sides = sorted({int(v) // m * m for v in np.linspace(lo, hi, 4)} | {lo})
    chosen = []
    for i in range(count):
        h = sides[i % len(sides)]
        w = sides[(i // len(sides) + i) % len(sides)]
        if max(h, w) / min(h, w) > sizes.max_aspect or sizes.why_not(h, w):
            w = h
        chosen.append((h, w, 1000 + i))
    return Calibration(tuple(chosen))


def calibration_feeds(case, target, calibration: Calibration) -> list:
    from deploy_parity.inputs import make_feed

    feeds = [make_feed(case, h, w, 1, seed, target.dtypes) for h, w, seed in calibration.sizes]
    return [calibration.transform(dict(f)) if calibration.transform else f for f in feeds]


def quantize_graph(fp32_path, feeds: list, out_path) -> None:
    """ONNX Runtime's static quantization of `fp32_path` into `out_path`, calibrated on `feeds`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = {i.name for i in onnx.load(str(fp32_path), load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(feeds)

        def get_next(self):
            feed = next(self._feeds, None)
            return None if feed is None else {k: v for k, v in feed.items() if k in names}

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=list(OP_TYPES))


def _reads(node) -> set:
    """Every tensor a node reads, its subgraphs' references to the outer scope included."""
    import onnx

    names = {i for i in node.input if i}
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            inner = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} \
                | {i.name for i in graph.initializer}
            for n in graph.node:
                names |= {i for i in _reads(n) if i not in inner}
    return names


def sort_topologically(path) -> None:
    """Reorder the graph's nodes so each comes after what it reads (ONNX Runtime's quantizer
    may append a Q/DQ pair after a node that reads it; the ONNX checker refuses that)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if _reads(n) <= available]
        if not ready:
            raise HarnessError(f"{path}: the quantized graph has a cycle or reads tensors nothing makes: "
                               f"{sorted(_reads(pending[0]) - available)[:3]}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save(model, str(path))


_OPENS: dict = {}  # graph sha256 -> "" (ONNX Runtime opens it) or why not, for this process

OPEN_IN_CHILD = ("import sys, onnxruntime as ort; "
                 "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])")


def why_it_cannot_open(path) -> str:
    """"" when ONNX Runtime's CPU provider opens the graph with its default optimisations;
    else why not. Tried in a child process: ONNX Runtime 1.2x aborts the whole process
    (a C++ assertion) while optimising some QDQ graphs (tv-keypoint-rcnn's), and an abort
    inside the run would end it without a report."""
    import subprocess
    import sys

    digest = sha256_file(path)
    if digest not in _OPENS:
        try:
            done = subprocess.run([sys.executable, "-c", OPEN_IN_CHILD, str(path)], capture_output=True, text=True,
                                  timeout=600)
        except subprocess.TimeoutExpired:
            _OPENS[digest] = "opening it in ONNX Runtime took over 600 s"
        else:
            last = (done.stderr.strip().splitlines() or [""])[-1][:300]
            _OPENS[digest] = "" if done.returncode == 0 else (
                f"ONNX Runtime {'aborted' if done.returncode < 0 else 'failed'} while opening it (exit status "
                f"{done.returncode}): {last}")
    return _OPENS[digest]


def library_versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


def int8_key(fp32_path, feeds: list, calibration: Calibration) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    return json_hash({"fp32": sha256_file(fp32_path), "calibration": [list(s) for s in calibration.sizes],
                      "feeds": digest.hexdigest(), "method": METHOD, "versions": library_versions()})[:24]


def quantized_graph(case, target, context, calibration: Optional[Calibration] = None) -> Path:
    """The INT8 graph for (case, target): the user's `int8_onnx_path`, or the fp32 export
    quantized here (cached and verified; quantizing runs outside the case's time limit)."""
    from deploy_parity.backends.backend import onnx_for
    from deploy_parity.export.onnx_exporter import check_onnx, sidecar_path, verify_entry

    if case.int8_onnx_path is not None:
        check_onnx(case.int8_onnx_path)
        _opens_or_raise(case.int8_onnx_path)
        return Path(case.int8_onnx_path)
    fp32 = onnx_for(case, target, context)
    calibration = calibration or calibration_for(case, target)
    with outside_case_limit(f"INT8 quantization of {case.name} ({target.key()})"):
        feeds = calibration_feeds(case, target, calibration)
        key = int8_key(fp32, feeds, calibration)
        folder = Path(context.cache_dir) / "int8"
        folder.mkdir(parents=True, exist_ok=True)
        path = inside(folder, f"{case.name}-{target.key()}-{key}.onnx")
        with file_lock(inside(folder, f".{path.stem}.lock")):
            reason = verify_entry(path, key, CACHE_FORMAT)
            if not reason:
                # The sidecar says whether ONNX Runtime (whose version is in the key) opened it.
                recorded = json.loads(sidecar_path(path).read_text()).get("opens")
                if isinstance(recorded, str):
                    _OPENS[sha256_file(path)] = recorded
                _opens_or_raise(path)
                return path
            if reason != "absent":
                import warnings

                from deploy_parity.errors import CacheEntryRebuilt
                from deploy_parity.export.onnx_exporter import _clear_entry

                _clear_entry(path)
                warnings.warn(CacheEntryRebuilt(f"INT8 cache entry {path} not trusted: {reason}; quantizing again"),
                              stacklevel=2)
            tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.onnx")
            start = time.perf_counter()
            try:
                quantize_graph(fp32, feeds, tmp)
                sort_topologically(tmp)
                check_onnx(tmp)
                sidecar_tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.json")
                sidecar_tmp.write_text(json.dumps({"format": CACHE_FORMAT, "key": key, "onnx_sha256": sha256_file(tmp),
                                                   "opens": why_it_cannot_open(tmp),
                                                   "case": case.name, "fp32": str(fp32), "method": METHOD,
                                                   "calibration": calibration.name,
                                                   "seconds": round(time.perf_counter() - start, 2)}, indent=1))
                os.replace(tmp, path)
                os.replace(sidecar_tmp, sidecar_path(path))
            except Exception as error:
                raise HarnessError(f"INT8 quantization of {case.name} ({target.key()}) failed: "
                                   f"{type(error).__name__}: {str(error).splitlines()[0][:300]}") from error
            finally:
                for leftover in path.parent.glob(f".{path.stem}.tmp{os.getpid()}*"):
                    leftover.unlink()
    _opens_or_raise(path)
    return path


def _opens_or_raise(path) -> None:
    from deploy_parity.errors import ArtifactError

    why = why_it_cannot_open(path)
    if why:
        raise ArtifactError(path, f"the INT8 graph cannot run on ONNX Runtime's CPU provider: {why}",
                            "onnxrt-cpu-int8 cannot judge this graph; report it to ONNX Runtime, or quantize "
                            "fewer op types")
