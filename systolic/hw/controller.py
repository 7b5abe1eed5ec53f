"""The controller: fetches, decodes, checks and sequences the instructions of docs/isa.md, in order."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.isa import BIAS_BYTES, FIELDS, INSTR_BYTES, Opcode, VecOp
from ..arch.latency import (ACC_READ, ACC_UPDATE, DECODE_CYCLES, ERROR_COMMIT, INTERLOCK_REGISTER, LOADQ_CHECK,
                            STORE_START, VEC_INPUT, VEC_LINE)
from ..arch.sysmap import (CONTROLLER_UNITS, ERR_BAD_OPCODE, ERR_NO_HALT, ERR_OVERFLOW, ERR_SHIFT, ERR_VALUE,
                           ERROR_ARG_BITS, ERROR_CODE_BITS, PC_BITS, UNITS)
from ..golden.primitives import MAX_SHIFT
from .accumulator import AccVecSignature
from .array_unit import MATMUL_LAYOUT, READER_LAYOUT, WRITER_LAYOUT
from .checker import ARG_REGISTER, INSTR_BITS, OPCODE_BITS, InstrChecker, field
from .divider import LineDivider, div_result_bits
from .dma import ADDR_BITS, DmaCommandSignature
from .params import require_system_config
from .pe import delay
from .scratchpad import LineLoadSignature, LineReadSignature, memory_depth
from .store import StoreControlSignature

__all__ = ["Controller", "controller_events", "UNIT_STATES"]

#: The controller's states per unit of :data:`systolic.arch.sysmap.CONTROLLER_UNITS`: every cycle of a run
#: is in exactly one of them (the ``<unit>_busy`` counters).
UNIT_STATES = {
    "ctrl": ("FETCH", "FETCH_WAIT", "FETCH_BUF", "DECODE", "CHECK"),
    "load": ("LOAD", "LOAD_ZERO", "LOAD_WAIT"),
    "loadq": ("LOADQ", "LOADQ_WAIT", "LOADQ_CHECK"),
    "store": ("STORE_START", "STORE"),
    "vec": ("VEC", "VEC_WAIT", "VEC_DRAIN", "DIV", "DIV_STEP", "DIV_WRITE"),
    "wait": ("HOLD", "ERR_WAIT"),
}
assert tuple(UNIT_STATES) == CONTROLLER_UNITS and set(UNIT_STATES) | {"matmul"} == set(UNITS)

#: The errors the controller finds itself and reports from ERR_WAIT: a state registers only which one
#: (``pend``); ERR_WAIT forms its code, argument and index from registers that hold still meanwhile
#: (see ``Controller._pending_error``).
_PENDING = ("no_halt", "bad_opcode", "check", "value", "shift")
#: Where the error status of a stopped run comes from (see ``Controller._commit_error``): the accumulator's
#: overflow (of the MATMUL it names), a VEC / DIV line's overflow (at pc), the overflow kept while a STORE ran,
#: the error ERR_WAIT reports.
_SOURCES = ("overflow", "vec_overflow", "kept_overflow", "pending")
#: Registered copies of state groups, for readers whose clock enables or selects must not come from the FSM
#: state's decode: each is set by every transition (``Controller._fsm``'s ``goto``) to whether the next state
#: is one of its states. fetching: the instruction registers load; div_mode: DIV owns the accumulator's read
#: port; in_store: the STORE pipeline's hand-out; store_start: the STORE pipeline's start. (A sixth,
#: ``data_gather``, the DMA command's select, is set by ``goto``'s own argument: see ``Controller._dma_command``.)
_STATE_FLAGS = {"fetching": ("FETCH_BUF",), "div_mode": ("DIV", "DIV_STEP", "DIV_WRITE"),
                "in_store": ("STORE",), "store_start": ("STORE_START",)}


def controller_events(config: AcceleratorConfig) -> data.StructLayout:
    """The events the controller reports each cycle (counter name -> width)."""
    ev = {"cycles": 1, "instructions": 1, "dram_bytes_read": range(config.dma_buffer_bytes + 1),
          "fetch_bytes": range(INSTR_BYTES + 1), "matmul_busy": 1, "idle_mem_stall": 1,
          "vec_ops": range(config.cols + 1), "div_ops": range(config.cols + 1)}
    for u in CONTROLLER_UNITS:
        ev[f"{u}_busy"] = ev[f"{u}_stall"] = 1
    return data.StructLayout(ev)


class Controller(wiring.Component):
    """Fetch, decode, check, interlock and execute, one instruction at a time; MATMULs go to the array unit.

    States: IDLE until ``start``; FETCH (request the first instruction's 16
    bytes; every later instruction's are requested in the last cycle of the
    one before), then per instruction FETCH_WAIT (until they arrive), FETCH_BUF
    (the instruction registers load it from the DMA's registered buffer), DECODE, CHECK (the
    :class:`~systolic.hw.checker.InstrChecker`'s error, then the interlock),
    HOLD (while the interlock holds it), then its execution: LOAD (zero-fill
    lines one per cycle, or a DMA gather, each line written the cycle it
    arrives), VEC (a DMA gather like LOAD's, each line into the accumulator
    buffer's update pipeline from the DMA's registered buffer the cycle after
    it arrives; VEC_WAIT, then VEC_DRAIN (VEC_LINE + VEC_INPUT + ACC_UPDATE
    cycles) while the last line is written), DIV (per line: its read, DIV_STEP while
    the :class:`~systolic.hw.divider.LineDivider` loads it and forms the
    quotient bits, DIV_WRITE into the update pipeline; then VEC_DRAIN),
    LOADQ (its gather), LOADQ_WAIT, LOADQ_CHECK (the block's shifts checked
    from ``dma_buf`` the cycle after it arrives; it goes into the STORE
    pipeline's registers the cycle after that), STORE_START (the
    :class:`~systolic.hw.store.StorePipeline` starts), STORE (it runs, its
    lines go to the DMA's scatter), MATMUL (into the queue slot, at once),
    FENCE and HALT (once the array unit is idle). An error stops the run in
    ERR_WAIT once the array unit is idle, so an accumulator overflow of an
    earlier MATMUL is reported first (precise errors).

    Interlocks (docs/isa.md): a LOAD waits while a queued or taken MATMUL
    (the queue slot and the array unit's ``readers``) may read lines it
    overwrites (W lines only until its weight tile is read); a MATMUL waits for the queue slot; a STORE waits while a
    queued or taken MATMUL (the queue slot and the array unit's ``writers``)
    may still write lines it reads, and runs beside the others; FENCE, HALT,
    VEC and DIV wait until the array unit is idle (their lines use the
    accumulator buffer's update pipeline). The LOAD and STORE overlap tests are
    registered (:data:`~systolic.arch.latency.INTERLOCK_REGISTER`): CHECK and
    HOLD act on the test of the cycle before.

    Latency: an instruction is checked
    :data:`~systolic.arch.latency.DECODE_CYCLES` (3) cycles after its last
    byte arrives (FETCH_BUF, DECODE, CHECK) and starts executing in CHECK (or the cycle
    its interlock lets go); a MATMUL reaches the array unit
    :data:`~systolic.arch.latency.QUEUE_SLOT` (1) cycle after that. The exact
    timeline of every state is :func:`systolic.arch.timing.program_timeline`.

    Parameters
    ----------
    config : AcceleratorConfig
    readers : int
        Length of the array unit's ``readers`` (``ArrayUnit.READERS``).
    writers : int
        Length of the array unit's ``writers`` (``ArrayUnit.WRITERS``).

    Members
    -------
    start : In(1)
    prog_addr, prog_len, dram_bytes : In(32)
    busy, done : Out(1)
    error : Out(4)
    err_index : Out(32)
    err_arg : Out(64)
        The host interface (see :class:`~systolic.hw.system.Accelerator`).
    dma : Out(DmaCommandSignature(...))
        Fetches, LOAD and LOADQ gathers, STORE scatters.
    dma_buf : In(ArrayLayout(8, dma_buffer_bytes))
        The DMA's registered buffer (``Dma.buf``): a gathered line one cycle after ``dma.line_valid``. The
        instruction registers load a fetched instruction from it (FETCH_BUF). A LOADQ's
        parameter block is checked from it one cycle after the block arrived and written into the STORE pipeline
        from it the cycle after, so no cycle runs from a memory response into the check or the lanes' registers.
    load_a, load_w : Out(LineLoadSignature(...))
        LOAD line writes into scratchpads A and W.
    matmul : Out(stream.Signature(MATMUL_LAYOUT))
        The queue slot, to the array unit.
    readers : In(ArrayLayout(READER_LAYOUT, readers))
    writers : In(ArrayLayout(WRITER_LAYOUT, writers))
        MATMULs taken whose accumulator writes are not done (the STORE interlock).
    unit_busy : In(1)
        The array unit is busy (the queue slot not included).
    overflow : In(1)
    overflow_idx : In(32)
        The accumulator buffer's overflow and the index of the MATMUL it belongs to.
    store : Out(StoreControlSignature(...))
    vec : Out(AccVecSignature(...))
        VEC and DIV lines into the accumulator buffer.
    acc_rd : Out(LineReadSignature(...))
        DIV's reads of accumulator lines (the STORE pipeline's read port, never used by both at once); its
        address is a register.
    div_mode : Out(1)
        A DIV runs (a register, high in its states): the accumulator's read port takes ``acc_rd.addr``, not
        the STORE pipeline's address.
    clear : Out(1)
        Start of a run (counters and the array unit clear).
    events : Out(controller_events(config))
    """

    def __init__(self, *, config: AcceleratorConfig, readers: int, writers: int):
        self.config = require_system_config(config, self)
        B = config.dma_buffer_bytes
        super().__init__({
            "start": In(1), "prog_addr": In(32), "prog_len": In(PC_BITS), "dram_bytes": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(ERROR_CODE_BITS), "err_index": Out(PC_BITS),
            "err_arg": Out(ERROR_ARG_BITS),
            "dma": Out(DmaCommandSignature(buf_bytes=B, src_bytes=config.cols)),
            "dma_buf": In(data.ArrayLayout(8, B)),
            "load_a": Out(LineLoadSignature(depth=memory_depth(config.a_lines), width=config.rows)),
            "load_w": Out(LineLoadSignature(depth=memory_depth(config.w_lines), width=config.cols)),
            "matmul": Out(stream.Signature(MATMUL_LAYOUT)),
            "readers": In(data.ArrayLayout(READER_LAYOUT, readers)),
            "writers": In(data.ArrayLayout(WRITER_LAYOUT, writers)),
            "unit_busy": In(1), "overflow": In(1), "overflow_idx": In(PC_BITS),
            "store": Out(StoreControlSignature(loadq_bytes=config.loadq_bytes)),
            "vec": Out(AccVecSignature(depth=memory_depth(config.acc_lines), cols=config.cols,
                                       bits=div_result_bits(config.acc_bits))),
            "acc_rd": Out(LineReadSignature(depth=memory_depth(config.acc_lines), shape=signed(config.acc_bits),
                                            width=config.cols)),
            "div_mode": Out(1), "clear": Out(1),
            "events": Out(controller_events(config)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.checker = chk = InstrChecker(config=self.config)
        m.submodules.divider = div = LineDivider(cols=self.config.cols, acc_bits=self.config.acc_bits)
        s = SimpleNamespace(
            ins=Signal(INSTR_BITS), pc=Signal(PC_BITS), i=Signal(17),       # i: line counter of a LOAD / VEC / DIV
            q_valid=Signal(), enqueue=Signal(), unit_busy=Signal(), blocked=Signal(),
            ovf_seen=Signal(), ovf_idx=Signal(PC_BITS),     # an overflow while a STORE runs, reported after it
            pc1=Signal(PC_BITS), step=Signal(),             # pc + 1, registered; step: pc moves to it (a pulse)
            fa=Signal(ADDR_BITS), fa1=Signal(ADDR_BITS),    # pc's fetch address; the next fetch's, registered
            past=Signal(), past1=Signal(),                  # prog_len == 0 (FETCH); pc + 1 >= prog_len, registered
            pend=Signal(range(len(_PENDING))),              # the error ERR_WAIT reports (see _pending_error)
            fire=Signal(), src=Signal(range(len(_SOURCES))),  # an error stops the run: its source (_commit_error)
            data_gather=Signal(), in_store=Signal(),        # the state gathers its data / is STORE (_dma_command)
            store_start=Signal(),                           # the state is STORE_START
            ovf_now=Signal(PC_BITS),                        # overflow_idx, registered (_commit_error)
            bad_lane_r=Signal(8),                           # LOADQ_CHECK: the first bad shift lane, registered
            params_load=Signal(),                           # write the LOADQ block from dma_buf (a pulse)
            div_issue=Signal(),                             # a DIV line was read in the cycle before (a pulse)
            chk=chk, div=div,
            # DIV_STEP's and VEC_DRAIN's count
            k=Signal(range(max(self.config.acc_bits + ACC_READ, VEC_LINE + VEC_INPUT + ACC_UPDATE))),
        )
        # The instruction registers take the fetched word from the DMA's registered buffer (ins_next) in
        # FETCH_BUF, the cycle after it arrived (`fetching`, a register, so their clock enable is a flip-flop,
        # not the FSM's decision), and so do the checker's operand sums and partial products: no cycle runs
        # from the memory's answer into them.
        assert DECODE_CYCLES == 3, "FETCH_BUF, DECODE, CHECK"
        s.fetching, s.ins_next = Signal(name="fetching"), Signal(INSTR_BITS, name="ins_next")
        m.d.comb += [chk.ins.eq(s.ins), chk.ins_next.eq(s.ins_next), chk.load.eq(s.fetching),
                     chk.dram_bytes.eq(self.dram_bytes),
                     s.ins_next.eq(Cat(*(self.dma_buf[b] for b in range(INSTR_BYTES))))]
        # The checker's error, registered for ERR_WAIT (always at least a cycle after CHECK; the checker's
        # inputs hold meanwhile), so no cycle runs from its tests into the error status. The argument lags the
        # code by ARG_REGISTER cycles: it is read in the cycle after ERR_WAIT's last (_commit_error), at the
        # earliest two cycles after CHECK.
        assert ARG_REGISTER <= 1, "chk_arg is read two cycles after CHECK"
        s.chk_error, s.chk_arg = Signal(ERROR_CODE_BITS), Signal(64)
        # (Only read after a failed CHECK: the checker's fail_error / fail_arg, formed without its DRAM compare.)
        m.d.sync += [s.chk_error.eq(chk.fail_error), s.chk_arg.eq(chk.fail_arg)]
        self._instruction_copies(m, s)
        L = Opcode.LOAD
        s.f = {n: field(s.ins_x, L, n) for n in ("target", "zero", "unsigned", "lines", "spad", "elems", "offset",
                                                  "dram", "stride")}
        # The zero tests of lines and elems (LOAD, VEC and DIV have them in the same bits), registered: formed
        # from `ins` in the cycle before `ins_x` takes it, so they always equal the tests of ins_x's fields, and
        # the LOAD, VEC and DIV states' choices (the scratchpads' write enables, the DMA's command) start from
        # flip-flops. z_end: LOAD_ZERO's i == lines, formed as i is set; i_last: LOAD_WAIT's, VEC_WAIT's and
        # DIV_WRITE's i + 1 == lines, set to one_line (lines == 1, registered as the zero tests) in the state
        # before and formed as i counts, so the choice to end the instruction starts from a flip-flop.
        assert all(FIELDS[op][n] == FIELDS[L][n] for op in (Opcode.VEC, Opcode.DIV) for n in ("lines", "elems"))
        s.no_lines, s.no_elems, s.z_end = Signal(name="no_lines"), Signal(name="no_elems"), Signal(name="z_end")
        s.one_line, s.i_last = Signal(name="one_line"), Signal(name="i_last")
        m.d.sync += [s.no_lines.eq(field(s.ins, L, "lines") == 0), s.no_elems.eq(field(s.ins, L, "elems") == 0),
                     s.one_line.eq(field(s.ins, L, "lines") == 1)]
        self._queue_slot(m, s)
        self._interlock(m, s)
        self._datapath(m, s)
        fsm = self._fsm(m, s)
        self._dma_command(m, s, fsm)
        self._unit_events(m, s, fsm)
        # The state's signals by their field names in the netlist (timing reports name registers by them).
        for name, sig in vars(s).items():
            if isinstance(sig, Signal) and sig.name.startswith("$"):
                sig.name = name
        return m

    def _instruction_copies(self, m, s):
        """Copies of the instruction register, one per group of readers, so that no bit of it drives the whole
        chip: ``ins`` (the checker), ``ins_il`` (the interlock's tests; both loaded with the instruction, so
        they hold it from DECODE on), ``ins_x`` (the states that execute it, the DMA's command, the MATMUL
        queue slot, the VEC / DIV datapath) and ``ins_st`` (the STORE pipeline's command), which hold it from
        CHECK on: every reader of these acts after CHECK. Each copy is built differently (reset or not,
        loaded in FETCH_BUF, in DECODE or every cycle), so synthesis keeps them apart instead of merging
        equal flip-flops into one."""
        s.ins_il = Signal(INSTR_BITS, name="ins_il", reset_less=True)
        s.ins_x = Signal(INSTR_BITS, name="ins_x", reset_less=True)
        s.ins_st = Signal(INSTR_BITS, name="ins_st", reset_less=True)
        with m.If(s.fetching):
            m.d.sync += [s.ins.eq(s.ins_next), s.ins_il.eq(s.ins_next)]
        m.d.sync += s.ins_x.eq(s.ins)
        with m.If(s.chk.decode):
            m.d.sync += s.ins_st.eq(s.ins)

    def _queue_slot(self, m, s):
        """The one-entry MATMUL queue: filled when a MATMUL executes, emptied when the array unit takes it."""
        M = Opcode.MATMUL
        q = Signal(MATMUL_LAYOUT)
        m.d.comb += [self.matmul.valid.eq(s.q_valid), self.matmul.payload.eq(q),
                     s.unit_busy.eq(s.q_valid | self.unit_busy)]
        # The slot's fields follow the instruction register while the slot is empty, and hold while it is
        # full: a MATMUL is enqueued only into an empty slot, so the fields it holds are the ones it was
        # enqueued with, and the enqueue (which the interlock decides) drives one flip-flop, not the whole
        # slot's clock enables.
        with m.If(~s.q_valid):
            a, w, acc, mm = (field(s.ins_x, M, n) for n in ("a", "w", "acc", "m"))
            m.d.sync += [q.a.eq(a), q.w.eq(w), q.acc.eq(acc), q.m.eq(mm), q.accum.eq(field(s.ins_x, M, "accumulate")),
                         q.shift.eq(field(s.ins_x, M, "shift")), q.idx.eq(s.pc),
                         q.a_end.eq(a + mm), q.w_end.eq(w + self.config.rows), q.acc_end.eq(acc + mm)]
        with m.If(s.enqueue):
            m.d.sync += s.q_valid.eq(1)
        with m.If(self.matmul.valid & self.matmul.ready):
            m.d.sync += s.q_valid.eq(0)
        with m.If(self.clear):
            m.d.sync += s.q_valid.eq(0)
        s.q = q

    def _interlock(self, m, s):
        """``blocked``: the decoded instruction must wait for the array unit (see the class docstring)."""
        R = self.config.rows
        L = Opcode.LOAD
        f = {n: field(s.ins_il, L, n) for n in ("target", "lines", "spad")}
        is_w = f["target"] == 1
        # Range ends: the array unit's formed when the MATMUL was queued, the decoded instruction's (LOAD's
        # spad + lines, STORE's acc + lines: the same bits) the checker's, registered as the instruction
        # registers load, so an overlap test is two compares of registers, no adder.
        S = Opcode.STORE
        st_acc, st_lines = field(s.ins_il, S, "acc"), field(s.ins_il, S, "lines")
        assert FIELDS[S]["acc"] == FIELDS[L]["spad"] and FIELDS[S]["lines"] == FIELDS[L]["lines"]
        ld_end = st_end = s.chk.range_end

        def overlaps(x, n, x_end, y, k, y_end):
            """[x, x_end) (n = its length) and [y, y_end) (length k) share a line."""
            return (n != 0) & (k != 0) & (x < y_end) & (y < x_end)

        readers = [(s.q_valid, s.q_valid, s.q)] + [(r.valid, r.w_valid, r) for r in self.readers]
        conflict = Cat(*(Mux(is_w, w_valid & overlaps(f["spad"], f["lines"], ld_end, d.w, R, d.w_end),
                             valid & overlaps(f["spad"], f["lines"], ld_end, d.a, d.m, d.a_end))
                         for valid, w_valid, d in readers)).any()
        writers = [(s.q_valid, s.q)] + [(w.valid, w) for w in self.writers]
        pending = Cat(*(valid & overlaps(st_acc, st_lines, st_end, d.acc, d.m, d.acc_end)
                        for valid, d in writers)).any()
        # Both tests are registered (INTERLOCK_REGISTER): CHECK reads the test formed in DECODE, HOLD the one of
        # the cycle before. A range only shrinks or goes while the instruction waits (no MATMUL is queued
        # meanwhile), so a test a cycle old may hold an instruction a cycle longer, never let it go early.
        assert INTERLOCK_REGISTER == 1
        conflict_r, pending_r = Signal(name="conflict_r"), Signal(name="pending_r")
        m.d.sync += [conflict_r.eq(conflict), pending_r.eq(pending)]
        with m.Switch(s.chk.op):
            with m.Case(Opcode.LOAD):
                m.d.comb += s.blocked.eq(conflict_r)
            with m.Case(Opcode.MATMUL):
                m.d.comb += s.blocked.eq(s.q_valid)
            with m.Case(Opcode.STORE):
                m.d.comb += s.blocked.eq(pending_r)
            with m.Case(Opcode.FENCE, Opcode.HALT, Opcode.VEC, Opcode.DIV):
                m.d.comb += s.blocked.eq(s.unit_busy)

    def _datapath(self, m, s):
        """What the states drive besides the FSM: LOAD line writes, the STORE pipeline's command, the status."""
        f = s.f
        s.write_line = Signal()      # a LOAD writes line spad + i this cycle (from dma.line; zeros past elems)
        # The line a LOAD writes: a register, spad + i. It follows the instruction's spad outside the LOAD
        # states (so it holds spad from CHECK on) and counts with i inside them (_fsm).
        # (As wide as the wider scratchpad's address: the checker keeps spad + lines inside the target's lines.)
        s.waddr = Signal(max(len(self.load_a.addr), len(self.load_w.addr)), name="waddr")
        m.d.sync += s.waddr.eq(f["spad"])
        for port, target in ((self.load_a, 0), (self.load_w, 1)):
            m.d.comb += [port.en.eq(s.write_line & (f["target"] == target)), port.addr.eq(s.waddr),
                         port.bytes.eq(self.dma.line.as_value()[:len(port.bytes.as_value())]),
                         port.offset.eq(f["offset"]), port.elems.eq(f["elems"]),
                         port.zero.eq(f["zero"]), port.unsigned.eq(f["unsigned"])]
        s.bad_value = self.load_a.bad | self.load_w.bad
        with m.If(s.write_line):
            m.d.comb += self.events.dram_bytes_read.eq(f["elems"])
        # A LOADQ's bytes count in the cycle after its check (with params_load, in FETCH_WAIT: no LOAD or VEC line
        # then), so the check's outcome reaches the counters through a register.
        with m.If(s.params_load):
            m.d.comb += self.events.dram_bytes_read.eq(self.config.loadq_bytes)
        # VEC lines (a line's bytes from the DMA's registered buffer, VEC_LINE after it arrived, read as the
        # instruction's signed / unsigned values) and DIV results.
        V, D = Opcode.VEC, Opcode.DIV
        assert FIELDS[V]["acc"] == FIELDS[D]["acc"] and FIELDS[V]["elems"] == FIELDS[D]["elems"]
        vec, div = self.vec, s.div
        s.vec_line, s.div_write = Signal(), Signal()        # a VEC line arrives / a DIV line is written
        assert VEC_LINE == 1, "one register below"
        vec_line_r, vec_addr = Signal(name="vec_line_r"), Signal.like(vec.addr, name="vec_addr")
        line = self.dma_buf
        # The line's address: acc + i registered, so the cycle after a VEC line arrived it is that line's (i
        # counts as the line arrives), and in DIV_WRITE that of the line it writes (i holds in DIV_STEP).
        m.d.sync += [vec_line_r.eq(s.vec_line), vec_addr.eq(field(s.ins_x, V, "acc") + s.i)]
        # DIV reads line acc (state DIV, i = 0) and line acc + i + 1 in DIV_WRITE: the address is a register,
        # formed in the cycle before (acc + i + 1 in DIV_STEP, where i holds: it changes only as DIV_WRITE ends;
        # acc in every other state), so nothing but the port's select (div_mode, a register) lies before the
        # memory's address.
        s.rd_addr = Signal.like(self.acc_rd.addr, name="rd_addr")
        s.div_next = field(s.ins_x, D, "acc") + s.i + 1
        s.div_mode = Signal(name="div_mode")
        m.d.sync += s.rd_addr.eq(field(s.ins_x, D, "acc"))
        m.d.comb += self.div_mode.eq(s.div_mode)
        # The line's fields are chosen by div_mode (a register, high in the DIV states, low in VEC_WAIT), not by
        # the state's decode: they matter only with vec.valid, and then div_mode says which of the two it is.
        m.d.comb += [vec.valid.eq(vec_line_r | s.div_write), vec.addr.eq(vec_addr),
                     vec.op.eq(Mux(s.div_mode, VecOp.SET, field(s.ins_x, V, "op"))),
                     vec.shift.eq(Mux(s.div_mode, 0, field(s.ins_x, V, "shift"))),
                     vec.elems.eq(field(s.ins_x, V, "elems")),
                     div.divisor.eq(field(s.ins_x, D, "divisor")), div.line.eq(self.acc_rd.data),
                     self.acc_rd.addr.eq(s.rd_addr)]
        for c in range(self.config.cols):
            byte = Mux(field(s.ins_x, V, "unsigned"), line[c].as_unsigned(), line[c].as_signed())
            m.d.comb += vec.vals[c].eq(Mux(s.div_mode, div.y[c], byte))
        with m.If(s.vec_line):
            m.d.comb += [self.events.dram_bytes_read.eq(f["elems"]), self.events.vec_ops.eq(f["elems"])]
        with m.If(s.div_write):
            m.d.comb += self.events.div_ops.eq(f["elems"])
        S = Opcode.STORE
        st = self.store
        for name in st.cmd.shape().members:
            m.d.comb += getattr(st.cmd, name).eq(field(s.ins_st, S, name))
        m.d.comb += [st.params.eq(self.dma_buf.as_value()[:len(st.params.as_value())]),
                     st.params_load.eq(s.params_load)]
        m.d.comb += [st.clamp.eq(field(s.ins_st, Opcode.LOADQ, "clamp")),
                     st.out_max.eq(field(s.ins_st, Opcode.LOADQ, "out_max"))]
        # A LOADQ block's shift bytes must lie in the golden requantizer's [-MAX_SHIFT, MAX_SHIFT]:
        # the first lane outside it (lowest index wins: assigned last).
        # Each lane's test is registered from the DMA's line, whose bytes dma_buf holds from the next cycle on
        # (the DMA's buffer takes its line in every cycle the line differs from it), so in LOADQ_CHECK these are
        # the tests of dma_buf's bytes and the state's choice starts from flip-flops.
        C = self.config.cols
        s.bad_shift, s.bad_lane = Signal(), Signal(8)        # cols <= 64 lanes
        bad = [Signal(name=f"bad_shift{c}") for c in range(C)]
        for c in range(C):
            # The byte as two's complement: in range when it is at most MAX_SHIFT or at least
            # 256 - MAX_SHIFT (compared unsigned: a signed compare here trips Yosys's synth_ecp5).
            b = self.dma.line[BIAS_BYTES * C + c]
            m.d.sync += bad[c].eq((b > MAX_SHIFT) & (b < 256 - MAX_SHIFT))
        for c in reversed(range(C)):
            with m.If(bad[c]):
                m.d.comb += [s.bad_shift.eq(1), s.bad_lane.eq(c)]
        s.error, s.err_arg, s.err_index = Signal(ERROR_CODE_BITS), Signal(ERROR_ARG_BITS), Signal(PC_BITS)
        m.d.comb += [self.error.eq(s.error), self.err_arg.eq(s.err_arg), self.err_index.eq(s.err_index)]

    def _fsm(self, m, s):
        """The state machine; one piece: every state reads and writes the same instruction state, and the order
        of the statements in a state decides which transition wins (the overflow check is last)."""
        f, dma, chk = s.f, self.dma, s.chk

        def goto(state, data_gather=0):
            # Every transition: besides the FSM's state, the registered state flags of _STATE_FLAGS take
            # whether the next state is theirs (they hold while the state does), and data_gather whether the
            # next state starts a gather of the instruction's data (LOAD, VEC, LOADQ: _dma_command).
            for name, states in _STATE_FLAGS.items():
                m.d.sync += getattr(s, name).eq(state in states)
            m.d.sync += s.data_gather.eq(data_gather)
            m.next = state

        def fail_now(source):
            # The run stops now; the error status is written a cycle later (_commit_error) from registers
            # that hold still in IDLE, so only this flag and the source's index are decided here.
            m.d.sync += [s.fire.eq(1), s.src.eq(_SOURCES.index(source))]
            goto("IDLE")

        def fail(cause):
            # Precise errors: the run stops only once the array unit is idle, so an accumulator
            # overflow of an earlier MATMUL is reported first (ERR_WAIT). Only the cause is registered
            # here (a few bits); ERR_WAIT forms the code, argument and index (_pending_error).
            m.d.sync += s.pend.eq(_PENDING.index(cause))
            goto("ERR_WAIT")

        def check_overflow():
            # Last in its state, so it wins over the state's own transition.
            with m.If(self.overflow):
                fail_now("overflow")

        def keep_overflow():
            # Beside a STORE: the first overflow of a MATMUL of other lines is kept, reported once the STORE is done.
            # (ovf_idx follows overflow_idx until ovf_seen is set, in _fsm: only that flag is decided here.)
            with m.If(self.overflow & ~s.ovf_seen):
                m.d.sync += s.ovf_seen.eq(1)

        def vec_overflow():
            # Last in its state: a VEC line's update left the accumulator range (it runs alone, so it is its own).
            with m.If(self.overflow):
                fail_now("vec_overflow")

        def load_line():
            # A LOAD state: the written line's address counts with i (_datapath).
            m.d.sync += s.waddr.eq(Mux(s.write_line, s.waddr + 1, s.waddr))

        def gather():
            # The command's fields: _dma_command.
            m.d.comb += [dma.start.eq(1), dma.write.eq(0)]

        def count_line():
            # LOAD_WAIT, VEC_WAIT, DIV_WRITE: one more line done; i_last (i + 1 == lines) formed as i counts.
            m.d.sync += [s.i.eq(s.i + 1), s.i_last.eq(s.i + 2 == f["lines"])]

        def next_instr():
            # The instruction's last cycle fetches the next one (its gather starts here, at fa1) or, past the
            # program's end, fails. pc moves to pc1 (= pc + 1, registered) in the cycle after (step, a pulse):
            # the decision to go on (the interlock's, the DMA's) drives one flip-flop, not pc's clock enables.
            m.d.sync += s.step.eq(1)
            with m.If(s.past1):
                fail("no_halt")
            with m.Else():
                gather()
                goto("FETCH_WAIT")

        def execute():
            """Start the decoded, checked, unblocked instruction."""
            with m.Switch(chk.op):
                with m.Case(Opcode.HALT):
                    m.d.sync += self.done.eq(1)
                    goto("IDLE")
                with m.Case(Opcode.FENCE):
                    next_instr()
                with m.Case(Opcode.LOAD):
                    goto("LOAD", data_gather=~s.no_lines & ~s.no_elems)
                with m.Case(Opcode.VEC):
                    goto("VEC", data_gather=~s.no_lines & ~s.no_elems)
                with m.Case(Opcode.DIV):
                    goto("DIV")
                with m.Case(Opcode.LOADQ):
                    goto("LOADQ", data_gather=1)
                with m.Case(Opcode.MATMUL):
                    m.d.comb += s.enqueue.eq(1)
                    next_instr()
                with m.Case(Opcode.STORE):
                    m.d.sync += s.ovf_seen.eq(0)
                    goto("STORE_START")

        # The divider loads a DIV line the cycle it arrives: ACC_READ after its read (div_issue is 1 after it).
        m.d.comb += [s.div.load.eq(delay(m, 1, s.div_issue, ACC_READ - 1, "div_load")), s.div.step.eq(1)]
        self._commit_error(m, s)      # before the FSM: a start in IDLE clears the status after it
        # The kept overflow's index: overflow_idx while none is kept, so it holds the index of the cycle that set
        # ovf_seen (keep_overflow) and its clock enable is that flag, not the STORE states' decision.
        with m.If(~s.ovf_seen):
            m.d.sync += s.ovf_idx.eq(self.overflow_idx)
        # The next instruction's index, fetch address and end-of-program test, formed a cycle ahead, so the
        # cycle that fetches it only starts the DMA (at fa1) or fails (past1); pc and fa move to them the cycle
        # after (step).
        m.d.sync += [s.params_load.eq(0), s.div_issue.eq(0), s.step.eq(0),  # one-cycle pulses (the states set them)
                     s.pc1.eq(s.pc + 1), s.fa1.eq(s.fa + INSTR_BYTES), s.past1.eq(s.pc + 1 >= self.prog_len),
                     s.pc.eq(Mux(s.step, s.pc1, s.pc)), s.fa.eq(Mux(s.step, s.fa1, s.fa))]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.clear.eq(1)
                    m.d.sync += [s.pc.eq(0), s.error.eq(0), s.err_arg.eq(0), s.err_index.eq(0),
                                 self.done.eq(0), s.fa.eq(self.prog_addr), s.fa1.eq(self.prog_addr),
                                 s.past.eq(self.prog_len == 0)]
                    goto("FETCH")
            with m.State("ERR_WAIT"):
                with m.If(~s.unit_busy):
                    fail_now("pending")
                check_overflow()
            with m.State("FETCH"):
                # The first instruction's fetch (every later one is fetched in the last cycle of the one before:
                # next_instr), at fa1 = fa = prog_addr.
                with m.If(s.past):
                    fail("no_halt")
                with m.Else():
                    gather()
                    goto("FETCH_WAIT")
                check_overflow()
            with m.State("FETCH_WAIT"):
                with m.If(dma.line_valid):
                    m.d.comb += self.events.fetch_bytes.eq(INSTR_BYTES)
                    goto("FETCH_BUF")
                check_overflow()
            with m.State("FETCH_BUF"):
                goto("DECODE")
                check_overflow()
            with m.State("DECODE"):
                m.d.comb += [self.events.instructions.eq(1), chk.decode.eq(1)]
                m.d.sync += s.i.eq(0)          # LOAD / VEC / DIV count their lines from here
                with m.If(chk.bad_opcode):
                    fail("bad_opcode")
                with m.Else():
                    goto("CHECK")
                check_overflow()
            with m.State("CHECK"):
                with m.If(chk.fail):
                    fail("check")
                with m.Elif(s.blocked):
                    goto("HOLD")
                with m.Else():
                    execute()
                check_overflow()
            with m.State("HOLD"):
                # Interlock: wait until the array unit no longer conflicts.
                with m.If(~s.blocked):
                    execute()
                check_overflow()
            with m.State("LOAD"):
                load_line()
                with m.If(s.no_lines):
                    next_instr()
                with m.Elif(s.no_elems):
                    # Zero-fill lines: one per cycle.
                    m.d.comb += s.write_line.eq(1)
                    m.d.sync += [s.i.eq(1), s.z_end.eq(f["lines"] == 1)]
                    goto("LOAD_ZERO")
                with m.Else():
                    gather()
                    m.d.sync += s.i_last.eq(s.one_line)
                    goto("LOAD_WAIT")
                check_overflow()
            with m.State("LOAD_ZERO"):
                load_line()
                with m.If(s.z_end):
                    next_instr()
                with m.Else():
                    m.d.comb += s.write_line.eq(1)
                    m.d.sync += [s.i.eq(s.i + 1), s.z_end.eq(s.i + 1 == f["lines"])]
                check_overflow()
            with m.State("LOAD_WAIT"):
                # Each line is written the cycle its last word arrives.
                load_line()
                with m.If(dma.line_valid):
                    m.d.comb += s.write_line.eq(1)
                    with m.If(s.bad_value):
                        fail("value")
                    with m.Else():
                        count_line()
                        with m.If(s.i_last):
                            next_instr()
                check_overflow()
            with m.State("VEC"):
                with m.If(s.no_lines | s.no_elems):
                    next_instr()
                with m.Else():
                    gather()
                    m.d.sync += s.i_last.eq(s.one_line)
                    goto("VEC_WAIT")
            with m.State("VEC_WAIT"):
                # Each line goes into the accumulator's update pipeline VEC_LINE after its last word arrives.
                with m.If(dma.line_valid):
                    m.d.comb += s.vec_line.eq(1)
                    count_line()
                    with m.If(s.i_last):
                        m.d.sync += s.k.eq(0)
                        goto("VEC_DRAIN")
                vec_overflow()
            with m.State("VEC_DRAIN"):
                # VEC_LINE + VEC_INPUT + ACC_UPDATE cycles after a VEC's last line arrived (k from 0), VEC_INPUT
                # + ACC_UPDATE after a DIV's last line was presented (k from VEC_LINE): then the last line is
                # written; the array unit is idle, so an overflow is this VEC's or DIV's.
                m.d.sync += s.k.eq(s.k + 1)
                with m.If(s.k == VEC_LINE + VEC_INPUT + ACC_UPDATE - 1):
                    next_instr()
                vec_overflow()
            with m.State("DIV"):
                with m.If(s.no_lines | s.no_elems):
                    next_instr()
                with m.Else():
                    m.d.comb += self.acc_rd.en.eq(1)            # line 0
                    m.d.sync += [s.k.eq(0), s.div_issue.eq(1), s.i_last.eq(s.one_line)]
                    goto("DIV_STEP")
            with m.State("DIV_STEP"):
                # The line arrives (ACC_READ) and is loaded (k == ACC_READ - 1); then one quotient bit per cycle,
                # acc_bits of them, and DIV_WRITE reads the result. The divider steps in every other cycle too
                # (its results are read only in DIV_WRITE, and the next line is loaded), so a registered load is
                # its only control: no cycle runs from the state into its clock enables.
                m.d.sync += [s.k.eq(s.k + 1), s.rd_addr.eq(s.div_next)]
                with m.If(s.k == self.config.acc_bits + ACC_READ - 1):
                    goto("DIV_WRITE")
                vec_overflow()
            with m.State("DIV_WRITE"):
                m.d.comb += s.div_write.eq(1)
                count_line()
                with m.If(s.i_last):
                    m.d.sync += s.k.eq(VEC_LINE)
                    goto("VEC_DRAIN")
                with m.Else():
                    m.d.comb += self.acc_rd.en.eq(1)            # the next line: acc + i + 1
                    m.d.sync += [s.k.eq(0), s.div_issue.eq(1)]
                    goto("DIV_STEP")
            with m.State("LOADQ"):
                gather()
                goto("LOADQ_WAIT")
                check_overflow()
            with m.State("LOADQ_WAIT"):
                with m.If(dma.line_valid):
                    goto("LOADQ_CHECK")
                check_overflow()
            assert LOADQ_CHECK == 1 and STORE_START == 1, "one state each below"
            with m.State("LOADQ_CHECK"):
                # The block, in the DMA's registered buffer since this cycle, is checked here (not the cycle it
                # arrives) and written into the lanes the next cycle, from the same buffer.
                m.d.sync += s.bad_lane_r.eq(s.bad_lane)
                with m.If(s.bad_shift):
                    fail("shift")
                with m.Else():
                    m.d.sync += s.params_load.eq(1)     # its bytes count with it (_datapath)
                    next_instr()
                check_overflow()
            with m.State("STORE_START"):
                # A state of its own, so the check and the interlock decide a state, not the pipeline's start,
                # which is the state's registered flag (_STATE_FLAGS), not its decode.
                keep_overflow()
                goto("STORE")
            with m.State("STORE"):
                with m.If(self.store.out_valid):
                    m.d.comb += [dma.start.eq(1), dma.write.eq(1)]
                # MATMULs of other accumulator lines run beside a STORE: an overflow of one is kept and
                # reported once the STORE is done (its lines are written; the error names the MATMUL).
                keep_overflow()
                # The last cycle starts the next fetch's gather: leave only when the DMA can take it.
                with m.If(self.store.done & dma.ready):
                    with m.If(s.ovf_seen):
                        fail_now("kept_overflow")
                    with m.Elif(self.overflow):
                        fail_now("overflow")
                    with m.Else():
                        next_instr()
        return fsm

    def _commit_error(self, m, s):
        """The error status, written the cycle after the run stopped (``fire``, a pulse) from the source
        ``src`` names. Every source is a register that holds still in IDLE (``ovf_now`` is the overflowing
        MATMUL's index, registered when the overflow was seen), so no cycle runs from the states' decisions
        into the 100 bits of status. ``busy`` covers that cycle (:meth:`_unit_events`)."""
        assert ERROR_COMMIT == 1, "one register (fire) below"
        m.d.sync += [s.fire.eq(0), s.ovf_now.eq(self.overflow_idx)]
        pending = self._pending_error(m, s)
        values = {"overflow": (ERR_OVERFLOW, 0, s.ovf_now), "vec_overflow": (ERR_OVERFLOW, 0, s.pc),
                  "kept_overflow": (ERR_OVERFLOW, 0, s.ovf_idx), "pending": pending}
        assert set(values) == set(_SOURCES)
        with m.If(s.fire):
            with m.Switch(s.src):
                for source, (code, arg, index) in values.items():
                    with m.Case(_SOURCES.index(source)):
                        m.d.sync += [s.error.eq(code), s.err_arg.eq(arg), s.err_index.eq(index)]

    def _pending_error(self, m, s):
        """ERR_WAIT's (code, arg, index) of the error ``pend`` names: from registers that hold still while
        it waits (the checker's error registered in CHECK, the instruction register, pc, the LOADQ's bad lane)."""
        code = Signal(ERROR_CODE_BITS, name="pend_code")
        arg, index = Signal(ERROR_ARG_BITS, name="pend_arg"), Signal(PC_BITS, name="pend_index")
        chk = s.chk
        m.d.comb += index.eq(s.pc)
        with m.Switch(s.pend):
            with m.Case(_PENDING.index("no_halt")):
                m.d.comb += [code.eq(ERR_NO_HALT), index.eq(s.pc - 1)]
            with m.Case(_PENDING.index("bad_opcode")):
                m.d.comb += [code.eq(ERR_BAD_OPCODE), arg.eq(chk.op)]
            with m.Case(_PENDING.index("check")):
                m.d.comb += [code.eq(s.chk_error), arg.eq(s.chk_arg)]
            with m.Case(_PENDING.index("value")):
                m.d.comb += code.eq(ERR_VALUE)
            with m.Case(_PENDING.index("shift")):
                m.d.comb += [code.eq(ERR_SHIFT), arg.eq(s.bad_lane_r)]
        return code, arg, index

    def _dma_command(self, m, s, fsm):
        """The DMA command's fields (the states give ``start`` and ``write``): a fetch's (of the next
        instruction, at ``fa1``: FETCH's and the last cycle of every instruction), or those of the instruction
        in the instruction register (a LOAD's, VEC's or LOADQ's gather; a STORE's scatter, on the scatter's own
        fields, of the store pipeline's line address). The instruction's are formed by its opcode into
        registers (they hold from the cycle after DECODE on; the DMA takes them in the instruction's own
        states, after CHECK), and the choice between the two is ``data_gather``, a register set by the
        transition into a state that gathers the instruction's data (``_fsm``'s ``goto``), so only that select
        lies between registers and the DMA's. (The DMA's gather registers follow these fields while it is
        idle: they show a fetch in every other state.)"""
        L, Q = Opcode.LOAD, Opcode.LOADQ
        assert all(FIELDS[op][n] == FIELDS[L][n] for op in (Opcode.VEC, Opcode.STORE)
                   for n in ("dram", "elems", "lines", "stride")) and FIELDS[Q]["dram"] == FIELDS[L]["dram"]
        dma, f = self.dma, s.f
        op = s.ins_x[:OPCODE_BITS]
        g_n, g_off = Signal.like(dma.n, name="g_n"), Signal.like(dma.off, name="g_off")
        g_lines, g_stride = Signal.like(dma.lines, name="g_lines"), Signal.like(dma.stride, name="g_stride")
        m.d.sync += [g_n.eq(Mux(op == Q, self.config.loadq_bytes, f["elems"])),
                     g_off.eq(Mux(op == L, f["offset"], 0)),
                     g_lines.eq(Mux(op == Q, 1, f["lines"])), g_stride.eq(Mux(op == Q, 0, f["stride"]))]
        fetch = ~s.data_gather
        # The STORE pipeline hands out a line while the state is STORE and the DMA can take it: from the registered
        # state flag, not the state's decode (the hand-out enables the pipeline's queue and output registers).
        # (In STORE no gather is in progress: its fetch's ended before DECODE, a LOAD's, VEC's or LOADQ's
        # before its instruction did; so the scatter engine's own readiness is the DMA's.)
        m.d.comb += [self.store.ready.eq(s.in_store & dma.w_ready), self.store.start.eq(s.store_start)]
        m.d.comb += [
            dma.addr.eq(Mux(fetch, s.fa1, f["dram"])),
            dma.n.eq(Mux(fetch, INSTR_BYTES, g_n)), dma.off.eq(Mux(fetch, 0, g_off)),
            dma.w_addr.eq(self.store.out_addr), dma.w_n.eq(g_n), dma.w_off.eq(g_off),
            dma.lines.eq(Mux(fetch, 1, g_lines)), dma.stride.eq(Mux(fetch, 0, g_stride)),
        ]

    def _unit_events(self, m, s, fsm):
        """``busy``, and the per-unit busy / stall events: the state groups of :data:`UNIT_STATES`."""
        ev = self.events
        running = Signal()
        # busy also covers the cycle the error status is written in (_commit_error); the cycle counter does not.
        m.d.comb += [running.eq(~fsm.ongoing("IDLE")), self.busy.eq(running | s.fire), ev.cycles.eq(running)]
        for u, states in UNIT_STATES.items():
            inside = Signal(name=f"in_{u}")
            m.d.comb += inside.eq(Cat(*(fsm.ongoing(st) for st in states)).any())
            m.d.comb += [getattr(ev, f"{u}_busy").eq(inside), getattr(ev, f"{u}_stall").eq(inside & self.dma.stall)]
        m.d.comb += [ev.matmul_busy.eq(running & s.unit_busy),
                     ev.idle_mem_stall.eq(running & ~s.unit_busy & self.dma.stall)]
