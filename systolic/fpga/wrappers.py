"""Narrow-bus tops for place and route (a real package has ~200 pins, not thousands).

Two wrappers, both with one clock ``clk`` and a synchronous active-high ``rst``:

- :class:`SystemTop` (``--top system``) is the usable FPGA top: the
  :class:`~systolic.hw.system.Accelerator` with its memory port brought out
  unchanged and its host interface (start, program address / length, DRAM
  window, status, error, performance counters) folded into a byte-wide CSR
  port. The register map is :func:`csr_map` (see docs/fpga.md).
- :class:`RegisterBankTop` (``--top core`` / ``--top array``) is a measurement
  harness for the datapath alone: every input bit of the inner component is a
  byte-addressed write register, every output bit can be read back through a
  byte-wide read mux. It keeps every signal observable (nothing is optimized
  away) and cuts every timing path at a register, but it is not a protocol a
  host would want to drive; use :class:`SystemTop` for a product.

Both CSR ports are the same: ``csr_addr`` (byte address), ``csr_we`` with
``csr_wdata`` (8 bits, written on the clock edge), and ``csr_rdata`` (8 bits,
the byte at ``csr_addr`` one cycle later).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig, load_config

__all__ = ["SystemTop", "RegisterBankTop", "csr_map", "make_top", "TOPS", "TOP_NAME"]

#: Kinds of top ``make_top`` builds.
TOPS = ("system", "core", "array")
#: Verilog module name of every generated FPGA top.
TOP_NAME = "systolic_fpga_top"

_CSR_ADDR_BITS = 8


def csr_map() -> dict[str, tuple[int, int, str]]:
    """The :class:`SystemTop` CSR map: name -> (byte address, bytes, access).

    Multi-byte registers are little-endian. ``counter_<name>`` follow
    :data:`systolic.arch.sysmap.COUNTERS`, 8 bytes each from 0x20.
    """
    from ..arch.sysmap import COUNTERS

    regs = {
        "ctrl": (0x00, 1, "W: bit 0 = start (a pulse); R: bit 0 busy, bit 1 done, bits 7:4 error"),
        "prog_addr": (0x04, 4, "RW: byte address of instruction 0"),
        "prog_len": (0x08, 4, "RW: number of instructions"),
        "dram_bytes": (0x0C, 4, "RW: size of the data window [0, dram_bytes)"),
        "err_index": (0x10, 4, "R: index of the failing instruction"),
        "err_arg": (0x18, 8, "R: offending value of the error"),
    }
    for i, name in enumerate(COUNTERS):
        regs[f"counter_{name}"] = (0x20 + 8 * i, 8, "R: performance counter")
    return regs


def _csr_signature(addr_bits):
    return {
        "csr_addr": In(addr_bits), "csr_we": In(1), "csr_wdata": In(8), "csr_rdata": Out(8),
    }


class SystemTop(wiring.Component):
    """The accelerator for an FPGA: memory port + byte-wide CSR port.

    Ports: ``bus__*`` (the accelerator's memory port,
    :func:`systolic.hw.dma.MemPortSignature`, ``8 * bus_bytes`` data bits),
    ``csr_addr[7:0]``, ``csr_we``, ``csr_wdata[7:0]``, ``csr_rdata[7:0]``
    (registered, 1 cycle read latency), ``irq`` (= done or error, level).
    Pins: ``36 + 17 * bus_bytes`` for the memory port, 26 for CSR and irq,
    plus ``clk`` and ``rst``: 200 for ``bus_bytes = 8``.

    Parameters
    ----------
    config : AcceleratorConfig
    """

    def __init__(self, *, config: AcceleratorConfig):
        from ..hw.dma import MemPortSignature

        self.config = config
        sig = {"bus": Out(MemPortSignature(config.bus_bytes))}
        sig.update(_csr_signature(_CSR_ADDR_BITS))
        sig["irq"] = Out(1)
        super().__init__(sig)

    def elaborate(self, platform):
        from ..arch.sysmap import COUNTERS
        from ..hw.system import Accelerator

        m = Module()
        m.submodules.accel = acc = Accelerator(config=self.config)
        wiring.connect(m, acc.bus, wiring.flipped(self.bus))

        regs = csr_map()
        rw = {name: Signal(32, name=name) for name in ("prog_addr", "prog_len", "dram_bytes")}
        m.d.comb += [acc.prog_addr.eq(rw["prog_addr"]), acc.prog_len.eq(rw["prog_len"]),
                     acc.dram_bytes.eq(rw["dram_bytes"])]
        start = Signal()
        m.d.sync += start.eq(0)
        with m.If(self.csr_we):
            with m.If(self.csr_addr == regs["ctrl"][0]):
                m.d.sync += start.eq(self.csr_wdata[0])
            for name, sig in rw.items():
                base = regs[name][0]
                for b in range(4):
                    with m.If(self.csr_addr == base + b):
                        m.d.sync += sig[8 * b:8 * b + 8].eq(self.csr_wdata)
        m.d.comb += [acc.start.eq(start), self.irq.eq(acc.done | (acc.error != 0))]

        # Read side: one byte per address, registered so the mux tree is its own stage.
        sources = {
            "ctrl": Cat(acc.busy, acc.done, Const(0, 2), acc.error),
            "prog_addr": rw["prog_addr"], "prog_len": rw["prog_len"], "dram_bytes": rw["dram_bytes"],
            "err_index": acc.err_index, "err_arg": acc.err_arg,
        }
        for i, name in enumerate(COUNTERS):
            sources[f"counter_{name}"] = acc.counters[i]
        with m.Switch(self.csr_addr):
            for name, value in sources.items():
                base, nbytes, _ = regs[name]
                for b in range(nbytes):
                    with m.Case(base + b):
                        m.d.sync += self.csr_rdata.eq(Value.cast(value)[8 * b:8 * b + 8])
            with m.Default():
                m.d.sync += self.csr_rdata.eq(0)
        return m


class RegisterBankTop(wiring.Component):
    """Any component behind a byte-wide register bank (a measurement harness).

    Every input port bit of *inner* comes from a write register (the inputs,
    concatenated in signature order, LSB first, are bytes ``0 .. n_in-1`` of
    the write space); every output bit is readable (bytes ``0 .. n_out-1`` of
    the read space, registered). ``clk``, ``rst`` and 18 + ``addr_bits`` pins.

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
        super().__init__(_csr_signature(self.addr_bits))

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
    """The elaboratable placed and routed for ``--top``: ``system``, ``core`` or ``array``."""
    config = load_config(config)
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    if top == "system":
        return SystemTop(config=config)
    if top == "core":
        from ..hw.core import GemmCore

        return RegisterBankTop(GemmCore(config=config))
    from ..hw.array import SystolicArray

    return RegisterBankTop(SystolicArray(config=config))
