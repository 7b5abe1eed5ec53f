"""Instruction decode and checks: every field of the 128-bit instruction, and the error it would cause."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.isa import FIELDS, INSTR_BYTES, Opcode, Target
from ..arch.isa import VecOp
from ..arch.latency import DECODE_CYCLES
from ..arch.sysmap import (ERR_ACC, ERR_BITS, ERR_DIVISOR, ERR_DRAM, ERR_ELEMS, ERR_LINE, ERR_SPAD_A, ERR_SPAD_W,
                           ERR_VEC_OP, ERROR_CODE_BITS)

from .params import require_system_config

__all__ = ["field", "InstrChecker", "ARG_REGISTER", "INSTR_BITS", "OPCODE_BITS"]

INSTR_BITS = 8 * INSTR_BYTES
#: The opcode is the instruction's low bits (docs/isa.md).
OPCODE_BITS = 4


def field(ins, op: Opcode, name: str):
    """Field *name* of instruction *ins* (a 128-bit value) read as opcode *op* (:data:`~systolic.arch.isa.FIELDS`)."""
    lsb, width = FIELDS[op][name]
    return ins[lsb:lsb + width]


#: ``arg`` lags ``error`` by this many cycles: its candidates are registered before the choice, so no cycle runs
#: from the range compares and the operand sums into the argument.
ARG_REGISTER = 1
#: Width of ``range_end``: a LOAD's spad (a STORE's acc: the same bits) plus its line count.
RANGE_END_BITS = max(FIELDS[Opcode.LOAD]["spad"][1], FIELDS[Opcode.LOAD]["lines"][1]) + 1


class InstrChecker(wiring.Component):
    """Decodes ``ins`` and finds the first error it would cause, in the order of docs/isa.md (the executor's).

    ``op`` is the opcode,
    ``bad_opcode`` says it is none of the ISA's. In the
    cycle after ``decode`` (the tests are formed and registered in the decode
    cycle; ``lines * stride`` of a 2-D transfer is multiplied in halves in the
    cycle before, the last one ``load`` is high in, and summed and compared in
    the decode cycle) ``error`` is 0 or the code of
    :data:`systolic.arch.sysmap.ERRORS` the instruction raises against the
    machine (scratchpad, accumulator and DRAM ranges, line widths, output
    bits, lanes) and ``fail`` is ``error != 0`` (from registers and one
    compare); the controller checks ``fail`` in its CHECK state. ``arg``, the
    offending value, follows :data:`ARG_REGISTER` cycles later (the controller
    reads it only once the run has stopped). They hold while ``ins`` and
    ``dram_bytes`` do. Value ranges
    of LOADed bytes and accumulator overflow are found while executing, not
    here.

    Parameters
    ----------
    config : AcceleratorConfig
        The machine's line counts and widths.

    Members
    -------
    ins : In(128)
    ins_next, load : In(INSTR_BITS), In(1)
        The word ``ins`` takes next, and whether it takes it (the controller's instruction register loads
        ``ins_next`` in every cycle ``load`` is high, the cycle before ``decode`` the last): the range tests'
        operand sums, the DRAM room and the span's partial products are registered from it then (it should
        come from registers), so in the decode cycle each such test is one compare of a register with a
        constant (a field plus a constant is compared as the field, against the limit minus the constant or,
        for LOADQ's DRAM end, ``dram_bytes - loadq_bytes``, registered: ``dram_bytes`` holds through a run).
    decode : In(1)
    dram_bytes : In(32)
        Size of the data window.
    range_end : Out(RANGE_END_BITS)
        ``spad + lines`` of a LOAD, ``acc + lines`` of a STORE / DIV / VEC (the same bits), registered from
        ``ins_next`` with the other sums: the end of the instruction's line range, for the controller's
        interlock.
    op : Out(4)
    bad_opcode : Out(1)
    error : Out(ERROR_CODE_BITS)
    arg : Out(64)
    fail : Out(1)
    fail_error, fail_arg : Out(ERROR_CODE_BITS), Out(64)
        ``error`` and ``arg`` in the cycles ``fail`` is high (and something else when it is low), formed
        without the DRAM range's compare, for a reader that only reads them after a failed check.
    """

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        super().__init__({
            "ins": In(INSTR_BITS), "ins_next": In(INSTR_BITS), "load": In(1), "decode": In(1), "dram_bytes": In(32),
            "op": Out(OPCODE_BITS), "bad_opcode": Out(1), "error": Out(ERROR_CODE_BITS), "arg": Out(64),
            "fail": Out(1), "range_end": Out(RANGE_END_BITS),
            "fail_error": Out(ERROR_CODE_BITS), "fail_arg": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        ins = self.ins
        L, S, M = Opcode.LOAD, Opcode.STORE, Opcode.MATMUL
        m.d.comb += [self.op.eq(ins[:OPCODE_BITS]), self.bad_opcode.eq(self.op > max(Opcode))]
        assert DECODE_CYCLES == 3, "load, decode, check: below"
        # LOAD, STORE and VEC share the positions of lines / dram / stride / elems (and STORE and VEC of acc).
        assert all(FIELDS[op][n] == FIELDS[L][n] for op in (S, Opcode.VEC)
                   for n in ("lines", "elems", "dram", "stride"))
        assert FIELDS[S]["acc"] == FIELDS[Opcode.VEC]["acc"]
        assert all(FIELDS[Opcode.DIV][n] == FIELDS[L][n] for n in ("lines", "elems"))
        lines, elems, dram, stride = (field(ins, L, n) for n in ("lines", "elems", "dram", "stride"))
        # Three cycles. The transfer of a 2-D LOAD, VEC or STORE fits the DRAM window iff the room the window
        # leaves after dram + elems is room >= 0 and its span (lines - 1) * stride <= room, that is
        # lines * stride <= room + stride (so the multiply needs no lines - 1 first). In the load cycle (the
        # last one ``load`` is high in) the room and the multiply's two partial products (lines times each
        # half of stride, one DSP each) are registered from ins_next, with the operand sums (_sums). In the
        # decode cycle every other test is formed from the instruction and its sums and the first failing one's
        # code registered, and the product summed from its halves and compared with the room, registered. In
        # the cycle after, `fail` is a function of three registers; the argument is chosen by the registered
        # code (the instruction register holds still), so no cycle runs from a compare into the argument.
        nl, ns = field(self.ins_next, L, "lines"), field(self.ins_next, L, "stride")
        half = len(ns) // 2
        p_lo = Signal(len(nl) + half, name="prod_lo")           # lines * stride[:half]
        p_hi = Signal(len(nl) + len(ns) - half, name="prod_hi")  # lines * stride[half:]
        prod = Signal(len(lines) + len(stride), name="prod")    # lines * stride
        room = Signal(signed(35))       # dram_bytes - (dram + elems)
        room_s = Signal(signed(36))     # room + stride
        first_s = Signal(signed(35))    # dram + elems - 1 - stride: the DRAM range's last byte is first_s + prod
        code_r, code = Signal(ERROR_CODE_BITS, name="code_r"), Signal(ERROR_CODE_BITS, name="code")
        dram_on, uses_dram = Signal(name="dram_on"), Signal(name="uses_dram")
        span_bad = Signal(name="span_bad")      # room < 0 or lines * stride > room + stride
        with m.If(self.load):
            # (Each as two sums in parallel, then one subtraction: two adders deep, not three.)
            used = field(self.ins_next, L, "dram") + field(self.ins_next, L, "elems")
            m.d.sync += [p_lo.eq(nl * ns[:half]), p_hi.eq(nl * ns[half:]), room.eq(self.dram_bytes - used),
                         room_s.eq((self.dram_bytes + ns) - used), first_s.eq(used - (ns + 1))]
        total = p_lo + (p_hi << half)
        with m.If(self.decode):
            # room_s is not negative when room is not: compared unsigned, as wide as prod.
            m.d.sync += [prod.eq(total), span_bad.eq(room[-1] | (total > room_s.as_unsigned()[:len(prod)])),
                         code_r.eq(code), dram_on.eq(uses_dram & (lines != 0) & (elems != 0))]
        dram_bad = Signal()
        m.d.comb += dram_bad.eq(dram_on & span_bad)
        # The argument, ARG_REGISTER cycles after the error: each candidate (the code's operand sum, the
        # DRAM range's last byte first_s + prod) is registered before the choice.
        assert ARG_REGISTER == 1, "one register below"
        arg, last = Signal(64, name="arg_r"), Signal(64, name="last_r")
        sums = self._sums(m)
        m.d.comb += self.range_end.eq(sums["range"])
        m.d.sync += [arg.eq(self._argument(m, code_r, sums)), last.eq(first_s + prod)]
        m.d.comb += [self.fail.eq((code_r != 0) | dram_bad),
                     # Given fail: the code registers' error, else the DRAM range's (no compare in the choice).
                     self.fail_error.eq(Mux(code_r != 0, code_r, ERR_DRAM)),
                     self.fail_arg.eq(Mux(code_r != 0, arg, last)),
                     self.error.eq(Mux(self.fail, self.fail_error, 0)),
                     self.arg.eq(Mux(self.fail, self.fail_arg, 0))]
        self._tests(m, code, uses_dram, sums)
        return m

    def _sums(self, m):
        """The range tests' operand sums of two fields, registered from ``ins_next`` while ``load`` is high, so
        they always hold the sums of the word in ``ins``: ``{name: register}``. (A field plus a constant is
        compared as the field: _tests.)"""
        nxt = self.ins_next
        L, S, M = Opcode.LOAD, Opcode.STORE, Opcode.MATMUL
        # LOAD's spad + lines and STORE / DIV / VEC's acc + lines are one sum (their fields share the bits).
        assert all(FIELDS[op]["acc"] == FIELDS[L]["spad"] for op in (S, Opcode.DIV, Opcode.VEC))
        forms = {"range": field(nxt, L, "spad") + field(nxt, L, "lines"),
                 "line": field(nxt, L, "offset") + field(nxt, L, "elems"),
                 "a": field(nxt, M, "a") + field(nxt, M, "m"),
                 "acc": field(nxt, M, "acc") + field(nxt, M, "m")}
        sums = {name: Signal(v.shape(), name=f"sum_{name}") for name, v in forms.items()}
        with m.If(self.load):
            m.d.sync += [sums[name].eq(v) for name, v in forms.items()]
        return sums

    def _tests(self, m, code, uses_dram, sums):
        """Drive *code* with the first failing test's error code (0: none) in docs/isa.md's order, and
        *uses_dram* when the DRAM range, the last test, is to be made the cycle after."""
        cfg, ins = self.config, self.ins
        L, S, M = Opcode.LOAD, Opcode.STORE, Opcode.MATMUL
        lines, elems = field(ins, L, "lines"), field(ins, L, "elems")
        # The tests of a field plus a constant compare the field itself (no sum): MATMUL's w + rows > w_lines,
        # LOADQ's dram + loadq_bytes > dram_bytes against dram_bytes - loadq_bytes, registered (dram_bytes, a
        # CSR, holds through a run; the first DECODE is cycles after the start).
        Q = Opcode.LOADQ
        w_room = cfg.w_lines - cfg.rows
        w_over = field(ins, M, "w") > w_room if w_room >= 0 else Const(1, 1)
        loadq_lim = Signal(signed(34), name="loadq_lim")
        m.d.sync += loadq_lim.eq(self.dram_bytes - cfg.loadq_bytes)
        is_w = Signal()
        m.d.comb += is_w.eq(field(ins, L, "target") == Target.W)

        def fail(c):
            m.d.comb += code.eq(c)

        def then_dram():
            m.d.comb += uses_dram.eq(1)

        with m.Switch(self.op):
            with m.Case(L):
                with m.If(sums["range"] > Mux(is_w, cfg.w_lines, cfg.a_lines)):
                    fail(Mux(is_w, ERR_SPAD_W, ERR_SPAD_A))
                with m.Elif(sums["line"] > Mux(is_w, cfg.cols, cfg.rows)):
                    fail(ERR_LINE)
                with m.Else():
                    then_dram()
            with m.Case(Opcode.LOADQ):
                with m.If(field(ins, Q, "dram") > loadq_lim):
                    fail(ERR_DRAM)
            with m.Case(M):
                with m.If(sums["a"] > cfg.a_lines):
                    fail(ERR_SPAD_A)
                with m.Elif(w_over):
                    fail(ERR_SPAD_W)
                with m.Elif(sums["acc"] > cfg.acc_lines):
                    fail(ERR_ACC)
            with m.Case(S):
                bits = field(ins, S, "bits")
                with m.If(sums["range"] > cfg.acc_lines):
                    fail(ERR_ACC)
                with m.Elif((bits < 1) | (bits > cfg.out_bits)):
                    fail(ERR_BITS)
                with m.Elif(elems > cfg.cols):
                    fail(ERR_ELEMS)
                with m.Else():
                    then_dram()
            with m.Case(Opcode.DIV):
                divisor = field(ins, Opcode.DIV, "divisor")
                with m.If(~divisor[0]):
                    fail(ERR_DIVISOR)
                with m.Elif(sums["range"] > cfg.acc_lines):
                    fail(ERR_ACC)
                with m.Elif(elems > cfg.cols):
                    fail(ERR_ELEMS)
            with m.Case(Opcode.VEC):
                op = field(ins, Opcode.VEC, "op")
                with m.If(op > max(VecOp)):
                    fail(ERR_VEC_OP)
                with m.Elif(sums["range"] > cfg.acc_lines):
                    fail(ERR_ACC)
                with m.Elif(elems > cfg.cols):
                    fail(ERR_ELEMS)
                with m.Else():
                    then_dram()

    def _argument(self, m, code, sums):
        """The offending value of error *code* of the instruction (docs/isa.md): the last line or byte past
        the range (its registered end, *sums*, minus 1: a range error means that end is above a limit, so at
        least 1), the divisor, the VEC op; 0 for the errors without one (and for the DRAM range of a 2-D
        transfer, whose argument the caller forms)."""
        ins = self.ins
        L, S, M = Opcode.LOAD, Opcode.STORE, Opcode.MATMUL
        arg = Signal(64, name="arg")
        with m.Switch(self.op):
            with m.Case(L):
                with m.If((code == ERR_SPAD_A) | (code == ERR_SPAD_W)):
                    m.d.comb += arg.eq(sums["range"] - 1)
            with m.Case(Opcode.LOADQ):
                m.d.comb += arg.eq(field(ins, Opcode.LOADQ, "dram") + (self.config.loadq_bytes - 1))
            with m.Case(M):
                with m.Switch(code):
                    for err, name in ((ERR_SPAD_A, "a"), (ERR_ACC, "acc")):
                        with m.Case(err):
                            m.d.comb += arg.eq(sums[name] - 1)
                    with m.Case(ERR_SPAD_W):
                        m.d.comb += arg.eq(field(ins, M, "w") + (self.config.rows - 1))
            with m.Case(S, Opcode.DIV, Opcode.VEC):
                with m.Switch(code):
                    with m.Case(ERR_ACC):
                        m.d.comb += arg.eq(sums["range"] - 1)
                    with m.Case(ERR_DIVISOR):
                        m.d.comb += arg.eq(field(ins, Opcode.DIV, "divisor"))
                    with m.Case(ERR_VEC_OP):
                        m.d.comb += arg.eq(field(ins, Opcode.VEC, "op"))
        return arg
