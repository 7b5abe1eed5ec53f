"""Layers with tile-sparse weight points on the Verilated Accelerator: the compiler's zero-tile skipping
(docs/isa.md, "Zero weight tiles") is bit-exact on the RTL and the cycle model follows the emitted program.

Two configs, as tests/sim/test_system_rtl.py: the ``small`` preset (4x4 output-stationary) and the
``default`` preset (8x8 weight-stationary). Per config, four layers (tests/compiler/zero_tile_cases.py):
a DSConv convolution whose base point is zero in its first K chunk and whose last N chunk is zero in every
point, a multipoint dense layer with a per-output-channel second point, a zero N chunk and a K chunk zero in
every point, and two large-K dense layers that take the K-split schedule (DSConv, weights preloaded; multipoint
with more tiles than scratchpad W holds, reloaded per MATMUL). Each must give the golden model's outputs
exactly, the executor's event counts (``check_run``), RTL cycle counters equal to the cycle model
(:func:`systolic.report.cycles.predict_network`), and exactly the MATMULs counted from the weights.
"""

import math

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import MachineSpec, compile_network
from systolic.golden.random import random_input
from systolic.report.cycles import UNITS, predict_network

from tests.compiler import zero_tile_cases as zc
from tests.sim.test_system_rtl import check_run

CONFIGS = {"os4x4": PRESETS["small"], "ws8x8": PRESETS["default"]}
KEYS = ("cycles", "bus_reads", "bus_writes", "idle_mem_stall") + tuple(
    f"{u}_{k}" for u in UNITS for k in ("busy", "stall"))


def _networks(cfg):
    R, C = cfg.rows, cfg.cols
    rng = np.random.default_rng(R)
    return {
        "dsconv-conv": (zc.dsconv_conv(rng, 5, 2 * R, 2 * C + 1, 3, R, [0, 1, 3, 6], 3, zero_channels=(2 * C,)),
                        2),
        "multipoint": (zc.multipoint_dense(rng, 4 * R + 3, 3 * C, second_channels=range(0, C),
                                           third_zero_rows=R, zero_channels=range(C, 2 * C),
                                           zero_rows=range(2 * R, 3 * R)), 5),
        "ksplit-dsconv": (zc.dsconv_dense(rng, 512, 4 * C, R, [0, 1, 2, 5], 2), 64),
        "ksplit-multipoint": (zc.multipoint_dense(rng, 512, 4 * C, second_channels=range(2 * C, 4 * C),
                                                  third_zero_rows=512), 64),
    }


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", ["dsconv-conv", "multipoint", "ksplit-dsconv", "ksplit-multipoint"])
def test_sparse_points_on_rtl(cfg_name, case):
    cfg = CONFIGS[cfg_name]
    net, batch = _networks(cfg)[case]
    spec = MachineSpec.from_config(cfg, dram_bytes=1 << 18)
    cn = compile_network(net, spec, batch=batch)
    (step,) = cn.steps
    layer = net.layers[0]
    R, C = cfg.rows, cfg.cols
    M, K, N = step.gemm
    # MATMULs: exactly the non-zero tiles (one zero tile per all-zero N chunk) per M tile, in order.
    m_tiles = zc.check_program(step, layer, cn.regions[layer.name], spec)
    per_m_tile = sum(map(len, zc.expected_sequences(layer, R, C)))
    assert per_m_tile < math.ceil(K / R) * math.ceil(N / C) * len(layer.points)
    assert len(zc.matmuls(step.program)) == per_m_tile * m_tiles
    if case.startswith("ksplit"):
        assert max(i.m for i in zc.matmuls(step.program)) >= min(M, 2 * R + C + 1)   # rows enough to stream
    if case == "ksplit-multipoint":
        assert per_m_tile * R > spec.w_lines       # weights reloaded: the non-preloaded path
    x = random_input(net, batch, 3)
    memory = MemoryModel(latency=2)
    run = check_run(cn, x, cfg, memory)       # outputs == golden, counters == executor, timing formulas
    (c,) = run.counters.values()
    assert c.by_opcode["MATMUL"] == per_m_tile * m_tiles
    assert c.macs == step.array_macs == R * C * M * per_m_tile
    (p,) = predict_network(cn, cfg, memory).values()
    assert {k: c.rtl[k] for k in KEYS} == {k: p.counters[k] for k in KEYS}
    assert np.array_equal(run.outputs[layer.name], net(x))
