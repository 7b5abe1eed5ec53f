"""The vector unit's divider: a line of accumulators divided by an odd constant, one quotient bit per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, Opcode

__all__ = ["LineDivider", "DIVISOR_BITS", "div_result_bits"]

#: Width of the DIV instruction's divisor.
DIVISOR_BITS = FIELDS[Opcode.DIV]["divisor"][1]


def div_result_bits(acc_bits: int) -> int:
    """Width of a DIV result ``4 * floor(a / d) + 2 * [2r >= d] + [r != 0]`` of an ``acc_bits`` value ``a``."""
    return acc_bits + 2


class LineDivider(wiring.Component):
    """``cols`` restoring dividers in parallel: ``y = 4 * floor(a / d) + 2 * [2r >= d] + [r != 0]``
    (``r = a - d * floor(a / d)``, ``0 <= r < d``) for each signed ``acc_bits`` lane ``a`` of ``line`` and the
    odd ``divisor`` ``d`` (docs/isa.md, DIV).

    ``load`` takes ``line`` and ``divisor``; each of the next ``acc_bits`` cycles with ``step`` forms one
    quotient bit (and the rounding bits of the remainder so far); then ``y`` holds the results (until the
    next ``load``). Each lane divides ``u = a + d *
    2**(acc_bits - 1)`` (never negative, below ``d * 2**acc_bits``: its quotient has ``acc_bits`` bits and its
    top bits ``u >> acc_bits`` are already below ``d``), whose quotient is ``floor(a / d) + 2**(acc_bits - 1)``
    with the same remainder.

    Members
    -------
    load, step : In(1)
    line : In(ArrayLayout(signed(acc_bits), cols))
    divisor : In(DIVISOR_BITS)
    y : Out(ArrayLayout(signed(acc_bits + 2), cols))
    """

    def __init__(self, *, cols: int, acc_bits: int):
        self.cols, self.acc_bits = cols, acc_bits
        super().__init__({
            "load": In(1), "step": In(1),
            "line": In(data.ArrayLayout(signed(acc_bits), cols)), "divisor": In(DIVISOR_BITS),
            "y": Out(data.ArrayLayout(signed(div_result_bits(acc_bits)), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        A, D = self.acc_bits, DIVISOR_BITS
        d, d3 = Signal(D), Signal(D + 2, name="d3")       # the divisor, and 3 * d (for the rounding bit below)
        with m.If(self.load):
            m.d.sync += [d.eq(self.divisor), d3.eq(self.divisor + (self.divisor << 1))]
        for c in range(self.cols):
            rem = Signal(D, name=f"rem{c}")          # the partial remainder, always below d
            low = Signal(A, name=f"low{c}")          # the dividend's bits still to bring down, top first
            q = Signal(A, name=f"q{c}")
            # u = a + d * 2**(A - 1): a's low A - 1 bits, then its sign bit (as -1 or 0) plus d.
            u = Signal(unsigned(A + D), name=f"u{c}")
            a = self.line[c]
            m.d.comb += u.eq(Cat(a[:A - 1], a[A - 1:].as_signed() + self.divisor))
            # Each compare with d is the sign of one subtraction, whose difference is the next remainder.
            t = Signal(D + 1, name=f"t{c}")
            diff = Signal(signed(D + 2), name=f"diff{c}")
            ge = Signal(name=f"ge{c}")
            m.d.comb += [t.eq(Cat(low[A - 1], rem)), diff.eq(t - d), ge.eq(~diff[-1])]
            # The rounding bits of the new remainder r are registered with it: [r != 0] and [2r >= d] (the sign
            # of 2r - d). (Formed from the registered remainder instead, they trip Yosys 0.70's ABC9 in the
            # system top: docs/fpga.md.)
            # 2r - d is 2(t - d) - d = 2t - 3d when the step subtracts, else 2t - d: both formed from registers
            # beside t - d, so the step's choice selects a sign, not a second subtraction after it.
            new = Signal(D, name=f"new{c}")
            half_sub, half_keep = Signal(signed(D + 3), name=f"half_sub{c}"), Signal(signed(D + 3), name=f"half_keep{c}")
            nz, hb = Signal(name=f"nz{c}"), Signal(name=f"hb{c}")
            m.d.comb += [new.eq(Mux(ge, diff[:D], t[:D])), half_sub.eq((t << 1) - d3), half_keep.eq((t << 1) - d)]
            # q, nz and hb are not cleared by a load: the acc_bits steps after it replace every bit of them
            # (a clear would be a synchronous reset on each of their flip-flops, one net to hundreds of them).
            with m.If(self.load):
                m.d.sync += [rem.eq(u[A:]), low.eq(u[:A])]
            with m.Elif(self.step):
                m.d.sync += [rem.eq(new), low.eq(low << 1)]
            with m.If(self.step):
                m.d.sync += [q.eq(Cat(ge, q[:-1])), nz.eq(new != 0),
                             hb.eq(~Mux(ge, half_sub[-1], half_keep[-1]))]
            # floor(a / d) = q - 2**(A - 1): q with its top bit flipped, read as signed.
            m.d.comb += self.y[c].eq(Cat(nz, hb, q[:A - 1], ~q[A - 1]).as_signed())
        return m
