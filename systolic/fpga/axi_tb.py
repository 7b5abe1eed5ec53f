"""A reusable cocotb testbench for the accelerator's AXI top (``systolic generate --top axi``), on cocotbext-axi.

:class:`AxiAcceleratorTB` wraps a DUT that has the ``axi`` top's ports: ``clk``, ``rst`` (active high), the
AXI4 master ``m_axi_*`` (served by a cocotbext-axi ``AxiRam``), the AXI4-Lite slave ``s_axil_*`` (driven by
an ``AxiLiteMaster``) and ``irq``. It runs programs and whole compiled networks through
:class:`systolic.fpga.driver.AcceleratorDriver`, the host driver a real system uses too. Random back-pressure
on every AXI channel (the memory's AR/AW/W ready, its R/B valid, the CSR master's channels) comes from one
seeded stream; the memory's answers are then late by random numbers of cycles.

Inside your own design, instantiate the accelerator's module with the same port names, pass the DUT handle
(or a sub-handle) here, and copy ``examples/axi/test_axi_accelerator.py``. Needs ``cocotbext-axi``.
"""

from __future__ import annotations

import random

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from ..arch.isa import encode_program
from ..compiler.lower import AccelStep
from ..compiler.run import read_outputs, run_host_step, write_region
from .driver import AcceleratorDriver

__all__ = ["AxiAcceleratorTB"]


class _Registers:
    """The AXI4-Lite master as the driver's registers."""

    def __init__(self, axil: AxiLiteMaster):
        self.axil = axil

    async def read32(self, addr: int) -> int:
        return await self.axil.read_dword(addr)

    async def write32(self, addr: int, value: int) -> None:
        await self.axil.write_dword(addr, value)


def _pauses(rng: random.Random, p: float):
    """An endless pause pattern: each cycle paused with probability *p*."""
    while True:
        yield rng.random() < p


class AxiAcceleratorTB:
    """The accelerator's AXI top under cocotb: clock, reset, memory, CSR master and the host driver.

    Parameters
    ----------
    dut : the handle of a module with the ``axi`` top's ports
    mem_bytes : size of the simulated memory (data window plus programs)
    backpressure : probability of a pause on each AXI channel in each cycle (0: none)
    seed : seed of the back-pressure stream
    period_ns : clock period
    """

    def __init__(self, dut, mem_bytes: int, *, backpressure: float = 0.0, seed: int = 0, period_ns: float = 10):
        if not 0 <= backpressure < 1:
            raise ValueError(f"backpressure must be a probability in [0, 1), not {backpressure!r}")
        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=mem_bytes)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        if backpressure:
            rng = random.Random(seed)
            channels = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                        self.ram.read_if.ar_channel, self.ram.read_if.r_channel,
                        self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                        self.axil.write_if.b_channel, self.axil.read_if.ar_channel, self.axil.read_if.r_channel]
            for ch in channels:
                ch.set_pause_generator(_pauses(rng, backpressure))
        self.driver = AcceleratorDriver(_Registers(self.axil), self.ram)

    async def reset(self, cycles: int = 5) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def wait_irq(self) -> None:
        """Until ``irq`` is high (at once if it is)."""
        while not int(self.dut.irq.value):
            await RisingEdge(self.dut.irq)

    async def run_program(self, image: np.ndarray, program) -> tuple[np.ndarray, dict]:
        """Run *program* (a list of Instr) on the data *image* (uint8, placed at 0): the image after the run
        and the counters. Raises :class:`~systolic.fpga.driver.AcceleratorError` on an accelerator or bus
        error."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        prog_addr = await self.driver.load(image, encode_program(program))
        await self.driver.run(prog_addr, len(program), image.size, wait=self.wait_irq)
        return await self.driver.read_memory(image.size), await self.driver.counters()

    async def run_network(self, cn, x) -> tuple[dict, dict]:
        """Run compiled network *cn* (:func:`systolic.compiler.compile_network`) on input *x* (its batch):
        every tensor (as the golden model's ``run`` gives them) and each accelerated layer's counters. Host
        layers run on the golden model between programs, on the same memory image."""
        x = cn.check_input(x)
        image = cn.image.copy()
        write_region(image, cn.regions["input"], x)
        counters = {}
        for step in cn.steps:
            if isinstance(step, AccelStep):
                image, counters[step.layer] = await self.run_program(image, step.program)
            else:
                run_host_step(cn, image, step.layer)
        return read_outputs(cn, image), counters
