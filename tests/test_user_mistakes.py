"""Every user mistake ends in one line naming the thing and what was expected: a pytest
usage error (exit status 4) before anything is collected, never an INTERNALERROR or a
bare Python traceback.

Each mistake runs `pytest suites --collect-only` in this process (pytest.main: the
harness's plugins configure as in a real run, in milliseconds); one runs in a real
subprocess, to show the same line reaches a user's terminal.
"""

from __future__ import annotations

import pytest

from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.watchdog import default_case_timeout, parse_seconds
from tests.suite_runs import REPO, run_command, suite_command
from tests.tiny_cases import write_cases_module


def usage_error(capsys, monkeypatch, *args: str) -> str:
    """The one 'ERROR: ...' line of `pytest suites --collect-only ARGS`, which must end in a usage error."""
    monkeypatch.chdir(REPO)
    code = pytest.main(["suites", "--collect-only", "-q", "-p", "no:cacheprovider", *args])
    out, err = capsys.readouterr()
    assert code == pytest.ExitCode.USAGE_ERROR, out + err
    assert "INTERNALERROR" not in out + err and "Traceback" not in out + err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), err
    return lines[0]


@pytest.fixture
def cases(tmp_path):
    """Writes a cases module (tests.tiny_cases helpers imported) and returns its path."""

    def write(body: str) -> str:
        return str(write_cases_module(tmp_path / "my_cases.py", body))

    return write


@pytest.mark.parametrize("body, says", [
    pytest.param("raise RuntimeError('broken on purpose')\n",
                 "(at my_cases.py:4): importing it raised RuntimeError: broken on purpose; expected it to import "
                 "cleanly and define CASES", id="raises-on-import"),
    pytest.param("import not_installed_anywhere_xyz\n",
                 "(at my_cases.py:4) imports 'not_installed_anywhere_xyz', which is not installed; expected it "
                 "importable (pip install it, or remove the import)", id="imports-a-missing-package"),
    pytest.param("CASES = [tiny_case(dtypes=('flaot32',))]\n",
                 "(at my_cases.py:4): input 'images': dtype 'flaot32' is not a numpy dtype name; expected uint8 or "
                 "a float dtype (float32, float16, ...)", id="dtype-typo"),
    pytest.param("CASES = [tiny_case(sizes=SizeSpace(min_side=32, max_side=96, max_aspect=0.5))]\n",
                 "(at my_cases.py:4): SizeSpace: max_aspect 0.5: expected a number >= 1 (the longer side over the "
                 "shorter one; 1.0 allows square sizes only)", id="max-aspect-below-one"),
    pytest.param("CASES = [tiny_case(sizes=SizeSpace(min_side=65, max_side=90, multiple_of=32))]\n",
                 "(at my_cases.py:4): SizeSpace: no side in [65, 90] is a multiple of 32 (the nearest are 64 and "
                 "96); expected a range holding at least one, e.g. widen it or change multiple_of",
                 id="size-space-with-no-valid-size"),
    pytest.param("from dataclasses import replace\n"
                 "case = tiny_case()\n"
                 "CASES = [replace(case, adapter=None, "
                 "outputs=(OutputSpec('dets', 'boxes'), OutputSpec('dets', 'raw')), to_instances=case.to_instances)]\n",
                 "(at my_cases.py:6): tiny-det: output names ['dets'] declared more than once; expected each output "
                 "declared once", id="duplicate-output-names"),
    pytest.param("from dataclasses import replace\n"
                 "CASES = [replace(tiny_case(), onnx_path=42)]\n",
                 "(at my_cases.py:5): tiny-det: onnx_path is of type int; expected a path (str or pathlib.Path) or a "
                 "function returning one", id="onnx-path-neither-a-path-nor-a-function"),
])
def test_a_mistake_in_a_cases_module_is_one_line_naming_the_module_and_the_line(cases, capsys, monkeypatch, body,
                                                                                 says):
    """The body is written below the helpers' imports (tests/tiny_cases.py): its first line is line 4."""
    path = cases(body)
    assert usage_error(capsys, monkeypatch, "--model-module", path) == f"ERROR: model module {path} {says}"


def test_dotted_cases_module_that_does_not_exist(capsys, monkeypatch):
    assert usage_error(capsys, monkeypatch, "--model-module", "no_such_pkg.cases") == (
        "ERROR: model module no_such_pkg.cases: no module named 'no_such_pkg' on the import path; expected a "
        "dotted module name importable from here, or a path to a .py file")


def test_unknown_hypothesis_profile_option(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case()]\n")
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--hypothesis-profile", "nitghly") == (
        "ERROR: --hypothesis-profile 'nitghly': no such Hypothesis profile; expected one of dev, ci, nightly, replay")


def test_unknown_hypothesis_profile_variable(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case()]\n")
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "nitghly")
    assert usage_error(capsys, monkeypatch, "--model-module", path) == (
        "ERROR: HYPOTHESIS_PROFILE='nitghly': no such Hypothesis profile; expected one of dev, ci, nightly, replay")


def test_replay_with_an_undeclared_dtype(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case()]\n")
    replay = "h=64,w=64,batch=1,dtypes=float33,seed=0"
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--replay", replay) == (
        f"ERROR: --replay '{replay}': dtype 'float33' for input 'images' of tiny-det; expected one it declares: "
        "float32")


def test_replay_with_a_negative_size_and_batch_zero(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case()]\n")
    replay = "h=-64,w=64,batch=0,dtypes=float32,seed=0"
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--replay", replay) == (
        f"ERROR: --replay '{replay}': h=-64; expected a positive integer")
    replay = "h=64,w=64,batch=0,dtypes=float32,seed=0"
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--replay", replay) == (
        f"ERROR: --replay '{replay}': batch=0; expected a positive integer")


def test_replay_with_two_models(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case('tiny-a'), tiny_case('tiny-b', dtypes=('float32', 'uint8'))]\n")
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--model", "tiny-a,tiny-b", "--replay",
                       "h=64,w=64,batch=1,dtypes=float32,seed=0") == (
        "ERROR: --replay re-runs one case of one model: expected one --model NAME, got 2 (tiny-a, tiny-b)")


def test_onnx_path_given_as_a_function_is_made_on_first_use_and_its_failures_name_the_case(tmp_path):
    import os
    from dataclasses import replace

    from deploy_parity.errors import ArtifactError
    from tests.tiny_cases import tiny_case

    calls = []
    graph = tmp_path / "made.onnx"

    def make():
        calls.append(1)
        graph.write_bytes(b"graph")
        return graph

    case = replace(tiny_case(), onnx_path=make)
    assert calls == []  # declaring (and importing) a case makes nothing
    assert os.fspath(case.onnx_path) == str(graph) and os.fspath(case.onnx_path) == str(graph)
    assert len(calls) == 1  # made once ...
    graph.unlink()
    assert os.fspath(case.onnx_path) == str(graph) and len(calls) == 2  # ... and again when its file is gone
    renamed = replace(case, name="tiny-other")
    assert "tiny-other" in repr(renamed.onnx_path)

    def broken():
        raise RuntimeError("exporter crashed\nwith a long traceback")

    with pytest.raises(ArtifactError) as info:
        os.fspath(replace(tiny_case(), onnx_path=broken).onnx_path)
    assert str(info.value).startswith("artifact tiny-det.onnx_path (")
    assert "making it raised RuntimeError: exporter crashed (expected the function" in str(info.value)
    with pytest.raises(ArtifactError, match=r"the function returned NoneType, not a path"):
        os.fspath(replace(tiny_case(), onnx_path=lambda: None).onnx_path)
    with pytest.raises(ArtifactError, match=r"^artifact tiny-det\.onnx_path .*: the function returned .*nowhere"
                                            r"\.onnx, where there is no file"):
        os.fspath(replace(tiny_case(), onnx_path=lambda: tmp_path / "nowhere.onnx").onnx_path)

    def exporter_refusing():
        raise ArtifactError(tmp_path / "x.onnx", "Ultralytics' ONNX export failed: no")

    with pytest.raises(ArtifactError, match=r"^artifact tiny-det\.onnx_path .*: making it failed: artifact .*x\.onnx: "
                                            r"Ultralytics' ONNX export failed: no"):
        os.fspath(replace(tiny_case(), onnx_path=exporter_refusing).onnx_path)


@pytest.mark.parametrize("name", ["../../escaped", "team/det"])
def test_case_name_with_a_path_separator(cases, capsys, monkeypatch, name):
    path = cases(f"CASES = [tiny_case({name!r})]\n")
    assert usage_error(capsys, monkeypatch, "--model-module", path) == (
        f"ERROR: model module {path} (at my_cases.py:4): model case name {name!r} contains '/', a path separator; "
        "expected 1-64 characters from letters, digits and . _ + -, starting with a letter or digit (the name is "
        "used in cache file names, test ids and --model)")


@pytest.mark.parametrize("name, problem", [(".hidden", "starts with '.'"), ("a b", "contains ' ', a blank or "
                                           "non-printable character"), ("x" * 65, "is 65 characters long")])
def test_other_unsafe_case_names(cases, capsys, monkeypatch, name, problem):
    path = cases(f"CASES = [tiny_case({name!r})]\n")
    assert f"model case name {name!r} {problem}; expected 1-64 characters" in usage_error(
        capsys, monkeypatch, "--model-module", path)


def test_bad_case_timeout(cases, capsys, monkeypatch):
    path = cases("CASES = [tiny_case()]\n")
    assert usage_error(capsys, monkeypatch, "--model-module", path, "--case-timeout", "soon") == (
        "ERROR: --case-timeout 'soon': expected a number of seconds > 0 (or 0/off for no limit)")
    monkeypatch.setenv("PARITY_CASE_TIMEOUT", "-5")
    with pytest.raises(ValueError, match=r"PARITY_CASE_TIMEOUT '-5': expected a number of seconds > 0"):
        default_case_timeout()
    monkeypatch.setenv("PARITY_CASE_TIMEOUT", "12")
    assert default_case_timeout() == 12.0 and parse_seconds("off", "x") is None


def test_a_real_process_shows_the_same_single_line(tmp_path):
    path = write_cases_module(tmp_path / "my_cases.py", "CASES = [tiny_case()]\n")
    done = run_command(suite_command(tmp_path / "reports", tmp_path / "cache", "--model-module", str(path),
                                     "--collect-only", profile="nitghly"))
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stderr.strip() == ("ERROR: --hypothesis-profile 'nitghly': no such Hypothesis profile; expected one "
                                   "of dev, ci, nightly, replay")
    assert "INTERNALERROR" not in done.stdout and not (tmp_path / "reports").exists()


def test_infinity_is_not_called_nan():
    import numpy as np

    tol = lookup("tensor", "onnxrt-cpu", "fp32")
    inf = compare_tensors(np.zeros(3), np.array([0.0, np.inf, 0.0]), tol, "scores")
    assert inf.message == "scores: +inf in the candidate at index (1,) (a non-finite value never passes)"
    nan = compare_tensors(np.array([0.0, 0.0, np.nan]), np.zeros(3), tol, "scores")
    assert nan.message == "scores: NaN in the reference at index (2,) (a non-finite value never passes)"


def test_two_cases_of_one_name_in_one_module_is_a_usage_error(cases, capsys, monkeypatch):
    """The last would silently win and the first (perhaps a broken one) never run."""
    path = cases("CASES = [tiny_case('twin'), tiny_case('other'), tiny_case('twin')]\n")
    assert usage_error(capsys, monkeypatch, "--model-module", path) == (
        f"ERROR: model case 'twin' registered twice ({path} CASES[0] and {path} CASES[2]); expected unique names")


def test_a_helper_module_beside_the_cases_module_imports_without_a_path_hack(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_helpers.py").write_text("NAME = 'from-helper'\n")
    path = write_cases_module(tmp_path / "my_cases.py", "import my_helpers\nCASES = [tiny_case(my_helpers.NAME)]\n")
    monkeypatch.chdir(REPO)
    code = pytest.main(["suites", "--collect-only", "-q", "-p", "no:cacheprovider", "--model-module", str(path)])
    out, err = capsys.readouterr()
    assert code == pytest.ExitCode.OK, out + err
    assert "from-helper" in out
