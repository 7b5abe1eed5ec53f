"""Run a program on the :class:`~systolic.hw.system.Accelerator` under amaranth.sim.

Slow (a few thousand cycles per second) but needs no C++ build: the unit
tests use it for short programs; :mod:`systolic.sim.system` runs whole
networks on Verilator.
"""

from __future__ import annotations

import numpy as np

from ..compiler.isa import encode_program
from ..hw.sysmap import COUNTERS
from .memory import MemoryModel, place_program

__all__ = ["run_program_amaranth"]


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
    bb = config.bus_bytes
    result = {}
    delays = memory.delays(bb)

    async def bench(ctx):
        bus = dut.bus
        ctx.set(dut.prog_addr, prog_addr)
        ctx.set(dut.prog_len, len(blob) // 16)
        ctx.set(dut.dram_bytes, dram.size)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        waited, d = 0, next(delays)
        resp_in = None   # cycles until the pending response, and its data
        cycles = 0
        while ctx.get(dut.busy):
            cycles += 1
            if cycles > max_cycles:
                raise RuntimeError(f"no HALT after {max_cycles} cycles")
            # Response of an accepted read.
            if resp_in is not None and resp_in[0] == 0:
                ctx.set(bus.resp_valid, 1)
                ctx.set(bus.resp_data, resp_in[1])
                resp_in = None
            else:
                ctx.set(bus.resp_valid, 0)
            accept = False
            if ctx.get(bus.req_valid):
                if waited >= d:
                    accept = True
                else:
                    waited += 1
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
                    resp_in = [memory.latency, int.from_bytes(image[addr:addr + bb].tobytes(), "little")]
                waited, d = 0, next(delays)
            await ctx.tick()
            if resp_in is not None:
                resp_in[0] -= 1
        ctx.set(bus.req_ready, 0)
        ctx.set(bus.resp_valid, 0)
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
