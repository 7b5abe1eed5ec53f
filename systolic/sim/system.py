"""Run programs and whole networks on the ``Accelerator`` RTL under cocotb + Verilator.

- :func:`run_program_rtl` executes one program on a DRAM image in place and
  returns its counters; it has the signature of the ``accel`` callback of
  :func:`systolic.compiler.run_compiled` (one simulator process per call).
- :func:`run_network_rtl` runs a whole compiled network for a batch in ONE
  simulator process: the cocotb test (:mod:`systolic.sim.cocotb_system`)
  loops over the steps itself, host layers on the golden model in between.

Both take a :class:`~systolic.arch.memory.MemoryModel` (latency, bytes per
cycle, random stalls with a seed) and a *backend*: ``"direct"`` (the
default, or ``$SYSTOLIC_SIM_BACKEND``): the Verilated model driven from C++
through :mod:`systolic.sim.direct`, about 25x faster; ``"cocotb"``: the
cocotb testbench. Both serve memory with the same cycle timing and return
the same results (docs/simulation.md). A program the hardware refuses raises
:class:`RTLProgramError` (a :class:`~systolic.compiler.executor.ProgramError`)
whose message names the instruction and the reason in the executor's words.
Builds are cached like :func:`systolic.sim.rtl.build_rtl` (one folder per
config and design hash, file-locked).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..compiler.executor import Counters, ProgramError
from ..arch.isa import INSTR_BYTES, Opcode, decode, encode_program
from ..arch.machine import MachineSpec
from ..arch.config import AcceleratorConfig, load_config
from ..arch.sysmap import ERR_BAD_OPCODE, EXECUTOR_COUNTERS, error_reason
from ..arch.memory import MemoryModel
from .rtl import SimulationError, _versions, cache_root, cached_build
from .verilator import lint_flags, patched_environ, tool_env

__all__ = ["run_program_rtl", "run_network_rtl", "build_system", "SystemCounters", "RTLProgramError",
           "NetworkRun", "system_verilog", "system_top_name"]

_TB_MODULE = "systolic.sim.cocotb_system"


class RTLProgramError(ProgramError):
    """The accelerator RTL stopped with an error status; the message names the instruction and why."""

    def __init__(self, index, instr, reason, code=0, layer=None):
        where = f"layer {layer!r}: " if layer else ""
        if instr is None:
            RuntimeError.__init__(self, f"{where}instruction {index}: {reason}")
        else:
            RuntimeError.__init__(self, f"{where}instruction {index} ({instr.op.name}): {reason}")
        self.index, self.instr, self.reason, self.code, self.layer = index, instr, reason, code, layer


@dataclass
class SystemCounters(Counters):
    """The executor's :class:`Counters` (same events) plus the RTL-only counters.

    ``cycles`` from start to HALT; per unit (``ctrl``, ``load``, ``loadq``,
    ``matmul``, ``store``) busy and stall cycles (``cycles`` is the sum of the
    busy ones); ``fetch_bytes`` (instruction bytes, not in
    ``dram_bytes_read``); ``bus_reads`` / ``bus_writes`` (memory port requests).
    ``by_opcode`` counts the executed instructions of the program.
    """

    rtl: dict = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.rtl.get("cycles", 0)

    def __iadd__(self, other):
        super().__iadd__(other)
        for k, v in getattr(other, "rtl", {}).items():
            self.rtl[k] = self.rtl.get(k, 0) + v
        return self

    def executor_view(self) -> dict:
        return {k: getattr(self, k) for k in EXECUTOR_COUNTERS}


def _counters(rtl: dict, blob: bytes) -> SystemCounters:
    c = SystemCounters(**{k: rtl[k] for k in EXECUTOR_COUNTERS}, rtl=dict(rtl))
    # The opcode is the low 4 bits of an instruction's first byte (isa.decode);
    # counted with NumPy, in order of first appearance, unknown opcodes skipped.
    n = min(rtl["instructions"], len(blob) // INSTR_BYTES)
    ops = np.frombuffer(blob, dtype=np.uint8)[:n * INSTR_BYTES:INSTR_BYTES] & 0xF
    values, first, counts = np.unique(ops, return_index=True, return_counts=True)
    for i in np.argsort(first, kind="stable"):
        if int(values[i]) in Opcode._value2member_map_:
            c.by_opcode[Opcode(int(values[i])).name] = int(counts[i])
    return c


# ------------------------------------------------------------------------------------------ build
def system_top_name(config: AcceleratorConfig) -> str:
    return "accel_" + config.name[len("systolic_"):]


def system_verilog(config) -> str:
    """The Verilog of ``Accelerator(config)``, top module :func:`system_top_name`."""
    from amaranth.back import verilog

    from ..hw.system import Accelerator

    config = load_config(config)
    return verilog.convert(Accelerator(config=config), name=system_top_name(config), emit_src=False)


def _cxx_opt() -> str:
    # Whole-network simulations are long and cycle-bound (the Verilated model's
    # evaluation dominates; measured on a 4x4 system: -O0 4.5x slower than
    # -O2), so the per-cycle code (Verilator's "fast" files) is built with -O2
    # unless SYSTOLIC_SYSTEM_CXX_OPT says otherwise. The "slow" files (run once:
    # constructors, the VPI symbol table that --public-flat-rw makes huge) get
    # -O0: optimizing them took minutes for nothing.
    return os.environ.get("SYSTOLIC_SYSTEM_CXX_OPT", "-O2")


def _build_env() -> dict:
    env = tool_env()
    env["MAKEFLAGS"] += f" OPT_FAST={_cxx_opt()} OPT_SLOW=-O0 OPT_GLOBAL=-O1"
    return env


def _fingerprint(config) -> str:
    """The system's Verilog is a function of the config, every module of systolic/hw and the ISA layout."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(config.to_json().encode())
    for src in [*sorted((pkg / "hw").glob("*.py")), *sorted((pkg / "arch").glob("*.py"))]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()


def build_system(config, cache_dir=None) -> Path:
    """Generate and Verilate the Accelerator of *config* (cached); returns the build folder."""
    from cocotb_tools.runner import get_runner

    config = load_config(config)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    top = system_top_name(config)
    args = lint_flags()
    key = hashlib.sha256("\n".join([_fingerprint(config), *args, _cxx_opt(), _versions()]).encode()).hexdigest()[:16]

    def build(build_dir: Path) -> dict:
        verilog = build_dir / f"{top}.v"
        verilog.write_text(system_verilog(config))
        log = build_dir / "build.log"
        with patched_environ(_build_env()):
            try:
                get_runner("verilator").build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir,
                                              build_args=args, timescale=("1ns", "1ps"), log_file=log)
            except (RuntimeError, SystemExit, OSError) as exc:
                tail = log.read_text()[-4000:] if log.exists() else ""
                raise SimulationError(f"verilator build of {top} failed: {exc}\n{tail}") from None
        return {"verilog": str(verilog)}

    return cached_build(root, top, key, build)[0]


def _run_job(config, job: dict, cache_dir=None):
    """Build, make a run folder, point the job's file names into it; returns (job, run_dir, launch)."""
    build_dir = build_system(config, cache_dir)
    top = system_top_name(config)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    for k in ("input", "output", "result", "net"):
        if k in job:
            job[k] = str(run_dir / job[k])
    return job, run_dir, (lambda: _launch(job, run_dir, build_dir, top))


def _launch(job, run_dir, build_dir, top) -> dict:
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job))
    log = run_dir / "sim.log"
    results_xml = run_dir / "results.xml"
    with patched_environ(tool_env()):
        try:
            get_runner("verilator").test(test_module=_TB_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                                         build_dir=build_dir, test_dir=run_dir,
                                         extra_env={"SYSTOLIC_SYSTEM_JOB": str(job_path)},
                                         results_xml=str(results_xml), log_file=log, seed=job["memory"]["seed"])
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(_failure(top, f"simulator exited: {exc}", log)) from None
    _, n_failed = get_results(results_xml)
    if n_failed or not Path(job["result"]).exists():
        raise SimulationError(_failure(top, "testbench failed", log))
    return json.loads(Path(job["result"]).read_text())


def _failure(top, what, log: Path) -> str:
    tail = log.read_text()[-6000:] if log.exists() else "(no log)"
    return f"verilator simulation of {top}: {what} (log {log}):\n{tail}"


def _raise_for(res: dict, blob: bytes, spec: MachineSpec, dram_bytes: int, layer=None):
    if res.get("hang"):
        raise SimulationError(f"{'layer ' + repr(layer) + ': ' if layer else ''}the accelerator did not finish "
                              f"(no HALT, no error) within the cycle limit")
    code = res["error"]
    if not code:
        return
    idx = res["err_index"]
    if idx >= 2 ** 31:   # "program ends without HALT" on an empty program
        idx -= 2 ** 32
    instr = None
    if 0 <= idx < len(blob) // INSTR_BYTES and code != ERR_BAD_OPCODE:
        instr = decode(int.from_bytes(blob[idx * INSTR_BYTES:(idx + 1) * INSTR_BYTES], "little"))
    reason = error_reason(code, res["err_arg"], spec, dram_bytes, instr)
    raise RTLProgramError(idx, instr, reason, code, layer)


BACKENDS = ("direct", "cocotb")


def _backend(backend):
    backend = backend or os.environ.get("SYSTOLIC_SIM_BACKEND") or "direct"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return backend


def _check_memory(memory):
    if not isinstance(memory, MemoryModel):
        raise TypeError(f"memory must be a MemoryModel, not {memory!r}")


# ---------------------------------------------------------------------------------- public API
def run_program_rtl(config, dram: np.ndarray, program, memory: MemoryModel = MemoryModel(),
                    cache_dir=None, backend=None) -> SystemCounters:
    """Execute *program* (list of Instr, or encoded bytes) on the RTL; *dram* is updated in place.

    The program is placed after the data window ``[0, dram.size)``; LOAD /
    LOADQ / STORE may touch only that window. Raises :class:`RTLProgramError`
    when the hardware reports an error. Usable as ``accel`` of
    :func:`~systolic.compiler.run_compiled` via
    ``lambda spec, dram, prog: run_program_rtl(cfg, dram, prog)``.
    """
    config = load_config(config)
    _check_memory(memory)
    if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
        raise TypeError("dram must be a 1-D uint8 array")
    blob = bytes(program) if isinstance(program, (bytes, bytearray)) else encode_program(program)
    if len(blob) % INSTR_BYTES:
        raise ValueError(f"a program is a whole number of {INSTR_BYTES}-byte instructions, not {len(blob)} bytes")
    spec = MachineSpec.from_config(config, dram_bytes=max(1, dram.size))
    if _backend(backend) == "direct":
        from .direct import run_program_direct

        res = run_program_direct(config, dram, blob, memory, cache_dir)
        _raise_for(res, blob, spec, dram.size)
        return _counters(res["counters"], blob)
    job = {"mode": "program", "config": config.to_dict(), "memory": memory.to_dict(),
           "input": "in.npz", "output": "out.npz", "result": "result.json"}
    job, run_dir, launch = _run_job(config, job, cache_dir)
    np.savez(job["input"], dram=dram, program=np.frombuffer(blob, dtype=np.uint8))
    res = launch()
    with np.load(job["output"], allow_pickle=False) as z:
        dram[:] = z["dram"]
    shutil.rmtree(run_dir, ignore_errors=True)
    _raise_for(res, blob, spec, dram.size)
    return _counters(res["counters"], blob)


@dataclass
class NetworkRun:
    """Result of :func:`run_network_rtl`."""

    outputs: "OrderedDict[str, np.ndarray]"   #: every tensor (input and each layer), as the golden model's run
    counters: "OrderedDict[str, SystemCounters]"  #: per accelerated layer
    seconds: float                            #: wall time of the simulator process (build excluded)
    sim_seconds: dict                         #: per accelerated layer, wall time inside the simulator

    @property
    def cycles(self) -> int:
        return sum(c.cycles for c in self.counters.values())


def run_network_rtl(cn, x_int, config, memory: MemoryModel = MemoryModel(), cache_dir=None,
                    backend=None, progress=None) -> NetworkRun:
    """Run compiled network *cn* on input *x_int* with every accelerator program on the RTL.

    One simulator process runs the whole batch; host layers run on the golden
    model inside it. *cn* must have been compiled for ``MachineSpec.from_config(config, ...)``.
    Raises :class:`RTLProgramError` (naming the layer) if the hardware reports an error.
    *progress* (direct backend only): called as ``progress(layer, cycles)`` after each program.
    """
    from ..compiler.lower import AccelStep

    config = load_config(config)
    _check_memory(memory)
    spec = MachineSpec.from_config(config, dram_bytes=cn.spec.dram_bytes)
    if spec != cn.spec:
        raise ValueError(f"the network was compiled for {cn.spec}, not for this config ({spec})")
    x = cn.net.check_input(x_int)
    if x.shape[0] != cn.batch:
        raise ValueError(f"this program was compiled for batch {cn.batch}, not {x.shape[0]}")
    blobs = {s.layer: encode_program(s.program) for s in cn.steps if isinstance(s, AccelStep)}
    if _backend(backend) == "direct":
        from .direct import build_direct, run_network_direct

        build_direct(config, cache_dir)
        t0 = time.perf_counter()
        res, outs = run_network_direct(cn, x, config, memory, cache_dir, progress, blobs)
        seconds = time.perf_counter() - t0
        if res["failure"] is not None:
            layer = res["failure"]
            _raise_for(res["layers"][layer], blobs[layer], spec, cn.spec.dram_bytes, layer)
            raise SimulationError(f"layer {layer!r}: the accelerator stopped without HALT or error")
        counters = OrderedDict((k, _counters(v["counters"], blobs[k])) for k, v in res["layers"].items())
        return NetworkRun(outs, counters, seconds, {k: v["seconds"] for k, v in res["layers"].items()})
    job = {"mode": "network", "config": config.to_dict(), "memory": memory.to_dict(), "batch": cn.batch,
           "dram_bytes": cn.spec.dram_bytes, "net": "net.npz", "input": "x.npz", "output": "out.npz",
           "result": "result.json"}
    job, run_dir, launch = _run_job(config, job, cache_dir)
    cn.net.save(job["net"])
    np.savez(job["input"], x=x)
    t0 = time.perf_counter()
    res = launch()
    seconds = time.perf_counter() - t0
    if res["failure"] is not None:
        layer = res["failure"]
        shutil.rmtree(run_dir, ignore_errors=True)
        _raise_for(res["layers"][layer], blobs[layer], spec, cn.spec.dram_bytes, layer)
        raise SimulationError(f"layer {layer!r}: the accelerator stopped without HALT or error")
    with np.load(job["output"], allow_pickle=False) as z:
        outs = OrderedDict((name, z[f"t{i}"].astype(np.int64)) for i, name in enumerate(res["names"]))
    shutil.rmtree(run_dir, ignore_errors=True)
    counters = OrderedDict((k, _counters(v["counters"], blobs[k])) for k, v in res["layers"].items())
    return NetworkRun(outs, counters, seconds, {k: v["seconds"] for k, v in res["layers"].items()})
