"""TensorRT engines on disk: built once, keyed by everything that makes them valid.

An engine is only valid for the TensorRT version and the GPU it was built on, and it
encodes one ONNX graph, one precision and its optimization profiles. The key covers
all five; the engine's file name is the key's digest and a sidecar JSON next to it
(`<engine>.json`) stores the key parts, the engine's own hash and how it was built.

On every lookup the sidecar is compared with the key we expect (`stale_reason`, a
pure function): its key digest and every key part. An entry whose sidecar is missing,
unreadable, names another key, TensorRT version or GPU, or does not match the engine
bytes (a copied cache, a half-written file, a hand-edit) is rebuilt with a warning
naming it (CacheEntryRebuilt), never deserialized blindly. Each entry has a lock file:
two processes needing the same engine build it once; the second waits, then verifies.

A user's own .engine is never rebuilt (we do not have what it was built from): it
needs a sidecar saying which TensorRT version, GPU and precision built it, and is
refused with a clear message when those do not match this machine and backend
(`foreign_reason`). `python -m deploy_parity.backends.tensorrt.engine_cache stamp ENGINE
--precision fp16` writes one for an engine built on this machine.

One timing cache per (TensorRT version, GPU) is reused by every build: rebuilding an
engine for a new graph version then skips most tactic timing.

Engines are opaque bytes here; nothing in this module imports TensorRT.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import warnings

from deploy_parity.errors import ArtifactError, CacheEntryRebuilt
from deploy_parity.hashing import json_hash, sha256_bytes, sha256_file
from deploy_parity.safe_paths import file_lock, inside
from deploy_parity.watchdog import outside_case_limit

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "tf32")


@dataclass(frozen=True)
class EngineEnv:
    """What an engine is bound to besides its inputs: the TensorRT version and the GPU."""

    tensorrt: str
    gpu: str


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    builder_flags: tuple  # sorted (flag, value) pairs given to CreateConfig, e.g. (("fp16", True), ("tf32", False))
    profiles: str  # canonical JSON of the optimization profiles, in order
    tensorrt: str
    gpu: str

    def parts(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "builder_flags": {name: value for name, value in self.builder_flags},
            "profiles": json.loads(self.profiles),
            "tensorrt": self.tensorrt,
            "gpu": self.gpu,
        }

    def digest(self) -> str:
        return json_hash(self.parts())[:24]

    def file_name(self) -> str:
        return f"{self.precision}-{self.digest()}.engine"


def make_key(onnx_sha256: str, precision: str, builder_flags: Mapping[str, object], profiles: Iterable,
             env: EngineEnv) -> EngineKey:
    """Pure: the key from its parts. `profiles` are EngineProfile objects or their records."""
    records = [p.as_record() if hasattr(p, "as_record") else p for p in profiles]
    return EngineKey(
        onnx_sha256=onnx_sha256,
        precision=precision,
        builder_flags=tuple(sorted(builder_flags.items())),
        profiles=json.dumps(records, sort_keys=False, separators=(",", ":")),
        tensorrt=env.tensorrt,
        gpu=env.gpu,
    )


def engine_key(onnx_path, precision: str, builder_flags: Mapping[str, object], profiles: Iterable,
               env: EngineEnv) -> EngineKey:
    """The key for building from an .onnx file (hashes the file's bytes)."""
    return make_key(sha256_file(onnx_path), precision, builder_flags, profiles, env)


def sidecar_path(engine_path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path) -> Optional[dict]:
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------- staleness (pure)


def stale_reason(sidecar: Optional[Mapping], key: EngineKey) -> str:
    """Why a cached engine may not be used for `key` ("" when it may). Pure."""
    if sidecar is None:
        return "no readable sidecar JSON next to the engine"
    stored = sidecar.get("parts")
    if not isinstance(stored, Mapping):
        return "the sidecar has no key parts"
    expected = key.parts()
    if stored.get("tensorrt") != expected["tensorrt"]:
        return f"built with TensorRT {stored.get('tensorrt')}, this machine has TensorRT {expected['tensorrt']}"
    if stored.get("gpu") != expected["gpu"]:
        return f"built on GPU {stored.get('gpu')!r}, this machine has {expected['gpu']!r}"
    for part in ("format", "onnx_sha256", "precision", "builder_flags", "profiles"):
        if stored.get(part) != expected[part]:
            return f"key part {part!r} differs: cached {stored.get(part)!r}, wanted {expected[part]!r}"
    if sidecar.get("key") != key.digest():
        return f"the sidecar names key {sidecar.get('key')!r}, not this entry's {key.digest()!r}"
    return ""


def foreign_reason(sidecar: Optional[Mapping], env: EngineEnv, precision: str) -> str:
    """Why a user's engine may not run here as `precision` ("" when it may). Pure."""
    if sidecar is None:
        return "it has no sidecar JSON saying which TensorRT version, GPU and precision built it"
    missing = [k for k in ("tensorrt", "gpu", "precision") if not sidecar.get(k)]
    if missing:
        return f"its sidecar lacks {missing}"
    if sidecar["tensorrt"] != env.tensorrt:
        return (f"it was built with TensorRT {sidecar['tensorrt']} and this machine has TensorRT {env.tensorrt}; "
                "engines only load in the TensorRT version that built them")
    if sidecar["gpu"] != env.gpu:
        return (f"it was built on GPU {sidecar['gpu']!r} and this machine has {env.gpu!r}; "
                "engines are specific to the GPU model they were built on")
    if sidecar["precision"] != precision:
        return (f"it was built as {sidecar['precision']} but this backend tests {precision}: "
                f"run it with --backend trt-{sidecar['precision']}")
    return ""


# --------------------------------------------------------------------- the cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "unknown"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class CacheStats:
    hits: int = 0
    builds: int = 0
    build_seconds: float = 0.0
    rebuilt: list = field(default_factory=list)  # (file name, reason) of entries replaced


class EngineCache:
    """Engines under `root` (context.cache_dir / "engines"), one file per key."""

    def __init__(self, root):
        self.root = Path(root)
        self.stats = CacheStats()

    def engine_path(self, key: EngineKey) -> Path:
        return inside(self.root, key.file_name())

    def timing_cache_path(self, env: EngineEnv) -> Path:
        """One timing cache per (TensorRT version, GPU), shared by every build."""
        self.root.mkdir(parents=True, exist_ok=True)
        return inside(self.root, f"timing-trt{_slug(env.tensorrt)}-{_slug(env.gpu)}.cache")

    def lookup(self, key: EngineKey) -> Optional[Path]:
        """The cached engine for `key`, or None (absent, or stale: then the reason is logged and recorded)."""
        path = self.engine_path(key)
        if not path.is_file():
            return None
        sidecar = read_sidecar(path)
        reason = stale_reason(sidecar, key)
        if not reason and sidecar.get("engine_sha256") != sha256_file(path):
            reason = "the engine file does not match the hash in its sidecar (replaced or half-written)"
        if reason:
            message = f"engine cache entry {path} not trusted: {reason}; building it again"
            log.warning(message)
            warnings.warn(CacheEntryRebuilt(message), stacklevel=2)
            self.stats.rebuilt.append((path.name, reason))
            return None
        return path

    def store(self, key: EngineKey, engine_bytes: bytes, build_seconds: float = 0.0) -> Path:
        """Write the engine, then its sidecar (a crash in between leaves an entry that is rebuilt)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.engine_path(key)
        _atomic_write(path, engine_bytes)
        sidecar = {
            "parts": key.parts(),
            "key": key.digest(),
            "engine_sha256": sha256_bytes(engine_bytes),
            "origin": "built by deploy_parity",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(build_seconds, 2),
        }
        _atomic_write(sidecar_path(path), json.dumps(sidecar, indent=1).encode())
        return path

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> bytes:
        """The engine bytes for `key`: from disk when valid, else built by `build()` and
        stored. Holds the entry's lock file throughout, so two processes build it once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(inside(self.root, f".{key.file_name()}.lock")):
            path = self.lookup(key)
            if path is not None:
                engine_bytes = path.read_bytes()
                # Verified bytes, not a second read that another writer may have replaced.
                if sha256_bytes(engine_bytes) == (read_sidecar(path) or {}).get("engine_sha256"):
                    self.stats.hits += 1
                    return engine_bytes
            start = time.perf_counter()
            # Outside the case's time limit, with the build's own: a build past the case's
            # limit is stored, not thrown away and redone by every later check.
            with outside_case_limit(f"TensorRT engine build {key.file_name()}"):
                engine_bytes = build()
                seconds = time.perf_counter() - start
                self.stats.builds += 1
                self.stats.build_seconds += seconds
                self.store(key, engine_bytes, seconds)
        log.info("built TensorRT engine %s in %.1fs", key.file_name(), seconds)
        return engine_bytes


# ------------------------------------------------------------------- user engines


def load_user_engine(engine_path, env: EngineEnv, precision: str) -> bytes:
    """A user's .engine, after its sidecar says it was built here, for this precision."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise ArtifactError(engine_path, "engine file not found", "fix the model case's engine_path")
    sidecar = read_sidecar(engine_path)
    reason = foreign_reason(sidecar, env, precision)
    if not reason and sidecar.get("engine_sha256") and sidecar["engine_sha256"] != sha256_file(engine_path):
        reason = "the engine file changed after its sidecar was written (its hash no longer matches)"
    if reason:
        hint = (f"rebuild it on this machine (TensorRT {env.tensorrt}, {env.gpu}), then record that with "
                f"'python -m deploy_parity.backends.tensorrt.engine_cache stamp {engine_path} --precision <fp32|fp16|tf32>'; "
                "or drop engine_path so the harness builds its own engine from the ONNX graph")
        raise ArtifactError(engine_path, f"refusing to load this TensorRT engine: {reason}", hint)
    return engine_path.read_bytes()


def write_user_sidecar(engine_path, env: EngineEnv, precision: str, note: str = "") -> Path:
    """Record what built a user's engine (the user vouches for it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    engine_path = Path(engine_path)
    data = {
        "tensorrt": env.tensorrt,
        "gpu": env.gpu,
        "precision": precision,
        "engine_sha256": sha256_file(engine_path),
        "origin": "stamped by the user",
        "note": note,
    }
    path = sidecar_path(engine_path)
    path.write_text(json.dumps(data, indent=1))
    return path


def detect_env() -> EngineEnv:
    """This machine's TensorRT version and GPU name (imports TensorRT: GPU path only)."""
    import tensorrt
    import torch

    return EngineEnv(tensorrt=str(tensorrt.__version__), gpu=torch.cuda.get_device_name(torch.cuda.current_device()))


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deploy_parity.backends.tensorrt.engine_cache")
    sub = parser.add_subparsers(dest="command", required=True)
    stamp = sub.add_parser("stamp", help="write the sidecar of an engine built on this machine")
    stamp.add_argument("engine")
    stamp.add_argument("--precision", required=True, choices=PRECISIONS)
    stamp.add_argument("--note", default="")
    args = parser.parse_args(argv)
    path = write_user_sidecar(args.engine, detect_env(), args.precision, args.note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
