"""The engine cache's key, staleness decision and refusal of foreign user engines.

Engines are opaque bytes to the cache: these tests store placeholder bytes (nothing
here deserializes them or claims they are engines) and check which entries the cache
would hand to TensorRT, and which it rebuilds or refuses.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from deploy_parity.errors import ArtifactError
from deploy_parity.backends.tensorrt.engine_cache import (
    EngineCache,
    EngineEnv,
    engine_key,
    foreign_reason,
    load_user_engine,
    make_key,
    read_sidecar,
    sidecar_path,
    stale_reason,
    write_user_sidecar,
)
from deploy_parity.backends.tensorrt.profiles import EngineProfile, ShapeRange

ENV = EngineEnv(tensorrt="10.3.0", gpu="NVIDIA H100 80GB HBM3")
PROFILE = EngineProfile((("images", ShapeRange((1, 3, 192, 192), (1, 3, 192, 192), (4, 3, 192, 192))),))
WIDER = EngineProfile((("images", ShapeRange((1, 3, 192, 192), (1, 3, 192, 192), (8, 3, 192, 192))),))
FLAGS = {"fp16": False, "tf32": False}


def key(**changes):
    parts = dict(onnx_sha256="a" * 64, precision="fp32", builder_flags=FLAGS, profiles=[PROFILE], env=ENV)
    parts.update(changes)
    return make_key(parts["onnx_sha256"], parts["precision"], parts["builder_flags"], parts["profiles"], parts["env"])


def test_same_parts_give_the_same_key():
    assert key() == key()
    assert key().digest() == key().digest()
    assert key().file_name().startswith("fp32-") and key().file_name().endswith(".engine")


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"precision": "fp16"},
        {"builder_flags": {"fp16": False, "tf32": True}},
        {"profiles": [WIDER]},
        {"profiles": [PROFILE, WIDER]},
        {"env": replace(ENV, tensorrt="10.4.0")},
        {"env": replace(ENV, gpu="NVIDIA A100-SXM4-40GB")},
    ],
    ids=["onnx", "precision", "flags", "profile", "profile-count", "tensorrt", "gpu"],
)
def test_every_key_part_changes_the_key(change):
    assert key(**change).digest() != key().digest()


def test_the_onnx_part_is_the_hash_of_the_files_bytes(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(b"graph one")
    second.write_bytes(b"graph two")
    assert engine_key(first, "fp32", FLAGS, [PROFILE], ENV) != engine_key(second, "fp32", FLAGS, [PROFILE], ENV)
    second.write_bytes(b"graph one")  # same content, other name: same engine
    assert engine_key(first, "fp32", FLAGS, [PROFILE], ENV) == engine_key(second, "fp32", FLAGS, [PROFILE], ENV)


def test_stale_reason_is_empty_for_a_matching_sidecar_and_names_the_foreign_part():
    sidecar = {"parts": json.loads(json.dumps(key().parts())), "key": key().digest()}  # as read back from disk
    assert stale_reason(sidecar, key()) == ""
    assert "names key 'x'" in stale_reason({**sidecar, "key": "x"}, key())  # another entry's sidecar
    assert "names key None" in stale_reason({"parts": sidecar["parts"]}, key())
    older = {"parts": {**sidecar["parts"], "tensorrt": "8.6.1"}}
    assert stale_reason(older, key()) == "built with TensorRT 8.6.1, this machine has TensorRT 10.3.0"
    other_gpu = {"parts": {**sidecar["parts"], "gpu": "Tesla T4"}}
    assert "built on GPU 'Tesla T4'" in stale_reason(other_gpu, key())
    other_profile = {"parts": {**sidecar["parts"], "profiles": [WIDER.as_record()]}}
    assert "'profiles' differs" in stale_reason(other_profile, key())
    assert "no readable sidecar" in stale_reason(None, key())


class CountingBuild:
    def __init__(self, payload=b"serialized engine placeholder"):
        self.payload = payload
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.payload


def test_a_miss_builds_and_a_hit_reuses(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    build = CountingBuild()
    assert cache.get_or_build(key(), build) == build.payload
    assert cache.get_or_build(key(), build) == build.payload
    assert build.calls == 1 and cache.stats.hits == 1 and cache.stats.builds == 1
    stored = read_sidecar(cache.engine_path(key()))
    assert stored["parts"]["tensorrt"] == ENV.tensorrt and stored["parts"]["gpu"] == ENV.gpu
    assert stored["parts"]["precision"] == "fp32" and stored["parts"]["profiles"] == [PROFILE.as_record()]


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda s: {**s, "parts": {**s["parts"], "tensorrt": "8.6.1"}}, "built with TensorRT 8.6.1"),
        (lambda s: {**s, "parts": {**s["parts"], "gpu": "Tesla T4"}}, "built on GPU 'Tesla T4'"),
        (lambda s: {**s, "engine_sha256": "0" * 64}, "does not match the hash"),
        (None, "no readable sidecar"),
    ],
    ids=["other-tensorrt", "other-gpu", "engine-replaced", "no-sidecar"],
)
def test_a_stale_or_foreign_cached_engine_is_rebuilt_not_loaded(tmp_path, tamper, reason):
    cache = EngineCache(tmp_path / "engines")
    cache.get_or_build(key(), CountingBuild(b"first build"))
    path = sidecar_path(cache.engine_path(key()))
    if tamper is None:
        path.unlink()
    else:
        path.write_text(json.dumps(tamper(json.loads(path.read_text()))))
    rebuild = CountingBuild(b"second build")
    assert cache.get_or_build(key(), rebuild) == b"second build"
    assert rebuild.calls == 1
    assert reason in cache.stats.rebuilt[-1][1]
    # The rebuilt entry is valid again.
    assert cache.lookup(key()) == cache.engine_path(key())


def test_one_timing_cache_per_tensorrt_version_and_gpu(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    assert cache.timing_cache_path(ENV) == cache.timing_cache_path(ENV)
    assert cache.timing_cache_path(ENV) != cache.timing_cache_path(replace(ENV, tensorrt="10.4.0"))
    assert cache.timing_cache_path(ENV) != cache.timing_cache_path(replace(ENV, gpu="Tesla T4"))
    assert cache.timing_cache_path(ENV).parent == cache.root


# ------------------------------------------------------------------ user engines


@pytest.fixture
def user_engine(tmp_path):
    path = tmp_path / "detector.engine"
    path.write_bytes(b"user engine placeholder")
    return path


def test_a_user_engine_without_a_sidecar_is_refused_with_how_to_fix(user_engine):
    with pytest.raises(ArtifactError) as caught:
        load_user_engine(user_engine, ENV, "fp16")
    text = str(caught.value)
    assert "refusing to load this TensorRT engine" in text
    assert "no sidecar JSON" in text
    assert "python -m deploy_parity.backends.tensorrt.engine_cache stamp" in text


@pytest.mark.parametrize(
    "built, wanted, reason",
    [
        (EngineEnv("8.6.1", ENV.gpu), "fp16", "built with TensorRT 8.6.1 and this machine has TensorRT 10.3.0"),
        (EngineEnv(ENV.tensorrt, "Tesla T4"), "fp16", "built on GPU 'Tesla T4'"),
        (ENV, "fp32", "built as fp16 but this backend tests fp32: run it with --backend trt-fp16"),
    ],
    ids=["other-tensorrt", "other-gpu", "other-precision"],
)
def test_a_foreign_user_engine_is_refused_before_deserializing(user_engine, built, wanted, reason):
    write_user_sidecar(user_engine, built, "fp16")
    with pytest.raises(ArtifactError, match="refusing to load") as caught:
        load_user_engine(user_engine, ENV, wanted)
    assert reason in str(caught.value)


def test_a_stamped_user_engine_from_this_machine_loads(user_engine):
    write_user_sidecar(user_engine, ENV, "fp16")
    assert load_user_engine(user_engine, ENV, "fp16") == b"user engine placeholder"
    user_engine.write_bytes(b"replaced after stamping")
    with pytest.raises(ArtifactError, match="changed after its sidecar"):
        load_user_engine(user_engine, ENV, "fp16")


def test_foreign_reason_is_pure_and_lists_missing_fields():
    assert foreign_reason({"tensorrt": "10.3.0"}, ENV, "fp16") == "its sidecar lacks ['gpu', 'precision']"
    assert foreign_reason({"tensorrt": "10.3.0", "gpu": ENV.gpu, "precision": "fp16"}, ENV, "fp16") == ""


def test_a_build_longer_than_the_case_limit_is_finished_stored_and_reused(tmp_path):
    """Issue 22, item 2: a cold engine build runs outside the per-case limit (with its own,
    PARITY_BUILD_TIMEOUT), so a build past the case limit is stored, not thrown away and
    redone by every later check."""
    import time

    from deploy_parity.watchdog import time_limit

    cache = EngineCache(tmp_path)
    builds = []

    def slow_build():
        builds.append(1)
        time.sleep(1.2)
        return b"engine bytes (placeholder)"

    with time_limit(0.4, "parity slow-model on trt-fp16"):
        assert cache.get_or_build(key(), slow_build) == b"engine bytes (placeholder)"
    with time_limit(0.4, "parity slow-model on trt-fp16"):
        assert cache.get_or_build(key(), slow_build) == b"engine bytes (placeholder)"
    assert len(builds) == 1 and cache.stats.builds == 1 and cache.stats.hits == 1
