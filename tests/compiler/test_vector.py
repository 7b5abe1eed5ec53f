"""The vector unit: VEC and DIV semantics in the executor, and pooling / add layers compiled onto them.

The executor is checked against plain-Python loops written from docs/isa.md; the compiled layers against the
golden model (exact equality), over windows, strides, padding, odd and power-of-two areas, output shifts of
both signs, alignment shifts, ReLU and upper clamps, signed and unsigned tensors, channels over several lane
chunks and pixels over several accumulator tiles.
"""

import numpy as np
import pytest

from systolic.arch.config import PRESETS, AcceleratorConfig
from systolic.arch.isa import Instr, Opcode, VecOp
from systolic.compiler import Executor, MachineSpec, ProgramError, compile_network, run_compiled
from systolic.golden.layers import Add, AvgPool2D, Conv2D, MaxPool2D
from systolic.golden.network import QuantizedNetwork
from systolic.golden.primitives import round_div, round_shift
from systolic.golden.qtypes import ROUNDING_MODES, QType
from systolic.golden.random import random_input
from systolic.models import SHIPPED, load_shipped

SPEC = MachineSpec.from_config(AcceleratorConfig(rows=4, cols=4, acc_entries=16), dram_bytes=1 << 14)


def _ref_vec(acc, dram, a, cols):
    """VEC from docs/isa.md, element by element."""
    acc = acc.copy()
    for i in range(a["lines"]):
        for c in range(a["elems"]):
            b = int(dram[a["dram"] + i * a["stride"] + c])
            v = (b if a["unsigned"] or b < 128 else b - 256) << a["shift"]
            old = int(acc[a["acc"] + i, c])
            acc[a["acc"] + i, c] = {VecOp.SET: v, VecOp.ADD: old + v, VecOp.MAX: max(old, v)}[a["op"]]
    return acc


def test_vec_matches_the_definition_element_by_element():
    rng = np.random.default_rng(3)
    for _ in range(200):
        dram = rng.integers(0, 256, size=4096, dtype=np.uint8)
        ex = Executor(SPEC, dram)
        ex.acc[:] = rng.integers(-1000, 1000, size=ex.acc.shape)
        before = ex.acc.copy()
        lines = int(rng.integers(0, 6))
        a = dict(op=VecOp(int(rng.integers(0, 3))), unsigned=int(rng.integers(0, 2)), lines=lines,
                 acc=int(rng.integers(0, 16 - lines + 1)), elems=int(rng.integers(0, 5)),
                 shift=int(rng.integers(0, 8)), dram=int(rng.integers(0, 2000)), stride=int(rng.integers(0, 9)))
        c = ex.run([Instr(Opcode.VEC, a), Instr(Opcode.HALT)])
        assert np.array_equal(ex.acc, _ref_vec(before, dram, a, 4)), a
        n = lines * a["elems"]
        assert (c.vec_ops, c.dram_bytes_read, c.acc_writes) == ((n, n, lines) if n else (0, 0, 0))
        reads = 0 if not n else (lines if a["op"] != VecOp.SET or a["elems"] < 4 else 0)
        assert c.acc_reads == reads


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_div_then_a_rounding_shift_is_the_rounded_division(rounding):
    """DIV leaves 4 floor(a/d) + 2 [2r >= d] + [r != 0]; a STORE shift of j + 2 then rounds a / (d 2**j) exactly
    as the golden round_div does, for every odd d, in every rounding mode."""
    spec = MachineSpec.from_config(AcceleratorConfig(rows=4, cols=4, acc_entries=64, rounding=rounding),
                                   dram_bytes=4096)
    rng = np.random.default_rng(5)
    for d in (1, 3, 5, 9, 25, 49, 255, 65535):
        for j in range(4):
            dram = np.zeros(4096, dtype=np.uint8)
            dram[:16] = np.zeros(4, "<i4").view(np.uint8)
            dram[16:20] = j + 2
            ex = Executor(spec, dram)
            a = rng.integers(-50000, 50000, size=(64, 4))
            a[0] = [0, d, -d, d * 7 + d // 2]              # exact quotients and a tie-ish remainder
            ex.acc[:] = a
            ex.run([Instr(Opcode.DIV, dict(lines=64, elems=4, divisor=d)), Instr(Opcode.LOADQ, dict(dram=0)),
                    Instr(Opcode.STORE, dict(lines=64, elems=4, bits=8, dram=100, stride=4)), Instr(Opcode.HALT)])
            q, r = a // d, a % d
            assert np.array_equal(ex.acc, 4 * q + 2 * (2 * r >= d) + (r != 0))
            want = np.clip(round_div(a, d << j, rounding), -128, 127)
            got = dram[100:100 + 256].view(np.int8).reshape(64, 4)
            assert np.array_equal(got, want), (d, j)
            assert np.array_equal(round_shift(ex.acc, j + 2, rounding), round_div(a, d << j, rounding))


def test_vector_errors_name_the_instruction():
    dram = np.full(64, 127, dtype=np.uint8)
    cases = [
        (Instr(Opcode.VEC, dict(op=3, lines=1, elems=1)), "bad vector op 3"),
        (Instr(Opcode.VEC, dict(lines=2, acc=15, elems=1)), "accumulator line 16 is past the end (16 lines)"),
        (Instr(Opcode.VEC, dict(lines=1, elems=5)), "elems 5 exceeds the 4 requantizer lanes"),
        (Instr(Opcode.VEC, dict(lines=2, elems=4, dram=60, stride=1)), "DRAM address 64 is past the end"),
        (Instr(Opcode.VEC, dict(op=VecOp.MAX, lines=1, elems=1, shift=31)), "accumulator overflow"),
        (Instr(Opcode.DIV, dict(lines=1, elems=1, divisor=4)), "divisor 4 is not odd"),
        (Instr(Opcode.DIV, dict(lines=17, elems=1, divisor=3)), "accumulator line 16 is past the end"),
    ]
    for ins, msg in cases:
        with pytest.raises(ProgramError) as info:
            Executor(SPEC, dram.copy()).run([Instr(Opcode.FENCE), ins, Instr(Opcode.HALT)])
        assert str(info.value).startswith(f"instruction 1 ({ins.op.name}): {msg}")


# ----------------------------------------------------------------------------------- compiled layers
def _net(layers, in_type, shape, rounding="half_even"):
    return QuantizedNetwork(in_type, shape, layers, rounding)


def _check(net, spec, batch=2, seed=0):
    cn = compile_network(net, spec, batch=batch)
    assert cn.host_layers == [], cn.host_layers
    x = random_input(net, batch, seed)
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name
    return cn


POOLS = [  # (pool, stride, padding)
    ((2, 2), None, 0), ((3, 3), (2, 2), 1), ((3, 3), (1, 1), (1, 1, 1, 1)), ((2, 3), (1, 2), (1, 0, 0, 2)),
    ((5, 5), (3, 3), 2), ((7, 7), None, 0), ((1, 1), (2, 2), 0), ((4, 4), (1, 1), (0, 3, 3, 0)),
]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("pool,stride,padding", POOLS)
def test_pooling_layers_equal_golden(pool, stride, padding, signed):
    """Max and average pools (odd, even and power-of-two areas; output shifts of both signs), 6 channels over
    two lane chunks of 4, 7x9 pixels per image over several 16-line accumulator tiles."""
    t = QType(8, signed, 4)
    for f_out in (2, 4, 7):
        layers = [MaxPool2D(name="mp", inputs=("input",), pool=pool, stride=stride, padding=padding),
                  AvgPool2D(name="ap", inputs=("input",), pool=pool, stride=stride, padding=padding,
                            out_type=QType(8, signed, f_out))]
        for layer in layers:
            _check(_net([layer], t, (7, 9, 6)), SPEC, seed=f_out)


def test_global_average_pool_and_a_big_window():
    for hw, signed in ((7, False), (14, True), (1, True)):
        t = QType(8, signed, 5)
        gap = AvgPool2D(name="gap", inputs=("input",), pool=hw, out_type=QType(8, signed, 6))
        _check(_net([gap], t, (hw, hw, 9)), SPEC, batch=3)


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_residual_add_equals_golden(rounding):
    spec = MachineSpec.from_config(AcceleratorConfig(rows=4, cols=4, acc_entries=16, rounding=rounding),
                                   dram_bytes=1 << 14)
    rng = np.random.default_rng(1)
    w = rng.integers(-60, 60, size=(1, 1, 5, 5))
    for fa, fb, fo, relu, out_max, sa in ((4, 6, 3, True, None, True), (6, 2, 7, False, None, False),
                                          (5, 5, 5, True, 40, True), (3, 7, 9, True, 100, False)):
        t = QType(8, sa, fa)
        conv = Conv2D(name="c", inputs=("input",), weight=w, w_type=QType(8, True, 6), out_type=QType(8, True, fb))
        out_t = QType(8, not relu, fo)
        add = Add(name="add", inputs=("input", "c"), out_type=out_t, relu=relu, out_max=out_max)
        _check(_net([conv, add], t, (5, 6, 5), rounding), spec, seed=fa)


def test_layers_the_vector_unit_cannot_run_stay_on_the_host_with_the_reason():
    t8 = QType(8, True, 0)
    narrow = MachineSpec.from_config(AcceleratorConfig(rows=4, cols=4, acc_bits=16), dram_bytes=4096)
    gap = AvgPool2D(name="gap", inputs=("input",), pool=16)      # sums in [-32768, 32512]: fit 16 bits
    assert compile_network(_net([gap], t8, (16, 16, 4)), narrow).host_layers == []
    big = AvgPool2D(name="gap", inputs=("input",), pool=(16, 17))    # 272 * 127 = 34544 does not
    (host,) = compile_network(_net([big], t8, (16, 17, 4)), narrow).host_layers
    assert host == {"layer": "gap", "reason": "its values [-34816, 34544] do not fit the 16-bit accumulator"}
    # An alignment shift beyond VEC's 5-bit field.
    far = _net([Conv2D(name="c", inputs=("input",), weight=np.ones((1, 1, 4, 4), np.int64),
                       w_type=QType(8, True, 0), out_type=QType(8, True, 40)),
                Add(name="add", inputs=("input", "c"), out_type=QType(8, True, 40))], t8, (2, 2, 4))
    cn = compile_network(far, MachineSpec.from_config(PRESETS["small"], dram_bytes=4096))
    assert cn.placement["c"] == "accelerator"
    assert cn.host_layers == [{"layer": "add", "reason": "an operand's alignment shift 40 is above the VEC "
                                                         "shift's 31"}]


@pytest.mark.parametrize("preset", ["default", "small"])
def test_every_shipped_model_runs_every_layer_on_the_accelerator(preset):
    spec = MachineSpec.from_config(PRESETS[preset], dram_bytes=1 << 20)
    for name in SHIPPED:
        net = load_shipped(name)
        _check(net, spec, batch=2, seed=1)
