"""RTL simulation: the accelerator on three backends, and the GEMM-core bench.

The accelerator (the ``system`` top): ``run_network_rtl(cn, x, config,
memory=MemoryModel(...), backend="direct")`` runs a compiled network on one
simulated accelerator, ``run_program_rtl(config, dram, program)`` one
program; both go through one :class:`~systolic.sim.backend.Backend`
interface (memory image + program in, a :class:`~systolic.sim.backend.RunResult`
out) implemented by the direct Verilator driver (:mod:`~systolic.sim.direct`),
the cocotb testbench (:mod:`~systolic.sim.cocotb_backend`) and amaranth.sim
(:mod:`~systolic.sim.amaranth_backend`), and one network loop
(:func:`systolic.compiler.run.run_network`).

The GEMM-core bench (:mod:`systolic.sim.core`): ``run_gemm(config, a, w, ...)``
on the ``core`` top under cocotb + Verilator or Icarus.

Builds are cached (:mod:`~systolic.sim.build`); heavy imports (amaranth,
cocotb) happen inside the functions.
"""

from ..arch.memory import MemoryModel
from ..compiler.run import NetworkRun
from .backend import RTLProgramError, RunResult, SystemCounters
from .build import SimulationError, cache_root
from .core import SIMULATORS, RTLBuild, build_rtl, run_gemm, run_gemm_batch
from .system import BACKENDS, build_backend, open_backend, run_network_rtl, run_program_rtl

__all__ = ["run_gemm", "run_gemm_batch", "build_rtl", "RTLBuild", "SimulationError", "SIMULATORS",
           "cache_root", "MemoryModel", "run_network_rtl", "run_program_rtl", "open_backend", "build_backend",
           "BACKENDS", "NetworkRun", "RTLProgramError", "RunResult", "SystemCounters"]
