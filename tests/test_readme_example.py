"""The README's user example, run verbatim: torchvision's Keypoint R-CNN added as a user
would, in at most 15 lines, through --model-module."""

from __future__ import annotations

import re

import pytest

from tests.suite_runs import PARITY_ONLY, REPO, run_suite

pytestmark = pytest.mark.slow

BLOCK = re.compile(r"<!-- user-example:[^>]*-->\s*```python\n(.*?)```\s*<!-- /user-example -->", re.S)


def readme_example() -> str:
    match = BLOCK.search((REPO / "README.md").read_text())
    assert match, "README.md has no <!-- user-example --> python block"
    return match.group(1)


def test_the_readme_example_is_at_most_15_lines():
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 15, f"{len(lines)} lines"


def test_the_readme_example_runs_verbatim_and_passes(tmp_path):
    module = tmp_path / "my_cases.py"
    module.write_text(readme_example())
    # A fixed Hypothesis seed: the dev profile is not derandomized, and a random-weight
    # detector on one of its random feeds may find nothing (VACUOUS): a flaky test otherwise.
    run = run_suite(tmp_path, "--model-module", str(module), "--backend", "onnxrt-cpu", "--hypothesis-seed=0",
                    profile="dev", target=PARITY_ONLY)
    assert run.returncode == 0, run.output[-4000:]
    records = run.records()
    assert records and {r["model"] for r in records} == {"my-keypoint-rcnn"}
    # No failure; an AMBIGUOUS example is allowed only with its evidence: on another CPU (CI's) one
    # random-weight feed put the reference on a rounding knife edge, which the standards call AMBIGUOUS.
    verdicts = [r["verdict"] for r in records]
    assert set(verdicts) <= {"pass", "ambiguous"}, verdicts
    assert verdicts.count("pass") >= 0.8 * len(verdicts), verdicts
    for record in records:
        if record["verdict"] == "ambiguous":
            unsure = [c for c in record["comparisons"] if c["verdict"] == "ambiguous"]
            assert unsure and all(c["evidence"] and c["message"] for c in unsure), record
    assert any(c["kind"] == "keypoints" for r in records for c in r["comparisons"])  # keypoints really compared
    assert len({(r["height"], r["width"]) for r in records}) > 3  # many sizes, not one
