"""Grouped and depthwise convolutions on the accelerator (docs/isa.md, "Grouped and depthwise convolution"): the
compiler runs them as the dense convolution over all input channels whose weight is block diagonal, skipping its
all-zero tiles. The results must be the golden model's bit for bit (NumPy executor here; the RTL in
tests/sim/test_grouped_rtl.py), the programs those of the reference compiler, and the counts (MATMULs, stored
weight bytes, useful MACs) the ones derived here from the layer's geometry alone."""

import dataclasses
import math

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.compiler import CompileError, MachineSpec, Opcode, Target, compile_network, run_compiled
from systolic.compiler.lower import block_diagonal_weight
from systolic.flows import resolve_model
from systolic.golden import Conv2D, QType, QuantizedNetwork
from systolic.golden.ops import AccumulatorOverflowError
from systolic.golden.random import random_input
from tests.compiler import reference_lower as ref

SPECS = {
    "ws2x2": MachineSpec.from_config(PRESETS["tiny"]),
    "os4x4": MachineSpec.from_config(PRESETS["small"]),
    "ws8x8": MachineSpec.from_config(PRESETS["default"]),
    "ws16x16": MachineSpec.from_config(PRESETS["large"]),
    "ws4x8": MachineSpec(rows=4, cols=8, a_lines=256, w_lines=256, acc_lines=64),
    # scratchpad W of 16 lines (two 8x8 tiles): the weights are reloaded, not preloaded
    "ws8x8-small-w": MachineSpec(rows=8, cols=8, a_lines=2048, w_lines=16, acc_lines=512),
    # scratchpad A of 12 lines: K chunks in groups (the K-split schedule)
    "ws4x4-small-a": MachineSpec(rows=4, cols=4, a_lines=12, w_lines=1024, acc_lines=128),
}

W_T = QType(8, True, 5)


def _grouped(rng, hw, cin, cout, groups, k, stride, pad, in_signed=True, points=1, batch_relu=True, zero=False):
    """A one-layer network: a grouped Conv2D of random non-zero weights (*zero*: weights may be 0), maybe with
    ``points - 1`` extra weight points (shifts 3, 7)."""
    cig = cin // groups

    def weights(shape):
        w = rng.integers(-20, 21, shape)
        if not zero:
            w[w == 0] = 1
        return w

    extra = {}
    if points > 1:
        extra = dict(extra_weights=weights((points - 1, *k, cig, cout)), extra_shifts=[3, 7][:points - 1])
    layer = Conv2D(name="conv", inputs=("input",), weight=weights((*k, cig, cout)), w_type=W_T,
                   out_type=QType(8, not batch_relu, 2), bias=rng.integers(-2000, 2000, cout), relu=batch_relu,
                   stride=stride, padding=pad, groups=groups, **extra)
    return QuantizedNetwork(QType(8, in_signed, 4), (*hw, cin), [layer])


def _run_exact(net, spec, batch=2, seed=0):
    cn = compile_network(net, spec, batch)
    assert [s.layer for s in cn.steps if hasattr(s, "program")] == [lay.name for lay in net.layers], cn.placement
    x = random_input(net, batch, seed)
    if net.input_type.signed:
        x[0, 0, 0, :] = net.input_type.lo        # the extremes of the input range
    x[-1, -1, -1, :] = net.input_type.hi
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    for name in gold:
        assert outs[name].dtype.kind == gold[name].dtype.kind == "i"
        assert np.array_equal(outs[name], gold[name]), name
    return cn


CASES = {   # hw, c_in, c_out, groups, kernel, stride, padding
    "depthwise-3x3": ((6, 7), 8, 8, 8, (3, 3), 1, 1),
    "depthwise-3x3-s2": ((9, 8), 16, 16, 16, (3, 3), 2, 1),
    "depthwise-odd-cin": ((5, 5), 5, 5, 5, (3, 3), 1, 1),            # c_in not a multiple of rows
    "depthwise-x2": ((5, 6), 6, 12, 6, (3, 3), (2, 1), (1, 0, 0, 1)),  # channel multiplier 2, asymmetric
    "depthwise-1x1": ((4, 4), 12, 12, 12, (1, 1), 1, 0),
    "groups2-3x3": ((6, 6), 6, 10, 2, (3, 3), 1, 1),
    "groups2-1x1-s2": ((7, 7), 10, 6, 2, (1, 1), 2, 0),
    "groups4-3x3-s2": ((8, 8), 12, 8, 4, (3, 3), 2, (1, 1, 1, 1)),
    "groups4-2x3": ((6, 7), 20, 12, 4, (2, 3), 1, (0, 1, 1, 0)),
}


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("case", list(CASES))
def test_grouped_conv_equals_golden(case, spec):
    hw, cin, cout, g, k, stride, pad = CASES[case]
    rng = np.random.default_rng(len(case) + cin)
    for in_signed in (True, False):
        _run_exact(_grouped(rng, hw, cin, cout, g, k, stride, pad, in_signed), SPECS[spec])


@pytest.mark.parametrize("spec", ["os4x4", "ws8x8", "ws4x8", "ws8x8-small-w", "ws4x4-small-a"])
@pytest.mark.parametrize("case", ["depthwise-3x3", "groups4-3x3-s2", "depthwise-odd-cin"])
def test_multipoint_grouped_conv_equals_golden(case, spec):
    hw, cin, cout, g, k, stride, pad = CASES[case]
    rng = np.random.default_rng(cin)
    for points, in_signed in ((2, True), (3, False)):
        net = _grouped(rng, hw, cin, cout, g, k, stride, pad, in_signed, points=points, zero=True)
        _run_exact(net, SPECS[spec], batch=3, seed=points)


@pytest.mark.parametrize("spec", ["os4x4", "ws8x8", "ws8x8-small-w", "ws4x4-small-a", "ws4x8"])
@pytest.mark.parametrize("case", ["depthwise-3x3-s2", "groups4-2x3", "depthwise-x2"])
def test_same_programs_as_reference(case, spec):
    """The fast compiler's grouped programs, DRAM image and accounting are the reference compiler's."""
    hw, cin, cout, g, k, stride, pad = CASES[case]
    rng = np.random.default_rng(7)
    for points in (1, 2):
        net = _grouped(rng, hw, cin, cout, g, k, stride, pad, points=points, zero=points > 1)
        fast, slow = compile_network(net, SPECS[spec], 2), ref.compile_network(net, SPECS[spec], 2)
        assert ref.same_compiled(fast, slow)


def _block_diagonal_by_loops(w, groups):
    kh, kw, cig, cout = w.shape
    out = np.zeros((kh, kw, cig * groups, cout), dtype=np.int64)
    cog = cout // groups
    for o in range(cout):
        g = o // cog
        for c in range(cig):
            out[:, :, g * cig + c, o] = w[:, :, c, o]
    return out


@pytest.mark.parametrize("shape, groups", [((3, 3, 1, 8), 8), ((3, 3, 1, 16), 8), ((1, 2, 3, 4), 2), ((2, 2, 2, 6), 3),
                                           ((1, 1, 5, 5), 1)])
def test_block_diagonal_weight(shape, groups):
    w = np.random.default_rng(1).integers(-128, 128, shape)
    got = block_diagonal_weight(w, groups)
    assert got.dtype == np.int64
    assert np.array_equal(got, _block_diagonal_by_loops(w, groups))


def _w_loads(step):
    return [i for i in step.program if i.op == Opcode.LOAD and i.args["target"] == Target.W]


@pytest.mark.parametrize("spec", ["ws8x8", "ws16x16", "os4x4"])
@pytest.mark.parametrize("cin, stride", [(32, 1), (64, 2)])
def test_depthwise_zero_tiles_not_stored_loaded_or_run(spec, cin, stride):
    """Depthwise with R == C and c_in a multiple of R: per N chunk, kh*kw diagonal tiles are stored, loaded and
    run (one per kernel tap), every other tile of the block-diagonal weight is skipped."""
    spec = SPECS[spec]
    R, C = spec.rows, spec.cols
    net = _grouped(np.random.default_rng(cin), (7, 7), cin, cin, cin, (3, 3), stride, 1)
    cn = _run_exact(net, spec, batch=1)
    (step,) = cn.steps
    M, K, N = step.gemm
    assert (K, N) == (9 * cin, cin)
    oh = (7 + 2 - 3) // stride + 1
    assert M == oh * oh
    nc = cin // C
    used = 9 * nc                             # tiles with a non-zero element: 9 diagonal blocks per N chunk
    matmuls = [i for i in step.program if i.op == Opcode.MATMUL]
    m_tiles = math.ceil(M / max(i.m for i in matmuls))
    assert len(matmuls) == used * m_tiles
    assert step.array_macs == R * C * sum(i.m for i in matmuls) == R * C * M * used
    # Preloaded (the 9 * nc tiles fit scratchpad W): each tile loaded once, from its own DRAM address...
    loads = _w_loads(step)
    assert len(loads) == used and step.weight_bytes == used * R * C
    addrs = sorted(i.args["dram"] for i in loads)
    assert addrs == list(range(addrs[0], addrs[0] + used * R * C, R * C))
    # ...and only those are stored: the layer's requantizer parameters are allocated right after them.
    q = min(i.args["dram"] for i in step.program if i.op == Opcode.LOADQ)
    assert q == -(-(addrs[0] + used * R * C) // 16) * 16
    # Useful MACs: the group taps only (one input channel per output channel and tap), not the tiles' zeros.
    assert step.macs == M * 9 * cin
    assert step.one_point_array_macs == R * C * M * math.ceil(K / R) * nc


def test_useful_macs_of_a_multipoint_grouped_layer():
    """macs = M * kh*kw * (c_in/G) * c_out per point whose tiles are all non-zero; a point that is zero in one
    group's tiles (here: the second point on group 0 only) counts only its non-zero tiles."""
    spec = SPECS["ws4x8"]            # 4 rows, 8 cols: K chunks of 4 input channels x taps, N chunks of 8
    rng = np.random.default_rng(3)
    cin, cout, g = 8, 16, 2          # groups of 4 input channels -> 8 output channels: one K chunk, one N chunk
    w = rng.integers(1, 9, (3, 3, 4, cout))
    e = np.zeros((1, 3, 3, 4, cout), dtype=np.int64)
    e[0, ..., :8] = rng.integers(1, 9, (3, 3, 4, 8))      # group 0's output channels
    layer = Conv2D(name="conv", inputs=("input",), weight=w, w_type=W_T, out_type=QType(8, True, 0),
                   padding=1, groups=g, extra_weights=e, extra_shifts=[2])
    net = QuantizedNetwork(QType(8, True, 4), (5, 5, cin), [layer])
    cn = _run_exact(net, spec)
    (step,) = cn.steps
    M = 2 * 25
    assert step.macs == M * 9 * 4 * cout + M * 9 * 4 * 8
    # Tiles run per M tile: point 0 has 9 taps x 2 groups, point 1 has 9 taps x group 0.
    matmuls = [i for i in step.program if i.op == Opcode.MATMUL]
    assert step.array_macs == 4 * 8 * sum(i.m for i in matmuls) == 4 * 8 * M * (18 + 9)


def test_accumulator_proof_is_over_the_group():
    """The proof bounds each output channel over its own group's taps: a depthwise layer whose 9 taps of 127 on
    inputs of -128 reach -146304 (between -2**18 and -2**17) compiles with a 19-bit accumulator and is refused with
    18; summed over all 16 input channels (the block-diagonal zeros counted as weights) it would need 23."""
    w = np.full((3, 3, 1, 16), 127)
    layer = Conv2D(name="dw", inputs=("input",), weight=w, w_type=QType(8, True, 7), out_type=QType(8, True, 0),
                   padding=1, groups=16)
    net = QuantizedNetwork(QType(8, True, 0), (4, 4, 16), [layer])
    assert 2 ** 17 < 9 * 127 * 128 <= 2 ** 18 < 16 * 9 * 127 * 128
    base = SPECS["ws8x8"]
    cn = _run_exact(net, dataclasses.replace(base, acc_bits=19))
    assert len(cn.steps) == 1
    with pytest.raises(AccumulatorOverflowError, match=r"layer 'dw' \(pass 0\): worst case \[-146304, 145161\]"):
        compile_network(net, dataclasses.replace(base, acc_bits=18))


def test_shift_pe_grouped_conv():
    """On a shift PE: power-of-two grouped weights run exactly; a weight the PE cannot take is named by its index
    in the layer's own (grouped) weight."""
    spec = dataclasses.replace(SPECS["ws8x8"], pe="shift")
    rng = np.random.default_rng(5)
    w = rng.choice([-8, -4, -2, -1, 0, 1, 2, 4, 8], (3, 3, 2, 12))
    mk = dict(name="conv", inputs=("input",), w_type=W_T, out_type=QType(8, True, 1), padding=1, groups=4)
    net = QuantizedNetwork(QType(8, False, 4), (5, 5, 8), [Conv2D(weight=w, **mk)])
    _run_exact(net, spec)
    w = w.copy()
    w[1, 2, 1, 10] = 3
    net = QuantizedNetwork(QType(8, False, 4), (5, 5, 8), [Conv2D(weight=w, **mk)])
    with pytest.raises(CompileError, match=r"weight\[1, 2, 1, 10\] is 3"):
        compile_network(net, spec)


def test_mnist_mobilenet_depthwise_layers():
    """The shipped depthwise MobileNet: no layer stays on the host for being grouped; with its ReLU6 clamps
    removed (the requantizers have none), every depthwise layer runs on the accelerator, equal to the golden."""
    net, _ = resolve_model("mnist-mobilenet")
    dw = [lay.name for lay in net.layers if getattr(lay, "groups", 1) > 1]
    assert dw == ["b1dw", "b2dw", "b3dw", "b4dw"]
    spec = MachineSpec.from_config(PRESETS["default"])
    cn = compile_network(net, spec, 2)
    for name, where in cn.placement.items():
        assert "group" not in where, (name, where)
    x = random_input(net, 2, 4)
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    assert all(np.array_equal(outs[k], gold[k]) for k in gold)
    unclamped = QuantizedNetwork(net.input_type, net.input_shape,
                                 [dataclasses.replace(lay, out_max=None) if getattr(lay, "out_max", None) else lay
                                  for lay in net.layers], rounding=net.rounding)
    for preset in ("default", "large", "small"):
        cn = compile_network(unclamped, MachineSpec.from_config(PRESETS[preset]), 2)
        assert all(cn.placement[name] == "accelerator" for name in dw)
        outs, _ = run_compiled(cn, x)
        gold = unclamped.run(x)
        assert all(np.array_equal(outs[k], gold[k]) for k in gold)
        steps = {s.layer: s for s in cn.steps}
        for name in dw:
            lay = unclamped.layer(name)
            M = 2 * int(np.prod(unclamped.shape(name)[:2]))
            assert steps[name].macs == M * 9 * lay.out_channels          # one input channel per output
