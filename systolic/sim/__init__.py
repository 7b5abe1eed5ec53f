"""RTL simulation: cocotb + Verilator (or Icarus) runs of the generated core.

``run_gemm(config, a, w, bias=None, shift=0, relu=False, simulator="verilator")``
returns the integer result of one requantized GEMM computed by the RTL.
``run_network_rtl(cn, x, config, memory=MemoryModel(...))`` runs a compiled
network on the whole Accelerator RTL (one simulator process per batch) and
``run_program_rtl(config, dram, program)`` one program.
Heavy imports (amaranth, cocotb) happen inside the functions.
"""

from ..arch.memory import MemoryModel
from .rtl import SIMULATORS, RTLBuild, SimulationError, build_rtl, cache_root, run_gemm, run_gemm_batch
from .system import NetworkRun, RTLProgramError, SystemCounters, build_system, run_network_rtl, run_program_rtl

__all__ = ["run_gemm", "run_gemm_batch", "build_rtl", "RTLBuild", "SimulationError", "SIMULATORS",
           "cache_root", "MemoryModel", "run_network_rtl", "run_program_rtl", "build_system", "NetworkRun",
           "RTLProgramError", "SystemCounters"]
