"""``tests.requirements.require``: a skip outside CI, a failure with ``CI=true``.

Each case runs pytest in a subprocess on a tiny test file in ``tmp_path`` that requires a module
that does not exist, and reads the outcome from the JUnit XML report and the exit code.
"""

import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.requirements import in_ci, require

ROOT = Path(__file__).resolve().parents[2]
MISSING = "a_module_that_does_not_exist_xyz"
REASON = f"needs {MISSING} (install the nothing extra)"
FAILURE = f"this test {REASON}; CI=true turns this skip into a failure"

MODULE_LEVEL = f"""
from tests.requirements import require

require({MISSING!r}, "nothing")


def test_never_runs():
    assert False
"""

IN_TEST = f"""
from tests.requirements import require


def test_inside():
    require({MISSING!r}, "nothing")
    assert False
"""


def run_pytest(tmp_path, ci):
    """Run both files in one pytest process (``--continue-on-collection-errors`` so the in-test case
    runs next to the module-level collection error); return the result and the JUnit test cases."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's configuration
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)
    (tmp_path / "test_in_test.py").write_text(IN_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # plain pytest: starts in 0.5 s instead of 2 s
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs",
                          "--continue-on-collection-errors", "--junitxml", str(tmp_path / "report.xml"),
                          "test_module_level.py", "test_in_test.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "errors", "failures", "skipped")}
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    return out, counts, cases


def test_missing_module_fails_under_ci(tmp_path):
    out, counts, cases = run_pytest(tmp_path, "true")
    log = out.stdout + out.stderr
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, log
    assert counts == {"tests": 2, "errors": 1, "failures": 1, "skipped": 0}, log
    assert sorted(cases) == ["test_inside", "test_module_level"]
    # Module level: a collection error (the module's tests never run); in a test: a failed test.
    assert cases["test_module_level"].find("error").text == FAILURE
    assert cases["test_inside"].find("failure").text == FAILURE
    lines = out.stdout.splitlines()
    assert f"ERROR test_module_level.py - Failed: {FAILURE}" in lines, log
    assert f"FAILED test_in_test.py::test_inside - Failed: {FAILURE}" in lines, log
    assert "test_never_runs" not in out.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_module_skips_outside_ci(tmp_path, ci):
    out, counts, cases = run_pytest(tmp_path, ci)
    log = out.stdout + out.stderr
    assert out.returncode == pytest.ExitCode.OK, log
    assert counts == {"tests": 2, "errors": 0, "failures": 0, "skipped": 2}, log
    assert cases["test_inside"].find("skipped").get("message") == REASON
    # The reason is printed with the caller's line (the require call), not the helper's.
    lines = out.stdout.splitlines()
    assert f"SKIPPED [1] test_module_level.py:4: {REASON}" in lines, log
    assert f"SKIPPED [1] test_in_test.py:6: {REASON}" in lines, log
    assert "CI=true" not in out.stdout


def test_present_module_is_returned(monkeypatch):
    for ci in ("true", ""):
        monkeypatch.setenv("CI", ci)
        assert require("math", "nothing") is math


@pytest.mark.parametrize("value,expect", [("true", True), ("True", True), ("1", True), ("", False),
                                          ("false", False), ("0", False), (None, False)])
def test_in_ci(monkeypatch, value, expect):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expect
