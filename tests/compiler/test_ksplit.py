"""The K-split (weight-reuse) schedule of `_lower_gemm`: layers whose plain tiling leaves MATMULs too short to
stream on the weight-stationary array (m < 2R + C + 1) get bigger row tiles, K in groups and N in groups with an
accumulator region per N chunk. Results must stay those of the golden model bit for bit."""

import dataclasses
import math

import numpy as np
import pytest

import systolic.compiler.lower as lower
from systolic.compiler import MachineSpec, Opcode, compile_network, run_compiled
from systolic.golden import Conv2D, Dense, QType, QuantizedNetwork
from systolic.golden.random import random_input
from systolic.arch.config import PRESETS
from systolic.models import SHIPPED, load_shipped
from systolic.report.cycles import predict_network
from systolic.arch.memory import MemoryModel

SPECS = {name: MachineSpec.from_config(PRESETS[name]) for name in ("default", "large")}


def _dense(rng, K, N, points=1):
    extra = {}
    w_t = QType(8, True, 6)
    if points > 1:
        w_t = QType(4, True, 3)
        extra = dict(extra_weights=rng.integers(-8, 8, (points - 1, K, N)), extra_shifts=[4, 8][:points - 1])
    layer = Dense(name="fc", inputs=("input",), weight=rng.integers(-8, 8, (K, N)), w_type=w_t,
                  out_type=QType(8, True, 0), bias=rng.integers(-500, 500, N), relu=False, **extra)
    return QuantizedNetwork(QType(8, True, 6), (K,), [layer])


def _conv(rng, hw, cin, cout, k, stride, pad):
    layer = Conv2D(name="conv", inputs=("input",), weight=rng.integers(-8, 8, (k, k, cin, cout)),
                   w_type=QType(8, True, 6), out_type=QType(8, False, 0), bias=rng.integers(-500, 500, cout),
                   relu=True, stride=stride, padding=pad)
    return QuantizedNetwork(QType(8, False, 8), (hw, hw, cin), [layer])


def _plain_mt(spec, M, K):
    kc = math.ceil(K / spec.rows)
    mt = min(spec.a_lines // kc, spec.acc_lines, M)
    if mt < M and spec.a_lines // (2 * kc) >= 1:
        mt = min(spec.a_lines // (2 * kc), spec.acc_lines, M)
    return mt


def _check_ksplit(cn, spec, points=1):
    """The step is K-split: MATMULs longer than the plain tile, several accumulator regions, each N chunk's
    MATMULs in the plain order (points, then K chunks; the first overwrites)."""
    (step,) = cn.steps
    M, K, N = step.gemm
    R, C = spec.rows, spec.cols
    thr = 2 * R + C + 1
    kc, nc = math.ceil(K / R), math.ceil(N / C)
    mm = [i for i in step.program if i.op == Opcode.MATMUL]
    assert len(mm) == math.ceil(M / max(i.m for i in mm)) * nc * kc * points
    assert min(i.m for i in mm) > _plain_mt(spec, M, K)
    assert min(i.m for i in mm) >= min(M, thr)  # where M allows, every MATMUL streams
    assert len({i.acc for i in mm}) > 1
    # Per accumulator region between STOREs: the plain per-chunk sequence of (accumulate, shift).
    shifts = [s for _, s in cn.net.layers[0].points]
    plain = [(int(p > 0 or i > 0), shifts[p]) for p in range(points) for i in range(kc)]
    seqs = {}
    for ins in step.program:
        if ins.op == Opcode.MATMUL:
            seqs.setdefault(ins.acc, []).append((ins.accumulate, ins.shift))
        elif ins.op == Opcode.STORE:
            assert seqs.pop(ins.acc) == plain
    assert not seqs
    # Every A load stays inside scratchpad A and the two halves alternate.
    for ins in step.program:
        if ins.op == Opcode.LOAD and ins.target == 0:
            assert ins.spad + ins.lines <= spec.a_lines
        if ins.op == Opcode.MATMUL:
            assert ins.a + ins.m <= spec.a_lines and ins.acc + ins.m <= spec.acc_lines


def _run(cn, net, batch, seed):
    x = random_input(net, batch, seed)
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name


@pytest.mark.parametrize("preset,batch,K,N", [
    ("default", 64, 800, 40),    # kc 100, plain mt 10
    ("default", 70, 1000, 24),   # K not a multiple of 8, ragged last tile
    ("large", 150, 1200, 70),    # kc 75, plain mt 27
])
def test_dense_ksplit_equals_golden(preset, batch, K, N):
    spec = SPECS[preset]
    net = _dense(np.random.default_rng(K), K, N)
    cn = compile_network(net, spec, batch=batch)
    _check_ksplit(cn, spec)
    _run(cn, net, batch, 1)


@pytest.mark.parametrize("preset,hw,cin,cout,k,stride,pad,batch", [
    ("large", 8, 80, 48, 3, 1, 1, 2),     # K 720: chunks straddle taps, plain mt 45
    ("large", 12, 100, 40, 3, 2, 1, 4),   # stride 2
    ("default", 10, 40, 20, 3, 1, 1, 1),  # K 360, plain mt 22
    ("default", 9, 70, 12, 3, 1, 0, 3),   # no padding
])
def test_conv_ksplit_equals_golden(preset, hw, cin, cout, k, stride, pad, batch):
    spec = SPECS[preset]
    net = _conv(np.random.default_rng(hw * cin), hw, cin, cout, k, stride, pad)
    cn = compile_network(net, spec, batch=batch)
    _check_ksplit(cn, spec)
    _run(cn, net, batch, 2)


@pytest.mark.parametrize("points", [2, 3])
def test_multipoint_ksplit_equals_golden(points):
    spec = SPECS["default"]
    net = _dense(np.random.default_rng(points), 600, 20, points)
    cn = compile_network(net, spec, batch=60)
    _check_ksplit(cn, spec, points)
    _run(cn, net, 60, 3)


def test_weights_preloaded_when_they_fit():
    # All weight tiles fit scratchpad W: each is loaded once, to its own lines.
    spec = dataclasses.replace(SPECS["default"], w_lines=1 << 14)
    net = _dense(np.random.default_rng(5), 800, 24)
    cn = compile_network(net, spec, batch=64)
    _check_ksplit(cn, spec)
    wl = [i.spad for i in cn.steps[0].program if i.op == Opcode.LOAD and i.target == 1]
    assert len(wl) == len(set(wl)) == 100 * 3
    _run(cn, net, 64, 4)


def _plain(monkeypatch):
    monkeypatch.setattr(lower, "ksplit_plan", lambda *a: None)


@pytest.mark.parametrize("preset,make", [
    ("default", lambda rng: (_dense(rng, 512, 128), 256)),                 # the 256x512x128 GEMM
    ("large", lambda rng: (_conv(rng, 7, 512, 64, 3, 1, 1), 1)),           # conv5-like, fewer channels out
])
def test_ksplit_is_faster(monkeypatch, preset, make):
    cfg = PRESETS[preset]
    spec = SPECS[preset]
    net, batch = make(np.random.default_rng(0))
    memory = MemoryModel()
    cn = compile_network(net, spec, batch=batch)
    _check_ksplit(cn, spec)
    (ks,) = predict_network(cn, cfg, memory).values()
    _plain(monkeypatch)
    (pl,) = predict_network(compile_network(net, spec, batch=batch), cfg, memory).values()
    assert ks.cycles < 0.8 * pl.cycles
    # output-stationary: not slower either
    os_cfg = dataclasses.replace(cfg, dataflow="os")
    monkeypatch.undo()
    (ks_os,) = predict_network(cn, os_cfg, memory).values()
    _plain(monkeypatch)
    (pl_os,) = predict_network(compile_network(net, spec, batch=batch), os_cfg, memory).values()
    assert ks_os.cycles < pl_os.cycles


def test_plain_schedule_kept_when_tiles_stream():
    # GEMM 256x512x128 on 16x16: plain mt 64 >= 2R + C + 1 = 49.
    cn = compile_network(_dense(np.random.default_rng(0), 512, 128), SPECS["large"], batch=256)
    prog = cn.steps[0].program
    # Plain: every MATMUL has m = mt = 64 rows, and the 8 N chunks of each of the 4 M tiles alternate between
    # two accumulator regions of 64 lines (the K-split schedule would give each chunk of a group its region).
    assert {i.m for i in prog if i.op == Opcode.MATMUL} == {64}
    stores = [i.acc for i in prog if i.op == Opcode.STORE]
    assert stores == [0, 64] * 16


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("model", [m for m in SHIPPED if m.startswith("digits-")])   # MNIST: test_schedule.py
def test_shipped_models_equal_golden(model, preset):
    net = load_shipped(model)
    batch = 16
    cn = compile_network(net, MachineSpec.from_config(PRESETS[preset]), batch=batch)
    _run(cn, net, batch, 9)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_k_larger_than_scratchpad_a_is_split(kind):
    """One row's K chunks need more lines than scratchpad A has (the plain tiling has no tile at all): the
    K-split schedule runs the layer, equal to golden, every access inside its memory."""
    spec = dataclasses.replace(SPECS["default"], a_lines=16)
    rng = np.random.default_rng(7)
    net = _dense(rng, 300, 20) if kind == "dense" else _conv(rng, 5, 20, 12, 3, 1, 1)
    K = net.layers[0].gemm_weight().shape[0]
    assert math.ceil(K / spec.rows) > spec.a_lines
    cn = compile_network(net, spec, batch=3)
    (step,) = cn.steps
    for ins in step.program:
        if ins.op == Opcode.LOAD and ins.target == 0:
            assert ins.spad + ins.lines <= spec.a_lines
        if ins.op == Opcode.MATMUL:
            assert ins.a + ins.m <= spec.a_lines and ins.acc + ins.m <= spec.acc_lines
    _run(cn, net, 3, 4)


def test_k_that_cannot_be_split_is_refused():
    spec = dataclasses.replace(SPECS["default"], a_lines=1)
    with pytest.raises(lower.CompileError, match="K=300 needs 38 scratchpad A lines per row, only 1 exist"):
        compile_network(_dense(np.random.default_rng(0), 300, 20), spec, batch=2)
