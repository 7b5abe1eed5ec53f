"""Run a program on the :class:`~systolic.hw.system.Accelerator` under amaranth.sim.

Slow (a few thousand cycles per second) but needs no C++ build: the unit
tests use it for short programs; :mod:`systolic.sim.system` runs whole
networks on Verilator.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..arch.isa import encode_program
from ..arch.sysmap import COUNTERS
from ..arch.memory import MemoryModel, place_program

__all__ = ["SimMemory", "run_program_amaranth"]


class SimMemory:
    """The memory behind a :func:`~systolic.hw.dma.MemPortSignature` port in an amaranth.sim testbench.

    Timing of :class:`~systolic.arch.memory.MemoryModel`, pipelined reads
    included: call :meth:`cycle` once per clock cycle, before
    ``await ctx.tick()``; it drives ``req_ready`` and ``resp_*`` for that
    cycle and serves an accepted request on *image* (a uint8 array, used in
    place). A read accepted in cycle ``t`` is answered in cycle
    ``t + latency`` through a queue, so requests go on while reads wait.
    """

    def __init__(self, bus, image: np.ndarray, bus_bytes: int, memory: MemoryModel = MemoryModel()):
        self.bus, self.image, self.bb, self.memory = bus, image, bus_bytes, memory
        self.delays = memory.delays(bus_bytes)
        self.d, self.waited = next(self.delays), 0
        self.pending = deque()   # (cycle due, data) of accepted reads, in order
        self.now = 0             # cycles served so far

    def cycle(self, ctx):
        bus, bb, image = self.bus, self.bb, self.image
        now, self.now = self.now, self.now + 1
        # Response of an accepted read.
        if self.pending and self.pending[0][0] == now:
            ctx.set(bus.resp_valid, 1)
            ctx.set(bus.resp_data, self.pending.popleft()[1])
        else:
            ctx.set(bus.resp_valid, 0)
        accept = False
        if ctx.get(bus.req_valid):
            if self.waited >= self.d:
                accept = True
            else:
                self.waited += 1
        ctx.set(bus.req_ready, int(accept))
        if accept:
            addr = ctx.get(bus.req_addr)
            if addr + bb > image.size:
                raise RuntimeError(f"memory access at {addr} past the end of the {image.size}-byte memory")
            if ctx.get(bus.req_write):
                data, strb = ctx.get(bus.req_wdata), ctx.get(bus.req_wstrb)
                for j in range(bb):
                    if strb >> j & 1:
                        image[addr + j] = (data >> (8 * j)) & 0xFF
            else:
                self.pending.append((now + self.memory.latency,
                                     int.from_bytes(image[addr:addr + bb].tobytes(), "little")))
            self.waited, self.d = 0, next(self.delays)

    def idle(self, ctx):
        """Drive the port's inputs low (between runs)."""
        ctx.set(self.bus.req_ready, 0)
        ctx.set(self.bus.resp_valid, 0)


def run_program_amaranth(config, dram: np.ndarray, program, memory: MemoryModel = MemoryModel(),
                         max_cycles: int = 200_000) -> dict:
    """Execute *program* (Instrs or encoded bytes) on *dram* in place.

    Returns ``{"counters": {...}, "error": code, "err_index": i, "err_arg": v, "done": bool}``.
    """
    from amaranth.sim import Simulator

    from ..hw.system import Accelerator

    blob = program if isinstance(program, (bytes, bytearray)) else encode_program(program)
    image, prog_addr = place_program(dram, bytes(blob))
    dut = Accelerator(config=config)
    result = {}
    mem = SimMemory(dut.bus, image, config.bus_bytes, memory)

    async def bench(ctx):
        ctx.set(dut.prog_addr, prog_addr)
        ctx.set(dut.prog_len, len(blob) // 16)
        ctx.set(dut.dram_bytes, dram.size)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 0
        while ctx.get(dut.busy):
            cycles += 1
            if cycles > max_cycles:
                raise RuntimeError(f"no HALT after {max_cycles} cycles")
            mem.cycle(ctx)
            await ctx.tick()
        mem.idle(ctx)
        words = ctx.get(dut.counters)
        result["counters"] = {name: int(words[i]) for i, name in enumerate(COUNTERS)}
        result["error"] = ctx.get(dut.error)
        result["err_index"] = ctx.get(dut.err_index)
        result["err_arg"] = ctx.get(dut.err_arg)
        result["done"] = bool(ctx.get(dut.done))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    dram[:] = image[:dram.size]
    return result
