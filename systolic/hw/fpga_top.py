"""The FPGA top: the accelerator with its memory port and a byte-wide CSR port (a real package has
~200 pins, not thousands)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.sysmap import COUNTERS, CSR_ADDR_BITS, csr_map
from .dma import MemPortSignature
from .params import require_system_config
from .system import Accelerator

__all__ = ["FpgaTop", "csr_members"]


def csr_members(addr_bits: int = CSR_ADDR_BITS) -> dict:
    """The byte-wide CSR port: ``csr_addr`` (byte address), ``csr_we`` with ``csr_wdata`` (written on the
    clock edge), ``csr_rdata`` (the byte at ``csr_addr``, registered: some cycles later, which the top
    documents)."""
    return {"csr_addr": In(addr_bits), "csr_we": In(1), "csr_wdata": In(8), "csr_rdata": Out(8)}


class FpgaTop(wiring.Component):
    """The accelerator for an FPGA: memory port + byte-wide CSR port + interrupt.

    Ports: ``bus__*`` (the accelerator's memory port,
    :class:`~systolic.hw.dma.MemPortSignature`, ``8 * bus_bytes`` data bits),
    ``csr_addr[8:0]``, ``csr_we``, ``csr_wdata[7:0]``, ``csr_rdata[7:0]``
    (registered, :data:`~systolic.arch.sysmap.CSR_READ_LATENCY` cycles of read latency), ``irq`` (= done or
    error, level).
    Pins: ``36 + 17 * bus_bytes`` for the memory port, 26 for CSR and irq,
    plus ``clk`` and ``rst``: 200 for ``bus_bytes = 8``. The register map is
    :func:`systolic.arch.sysmap.csr_map` (docs/fpga.md).

    Latency: a CSR write takes effect at the clock edge (``start`` reaches
    the accelerator one cycle later); a read returns the byte
    ``CSR_READ_LATENCY`` (2) cycles after its address (the address is sampled at every clock edge, so a new
    address every cycle gives a new byte every cycle).

    Parameters
    ----------
    config : AcceleratorConfig
    """

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        super().__init__({"bus": Out(MemPortSignature(config.bus_bytes)), **csr_members(), "irq": Out(1)})

    def elaborate(self, platform):
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

        # Read side, CSR_READ_LATENCY = 2: the 8-byte word of csr_addr into a register, then its byte. One
        # multiplexer of every byte into csr_rdata was the most congested net of the placed design.
        sources = {
            "ctrl": Cat(acc.busy, acc.done, Const(0, 2), acc.error),
            "prog_addr": rw["prog_addr"], "prog_len": rw["prog_len"], "dram_bytes": rw["dram_bytes"],
            "err_index": acc.err_index, "err_arg": acc.err_arg,
        }
        for i, name in enumerate(COUNTERS):
            sources[f"counter_{name}"] = acc.counters[i]
        byte_at = {}
        for name, value in sources.items():
            base, nbytes, _ = regs[name]
            for b in range(nbytes):
                byte_at[base + b] = Value.cast(value)[8 * b:8 * b + 8]
        word, byte_sel = Signal(64), Signal(3)
        m.d.sync += byte_sel.eq(self.csr_addr[:3])
        with m.Switch(self.csr_addr[3:]):
            for w in sorted({a // 8 for a in byte_at}):
                with m.Case(w):
                    m.d.sync += word.eq(Cat(byte_at.get(8 * w + b, Const(0, 8)) for b in range(8)))
            with m.Default():
                m.d.sync += word.eq(0)
        m.d.sync += self.csr_rdata.eq(word.word_select(byte_sel, 8))
        return m
