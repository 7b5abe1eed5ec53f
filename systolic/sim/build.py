"""Simulator builds: one cache, one lock, one key per design; the errors every simulator raises.

Every RTL build (the GEMM core under cocotb, the accelerator under cocotb,
the direct Verilator driver) goes into a folder under :func:`cache_root`
(``$SYSTOLIC_SIM_CACHE``, default ``~/.cache/systolic/sim``) named by the top
and a key: a hash of :func:`systolic.hw.generate.design_fingerprint` (the
config and the text of every source the top's Verilog depends on), the
build flags and the tool versions. A file lock makes parallel callers (pytest
workers, two CLI runs) wait for one build; a folder left by a build that died
half way is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

__all__ = ["SimulationError", "cache_root", "cached_build", "tool_versions", "build_key"]

_MARKER = "systolic_build.json"


class SimulationError(RuntimeError):
    """The RTL simulation failed (build error, testbench error or hang)."""


def cache_root() -> Path:
    env = os.environ.get("SYSTOLIC_SIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "systolic" / "sim"


def tool_versions(*packages: str) -> str:
    """``name=version;...`` of the installed *packages* (part of build keys)."""
    from importlib.metadata import version

    return ";".join(f"{p}={version(p)}" for p in packages)


def build_key(config, top: str, *parts: str) -> str:
    """The cache key of a build of *top* for *config* with the extra *parts* (flags, versions, sources)."""
    from ..hw.generate import design_fingerprint

    return hashlib.sha256("\n".join([design_fingerprint(config, top), *parts]).encode()).hexdigest()[:16]


def cached_build(root: Path, name: str, key: str, build) -> tuple[Path, dict, bool]:
    """The build folder ``root/name-key``, made once by ``build(build_dir) -> info dict``.

    The marker file records *info* plus the build's ``seconds``. Returns
    ``(build_dir, info, cached)``.
    """
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{name}-{key}"
    marker = build_dir / _MARKER
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return build_dir, json.loads(marker.read_text()), True
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        info = dict(build(build_dir))
        info["seconds"] = time.perf_counter() - t0
        marker.write_text(json.dumps(info))
        return build_dir, info, False
