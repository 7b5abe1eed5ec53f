"""The fast paths of the compiler (systolic/compiler/lower.py) and of the cycle model (systolic/arch/timing.py)
against the straightforward code they replaced, kept in tests/compiler/reference_lower.py: the same programs
(every instruction, every field, in order), accounting and DRAM image, and the same cycle counters and
per-instruction timelines, on the random networks of every preset and several batch sizes, multipoint and
tile-sparse layers, K-split layers, layers whose weights do not fit scratchpad W, convolutions of awkward
geometry, the checked (``Instr``) fallback, and random programs for the timeline."""

import dataclasses

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.arch.isa import Instr, Opcode
from systolic.arch.memory import MemoryModel, program_address
from systolic.arch.timing import program_cycles, program_timeline
from systolic.compiler import MachineSpec, compile_network
from systolic.golden import Conv2D, Dense, QType, QuantizedNetwork
from systolic.golden.random import NETWORK_KINDS, random_network, random_shift_network
from systolic.report.cycles import predict_network
from tests.compiler import reference_lower as ref
from tests.compiler import zero_tile_cases as zc

SPECS = {name: MachineSpec.from_config(cfg) for name, cfg in PRESETS.items()}
#: Memories: the default (never throttled), slow buses, and a long latency that throttles the reads.
MEMORIES = (MemoryModel(), MemoryModel(latency=5, bytes_per_cycle=2), MemoryModel(latency=20, bytes_per_cycle=8))


def _diff(a, b) -> str:
    """Where compiled networks *a* (fast) and *b* (reference) first differ ('' if nowhere)."""
    if ref.same_compiled(a, b):
        return ""
    if not np.array_equal(a.image, b.image):
        return f"DRAM image differs at byte {int(np.flatnonzero(a.image != b.image)[0])}"
    for s, t in zip(a.steps, b.steps):
        for n, (i, j) in enumerate(zip(getattr(s, "program", []), getattr(t, "program", []))):
            if i.op != j.op or i.args != j.args:
                return f"layer {s.layer!r}, instruction {n}: {i} != reference {j}"
        if len(getattr(s, "program", [])) != len(getattr(t, "program", [])):
            return f"layer {s.layer!r}: {len(s.program)} instructions, reference {len(t.program)}"
    return "steps, regions or accounting differ"


def _same(net, spec, batch=1):
    fast, slow = compile_network(net, spec, batch), ref.compile_network(net, spec, batch)
    assert _diff(fast, slow) == ""
    # Field values are Python ints, as Instr makes them (a NumPy integer would compare equal but not encode).
    assert all(type(i.op) is Opcode and all(type(v) is int for v in i.args.values())
               for s in fast.steps for i in getattr(s, "program", []))
    return fast


def _same_cycles(cn, cfg, memories=MEMORIES):
    """predict_network's counters and lazy records, program_cycles and program_timeline equal the reference
    timeline's on every memory."""
    prog_addr = program_address(cn.spec.dram_bytes)
    for memory in memories:
        d, lat = memory.base_delay(cfg.bus_bytes), memory.latency
        pred = predict_network(cn, cfg, memory)
        for s in cn.steps:
            if not hasattr(s, "program"):
                continue
            want = ref.program_timeline(cfg, s.program, prog_addr, d, lat)
            assert program_cycles(cfg, s.program, prog_addr, d, lat) == want.counters
            assert pred[s.layer].counters == want.counters
            got = program_timeline(cfg, s.program, prog_addr, d, lat)
            assert got.counters == want.counters
            assert got.instructions == want.instructions
            assert pred[s.layer].instructions == want.instructions


@pytest.mark.parametrize("preset", ["tiny", "small", "default", "large"])
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_random_networks(preset, kind):
    for seed in range(3):
        net = random_network(seed, kind, input_hw=6 + 3 * seed, channels=1 + seed)
        for batch in (1, 3):
            cn = _same(net, SPECS[preset], batch)
            if seed == 0:
                _same_cycles(cn, PRESETS[preset])


def test_shift_pe():
    cfg = dataclasses.replace(PRESETS["default"], pe="shift")
    net = random_shift_network(1, "resnet", input_hw=10)
    _same_cycles(_same(net, MachineSpec.from_config(cfg), 2), cfg)


def _conv(rng, hw, cin, cout, k, stride, pad, in_signed=False):
    layer = Conv2D(name="conv", inputs=("input",), weight=rng.integers(-8, 8, (*k, cin, cout)),
                   w_type=QType(8, True, 6), out_type=QType(8, False, 0), bias=rng.integers(-500, 500, cout),
                   relu=True, stride=stride, padding=pad)
    return QuantizedNetwork(QType(8, in_signed, 6), (*hw, cin), [layer])


def _dense(rng, K, N, extra_channels=None):
    """A Dense layer; with *extra_channels* a second point (shift 4) on those output channels only."""
    extra = {}
    if extra_channels is not None:
        e = np.zeros((1, K, N), dtype=np.int64)
        e[0][:, extra_channels] = rng.integers(-8, 8, (K, len(extra_channels)))
        extra = dict(extra_weights=e, extra_shifts=[4])
    layer = Dense(name="fc", inputs=("input",), weight=rng.integers(-8, 8, (K, N)), w_type=QType(4, True, 3),
                  out_type=QType(8, True, 0), bias=rng.integers(-500, 500, N), relu=False, **extra)
    return QuantizedNetwork(QType(8, True, 6), (K,), [layer])


@pytest.mark.parametrize("case", [
    ((9, 9), 3, 5, (7, 7), 2, 3),           # stem-like: 7x7 stride 2, Cin not a multiple of rows
    ((8, 11), 12, 9, (3, 2), (2, 1), (1, 0, 2, 1)),  # non-square kernel, asymmetric padding and stride
    ((7, 7), 20, 16, (1, 1), 2, 0),         # 1x1 stride 2 (a ResNet downsample)
    ((14, 14), 64, 24, (3, 3), 1, 1),       # K-split on the 8x8 preset (K = 576)
    ((6, 6), 256, 16, (3, 3), 1, 1),        # K-split with several K groups
])
@pytest.mark.parametrize("preset", ["default", "large", "small"])
def test_conv_geometry(case, preset):
    hw, cin, cout, k, stride, pad = case
    cn = _same(_conv(np.random.default_rng(cin), hw, cin, cout, k, stride, pad), SPECS[preset])
    _same_cycles(cn, PRESETS[preset], MEMORIES[:2])


@pytest.mark.parametrize("preset", ["default", "large"])
def test_sparse_points_and_ksplit(preset):
    rng = np.random.default_rng(5)
    spec, cfg = SPECS[preset], PRESETS[preset]
    nets = [
        _dense(rng, 70, 20, extra_channels=[0, 3, 17]),     # a second point on some channels: zero tiles
        zc.dsconv_conv(rng, 6, 16, 24, 3, spec.rows, [2, 5], 0, zero_channels=range(8, 16)),
        zc.dsconv_dense(rng, 300, 40, spec.rows, [3, 6], 3),
        _dense(rng, 4096, 40, extra_channels=list(range(0, 40, 3))),   # K-split, multipoint
    ]
    for net, batch in zip(nets, (5, 2, 3, 300)):
        _same_cycles(_same(net, spec, batch), cfg, MEMORIES[:1])


def test_weights_that_do_not_fit():
    """Weight tiles reloaded per M tile, alternating between two halves of scratchpad W, or into one."""
    rng = np.random.default_rng(7)
    for net, batch in ((_dense(rng, 512, 300), 40), (_dense(rng, 320, 128), 100)):  # K-split; plain
        for spec in (SPECS["default"], dataclasses.replace(SPECS["default"], w_lines=12)):
            _same_cycles(_same(net, spec, batch), PRESETS["default"], MEMORIES[:1])
    conv = _conv(rng, (10, 10), 96, 96, (3, 3), 1, 1, in_signed=True)
    _same(conv, dataclasses.replace(SPECS["default"], w_lines=64), 2)


def test_checked_fallback():
    """A spec whose 16-bit line fields could overflow builds every instruction with the checked ``Instr``:
    the same programs."""
    spec = dataclasses.replace(SPECS["default"], a_lines=1 << 16)
    _same(random_network(2, "resnet", input_hw=12), spec, 2)
    _same(_dense(np.random.default_rng(1), 700, 30), spec, 9)


def test_the_comparison_sees_a_changed_field():
    """The comparison can fail: one field of one instruction, or one byte of the image, changed."""
    net = random_network(0, "cnn")
    a, b = compile_network(net, SPECS["default"], 1), ref.compile_network(net, SPECS["default"], 1)
    assert _diff(a, b) == ""
    step = next(s for s in a.steps if hasattr(s, "program"))
    n = next(k for k, i in enumerate(step.program) if i.op == Opcode.MATMUL)
    bad = step.program[n]
    step.program[n] = Instr(bad.op, {**bad.args, "a": bad.args["a"] + 1})
    assert "instruction" in _diff(a, b)
    step.program[n] = bad
    a.image[0] ^= 1
    assert "DRAM image" in _diff(a, b)


def _random_program(rng, cfg, n):
    """Random instructions within the machine (MATMULs of any m, 0 included; LOADs and STOREs of 0 lines or
    0 elements; FENCEs), ending with HALT: interlocks and gathers in every combination."""
    spec = MachineSpec.from_config(cfg, dram_bytes=1 << 12)
    R, C = cfg.rows, cfg.cols
    prog = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(rng.integers(2)), m=int(rng.integers(0, 40)),
                                                  a=int(rng.integers(0, 40)), w=int(rng.integers(0, 3)) * R)))
        elif r < 0.75:
            w = bool(rng.integers(2))
            width = C if w else R
            prog.append(Instr(Opcode.LOAD, dict(
                target=int(w), zero=int(rng.integers(2)), lines=int(rng.integers(0, 30)),
                spad=int(rng.integers(0, 3 * R if w else 60)), elems=int(rng.integers(0, width + 1)),
                dram=int(rng.integers(0, 2048)), stride=int(rng.integers(0, 70)))))
        elif r < 0.85:
            prog.append(Instr(Opcode.STORE, dict(lines=int(rng.integers(0, 20)), elems=int(rng.integers(0, C + 1)),
                                                 bits=8, dram=int(rng.integers(0, 2048)),
                                                 stride=int(rng.integers(0, 50)))))
        elif r < 0.95:
            prog.append(Instr(Opcode.LOADQ, dict(dram=int(rng.integers(0, 1024)))))
        else:
            prog.append(Instr(Opcode.FENCE))
    return prog + [Instr(Opcode.HALT), Instr(Opcode.FENCE)], program_address(spec.dram_bytes)


@pytest.mark.parametrize("preset", ["tiny", "small", "default", "large"])
def test_random_programs_timeline(preset):
    rng = np.random.default_rng(11)
    cfg = PRESETS[preset]
    for _ in range(6):
        prog, addr = _random_program(rng, cfg, 300)
        for memory in MEMORIES + (MemoryModel(latency=1, bytes_per_cycle=1),):
            d, lat = memory.base_delay(cfg.bus_bytes), memory.latency
            for pa in (addr, addr + 8):     # (an address off the bus words: fetches of more words)
                want = ref.program_timeline(cfg, prog, pa, d, lat)
                assert program_cycles(cfg, prog, pa, d, lat) == want.counters
                got = program_timeline(cfg, prog, pa, d, lat)
                assert got.instructions == want.instructions and got.counters == want.counters
