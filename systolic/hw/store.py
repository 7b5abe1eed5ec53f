"""The STORE pipeline: accumulator lines -> requantizer lanes -> saturated bytes for the scatter engine."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import LANE_SHIFT_BITS, AcceleratorConfig
from ..arch.isa import BIAS_BYTES, FIELDS, Opcode
from .params import require_system_config
from .requantizer import RequantLane
from .scratchpad import LineReadSignature, memory_depth

__all__ = ["STORE_LAYOUT", "StoreControlSignature", "StorePipeline"]

_S = FIELDS[Opcode.STORE]
#: The STORE instruction's fields, as the pipeline takes them.
STORE_LAYOUT = data.StructLayout({name: width for name, (_, width) in _S.items()})
#: Width of the LOADQ's upper clamp.
OUT_MAX_BITS = FIELDS[Opcode.LOADQ]["out_max"][1]
#: Width of a line's DRAM address: the 32-bit address plus a carry (ranges are checked before a STORE runs).
OUT_ADDR_BITS = 33


class StoreControlSignature(wiring.Signature):
    """The STORE pipeline's control port, from the controller's side.

    Members
    -------
    start : Out(1)
        Begin STORE ``cmd`` (held while it runs).
    adv : Out(1)
        Advance the pipeline this cycle (the scatter engine can take a line).
    cmd : Out(STORE_LAYOUT)
    params_load : Out(1)
        Write the lanes' bias and shift registers from ``params`` (LOADQ).
    params : Out(ArrayLayout(8, loadq_bytes))
    clamp : Out(1)
    out_max : Out(16)
        The LOADQ's upper clamp (``clamp``, ``out_max``), registered with the parameters.
    out_valid : In(1)
        A line's bytes go to the scatter engine this cycle, to ``out_addr``.
    out_addr : In(33)
    done : In(1)
        Every line of the STORE has gone out.
    """

    def __init__(self, *, loadq_bytes: int):
        self.loadq_bytes = loadq_bytes
        super().__init__({
            "start": Out(1), "adv": Out(1), "cmd": Out(STORE_LAYOUT),
            "params_load": Out(1), "params": Out(data.ArrayLayout(8, loadq_bytes)),
            "clamp": Out(1), "out_max": Out(OUT_MAX_BITS),
            "out_valid": In(1), "out_addr": In(OUT_ADDR_BITS), "done": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and self.loadq_bytes == other.loadq_bytes

    def __repr__(self):
        return f"StoreControlSignature(loadq_bytes={self.loadq_bytes})"


class StorePipeline(wiring.Component):
    """Requantize accumulator lines and hand their bytes to the scatter engine, one line per advance.

    ``ctl.start`` (one cycle) begins a STORE ``ctl.cmd``; the pipeline
    advances in every cycle with ``ctl.adv`` (the controller runs the STORE and
    the scatter engine can take a line): it reads accumulator line ``acc + i``, passes it through ``cols``
    :class:`~systolic.hw.requantizer.RequantLane` (the system's lane config:
    int32 bias, the int8 shift clamped to the lanes' 7 bits, saturation to
    ``out_bits + 1`` signed), saturates to the STORE's ``bits`` signed or
    ``unsigned`` range (and to at most ``out_max`` when the last LOADQ set
    ``clamp``), and ``ctl.out_valid`` hands line ``i`` to the scatter
    (``bytes`` at ``ctl.out_addr = dram + i * stride``, ``elems`` of them);
    ``ctl.done`` once every line has gone. The lanes' ``bias`` and ``shift``
    are the registers ``ctl.params_load`` writes from a LOADQ parameter block.

    Latency: a line's bytes go out
    :attr:`~systolic.arch.latency.Latencies.store_pipeline` advances after its
    accumulator read (the read port, then the lanes' stages). Throughput: one
    line per advance. A STORE of ``lines`` lines (each scattered in ``s_i``
    cycles, at least 1) takes ``store_pipeline + sum s_i`` cycles after its
    ``start``, then ``done``.

    Members
    -------
    ctl : In(StoreControlSignature(loadq_bytes))
    acc : Out(LineReadSignature(...))
        The accumulator buffer's STORE read port.
    bytes : Out(ArrayLayout(8, cols))
        Registered: they stay until the next line goes out (the scatter reads them meanwhile).
    ev_acc_read : Out(1)
    ev_elems : Out(range(cols + 1))
        Elements requantized and written this cycle.
    """

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        C = config.cols
        super().__init__({
            "ctl": In(StoreControlSignature(loadq_bytes=config.loadq_bytes)),
            "acc": Out(LineReadSignature(depth=memory_depth(config.acc_lines), shape=signed(config.acc_bits),
                                         width=C)),
            "bytes": Out(data.ArrayLayout(8, C)),
            "ev_acc_read": Out(1), "ev_elems": Out(range(C + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        C = cfg.cols
        ctl = self.ctl
        cmd = ctl.cmd
        lat = cfg.latencies

        # Requantizer parameters (LOADQ): an int32 bias per lane, then an int8 shift per lane.
        bias = [Signal(signed(8 * BIAS_BYTES), name=f"bias{c}") for c in range(C)]
        shift = [Signal(signed(8), name=f"shift{c}") for c in range(C)]
        clamp, out_max = Signal(), Signal(OUT_MAX_BITS)
        with m.If(ctl.params_load):
            m.d.sync += [clamp.eq(ctl.clamp), out_max.eq(ctl.out_max)]
            for c in range(C):
                m.d.sync += [bias[c].eq(Cat(*(ctl.params[BIAS_BYTES * c + b] for b in range(BIAS_BYTES)))),
                             shift[c].eq(ctl.params[BIAS_BYTES * C + c])]

        adv = ctl.adv
        sv = Signal(lat.store_pipeline)     # valid bits: the accumulator read, then the lane stages
        i = Signal(17)                      # lines read
        si = Signal(17)                     # lines handed to the scatter engine
        saddr = Signal(OUT_ADDR_BITS)
        lo_sh, hi_sh = -(1 << (LANE_SHIFT_BITS - 1)), (1 << (LANE_SHIFT_BITS - 1)) - 1
        lanes = []
        for c in range(C):
            m.submodules[f"lane{c}"] = lane = RequantLane(config=cfg.lane_config)
            lanes.append(lane)
            sh = Signal(signed(LANE_SHIFT_BITS), name=f"lane_shift{c}")
            m.d.comb += sh.eq(Mux(shift[c] > hi_sh, hi_sh, Mux(shift[c] < lo_sh, lo_sh, shift[c])))
            m.d.comb += [lane.en.eq(adv), lane.acc.eq(self.acc.data[c]), lane.bias.eq(bias[c]),
                         lane.shift.eq(sh), lane.relu.eq(cmd.relu)]
        # The STORE's own range, applied after the lanes' wider one, and the LOADQ's clamp: out_max >= 0 >= the
        # low end, so min(max(y, lo), hi, out_max) is the golden sat(min(y, out_max)).
        sat_lo, type_hi, sat_hi = Signal(signed(10)), Signal(signed(10)), Signal(signed(10))
        bits_m1 = Signal(6)
        m.d.comb += [
            bits_m1.eq(cmd.bits - 1),
            sat_lo.eq(Mux(cmd.unsigned, 0, -(Const(1, 10) << bits_m1))),
            type_hi.eq(Mux(cmd.unsigned, (Const(1, 10) << cmd.bits) - 1, (Const(1, 10) << bits_m1) - 1)),
            sat_hi.eq(Mux(clamp & (out_max < type_hi), out_max, type_hi)),
        ]

        with m.If(adv):
            with m.If(i < cmd.lines):
                m.d.comb += [self.acc.en.eq(1), self.acc.addr.eq(cmd.acc + i), self.ev_acc_read.eq(1)]
                m.d.sync += i.eq(i + 1)
            m.d.sync += sv.eq(Cat(i < cmd.lines, sv[:-1]))
            with m.If(sv[-1]):
                for c in range(C):
                    y = lanes[c].y
                    m.d.sync += self.bytes[c].eq(Mux(y < sat_lo, sat_lo, Mux(y > sat_hi, sat_hi, y))[:8])
                m.d.comb += [ctl.out_valid.eq(1), self.ev_elems.eq(cmd.elems)]
                m.d.sync += [si.eq(si + 1), saddr.eq(saddr + cmd.stride)]
        with m.If(ctl.start):       # after the advance: a start wins
            m.d.sync += [i.eq(0), si.eq(0), sv.eq(0), saddr.eq(cmd.dram)]
        m.d.comb += [ctl.out_addr.eq(saddr), ctl.done.eq(si == cmd.lines)]
        return m
