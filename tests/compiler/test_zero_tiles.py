"""The compiler skips all-zero weight tiles (docs/isa.md, "Zero weight tiles"), on the NumPy executor.

Layers with tile-sparse points (DSConv: one point per shift value, each zero outside its K blocks; multipoint
with a second point on some output channels only; an all-zero N chunk; a point whose first K chunks are zero)
compile to exactly the MATMULs counted from their weights (tests/compiler/zero_tile_cases.py), in every
schedule: weights preloaded, reloaded into two halves or one slot, plain and K-split. Results equal the golden
model bit for bit; the step's accounting equals the program's and, for the one-point figures, a compiled
one-point layer's.
"""

import dataclasses
import math

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.compiler import MachineSpec, Opcode, compile_network, run_compiled
from systolic.golden.random import random_input

from tests.compiler import zero_tile_cases as zc
from tests.compiler.test_schedule import check_no_war

SMALL, DEFAULT = (MachineSpec.from_config(PRESETS[n], dram_bytes=1 << 20) for n in ("small", "default"))
SPECS = {
    "small-os": SMALL,
    "default-ws": DEFAULT,
    "4x4-w-halves": MachineSpec(rows=4, cols=4, a_lines=96, w_lines=8, acc_lines=16, dram_bytes=1 << 20),
    "4x4-w-one-slot": MachineSpec(rows=4, cols=4, a_lines=40, w_lines=4, acc_lines=8, dram_bytes=1 << 20),
    "3x2": MachineSpec(rows=3, cols=2, a_lines=20, w_lines=600, acc_lines=5, dram_bytes=1 << 20),
    # A single A buffer for the dense layers of 8 K chunks (too few lines for two); no room for the conv ones.
    "3x2-a-single": MachineSpec(rows=3, cols=2, a_lines=14, w_lines=600, acc_lines=5, dram_bytes=1 << 20),
}
CONV_CASES = ("dsconv-conv", "dsconv-conv-zero-chunk")


def _cases(spec):
    """(name, network) of every kind of sparsity, sized in tiles of *spec*."""
    R, C = spec.rows, spec.cols
    rng = np.random.default_rng(R * 10 + C)
    return {
        # DSConv blocks of R K elements (= K chunks); block 0 has shift 3, so `weight` is zero in K chunk 0
        # and the first MATMUL of every N chunk is a shifted point that overwrites.
        "dsconv-conv": zc.dsconv_conv(rng, 5, 2 * R, 2 * C + 1, 3, R, [0, 1, 3, 6], 3, zero_channels=()),
        # The same with the last (partial) N chunk zero in every point: one MATMUL of a zero tile still runs.
        "dsconv-conv-zero-chunk": zc.dsconv_conv(rng, 4, R, 2 * C + 1, 3, R, [0, 2, 5], 0,
                                                 zero_channels=(2 * C,)),
        # Blocks of 2R elements (two K chunks per block) and no shift-0 block: `weight` is all zero.
        "dsconv-dense-no-base": zc.dsconv_dense(rng, 7 * R + 1, 3 * C, 2 * R, [2, 4], 2),
        # Multipoint: second point on N chunk 1 only, third point zero in its first two K chunks.
        "multipoint": zc.multipoint_dense(rng, 5 * R - 1, 3 * C, second_channels=range(C, 2 * C),
                                          third_zero_rows=2 * R),
        # ... with the middle N chunk zero in every point, and K chunk 2 zero in every point (never loaded).
        "multipoint-zero-chunk": zc.multipoint_dense(rng, 4 * R, 3 * C, second_channels=range(0, C),
                                                     third_zero_rows=R, zero_channels=range(C, 2 * C),
                                                     zero_rows=range(2 * R, 3 * R)),
    }


CASES = [(s, c) for s in SPECS for c in ("dsconv-conv", "dsconv-conv-zero-chunk", "dsconv-dense-no-base",
                                         "multipoint", "multipoint-zero-chunk")
         if not (s == "3x2-a-single" and c in CONV_CASES)]


def _ksplit(step, spec) -> bool:
    """The step took the K-split schedule: MATMULs of more rows than the plain tiling's M tile."""
    M, K, _ = step.gemm
    kc = math.ceil(K / spec.rows)
    mt = min(spec.a_lines // kc, spec.acc_lines, M)
    if mt < M and spec.a_lines // (2 * kc) >= 1:
        mt = min(spec.a_lines // (2 * kc), spec.acc_lines, M)
    return max(i.m for i in zc.matmuls(step.program)) > mt


def _check(cn, spec, batch, seed):
    (step,) = cn.steps
    layer = cn.net.layers[0]
    dst = cn.regions[layer.name]
    R, C = spec.rows, spec.cols
    M, K, N = step.gemm
    # The MATMULs of every accumulator region: those of the weights' non-zero tiles, the first overwriting.
    m_tiles = zc.check_program(step, layer, dst, spec)
    per_m_tile = sum(map(len, zc.expected_sequences(layer, R, C)))
    mm = zc.matmuls(step.program)
    assert len(mm) == per_m_tile * m_tiles
    assert sum(i.m for i in mm) == M * per_m_tile
    full = math.ceil(K / R) * math.ceil(N / C) * len(layer.points)
    assert per_m_tile < full                              # something was skipped
    # Only the tiles that run are stored: the W loads read a contiguous block of exactly that many tiles.
    w_addrs = {i.dram for i in step.program if i.op == Opcode.LOAD and i.target == 1}
    assert max(w_addrs) - min(w_addrs) == (per_m_tile - 1) * R * C and len(w_addrs) == per_m_tile
    if not _ksplit(step, spec):    # (K-split A loads wait for the interlock by design)
        check_no_war(step.program, spec, weights_fit=per_m_tile * R <= spec.w_lines)
    if layer.kind == "dense":      # activations: only the K chunks some tile reads
        src = cn.regions[layer.inputs[0]]
        loaded = {(i.dram - src.addr) % K // R for i in step.program if i.op == Opcode.LOAD and i.target == 0}
        assert loaded == zc.used_k_chunks(layer, R)
    # Results and accounting.
    x = random_input(cn.net, batch, seed)
    outs, counters = run_compiled(cn, x)
    assert np.array_equal(outs[layer.name], cn.net(x))
    assert step.array_macs == counters[layer.name].macs == R * C * M * per_m_tile
    assert step.weight_bytes == zc.w_load_bytes(step.program) == counters[layer.name].spad_w_writes * C
    assert step.macs == zc.useful_macs(layer, R, C, M)
    if per_m_tile * R <= spec.w_lines:
        assert step.weight_bytes == per_m_tile * R * C    # each tile that runs loaded once, no other
    return step


@pytest.mark.parametrize("spec_name,case", CASES)
def test_sparse_points_run_only_nonzero_tiles(spec_name, case):
    spec = SPECS[spec_name]
    net = _cases(spec)[case]
    batch = 3 if case in CONV_CASES else 40      # several M tiles either way
    cn = compile_network(net, spec, batch=batch)
    step = _check(cn, spec, batch, seed=len(case))
    # The one-point figures are those of a compiled one-point layer of the same shape.
    one = compile_network(zc.one_point_like(net, np.random.default_rng(0)), spec, batch=batch).steps[0]
    assert (step.one_point_array_macs, step.one_point_weight_bytes) == (one.array_macs, one.weight_bytes)
    assert one.array_macs == one.one_point_array_macs and one.weight_bytes == one.one_point_weight_bytes


@pytest.mark.parametrize("spec_name", ["default-ws", "small-os"])
@pytest.mark.parametrize("case", ["dsconv", "multipoint"])
def test_ksplit_schedule_skips_zero_tiles(spec_name, case):
    """Large K: the K-split schedule (several accumulator regions) runs only the non-zero tiles; units whose
    tiles are all zero are dropped with their A loads. (Weight-stationary tiling: on the output-stationary
    small preset the plain schedule's 4-row MATMULs fill whole chunks, so it keeps the plain schedule.)"""
    spec = dataclasses.replace(SPECS[spec_name], dataflow="ws")
    R, C = spec.rows, spec.cols
    rng = np.random.default_rng(5)
    if case == "dsconv":
        net = zc.dsconv_dense(rng, 512, 4 * C, R, [0, 1, 2, 5], 1)
    else:       # a second point on half of the N chunks: 3/2 points' tiles, more than scratchpad W holds
        net = zc.multipoint_dense(rng, 512, 4 * C, second_channels=range(2 * C, 4 * C), third_zero_rows=512)
    batch = 64
    cn = compile_network(net, spec, batch=batch)
    step = _check(cn, spec, batch, seed=2)
    assert _ksplit(step, spec)
    one = compile_network(zc.one_point_like(net, rng), spec, batch=batch).steps[0]
    assert (step.one_point_array_macs, step.one_point_weight_bytes) == (one.array_macs, one.weight_bytes)


def test_dense_one_point_layer_costs_are_its_own():
    """A one-point layer without zero tiles: every tile runs, accounting equals the one-point figures."""
    spec = SPECS["4x4-w-halves"]
    rng = np.random.default_rng(3)
    net = zc.one_point_like(zc.multipoint_dense(rng, 13, 10, second_channels=()), rng)
    cn = compile_network(net, spec, batch=9)
    (step,) = cn.steps
    M, K, N = step.gemm
    kc, nc = math.ceil(K / 4), math.ceil(N / 4)
    assert len(zc.matmuls(step.program)) == kc * nc * zc.check_program(step, net.layers[0], cn.regions["fc"], spec)
    assert step.macs == M * K * N
    assert step.array_macs == step.one_point_array_macs == 16 * kc * nc * M
    assert step.weight_bytes == step.one_point_weight_bytes


def test_all_zero_layer_stores_the_bias():
    """Every point zero: one zero-tile MATMUL per N chunk and M tile, the output is requant(bias)."""
    spec = SPECS["4x4-w-halves"]
    rng = np.random.default_rng(4)
    net = zc.multipoint_dense(rng, 9, 7, second_channels=range(7), zero_channels=range(7))
    cn = compile_network(net, spec, batch=5)
    (step,) = cn.steps
    mm = zc.matmuls(step.program)
    m_tiles = zc.check_program(step, net.layers[0], cn.regions["fc"], spec)
    assert [(i.accumulate, i.shift) for i in mm] == [(0, 0)] * (2 * m_tiles)
    assert step.macs == 0
    x = random_input(net, 5, 1)
    y = run_compiled(cn, x)[0]["fc"]
    assert np.array_equal(y, net(x))
    assert np.array_equal(y, np.broadcast_to(y[0], y.shape))       # independent of the input
