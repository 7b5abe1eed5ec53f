"""Cycle formulas of the :class:`~systolic.hw.system.Accelerator` (docs/isa.md, "Timing").

The system runs one instruction at a time, so a program's cycle count is the
sum of per-instruction formulas. With a memory that accepts a request ``d``
cycles after it is first valid and answers a read ``L`` cycles after
accepting it (:class:`systolic.sim.memory.MemoryModel` without random
stalls: ``d = ceil(bus_bytes / bytes_per_cycle) - 1``), these formulas equal
the RTL's ``cycles`` and ``<unit>_busy`` counters exactly (tests/sim and
tests/hw check it). Plain Python, no amaranth.
"""

from __future__ import annotations

import math

from ..compiler.isa import INSTR_BYTES, Opcode

__all__ = ["words", "instruction_cycles", "program_cycles"]


def words(addr: int, n: int, bus_bytes: int) -> int:
    """Bus words (= memory requests) covering bytes ``[addr, addr + n)``."""
    if n <= 0:
        return 0
    return (addr + n - 1) // bus_bytes - addr // bus_bytes + 1


def instruction_cycles(cfg, instr, addr: int, d: int, latency: int) -> dict:
    """Busy cycles per unit of one instruction fetched from byte address *addr*."""
    R, C, bb = cfg.rows, cfg.cols, cfg.bus_bytes
    rd = 1 + d + latency          # one read request
    wr = 1 + d                    # one write request
    out = {"ctrl": 4 + words(addr, INSTR_BYTES, bb) * rd}
    a = instr.args
    op = instr.op
    if op == Opcode.LOAD:
        cyc = 1
        for i in range(a["lines"]):
            cyc += 1 + words(a["dram"] + i * a["stride"], a["elems"], bb) * rd
        out["load"] = cyc
    elif op == Opcode.LOADQ:
        out["loadq"] = 1 + words(a["dram"], 5 * C, bb) * rd
    elif op == Opcode.MATMUL:
        m = a["m"]
        if m == 0:
            out["matmul"] = R + 2
        elif cfg.dataflow == "ws":
            out["matmul"] = m + 3 * R + C + 3
        else:
            out["matmul"] = (R + 1) + math.ceil(m / R) * (2 * R + 1) + 2 * R + C
    elif op == Opcode.STORE:
        cyc = 1
        for i in range(a["lines"]):
            cyc += 5 + words(a["dram"] + i * a["stride"], a["elems"], bb) * wr
        out["store"] = cyc
    return out


def program_cycles(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> dict:
    """``{"cycles": total, "<unit>_busy": ...}`` of *program* (Instrs, ending with HALT) on *cfg*."""
    busy = {u: 0 for u in ("ctrl", "load", "loadq", "matmul", "store")}
    for j, ins in enumerate(program):
        for u, c in instruction_cycles(cfg, ins, prog_addr + INSTR_BYTES * j, d, latency).items():
            busy[u] += c
        if ins.op == Opcode.HALT:
            break
    out = {f"{u}_busy": c for u, c in busy.items()}
    out["cycles"] = sum(busy.values())
    return out
