"""The GEMM-core bench: the datapath (array + requantizer lanes) alone, under cocotb or amaranth.sim.

``run_gemm(config, a, w, bias=None, shift=0, relu=False, simulator="verilator")``
returns the integer result of one requantized GEMM computed by the ``core``
top's RTL; :mod:`~systolic.sim.core.driver` tiles a GEMM into passes and
drives the streams (shared by the cocotb testbench and amaranth.sim).
"""

from .rtl import SIMULATORS, RTLBuild, build_rtl, run_gemm, run_gemm_batch

__all__ = ["SIMULATORS", "RTLBuild", "build_rtl", "run_gemm", "run_gemm_batch"]
