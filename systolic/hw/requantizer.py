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
      shift is clamped to ``-out_bits``);
    - optional ReLU, then saturation to the ``out_bits`` signed/unsigned range.

    ``acc + bias`` is computed in ``acc_bits + 1`` bits, so it never wraps.
    Both shift directions are one arithmetic right shift of ``x << (out_bits
    + 1)``, of which only the rounding bit and ``out_bits + 1`` value bits
    are kept: whether the value fits those bits (else it saturates by its
    sign) and the sticky bit are masked tests of ``x``, the masks decoded
    from the shift in stage 1 (one thermometer).

    Latency: :data:`~systolic.arch.latency.REQUANT_STAGES` (3) ``en``
    cycles: add and shift decode; shift, sticky and fit; round, ReLU and
    saturate (written out below; tests/hw/test_requantizer.py measures them).
    Throughput: 1 element per cycle.

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
        W = cfg.acc_bits + 1            # x = acc + bias never wraps
        L = cfg.out_bits                # a left shift by more saturates any non-zero value: k is clamped to -L
        G = cfg.out_bits + 1            # the shifted value is kept in G bits: [lo, hi] fits (signed or not)
        lo, hi = cfg.out_range

        # Stage 1: bias add; from the shift k, the right-shift amount s = max(k, -L) + L of x << (L + 1) and
        # two masks of x's bits out of one thermometer (bit i set for i >= s): the sticky bits, below the
        # rounding bit (j < s - L - 1, i.e. j < k - 1), and the bits that must all equal the sign for the
        # shifted value to fit G bits (j >= s, i.e. j >= max(k, -L) + G - 1).
        # Every right shift by W or more gives 0 (the shifted value is all sign and the rounding bit is the sign,
        # so a negative x rounds up to 0 in both modes), so k is clamped to W: a shorter shifter when the shift
        # field reaches past it.
        k = self.shift
        kmax = min(2 ** (cfg.shift_bits - 1) - 1, W)
        s = Signal(range(kmax + L + 1))
        m.d.comb += s.eq(Mux(k < -L, 0, Mux(k > kmax, kmax + L, k + L)))
        therm = Signal(W + L + 1)
        m.d.comb += therm.eq(Const((1 << (W + L + 1)) - 1, W + L + 1) << s)
        assert G - 1 == L, "top_mask = therm[:W] needs the fit threshold max(k, -L) + G - 1 to be s"
        x = Signal(signed(W))
        s1 = Signal.like(s)
        sticky_mask, top_mask = Signal(W), Signal(W)
        relu1 = Signal()
        with m.If(self.en):
            m.d.sync += [x.eq(self.acc + self.bias), s1.eq(s), relu1.eq(self.relu),
                         sticky_mask.eq(~therm[L + 1:]), top_mask.eq(therm[:W])]

        # Stage 2: one arithmetic right shift of x << (L + 1) by s gives the rounding bit (bit 0) and the value
        # (G bits above it): x >> k for k > 0, x << -k for k <= 0 (rounding bit 0 then).
        xl = Signal(signed(W + L + 1))
        m.d.comb += xl.eq(x << (L + 1))
        t = Signal(G + 1)
        m.d.comb += t.eq(xl >> s1)
        tq = Signal(signed(G))
        half, sticky, fits, neg, relu2 = Signal(), Signal(), Signal(), Signal(), Signal()
        with m.If(self.en):
            m.d.sync += [tq.eq(t[1:]), half.eq(t[0]), sticky.eq((x.as_unsigned() & sticky_mask).any()),
                         fits.eq(~((x.as_unsigned() ^ x[W - 1].replicate(W)) & top_mask).any()),
                         neg.eq(x[W - 1]), relu2.eq(relu1)]

        # Stage 3: round, ReLU, saturation (a value that did not fit G bits saturates by its sign).
        up = Signal()
        if cfg.rounding == "half_up":
            m.d.comb += up.eq(half)
        else:
            m.d.comb += up.eq(half & (sticky | tq[0]))
        r = Signal(signed(G + 1))
        m.d.comb += r.eq(tq + up)
        # Saturation: r > hi / r < lo, or the same from tq: tq >= hi gives hi (r is hi or more) and tq < lo gives
        # lo (r is lo at most), whatever up. Both are exact in both modes; which maps smaller differs (one lane
        # alone, Yosys synth_ecp5, default system config): half_up 410 LUTs with r, 382 with tq; half_even
        # 400 with r, 514 with tq.
        if cfg.rounding == "half_up":
            above, below = tq >= hi, tq < lo
        else:
            above, below = r > hi, r < lo
        # ReLU of a negative x is 0 whatever the shift (rounding a negative value gives at most 0), and 0 is in
        # every output range.
        with m.If(self.en):
            with m.If(relu2 & neg):
                m.d.sync += self.y.eq(0)
            with m.Elif(~fits):
                m.d.sync += self.y.eq(Mux(neg, lo, hi))
            with m.Elif(above):
                m.d.sync += self.y.eq(hi)
            with m.Elif(below):
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
