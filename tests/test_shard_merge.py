"""--shard K/N and python -m reports.merge: N shards merged are the unsharded run.

The equality test runs the real suites (tiny cases, one failing) unsharded and as 4
shards in fresh processes, merges the shards, and compares the verdict digest, the
verdict counts and the number of cases; then the merge's refusals and its one trend point.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter

import pytest

from deploy_parity.records import verdict_digest
from deploy_parity.errors import HarnessError
from fixtures.sharding import ShardSpec, plan_shards
from tests.suite_runs import REPO, run_command, run_python, suite_command
from tests.tiny_cases import write_cases_module

UNITS = [(m, b) for m in ("a", "b", "c", "d", "e") for b in ("torch-cpu", "onnxrt-cpu")]


# ------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("text, why", [("0/4", "between 1 and N"), ("5/4", "between 1 and N"), ("2/0", "N >= 1"),
                                      ("two/4", "K/N with whole numbers"), ("1-4", "K/N")])
def test_a_bad_shard_spec_is_one_line_naming_what_is_expected(text, why):
    with pytest.raises(HarnessError, match=why) as raised:
        ShardSpec.parse(text)
    assert "\n" not in str(raised.value) and text in str(raised.value)


def test_every_unit_runs_in_exactly_one_shard_and_the_plan_is_the_same_every_time():
    recorded = {unit: float(i % 4 + 1) for i, unit in enumerate(UNITS)}
    plans = [plan_shards(list(reversed(UNITS)) if i else UNITS, 4, recorded, "h") for i in range(2)]
    assert plans[0].assignment == plans[1].assignment and plans[0].digest() == plans[1].digest()
    covered = [u for k in range(1, 5) for u in plans[0].units_of(k)]
    assert sorted(covered) == sorted(UNITS)


def test_the_plan_balances_by_recorded_seconds():
    recorded = {unit: 1.0 for unit in UNITS}
    recorded[("a", "torch-cpu")] = 30.0  # one slow unit: alone in its shard
    plan = plan_shards(UNITS, 3, recorded, "history.sqlite")
    slow_shard = plan.assignment[("a", "torch-cpu")]
    assert plan.units_of(slow_shard) == [("a", "torch-cpu")]
    assert sorted(plan.loads) == [4.0, 5.0, 30.0]
    assert "10 of 10 units recorded in history.sqlite" in plan.balanced_by


def test_units_the_history_never_saw_weigh_the_median_and_none_seen_means_equal_weights():
    plan = plan_shards(UNITS, 2, {("a", "torch-cpu"): 4.0, ("b", "torch-cpu"): 2.0}, "h")
    assert plan.seconds[("c", "onnxrt-cpu")] == 3.0 and "counted as the median 3.0 s" in plan.balanced_by
    equal = plan_shards(UNITS, 2, {}, "h")
    assert set(equal.seconds.values()) == {1.0} and equal.balanced_by.startswith("equal weights")
    assert sorted(len(equal.units_of(k)) for k in (1, 2)) == [5, 5]


def test_more_shards_than_units_is_refused():
    with pytest.raises(HarnessError, match="only 10 .* use at most 10 shards"):
        plan_shards(UNITS, 11)


# -------------------------------------------------------------- runs and the merge

CASES = ('CASES = [tiny_case("tiny-a"), tiny_case("tiny-b", dtypes=("float32", "uint8")), '
         'tiny_case("tiny-shifted", offset=6.0)]\n')


def _suite(tmp_path, name, module, cache, *args):
    reports = tmp_path / name
    done = run_command(suite_command(reports, cache, "--model-module", str(module), *args, history="off"),
                       timeout=900)
    return done, reports


def _merge(*args):
    return run_python("-m", "reports.merge", *map(str, args))


@pytest.fixture(scope="module")
def sharded_and_whole(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("shards")
    module = write_cases_module(tmp_path / "shard_cases.py", CASES)
    cache = tmp_path / "cache"
    whole, whole_dir = _suite(tmp_path, "whole", module, cache)
    shards = [_suite(tmp_path, f"shard-{k}", module, cache, "--shard", f"{k}/4") for k in range(1, 5)]
    return tmp_path, whole, whole_dir, shards


def test_four_shards_merged_give_the_unsharded_runs_cases_and_verdicts(sharded_and_whole):
    tmp_path, whole, whole_dir, shards = sharded_and_whole
    assert whole.returncode == 1, whole.stdout[-2000:]  # tiny-shifted fails: failures must survive the merge too
    for done, _ in shards:
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    units = [json.loads((d / "run.json").read_text())["shard"]["units"] for _, d in shards]
    assert sorted(u for part in units for u in part) == sorted(
        f"{m}@{b}" for m in ("tiny-a", "tiny-b", "tiny-shifted") for b in ("torch-cpu", "onnxrt-cpu"))
    merged = _merge("--into", tmp_path / "merged", "--history-db", tmp_path / "night.sqlite", *[d for _, d in shards])
    assert merged.returncode == 1, merged.stdout + merged.stderr  # the failing case fails the night
    run = json.loads((tmp_path / "merged" / "run.json").read_text())
    whole_run = json.loads((whole_dir / "run.json").read_text())
    assert verdict_digest(tmp_path / "merged" / "results.jsonl") == verdict_digest(whole_dir / "results.jsonl")
    assert run["verdicts"] == whole_run["verdicts"] and run["cases"] == whole_run["cases"] > 0
    assert run["verdicts"].get("fail", 0) > 0 and run["exit_status"] == 1
    assert [p["index"] for p in run["shards"]] == [1, 2, 3, 4]
    assert all((tmp_path / "merged" / p["report"]).is_file() for p in run["shards"])
    page = (tmp_path / "merged" / "index.html").read_text()
    assert "shard 4/4" in page and "shards/shard-2/index.html" in page
    # One trend point: one run with every case in the history.
    with sqlite3.connect(tmp_path / "night.sqlite") as db:
        runs = db.execute("SELECT id, status FROM runs").fetchall()
        cases = db.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    assert len(runs) == 1 and cases == run["cases"]
    again = _merge("--into", tmp_path / "merged-again", "--history-db", tmp_path / "night.sqlite",
                   *[d for _, d in shards])
    assert again.returncode == 2 and "merged into it already" in again.stderr


def test_a_missing_shard_fails_the_merged_run_and_says_which(sharded_and_whole):
    tmp_path, _, _, shards = sharded_and_whole
    done = _merge("--into", tmp_path / "partial", "--history-db", "off", shards[0][1], shards[1][1], shards[3][1])
    run = json.loads((tmp_path / "partial" / "run.json").read_text())
    assert done.returncode == 1 and run["status"] == "failed"
    assert "shard 3/4 missing" in run["status_reason"] and "shard 3/4 missing" in done.stdout


def test_shards_that_do_not_belong_together_are_refused_in_one_line(sharded_and_whole, tmp_path):
    _, _, _, shards = sharded_and_whole
    twice = _merge("--into", tmp_path / "m1", shards[0][1], shards[0][1])
    assert twice.returncode == 2 and "given twice" in twice.stderr and twice.stderr.count("\n") == 1
    # A shard planned from another history (its plan digest differs).
    other = tmp_path / "other"
    shutil.copytree(shards[1][1], other)
    run = json.loads((other / "run.json").read_text())
    run["shard"]["plan_digest"] = "0" * 16
    (other / "run.json").write_text(json.dumps(run))
    planned = _merge("--into", tmp_path / "m2", shards[0][1], other)
    assert planned.returncode == 2 and "planned differently" in planned.stderr
    not_a_shard = _merge("--into", tmp_path / "m3", tmp_path / "nowhere")
    assert not_a_shard.returncode == 2 and "no run.json" in not_a_shard.stderr


def test_a_bad_shard_option_is_a_usage_error(tmp_path):
    module = write_cases_module(tmp_path / "one_case.py")
    done, _ = _suite(tmp_path, "r", module, tmp_path / "cache", "--shard", "3/4")
    assert done.returncode == 4
    assert "only 2 (model case, backend) unit(s) to spread over 4 shards" in done.stdout + done.stderr
    counts = Counter(line.startswith("ERROR:") for line in (done.stdout + done.stderr).splitlines())
    assert counts[True] == 1


# ------------------------------------------------------------------ the workflow


def test_the_nightly_spreads_its_shards_with_the_job_matrix_and_merges_them_into_one_report():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    jobs = workflow["jobs"]
    shard_job, merge_job = jobs["gpu-parity"], jobs["merge"]
    assert shard_job["strategy"]["matrix"]["shard"] == "${{ fromJSON(needs.plan.outputs.indices) }}"
    assert shard_job["strategy"]["fail-fast"] is False
    assert shard_job["env"]["SHARD"] == "${{ matrix.shard }}/${{ needs.plan.outputs.count }}"
    shard_runs = "\n".join(step.get("run", "") for step in shard_job["steps"])
    assert shard_runs.count('--shard "$SHARD"') == 2 and shard_runs.count('--history-db "$HISTORY_DB"') == 2
    # The plan job fixes the night's history once (restored from the cache, handed over as an
    # artifact of the run): every shard and the merge download that same artifact, so every
    # shard plans the same split, a re-run shard too; the merge alone saves the cache.
    plan_steps = jobs["plan"]["steps"]
    assert any(s.get("uses", "").startswith("actions/cache/restore") for s in plan_steps)
    handed = [s for s in plan_steps if s.get("uses", "").startswith("actions/upload-artifact")]
    downloads = [s for job in (shard_job, merge_job) for s in job["steps"]
                 if s.get("uses", "").startswith("actions/download-artifact") and "name" in s.get("with", {})]
    assert len(handed) == 1 and len(downloads) == 2
    assert downloads[0]["with"]["name"] == downloads[1]["with"]["name"] == handed[0]["with"]["name"]
    saves = [s for s in merge_job["steps"] if s.get("uses", "").startswith("actions/cache/save")]
    assert len(saves) == 1 and "github.run_attempt" in saves[0]["with"]["key"]
    assert not any(s.get("uses", "").startswith("actions/cache") for s in shard_job["steps"])
    assert merge_job["needs"] == ["plan", "gpu-parity"] and merge_job["if"].startswith("always()")
    merge_runs = "\n".join(step.get("run", "") for step in merge_job["steps"])
    assert merge_runs.count("python -m reports.merge") == 2
    assert "shards/*/zoo/shard-*" in merge_runs and "shards/*/real-architectures/shard-*" in merge_runs
    triggers = workflow.get("on", workflow.get(True))
    shards = triggers["workflow_dispatch"]["inputs"]["shards"]
    assert shards["type"] == "choice" and shards["default"] in shards["options"]
