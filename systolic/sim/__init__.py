"""RTL simulation: cocotb + Verilator (or Icarus) runs of the generated core.

``run_gemm(config, a, w, bias=None, shift=0, relu=False, simulator="verilator")``
returns the integer result of one requantized GEMM computed by the RTL.
Heavy imports (amaranth, cocotb) happen inside the functions.
"""

from .rtl import SIMULATORS, RTLBuild, SimulationError, build_rtl, cache_root, run_gemm, run_gemm_batch

__all__ = ["run_gemm", "run_gemm_batch", "build_rtl", "RTLBuild", "SimulationError", "SIMULATORS",
           "cache_root"]
