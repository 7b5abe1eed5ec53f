"""The suite's session-start check: under CI a missing extra fails the run with a clear message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs pytest with torch made unimportable (``sys.modules["torch"] = None``: find_spec gives None and
# ``import torch`` raises ImportError, as on a machine without the quantize extra).
_WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; import pytest; "
                  "sys.exit(pytest.main(['-p', 'no:cacheprovider', *sys.argv[1:]]))")


def _pytest_without_torch(ci: bool, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_ci_with_a_missing_extra_fails_before_any_test():
    r = _pytest_without_torch(True, "tests/test_cli.py", "-k", "help_lists")
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert ("CI=true and the suite's requirements are incomplete; missing:\n"
            "  - Python module 'torch' (install the quantize extra: pip install -e '.[quantize]')") in r.stderr
    assert "passed" not in r.stdout


def test_outside_ci_the_header_lists_what_is_missing():
    r = _pytest_without_torch(False, "tests/test_cli.py", "-k", "help_lists")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "systolic: missing (their tests skip):" in r.stdout
    assert "  - Python module 'torch' (install the quantize extra" in r.stdout
    assert "1 passed" in r.stdout
    assert "systolic: tests skipped for lack of: Python module 'torch'" in r.stdout   # the summary, also -q
