"""Compiler + NumPy executor against the golden model (exact equality), ISA encoding, bad programs."""

import dataclasses

import numpy as np
import pytest

from systolic.compiler import (CompileError, Executor, Instr, IsaError, MachineSpec, Opcode, ProgramError,
                               Target, compile_network, decode, decode_program, encode, encode_program,
                               run_compiled)
from systolic.golden import AccumulatorOverflowError, Dense, QType, QuantizedNetwork
from systolic.golden.random import NETWORK_KINDS, random_input, random_network

SPECS = [
    MachineSpec(rows=1, cols=1, a_lines=64, w_lines=8, acc_lines=16),
    MachineSpec(rows=2, cols=3, a_lines=32, w_lines=6, acc_lines=5),     # tiny: many M tiles, W reloads
    MachineSpec(rows=4, cols=4, a_lines=256, w_lines=512, acc_lines=64),  # all weights preloaded
    MachineSpec(rows=8, cols=8, a_lines=512, w_lines=64, acc_lines=128),
    MachineSpec(rows=16, cols=16, a_lines=512, w_lines=256, acc_lines=256),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.rows}x{s.cols}")
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_compiled_network_equals_golden(spec, kind):
    compared = 0
    for seed in range(4):
        net = random_network(seed, kind, 8 if seed % 2 else 4, per_channel=seed >= 2)
        cn = compile_network(net, spec, batch=3)
        x = random_input(net, 3, seed)
        outs, counters = run_compiled(cn, x)
        gold = net.run(x)
        assert list(outs) == list(gold)
        for name in gold:
            assert np.array_equal(outs[name], gold[name]), name
            compared += gold[name].size
        assert any(p == "accelerator" for p in cn.placement.values())
        # The executor's MAC count is the padded GEMM work of the accelerated layers.
        assert sum(c.macs for c in counters.values()) >= sum(
            s.macs for s in cn.steps if hasattr(s, "program"))
    assert compared > 0


def test_multipoint_layer_uses_accumulate_with_shift():
    rng = np.random.default_rng(0)
    w, e = rng.integers(-8, 8, (20, 6)), rng.integers(-8, 8, (1, 20, 6))
    layer = Dense(name="mp", inputs=("input",), weight=w, w_type=QType(4, True, 3),
                  out_type=QType(8, True, 0), extra_weights=e, extra_shifts=[4], bias=rng.integers(-50, 50, 6))
    net = QuantizedNetwork(QType(8, False, 4), (20,), [layer])
    cn = compile_network(net, SPECS[3], batch=4)
    mm = [i for i in cn.steps[0].program if i.op == Opcode.MATMUL]
    assert [(i.accumulate, i.shift) for i in mm] == [(0, 0), (1, 0), (1, 0), (1, 4), (1, 4), (1, 4)]
    x = random_input(net, 4, 1)
    assert np.array_equal(run_compiled(cn, x)[0]["mp"], net(x))


def test_placement_says_where_each_layer_ran():
    net = random_network(3, "resnet", 8)
    cn = compile_network(net, SPECS[3])
    p = cn.placement
    assert p["conv1"] == p["add1"] == "accelerator" and cn.host_layers == []
    assert p["flat"].startswith("host: flatten")
    # host_layers: the layers the host runs, with the placement's reason; the flatten (a no-op) is not one.
    # An add whose operand needs an alignment shift beyond VEC's 31 stays on the host.
    a, c = net.layer("add1").inputs
    far = dataclasses.replace(net.layer(c), out_type=net.layer(c).out_type.with_frac(net.qtype(a).frac_bits + 40))
    net = dataclasses.replace(net, layers=tuple(far if layer.name == c else layer for layer in net.layers))
    cn = compile_network(net, SPECS[3])
    p = cn.placement
    host = [n for n, v in p.items() if v != "accelerator" and n != "flat"]
    assert host == ["add1"] and [h["layer"] for h in cn.host_layers] == host
    assert p["add1"] == "host: an operand's alignment shift 40 is above the VEC shift's 31"
    assert all(p[h["layer"]] == "host: " + h["reason"] for h in cn.host_layers)
    mlp = compile_network(random_network(3, "mlp", 8), SPECS[3])
    assert all(v == "accelerator" for v in mlp.placement.values()) and mlp.host_layers == []


def test_accumulator_proof_refuses_with_layer_and_bound():
    w = np.full((64, 4), 127)
    layer = Dense(name="wide", inputs=("input",), weight=w, w_type=QType(8, True, 0), out_type=QType(8, True, 0))
    net = QuantizedNetwork(QType(8, True, 0), (64,), [layer])
    spec = MachineSpec(rows=4, cols=4, a_lines=64, w_lines=64, acc_lines=16, acc_bits=20)
    with pytest.raises(AccumulatorOverflowError, match=r"layer 'wide' \(pass 0\): worst case \[-1040384, 1032256\] "
                                                       r"does not fit a 20-bit accumulator"):
        compile_network(net, spec)


def test_compile_errors():
    net = random_network(0, "mlp", 8)
    with pytest.raises(CompileError, match="uses half_even rounding but the accelerator implements half_up"):
        compile_network(net, MachineSpec(rows=4, cols=4, a_lines=64, w_lines=64, acc_lines=16, rounding="half_up"))
    with pytest.raises(CompileError, match="DRAM of 64 bytes is full"):
        compile_network(net, MachineSpec(rows=4, cols=4, a_lines=64, w_lines=64, acc_lines=16, dram_bytes=64))


@pytest.mark.parametrize("op,args", [
    (Opcode.LOAD, dict(target=1, zero=1, unsigned=1, lines=65535, spad=7, elems=4095, offset=3, dram=2 ** 32 - 1,
                       stride=12345)),
    (Opcode.MATMUL, dict(accumulate=1, shift=31, m=9, a=1, w=2, acc=3)),
    (Opcode.STORE, dict(relu=1, unsigned=0, lines=2, acc=4, elems=8, bits=8, dram=100, stride=8)),
    (Opcode.LOADQ, dict(dram=77)), (Opcode.FENCE, {}), (Opcode.HALT, {}),
])
def test_isa_round_trip(op, args):
    i = Instr(op, args)
    assert decode(encode(i)) == i
    assert decode_program(encode_program([i, i])) == [i, i]


def test_isa_errors():
    with pytest.raises(IsaError, match=r"MATMUL.shift must be between 0 and 31, not 32"):
        Instr(Opcode.MATMUL, dict(shift=32))
    with pytest.raises(IsaError, match=r"LOAD has no field\(s\) \['colour'\]"):
        Instr(Opcode.LOAD, dict(colour=1))
    with pytest.raises(IsaError, match="bad opcode 9"):
        decode(9)
    with pytest.raises(IsaError, match="whole number of 16-byte instructions, not 15 bytes"):
        decode_program(b"\0" * 15)


def _exec(prog, spec=SPECS[2], dram_size=256):
    return Executor(spec, np.zeros(dram_size, dtype=np.uint8)).run(prog)


@pytest.mark.parametrize("prog,msg", [
    ([Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=4, dram=254, stride=4))],
     "instruction 0 (LOAD): DRAM address 257 is past the end of memory (256 bytes)"),
    ([Instr(Opcode.LOAD, dict(target=Target.A, lines=2, spad=255, elems=4))],
     "instruction 0 (LOAD): scratchpad A line 256 is past the end (256 lines)"),
    ([Instr(Opcode.LOAD, dict(target=Target.W, lines=1, elems=3, offset=2))],
     "offset 2 + elems 3 exceeds the 4-element line"),
    ([Instr(Opcode.FENCE), Instr(Opcode.MATMUL, dict(m=1, acc=64))],
     "instruction 1 (MATMUL): accumulator line 64 is past the end (64 lines)"),
    ([Instr(Opcode.STORE, dict(lines=1, elems=4, bits=9))], "output bits must be between 1 and 8, not 9"),
    ([Instr(Opcode.FENCE)], "program ends without HALT"),
])
def test_bad_programs_raise_clear_errors(prog, msg):
    with pytest.raises(ProgramError) as info:
        _exec(prog + ([] if msg == "program ends without HALT" else [Instr(Opcode.HALT)]))
    assert msg in str(info.value)


def test_executor_reports_accumulator_overflow():
    spec = MachineSpec(rows=1, cols=1, a_lines=4, w_lines=4, acc_lines=4, acc_bits=16)
    dram = np.array([127, 127], dtype=np.uint8)
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=1, dram=0)),
            Instr(Opcode.LOAD, dict(target=Target.W, lines=1, elems=1, dram=1)),
            Instr(Opcode.MATMUL, dict(m=1, shift=1)),
            Instr(Opcode.MATMUL, dict(m=1, shift=2, accumulate=1)),
            Instr(Opcode.HALT)]
    with pytest.raises(ProgramError, match=r"instruction 3 \(MATMUL\): accumulator overflow"):
        Executor(spec, dram).run(prog)
