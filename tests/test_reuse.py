"""Work done once and shared: feeds, runners, export keys, the answers a picture is drawn from."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from deploy_parity.backends import BACKENDS
from deploy_parity.backends.pytorch.runner import TorchRunner
from deploy_parity.check import check_parity
from deploy_parity.contracts import DimRange, TensorMeta
from deploy_parity.export import onnx_exporter
from deploy_parity.inputs import FeedCache, make_feed
from deploy_parity.strategies import ParityExample
from tests.suite_runs import run_pytest, run_suite
from tests.tiny_cases import tiny_case, write_cases_module


def test_a_feed_is_rendered_once_and_shared_read_only():
    case = tiny_case()
    feeds = FeedCache()
    first = feeds.get(case, 48, 64, 2, 3, ("float32",))
    again = feeds.get(case, 48, 64, 2, 3, ("float32",))
    assert again is first
    assert (feeds.rendered, feeds.served, feeds.distinct) == (1, 2, 1)
    np.testing.assert_array_equal(first["images"], make_feed(case, 48, 64, 2, 3, ("float32",))["images"])
    with pytest.raises(ValueError, match="read-only"):
        first["images"][0, 0, 0, 0] = 1.0
    feeds.get(case, 48, 64, 2, 4, ("float32",))  # another seed: another feed
    assert (feeds.rendered, feeds.distinct) == (2, 2)


def test_the_feed_cache_is_bounded_and_drops_the_least_recently_used():
    case = tiny_case()
    one = make_feed(case, 48, 64, 1, 0, ("float32",))["images"].nbytes
    feeds = FeedCache(max_bytes=2 * one)
    a = feeds.get(case, 48, 64, 1, 0, ("float32",))
    feeds.get(case, 48, 64, 1, 1, ("float32",))
    feeds.get(case, 48, 64, 1, 0, ("float32",))  # used again: now the most recent
    feeds.get(case, 48, 64, 1, 2, ("float32",))  # over the bound: seed 1 goes
    assert feeds.get(case, 48, 64, 1, 0, ("float32",)) is a
    assert feeds.rendered == 3
    feeds.get(case, 48, 64, 1, 1, ("float32",))
    assert feeds.rendered == 4  # rendered again after it was dropped


class WritesIntoItsInput(nn.Module):
    def forward(self, images):
        images.mul_(2.0)  # an in-place normalisation
        return images.mean(dim=(2, 3))


def test_a_module_writing_into_its_input_does_not_change_the_shared_feed():
    case = tiny_case()
    feed = FeedCache().get(case, 16, 16, 1, 0, ("float32",))
    before = feed["images"].copy()
    metas = {"images": TensorMeta("images", ("float32",), (DimRange(1, 2), 3, DimRange(8, 64), DimRange(8, 64)))}
    with TorchRunner("writes/torch-cpu", WritesIntoItsInput, metas, ["out"]) as runner:
        out = runner.infer(feed)["out"]
    np.testing.assert_array_equal(feed["images"], before)
    np.testing.assert_allclose(out, 2.0 * before.mean(axis=(2, 3)), rtol=1e-6)


def test_the_pool_counts_feeds_and_activations_and_reuses_runners(pool):
    case = tiny_case()
    example = ParityExample(48, 64, 1, ("float32",), 0)
    for backend in ("torch-cpu", "onnxrt-cpu"):
        for _ in range(2):
            assert check_parity(pool, case, BACKENDS[backend], example).verdict.value == "pass"
    figures = pool.figures()
    # Four candidate runs, one reference run and one float64 shadow run: all one feed.
    assert figures["feeds_served"] == 6 and figures["feeds_rendered"] == 1 and figures["feeds_distinct"] == 1
    # The reference's answer (and its shadow) computed once and shared by both backends.
    assert figures["reference_runs"] == 1
    # Two candidates and one reference, each activated once.
    assert figures["runner_activations"] == 3 and figures["distinct_artifacts"] == 3
    assert figures["compare_seconds"] > 0 and figures["activate_seconds"] > 0


def test_an_export_cache_hit_builds_no_module(runner_context):
    builds = []
    base = tiny_case()

    def counting_build(target):
        builds.append(target)
        return base.build_deploy(target)

    case = replace(base, build_deploy=counting_build)
    target = case.deploy_target(48, 64, ("float32",))
    options, cache = runner_context.export_options, runner_context.cache_dir
    first = onnx_exporter.export_onnx(case, target, options, cache)
    assert len(builds) == 1  # built once: hashed, and exported from the same module
    hits = onnx_exporter.STATS.cache_hits
    for _ in range(3):
        assert onnx_exporter.export_onnx(case, target, options, cache) == first
    assert onnx_exporter.STATS.cache_hits == hits + 3 and len(builds) == 1
    # A new process finds the entry on disk: one build to hash the case, then none.
    onnx_exporter._FINGERPRINTS.clear()
    onnx_exporter._VERIFIED.clear()
    assert onnx_exporter.export_onnx(case, target, options, cache) == first
    assert onnx_exporter.export_onnx(case, target, options, cache) == first
    assert len(builds) == 2 and onnx_exporter.STATS.cache_hits == hits + 5


def test_the_export_key_follows_the_build_functions_file(tmp_path):
    """Constructor arguments (fixed_size, box_detections_per_img) live where the case's
    build function is defined: that file is part of the key."""
    case = tiny_case()
    files = onnx_exporter.case_code_files(case)
    assert any(f.endswith("tiny_cases.py") for f in files), files


def test_suite_items_of_one_model_and_backend_run_together():
    done = run_pytest("--collect-only", "-q", "--model", "pose-rtmo")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    groups = [re.search(r"\[(.+)\]$", i).group(1) for i in ids]
    # Each (model, backend) appears as one contiguous run, coverage first.
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert sorted(runs) == sorted(set(groups)) and len(runs) == 2, groups
    assert "test_artifact_covers_declared_inputs" in ids[0]


@pytest.mark.slow  # a suite subprocess, ~15 s
def test_pictures_are_drawn_from_what_the_checks_compared(tmp_path):
    """A failing case's picture comes from the answers its check kept: no second run."""
    module = write_cases_module(tmp_path / "shifted_cases.py", "CASES = [tiny_case('tiny-shifted', offset=3.0)]\n")
    run = run_suite(tmp_path, "--model-module", str(module), "--backend", "onnxrt-cpu", "--report-images", "3",
                    "-k", "test_parity", profile="dev")
    assert run.returncode == 1, run.output
    drawn = re.search(r"\((\d+) case pictures\)", run.output)
    assert drawn and int(drawn.group(1)) >= 1, run.output
    assert "drawn by running the case again" not in run.output
    assert len(list((run.reports_dir / "images").glob("case-*.png"))) == int(drawn.group(1))


def test_kept_answers_are_bounded_in_count_and_bytes_keeping_the_most_telling(tmp_path):
    from deploy_parity.check import KeptAnswers
    from fixtures.recorder import Recorder
    from reports.history import RunIdentity

    recorder = Recorder(tmp_path, RunIdentity(None, "uid", "2026-12-01T00:00:00+00:00", "ci", "pytest", 0), keep=True)
    recorder.answers_limit = 3
    recorder.ANSWERS_MAX_BYTES = 3 * 4000  # three 1000-float32 outputs

    def record(verdict, error):
        return {"verdict": verdict, "comparisons": [{"kind": "boxes", "verdict": verdict,
                                                     "metrics": {"max_corner_px": error}}]}

    worst_first = [("ambiguous", 0.1), ("fail", 2.0), ("fail", 9.0), ("fail", 0.5), ("ambiguous", 5.0)]
    for index, (verdict, error) in enumerate(worst_first):
        recorder.records.append(record(verdict, error))
        kept = KeptAnswers("parity", {}, {"x": np.zeros(500, np.float32)}, {"x": np.zeros(500, np.float32)})
        recorder._keep_answers(index, recorder.records[-1], kept)
    assert sorted(recorder.kept_answers()) == [1, 2, 3]  # the failures, not the ambiguous cases
    recorder.ANSWERS_MAX_BYTES = 2 * 4000
    big = KeptAnswers("parity", {}, {"x": np.zeros(1000, np.float32)}, {"x": np.zeros(1000, np.float32)})
    recorder.records.append(record("fail", 50.0))
    recorder._keep_answers(5, recorder.records[-1], big)
    assert sorted(recorder.kept_answers()) == [5]  # 8000 bytes alone fill the bound


def test_kept_answers_travel_as_files_and_load_only_for_their_run(tmp_path):
    """How an xdist worker hands its answers to the controller: arrays by name, no pickle."""
    from deploy_parity.check import KeptAnswers
    from reports.answers import StoredAnswers, save_answers

    def record(check, seed):
        return {"check": check, "model": "m", "backend": "onnxrt-cpu", "precision": "fp32", "height": 48,
                "width": 64, "batch": 2, "dtypes": ["float32"], "seed": seed, "verdict": "fail"}

    rng = np.random.default_rng(0)
    feed = {"images": rng.random((2, 3, 48, 64), dtype=np.float32)}
    outputs = [{"dets": rng.random((1, 5, 5), dtype=np.float32), "labels": np.arange(5)} for _ in range(3)]
    parity = KeptAnswers("parity", feed, outputs[0], outputs[1])
    batch = KeptAnswers("batch", feed, [outputs[0], outputs[2]], outputs[1])  # one answer per image run alone
    odd = KeptAnswers("parity", feed, {"dets": [1, 2]}, outputs[1])  # not arrays by name: left out, counted
    index = save_answers(tmp_path / "gw0" / "answers", "run-a",
                         [(record("parity", 3), parity), (record("batch", 4), batch), (record("parity", 5), odd),
                          (record("parity", 3), parity)])  # a replay: stored once
    assert index.is_file() and len(list(index.parent.glob("*.npz"))) == 2  # the odd one left out

    # The controller's merged records: another worker's case first, a replay of seed 3 later,
    # and seed 4's batch check passing once before it failed.
    merged = [record("determinism", 1), record("parity", 3), dict(record("batch", 4), verdict="pass"),
              record("batch", 4), record("parity", 5), record("parity", 3)]
    stored = StoredAnswers([index], "run-a", merged)
    assert sorted(stored) == [1, 3]  # the first record of each case that gets a picture
    loaded = stored.get(3)
    assert loaded.check == "batch" and isinstance(loaded.first, list) and len(loaded.first) == 2
    np.testing.assert_array_equal(loaded.first[1]["dets"], outputs[2]["dets"])
    np.testing.assert_array_equal(stored[1].feed["images"], feed["images"])
    assert stored[1].second["labels"].dtype == outputs[1]["labels"].dtype
    assert stored.get(4) is None and stored.get(0) is None
    assert len(StoredAnswers([index], "run-b", merged)) == 0  # another run's files are not this run's
    (index.parent / "0000.npz").write_bytes(b"not a zip")
    assert stored.get(1) is None  # unreadable: its case is re-run for its picture instead
    # Saving again empties the folder first.
    (index.parent / "0001.npz").write_bytes(np.zeros(3).tobytes())
    assert stored.get(3) is None
    index.write_text("[1, 2]")  # an index that is not what a worker writes
    assert len(StoredAnswers([index], "run-a", merged)) == 0
    assert save_answers(tmp_path / "gw0" / "answers", "run-c", []) is None
    assert not (tmp_path / "gw0" / "answers").exists()
