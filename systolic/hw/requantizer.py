"""Shift-requantize units: bias add, rounding shift, ReLU, saturation (C lanes)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.latency import REQUANT_STAGES
from ..arch.ports import payload_fields
from .params import require_config

__all__ = ["Requantizer", "RequantLane", "requant_layouts"]


def _out_shape(cfg):
    return signed(cfg.out_bits) if cfg.out_signed else unsigned(cfg.out_bits)


def requant_layouts(cfg: AcceleratorConfig) -> dict:
    """Payload layouts of the requantizer's streams: ``i`` the accumulators, ``o`` the core's ``o``
    (:func:`systolic.arch.ports.payload_fields`)."""
    from .array import field_layout

    return {"i": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), "o": field_layout(payload_fields(cfg, "o"))}


class RequantLane(wiring.Component):
    """One shift-requantize lane: ``y = sat(relu?(round_shift(acc + bias, shift)))``.

    Bit-exact with :func:`systolic.golden.requantize` for one element:

    - ``shift > 0``: divide by ``2**shift``, rounding ``half_even`` (ties to
      even) or ``half_up`` (ties toward +inf), chosen by ``config.rounding``;
      the rounding bit is bit ``shift-1`` of ``x = acc + bias``, the sticky bit
      the OR of the bits below it;
    - ``shift == 0``: identity;
    - ``shift < 0``: exact left shift by ``-shift``, which then saturates (a
      shift by more than ``out_bits`` saturates any non-zero value, so the
      shifter is only ``out_bits`` wide);
    - optional ReLU, then saturation to the ``out_bits`` signed/unsigned range.

    ``acc + bias`` is computed in ``acc_bits + 1`` bits, so it never wraps.

    Latency: :data:`~systolic.arch.latency.REQUANT_STAGES` (3) ``en``
    cycles: add, shift/round, ReLU/saturate (the three stages written out
    below; tests/hw/test_requantizer.py measures them). Throughput: 1 element
    per cycle.

    Members
    -------
    en : In(1)
        Pipeline enable.
    acc, bias : In(signed(acc_bits))
    shift : In(signed(shift_bits))
    relu : In(1)
    y : Out(out shape)
        Result, ``REQUANT_STAGES`` ``en`` cycles after its operands.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        super().__init__({
            "en": In(1),
            "acc": In(signed(config.acc_bits)), "bias": In(signed(config.acc_bits)),
            "shift": In(signed(config.shift_bits)), "relu": In(1),
            "y": Out(_out_shape(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        W = cfg.acc_bits + 1
        lo, hi = cfg.out_range

        # Stage 1: bias add, one bit wider than the accumulator.
        x = Signal(signed(W))
        k1 = Signal(signed(cfg.shift_bits))
        relu1 = Signal()
        with m.If(self.en):
            m.d.sync += [x.eq(self.acc + self.bias), k1.eq(self.shift), relu1.eq(self.relu)]

        # Stage 2: rounding right shift or saturating left shift.
        kmax = 2 ** (cfg.shift_bits - 1)
        mag = Signal(range(kmax + 1))          # |k|
        m.d.comb += mag.eq(Mux(k1 < 0, -k1, k1))
        km1 = Signal(range(kmax))              # k - 1 for k > 0
        m.d.comb += km1.eq(mag - 1)
        q = Signal(signed(W))
        m.d.comb += q.eq(x >> mag)
        half = Signal()                        # bit k-1 of x (sign-extended)
        m.d.comb += half.eq((x >> km1)[0])
        below = Signal(W)                      # mask of the bits under the rounding bit
        m.d.comb += below.eq((Const(1, 1) << km1) - 1)
        sticky = Signal()
        m.d.comb += sticky.eq((x.as_unsigned() & below) != 0)
        up = Signal()
        if cfg.rounding == "half_up":
            m.d.comb += up.eq(half)
        else:
            m.d.comb += up.eq(half & (sticky | q[0]))
        # Left shift: beyond out_bits every non-zero value saturates anyway.
        lsh = Signal(range(cfg.out_bits + 1))
        m.d.comb += lsh.eq(Mux(mag > cfg.out_bits, cfg.out_bits, mag))
        z = Signal(signed(W + cfg.out_bits))
        relu2 = Signal()
        with m.If(self.en):
            m.d.sync += relu2.eq(relu1)
            with m.If(k1 > 0):
                m.d.sync += z.eq(q + up)
            with m.Elif(k1 < 0):
                m.d.sync += z.eq(x << lsh)
            with m.Else():
                m.d.sync += z.eq(x)

        # Stage 3: ReLU, then saturation.
        r = Signal.like(z)
        m.d.comb += r.eq(Mux(relu2 & (z < 0), 0, z))
        with m.If(self.en):
            with m.If(r > hi):
                m.d.sync += self.y.eq(hi)
            with m.Elif(r < lo):
                m.d.sync += self.y.eq(lo)
            with m.Else():
                m.d.sync += self.y.eq(r)
        return m


class Requantizer(wiring.Component):
    """``cols`` shift-requantize lanes behind a valid/ready stream.

    Each input vector of accumulators produces one output vector carrying the
    accumulators (``acc``, delayed to stay aligned, for accumulation across
    passes) and the requantized values (``y``). ``bias`` is per channel;
    ``shift`` has ``cols`` lanes when ``config.per_channel_shift`` else one;
    ``bias``, ``shift`` and ``relu`` are configuration inputs that must stay
    constant while vectors are in flight.

    Latency: :data:`~systolic.arch.latency.REQUANT_STAGES` cycles. Throughput: 1 vector (``cols`` elements) per cycle;
    it stalls as one pipeline (``en = ~o.valid | o.ready``).

    Members
    -------
    i : In(stream.Signature(data.ArrayLayout(signed(acc_bits), cols)))
    o : Out(stream.Signature(StructLayout({"acc": ..., "y": ...})))
    bias : In(data.ArrayLayout(signed(acc_bits), cols))
    shift : In(data.ArrayLayout(signed(shift_bits), shift_lanes))
    relu : In(1)
    """

    #: Cycles from an input vector to its output vector: the lanes' stages.
    LATENCY = REQUANT_STAGES

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        lay = requant_layouts(config)
        super().__init__({
            "i": In(stream.Signature(lay["i"])),
            "o": Out(stream.Signature(lay["o"])),
            "bias": In(data.ArrayLayout(signed(config.acc_bits), config.cols)),
            "shift": In(data.ArrayLayout(signed(config.shift_bits), config.shift_lanes)),
            "relu": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        valid = self.i.valid
        for s in range(self.LATENCY):
            nxt = Signal(name=f"valid{s}")
            with m.If(en):
                m.d.sync += nxt.eq(valid)
            valid = nxt
        m.d.comb += self.o.valid.eq(valid)
        for n in range(cfg.cols):
            lane = RequantLane(config=cfg)
            m.submodules[f"lane{n}"] = lane
            m.d.comb += [
                lane.en.eq(en),
                lane.acc.eq(self.i.payload[n]),
                lane.bias.eq(self.bias[n]),
                lane.shift.eq(self.shift[n if cfg.per_channel_shift else 0]),
                lane.relu.eq(self.relu),
                self.o.payload.y[n].eq(lane.y),
            ]
            acc = self.i.payload[n]
            for s in range(self.LATENCY):
                reg = Signal.like(acc, name=f"acc{n}_d{s}")
                with m.If(en):
                    m.d.sync += reg.eq(acc)
                acc = reg
            m.d.comb += self.o.payload.acc[n].eq(acc)
        return m
