"""amaranth.sim test of the instruction checker against the NumPy executor's checks (the behavioural model).

Random instructions, their fields drawn around every limit: the checker's
error code and argument, turned into text by ``error_reason``, must be the
executor's ``ProgramError`` reason for the same one-instruction program, and
no error where the executor runs it.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.isa import FIELDS, Instr, Opcode, encode
from systolic.arch.machine import MachineSpec
from systolic.arch.sysmap import ERR_BAD_OPCODE, error_reason
from systolic.compiler.executor import Executor, ProgramError
from systolic.hw.checker import ARG_REGISTER, InstrChecker

CFG = AcceleratorConfig(rows=2, cols=3, spad_a_bytes=20, spad_w_bytes=18, acc_entries=6, bus_bytes=4)
DRAM = 200


def _near(rng, limit, width):
    """A value near *limit* (either side), or anywhere in the field."""
    if rng.random() < 0.15:
        return int(rng.integers(0, 1 << width))
    return int(min(max(limit + int(rng.integers(-3, 4)), 0), (1 << width) - 1))


def _random_instr(rng):
    op = Opcode(int(rng.choice([Opcode.LOAD, Opcode.LOAD, Opcode.LOADQ, Opcode.MATMUL, Opcode.STORE,
                                Opcode.STORE, Opcode.FENCE, Opcode.VEC, Opcode.VEC, Opcode.DIV])))
    lay = FIELDS[op]
    args = {}
    if op == Opcode.LOAD:
        args["target"] = int(rng.integers(0, 2))
        width, lines = (CFG.cols, CFG.w_lines) if args["target"] else (CFG.rows, CFG.a_lines)
        args["lines"] = _near(rng, 2, 16)
        args["spad"] = _near(rng, lines - args["lines"], 16)
        args["elems"] = _near(rng, width // 2, 12)
        args["offset"] = _near(rng, width - args["elems"], 12)
        args["stride"] = _near(rng, 5, 32)
        args["dram"] = _near(rng, DRAM - args["elems"] - 5 * max(args["lines"] - 1, 0), 32)
        args["zero"], args["unsigned"] = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    elif op == Opcode.LOADQ:
        args["dram"] = _near(rng, DRAM - CFG.loadq_bytes, 32)
    elif op == Opcode.MATMUL:
        args["m"] = _near(rng, 2, 16)
        args["a"] = _near(rng, CFG.a_lines - args["m"], 16)
        args["w"] = _near(rng, CFG.w_lines - CFG.rows, 16)
        args["acc"] = _near(rng, CFG.acc_lines - args["m"], 16)
    elif op == Opcode.STORE:
        args["lines"] = _near(rng, 2, 16)
        args["acc"] = _near(rng, CFG.acc_lines - args["lines"], 16)
        args["elems"] = _near(rng, CFG.cols, 12)
        args["bits"] = int(rng.choice([0, 2, 5, 8, 9, 63]))   # (1-bit signed: the executor's QType refuses it)
        args["stride"] = _near(rng, 4, 32)
        args["dram"] = _near(rng, DRAM - args["elems"] - 4 * max(args["lines"] - 1, 0), 32)
        args["relu"], args["unsigned"] = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    elif op == Opcode.VEC:
        args["op"] = int(rng.choice([0, 1, 2, 2, 3]))       # 3 is no VecOp
        args["lines"] = _near(rng, 2, 16)
        args["acc"] = _near(rng, CFG.acc_lines - args["lines"], 16)
        args["elems"] = _near(rng, CFG.cols, 12)
        args["stride"] = _near(rng, 4, 32)
        args["dram"] = _near(rng, DRAM - args["elems"] - 4 * max(args["lines"] - 1, 0), 32)
        args["shift"], args["unsigned"] = int(rng.integers(0, 32)), int(rng.integers(0, 2))
    elif op == Opcode.DIV:
        args["lines"] = _near(rng, 2, 16)
        args["acc"] = _near(rng, CFG.acc_lines - args["lines"], 16)
        args["elems"] = _near(rng, CFG.cols, 12)
        args["divisor"] = int(rng.integers(0, 1 << 16))
    assert set(args) <= set(lay)
    return Instr(op, args)


def _checker_results(words):
    dut = InstrChecker(config=CFG)
    out = []
    rng = np.random.default_rng(5)

    async def bench(ctx):
        ctx.set(dut.dram_bytes, DRAM)
        for w in words:
            ctx.set(dut.ins_next, w)          # presented while the instruction register loads (FETCH_BUF)
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            ctx.set(dut.ins_next, int(rng.integers(0, 2**63)))      # anything, not loaded
            ctx.set(dut.ins, w)               # then held in the instruction register and decoded
            ctx.set(dut.decode, 1)
            await ctx.tick()
            ctx.set(dut.decode, 0)
            # `fail` (what the controller's CHECK reads) is error != 0, formed apart from it
            assert ctx.get(dut.fail) == int(ctx.get(dut.error) != 0)
            got = (ctx.get(dut.bad_opcode), ctx.get(dut.op), ctx.get(dut.error))
            await ctx.tick().repeat(ARG_REGISTER)      # the argument follows, the rest holds
            assert (ctx.get(dut.bad_opcode), ctx.get(dut.op), ctx.get(dut.error)) == got
            if ctx.get(dut.fail):       # what the controller registers after a failed CHECK
                assert (ctx.get(dut.fail_error), ctx.get(dut.fail_arg)) == (ctx.get(dut.error), ctx.get(dut.arg))
            out.append((*got, ctx.get(dut.arg)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def test_checks_equal_the_executors():
    rng = np.random.default_rng(11)
    spec = MachineSpec.from_config(CFG, dram_bytes=DRAM)
    instrs = [_random_instr(rng) for _ in range(400)]
    results = _checker_results([encode(i) for i in instrs])
    errors = set()
    for ins, (bad, op, code, arg) in zip(instrs, results):
        assert not bad and op == ins.op
        try:
            Executor(spec, np.zeros(DRAM, np.uint8)).run([ins, Instr(Opcode.HALT)])
            want = None
        except ProgramError as exc:
            want = exc.reason
        got = error_reason(code, arg, spec, DRAM, ins) if code else None
        assert got == want, (str(ins), code, arg)
        errors.add(code)
    assert errors == {0, 3, 4, 5, 6, 7, 8, 9, 13, 14}      # every code the checker can give, and no error


@pytest.mark.parametrize("op", [8, 9, 15])
def test_bad_opcode(op):
    (bad, got_op, _, _), = _checker_results([op | 0xABC << 8])
    assert bad and got_op == op and op > max(Opcode) and ERR_BAD_OPCODE == 1
