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
    clock edge), ``csr_rdata`` (the byte at ``csr_addr``, one cycle later)."""
    return {"csr_addr": In(addr_bits), "csr_we": In(1), "csr_wdata": In(8), "csr_rdata": Out(8)}


class FpgaTop(wiring.Component):
    """The accelerator for an FPGA: memory port + byte-wide CSR port + interrupt.

    Ports: ``bus__*`` (the accelerator's memory port,
    :class:`~systolic.hw.dma.MemPortSignature`, ``8 * bus_bytes`` data bits),
    ``csr_addr[7:0]``, ``csr_we``, ``csr_wdata[7:0]``, ``csr_rdata[7:0]``
    (registered, 1 cycle read latency), ``irq`` (= done or error, level).
    Pins: ``36 + 17 * bus_bytes`` for the memory port, 26 for CSR and irq,
    plus ``clk`` and ``rst``: 200 for ``bus_bytes = 8``. The register map is
    :func:`systolic.arch.sysmap.csr_map` (docs/fpga.md).

    Latency: a CSR write takes effect at the clock edge (``start`` reaches
    the accelerator one cycle later); a read returns the byte one cycle after
    its address.

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
