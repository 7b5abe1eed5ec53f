"""The STORE pipeline: accumulator lines -> requantizer lanes -> saturated bytes for the scatter engine."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
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
        Begin STORE ``cmd`` (one cycle; ``cmd`` is held until ``done``).
    ready : Out(1)
        The scatter engine can take a line this cycle.
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
            "start": Out(1), "ready": Out(1), "cmd": Out(STORE_LAYOUT),
            "params_load": Out(1), "params": Out(data.ArrayLayout(8, loadq_bytes)),
            "clamp": Out(1), "out_max": Out(OUT_MAX_BITS),
            "out_valid": In(1), "out_addr": In(OUT_ADDR_BITS), "done": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and self.loadq_bytes == other.loadq_bytes

    def __repr__(self):
        return f"StoreControlSignature(loadq_bytes={self.loadq_bytes})"


class StorePipeline(wiring.Component):
    """Requantize accumulator lines and hand their bytes to the scatter engine, one line per cycle at most.

    ``ctl.start`` (one cycle) begins a STORE ``ctl.cmd``: the pipeline reads
    accumulator lines ``acc + i`` one per cycle, passes each through ``cols``
    :class:`~systolic.hw.requantizer.RequantLane` (the system's lane config:
    int32 bias, the int8 shift clamped to the lanes' 7 bits, saturation to
    ``out_bits + 1`` signed), saturates to the STORE's ``bits`` signed or
    ``unsigned`` range (and to at most ``out_max`` when the last LOADQ set
    ``clamp``), and in a cycle with ``ctl.ready`` ``ctl.out_valid`` hands the
    next line ``i`` to the scatter (``bytes`` at ``ctl.out_addr = dram + i *
    stride``, ``elems`` of them); ``ctl.done`` once every line has gone. The
    lanes' ``bias`` and ``shift`` are the registers ``ctl.params_load`` writes
    from a LOADQ parameter block.

    The lanes run every cycle and never wait for the scatter: their lines
    queue in a FIFO of ``store_pipeline + 1`` lines, and a line is read only
    while fewer than that many are read and not yet handed out (a count in a
    register). So ``ctl.ready``, which comes from the memory bus, drives only
    the hand-out, not the accumulator's read port and the lanes' enables.

    Latency: a line's bytes can go out
    :attr:`~systolic.arch.latency.Latencies.store_pipeline` cycles after its
    accumulator read (the read port, then the lanes' stages): in the first
    cycle from then with ``ctl.ready`` after the line before it went out.
    The first line is read in the cycle of ``start``. Throughput: one line per
    cycle (the FIFO's depth covers the loop from a hand-out to the read it
    allows). A STORE of ``lines`` lines (each scattered in ``s_i`` cycles, at
    least 1, ``ready`` from the start) takes ``store_pipeline - 1 + sum s_i``
    cycles after its ``start``, then ``done``.

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
        # The shift is kept clamped to the lanes' shift range (registered as it loads, so the lanes' shift
        # input is a register).
        bias = [Signal(signed(8 * BIAS_BYTES), name=f"bias{c}") for c in range(C)]
        shift = [Signal(signed(LANE_SHIFT_BITS), name=f"shift{c}") for c in range(C)]
        clamp, out_max = Signal(), Signal(OUT_MAX_BITS)
        lo_sh, hi_sh = -(1 << (LANE_SHIFT_BITS - 1)), (1 << (LANE_SHIFT_BITS - 1)) - 1
        with m.If(ctl.params_load):
            m.d.sync += [clamp.eq(ctl.clamp), out_max.eq(ctl.out_max)]
            for c in range(C):
                byte = ctl.params[BIAS_BYTES * C + c].as_signed()
                m.d.sync += [bias[c].eq(Cat(*(ctl.params[BIAS_BYTES * c + b] for b in range(BIAS_BYTES)))),
                             shift[c].eq(Mux(byte > hi_sh, hi_sh, Mux(byte < lo_sh, lo_sh, byte)))]

        D = lat.store_pipeline
        Q = D + 1                           # lines read and not yet handed out, at most (see the docstring)
        sv = Signal(D)                      # valid bits: the accumulator read, then the lane stages
        left = Signal(17)                   # lines still to read
        raddr = Signal.like(self.acc.addr)
        inflight = Signal(range(Q + 1))     # lines read and not yet handed out
        room = Signal(init=1)               # registered: inflight < Q
        si = Signal(17)                     # lines handed to the scatter engine
        saddr = Signal(OUT_ADDR_BITS)
        busy = Signal()                     # a STORE has lines not yet handed out
        issue = Signal()
        first = Signal()                    # start reads line 0 itself (raddr holds cmd.acc then, see below)
        m.d.comb += [first.eq(ctl.start & (cmd.lines != 0)), issue.eq(first | ((left != 0) & room)),
                     self.acc.en.eq(issue), self.acc.addr.eq(raddr), self.ev_acc_read.eq(issue)]
        # The wide address registers follow the command while no STORE runs, so ``start`` (which the
        # controller's interlock drives) does not reach their clock enables; a read (the start's own, of line 0,
        # included: raddr holds cmd.acc then) moves raddr on.
        with m.If(~busy):
            m.d.sync += [raddr.eq(cmd.acc), saddr.eq(cmd.dram)]
        with m.If(issue):
            m.d.sync += [left.eq(left - 1), raddr.eq(raddr + 1)]
        m.d.sync += sv.eq(Cat(issue, sv[:-1]))

        lanes = []
        for c in range(C):
            m.submodules[f"lane{c}"] = lane = RequantLane(config=cfg.lane_config)
            lanes.append(lane)
            m.d.comb += [lane.en.eq(1), lane.acc.eq(self.acc.data[c]), lane.bias.eq(bias[c]),
                         lane.shift.eq(shift[c]), lane.relu.eq(cmd.relu)]
        # The STORE's own range, applied after the lanes' wider one, and the LOADQ's clamp: out_max >= 0 >= the
        # low end, so min(max(y, lo), hi, out_max) is the golden sat(min(y, out_max)).
        # The range is registered, the high end in two steps (the type's, then the clamp's compare): it
        # depends only on the STORE's fields and the LOADQ's clamp, which hold still from before the start
        # (the controller's CHECK, at least STORE_START cycles before it) until the STORE is done, and a line
        # leaves the lanes store_pipeline (> 1) cycles after its read.
        assert D > 1
        sat_lo, type_hi, sat_hi = (Signal(signed(10), name=n) for n in ("sat_lo", "type_hi", "sat_hi"))
        bits_m1 = Signal(6)
        m.d.comb += bits_m1.eq(cmd.bits - 1)
        m.d.sync += [
            type_hi.eq(Mux(cmd.unsigned, (Const(1, 10) << cmd.bits) - 1, (Const(1, 10) << bits_m1) - 1)),
            sat_lo.eq(Mux(cmd.unsigned, 0, -(Const(1, 10) << bits_m1))),
            sat_hi.eq(Mux(clamp & (out_max < type_hi), out_max, type_hi)),
        ]
        line = Signal(8 * C)                # the line leaving the lanes, in the STORE's range
        for c in range(C):
            y = lanes[c].y
            m.d.comb += line[8 * c:8 * c + 8].eq(Mux(y < sat_lo, sat_lo, Mux(y > sat_hi, sat_hi, y))[:8])

        # The queue, with a bypass: a line leaving the lanes goes out at once when the queue is empty.
        m.submodules.queue = queue = SyncFIFO(width=8 * C, depth=Q)
        take = Signal()
        m.d.comb += [
            take.eq(ctl.ready & (queue.r_rdy | sv[-1])),
            queue.w_data.eq(line), queue.w_en.eq(sv[-1] & ~(take & ~queue.r_rdy)),
            queue.r_en.eq(take & queue.r_rdy),
            ctl.out_valid.eq(take),
        ]
        with m.If(take):
            m.d.sync += [self.bytes.as_value().eq(Mux(queue.r_rdy, queue.r_data, line)),
                         si.eq(si + 1), saddr.eq(saddr + cmd.stride)]
            with m.If(si + 1 == cmd.lines):
                m.d.sync += busy.eq(0)
            m.d.comb += self.ev_elems.eq(cmd.elems)
        nxt = Signal.like(inflight)
        m.d.comb += nxt.eq(inflight + issue - take)
        m.d.sync += [inflight.eq(nxt), room.eq(nxt < Q)]
        # A start finds the queue and the lanes empty: the STORE before it is done (every line it read has
        # gone out).
        with m.If(ctl.start):
            m.d.sync += [left.eq(cmd.lines - first), si.eq(0), busy.eq(cmd.lines != 0)]
        # done: every line handed out (si == cmd.lines), read from a register, not formed by a compare with the
        # command's lines: busy is set by the start (when there are lines) and cleared with the last line.
        m.d.comb += [ctl.out_addr.eq(saddr), ctl.done.eq(~busy)]
        return m
