"""Tops for place and route: the FPGA top, or the datapath behind a register-bank harness.

- ``--top system``: :class:`systolic.hw.fpga_top.FpgaTop`, the usable FPGA
  top: the accelerator with its memory port and a byte-wide CSR port (the
  register map is :func:`systolic.arch.sysmap.csr_map`, see docs/fpga.md).
- ``--top core`` / ``--top array``: :class:`RegisterBankTop`, a measurement
  harness for the datapath alone: every input bit of the inner component is
  a byte-addressed write register, every output bit can be read back through
  a byte-wide read mux. It keeps every signal observable (nothing is
  optimized away) and cuts every timing path at a register, but it is not a
  protocol a host would want to drive.

Both have one clock ``clk``, a synchronous active-high ``rst`` and the same
byte-wide CSR port (``csr_addr``, ``csr_we``, ``csr_wdata``, ``csr_rdata``).
Module names follow :func:`systolic.hw.generate.module_name`: ``<config>_fpga``,
``<config>_core_bank``, ``<config>_array_bank``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..arch.config import load_config
from ..hw.fpga_top import csr_members
from ..hw.generate import module_name

__all__ = ["RegisterBankTop", "make_top", "top_module_name", "TOPS"]

#: Kinds of top ``make_top`` builds.
TOPS = ("system", "axi", "core", "array")


def top_module_name(config, top: str) -> str:
    """The Verilog module name of the ``--top`` wrapper of *config*."""
    _check(top)
    return module_name(config, {"system": "fpga", "axi": "axi"}.get(top, f"{top}_bank"))


def _check(top):
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")


class RegisterBankTop(wiring.Component):
    """Any component behind a byte-wide register bank (a measurement harness).

    Every input port bit of *inner* comes from a write register (the inputs,
    concatenated in signature order, LSB first, are bytes ``0 .. n_in-1`` of
    the write space); every output bit is readable (bytes ``0 .. n_out-1`` of
    the read space, registered: one cycle of read latency). Pins: ``clk``, ``rst`` and the CSR port's
    17 + ``addr_bits`` (``csr_addr``, ``csr_we``, ``csr_wdata``, ``csr_rdata``).

    Parameters
    ----------
    inner : wiring.Component
    """

    def __init__(self, inner):
        self.inner = inner
        ins, outs = [], []
        for path, member, value in inner.signature.flatten(inner):
            (ins if member.flow == In else outs).append(value)
        self._ins, self._outs = ins, outs
        self.in_bits = sum(len(Value.cast(v)) for v in ins)
        self.out_bits = sum(len(Value.cast(v)) for v in outs)
        nbytes = max((self.in_bits + 7) // 8, (self.out_bits + 7) // 8, 2)
        self.addr_bits = (nbytes - 1).bit_length()
        super().__init__(csr_members(self.addr_bits))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.inner
        nin = (self.in_bits + 7) // 8
        regs = [Signal(8, name=f"wr{i}") for i in range(nin)]
        with m.If(self.csr_we):
            with m.Switch(self.csr_addr):
                for i, reg in enumerate(regs):
                    with m.Case(i):
                        m.d.sync += reg.eq(self.csr_wdata)
        flat_in = Cat(*regs)
        pos = 0
        for v in self._ins:
            v = Value.cast(v)
            m.d.comb += v.eq(flat_in[pos:pos + len(v)])
            pos += len(v)
        flat_out = Cat(*(Value.cast(v) for v in self._outs))
        nout = (self.out_bits + 7) // 8
        with m.Switch(self.csr_addr):
            for i in range(nout):
                with m.Case(i):
                    m.d.sync += self.csr_rdata.eq(flat_out[8 * i:8 * i + 8])
            with m.Default():
                m.d.sync += self.csr_rdata.eq(0)
        return m


def make_top(config, top: str = "system"):
    """The elaboratable placed and routed for ``--top``: ``system``, ``axi``, ``core`` or ``array``."""
    config = load_config(config)
    _check(top)
    if top == "system":
        from ..hw.fpga_top import FpgaTop

        return FpgaTop(config=config)
    if top == "axi":
        from ..hw.axi import AxiTop

        return AxiTop(config=config)
    if top == "core":
        from ..hw.core import GemmCore

        return RegisterBankTop(GemmCore(config=config))
    from ..hw.array import SystolicArray

    return RegisterBankTop(SystolicArray(config=config))
