"""Optional test dependencies: a skip on a developer machine, a failure under CI.

A test module that needs an optional extra starts with::

    from tests.requirements import require

    torch = require("torch", "quantize")

(or calls :func:`require` inside one test when only that test needs it).
"""

from __future__ import annotations

import importlib
import os

import pytest

__all__ = ["require", "require_program", "in_ci"]


def in_ci() -> bool:
    """Whether the environment variable ``CI`` is ``true`` (any case) or ``1``, as GitHub Actions,
    GitLab CI and most other CI systems set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require(module_name: str, extra: str):
    """Import and return *module_name*; if it cannot be imported, skip (or, under CI, fail).

    Parameters
    ----------
    module_name : the module to import, e.g. ``"torch"``, ``"onnx"``.
    extra : the package extra (``pip install 'systolic[<extra>]'``) that provides it; named in
        the message.

    Outside CI a missing module skips the calling test, or the whole module when called at
    module level (``allow_module_level=True``), with the reason
    ``"needs <module> (install the <extra> extra)"``. With ``CI=true`` the same situation is a
    failure (``pytest.fail(..., pytrace=False)``: a collection error at module level, a failed
    test inside a test), so a CI job that forgot an extra cannot pass by skipping its tests.
    """
    __tracebackhide__ = True  # report the caller's line, not this one
    try:
        return importlib.import_module(module_name)
    except ImportError:
        pass  # fail or skip outside the handler: no "During handling of the above exception"
    reason = f"needs {module_name} (install the {extra} extra)"
    if in_ci():
        pytest.fail(f"this test {reason}; CI=true turns this skip into a failure", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_program(name: str, how: str) -> str:
    """The path of program *name* on PATH; if it is missing, skip (or, under CI, fail) naming *how* to get it.

    Use inside a test (not at module level): ``iverilog = require_program("iverilog", "apt-get install
    iverilog")``.
    """
    __tracebackhide__ = True
    import shutil

    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"needs the program {name} ({how})"
    if in_ci():
        pytest.fail(f"this test {reason}; CI=true turns this skip into a failure", pytrace=False)
    pytest.skip(reason)
