"""Cycles, utilization and the ratio to the ideal compute bound for GEMM / conv layers (cycle model, no RTL).

For each shape (the digits layers up to ResNet-18 layers; weights are
random: cycles do not depend on values), dataflow (ws, os) and array size
(4x4, 8x8, 16x16) the layer is compiled as a one-layer network and its
program timed with the exact cycle model (:mod:`systolic.report.cycles`,
0 cycles of error against the RTL on a memory without random stalls:
tests/sim/test_cycle_model.py) on ``MemoryModel()`` (latency 2, 64 bytes /
cycle: one request per cycle for buses up to 64 bytes).

Columns:

* ``cycles``: predicted RTL cycles (start to HALT) of the layer's program;
* ``ideal``: the compute bound ``ceil-tiled MACs / (rows*cols)`` with K, N
  rounded up to the array tiles (``M*ceil(K/R)*ceil(N/C)`` array passes of
  one row each), and on output-stationary M too (``ceil(M/R)*R``: a chunk of
  ``R`` output rows takes ``R`` steps however many rows are real);
* ``util``: useful MACs / (cycles * rows * cols);
* ``x ideal``: cycles / ideal (1.00 = the array never waits);
* ``arr%``: share of cycles the array unit is busy (``matmul_busy``; MATMULs
  overlap the controller's work);
* ``ld%`` / ``st%``: share of cycles the controller spends in LOAD / STORE
  (overlapping the array);
* ``wait%``: share of cycles the controller is held by an interlock (the
  array is the bottleneck);
* ``mem%``: share of cycles the array is idle while the controller waits
  on memory (``idle_mem_stall``).

Scratchpads scale with the array as the presets do (4x4: ``small``, 8x8:
``default``, 16x16: ``large``, with the dataflow swapped). Then a one-line
summary of the utilization goals (:data:`GOALS`), each with its lowest row.

    python scripts/bench_cycles.py [--quick] [--json out.json] [--check-rtl] [--compare before.json]

``--compare`` adds a Markdown table of every row's cycles and utilization
against an earlier ``--json`` run (docs/results/cycles.md keeps one).

``--check-rtl`` first runs the digits shapes on the Verilated RTL (4x4 os =
``small``, 8x8 ws = ``default``; builds cached) and checks that the RTL's
cycle counters equal the model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

import numpy as np

from systolic.compiler import MachineSpec, compile_network
from systolic.golden.layers import Conv2D, Dense
from systolic.golden.network import QuantizedNetwork
from systolic.golden.qtypes import QType
from systolic.arch.config import PRESETS
from systolic.report.cycles import predict_network
from systolic.arch.memory import MemoryModel

#: name -> ("gemm", M, K, N) or ("conv", H, W, Cin, Cout, k, stride[, batch])
SHAPES = {
    "digits fc1 (mlp)": ("gemm", 32, 64, 64),
    "digits conv 8x8x1->16": ("conv", 8, 8, 1, 16, 3, 1),
    "digits conv 8x8x16->16": ("conv", 8, 8, 16, 16, 3, 1),
    "gemm 256x512x128": ("gemm", 256, 512, 128),
    "r18 conv2 56x56x64->64": ("conv", 56, 56, 64, 64, 3, 1),
    "r18 conv3 28x28x128->128": ("conv", 28, 28, 128, 128, 3, 1),
    "r18 conv4 14x14x256->256": ("conv", 14, 14, 256, 256, 3, 1),
    "r18 conv5 7x7x512->512": ("conv", 7, 7, 512, 512, 3, 1),
    # Batch 4: 196 output rows; at batch 1 the 49 rows fill 4 chunks of 16 on a 16x16 output-stationary array.
    "r18 conv5 7x7x512->512 x4": ("conv", 7, 7, 512, 512, 3, 1, 4),
}
QUICK = ("digits fc1 (mlp)", "digits conv 8x8x16->16", "gemm 256x512x128")
ARRAYS = {4: "small", 8: "default", 16: "large"}


def config_for(n: int, dataflow: str):
    return dataclasses.replace(PRESETS[ARRAYS[n]], dataflow=dataflow)


def one_layer(shape, seed=0, weights=True):
    """A one-layer network of *shape* with random int8 weights; returns (net, batch, M, K, N)."""
    rng = np.random.default_rng(seed)
    in_t, w_t = QType(8, True, 6), QType(8, True, 6)
    out_t = QType(8, True, 2)   # shift 10
    if shape[0] == "gemm":
        _, M, K, N = shape
        if not weights:
            return None, M, M, K, N
        w = rng.integers(-64, 64, size=(K, N))
        layer = Dense(name="l", inputs=("input",), weight=w, w_type=w_t, out_type=out_t, bias=None, relu=False)
        return QuantizedNetwork(in_t, (K,), [layer], "half_even", {}), M, M, K, N
    _, H, W, cin, cout, k, s, *rest = shape
    batch = rest[0] if rest else 1
    oh = (H + 2 * (k // 2) - k) // s + 1
    ow = (W + 2 * (k // 2) - k) // s + 1
    if not weights:
        return None, batch, batch * oh * ow, k * k * cin, cout
    w = rng.integers(-64, 64, size=(k, k, cin, cout))
    layer = Conv2D(name="l", inputs=("input",), weight=w, w_type=w_t, out_type=out_t, bias=None, relu=True,
                   stride=s, padding=k // 2)
    return QuantizedNetwork(in_t, (H, W, cin), [layer], "half_even", {}), batch, batch * oh * ow, k * k * cin, cout


def matmuls(shape, cfg) -> int:
    """MATMUL instructions the compiler emits for *shape* on *cfg* (to skip programs too long for Python)."""
    _, batch, M, K, N = one_layer(shape, weights=False)
    spec = MachineSpec.from_config(cfg)
    kc = math.ceil(K / cfg.rows)
    if kc > spec.a_lines:     # the K-split schedule: rows in halves of scratchpad A (an estimate)
        if spec.a_lines < 2:
            return None       # the compiler refuses: too few lines to split K
        return math.ceil(M / min(spec.a_lines // 2, spec.acc_lines, M)) * math.ceil(N / cfg.cols) * kc
    mt = min(spec.a_lines // kc, spec.acc_lines, M)
    if mt < M and spec.a_lines // (2 * kc) >= 1:   # the compiler double-buffers scratchpad A
        mt = min(spec.a_lines // (2 * kc), spec.acc_lines, M)
    return math.ceil(M / mt) * math.ceil(N / cfg.cols) * kc


def compiled(shape, cfg):
    net, batch, M, K, N = one_layer(shape)
    nbytes = 2 * (batch * int(np.prod(net.input_shape)) + M * N) + 2 * K * N + (1 << 16)
    dram = 1 << max(16, math.ceil(math.log2(nbytes)))
    return compile_network(net, MachineSpec.from_config(cfg, dram_bytes=dram), batch=batch), (M, K, N)


def check_rtl(memory) -> str:
    """The digits shapes on the RTL: every cycle / busy / stall counter equals the model's."""
    from systolic.golden.random import random_input
    from systolic.sim.system import run_network_rtl

    keys = None
    n = 0
    for name, shape in SHAPES.items():
        if not name.startswith("digits"):
            continue
        for size, df in ((4, "os"), (8, "ws")):
            cfg = config_for(size, df)
            cn, _ = compiled(shape, cfg)
            (p,) = predict_network(cn, cfg, memory).values()
            (c,) = run_network_rtl(cn, random_input(cn.net, cn.batch, 0), cfg, memory).counters.values()
            keys = keys or [k for k in p.counters]
            got = {k: c.rtl[k] for k in keys}
            if got != p.counters:
                raise SystemExit(f"RTL != model for {name} on {size}x{size} {df}: {got} vs {p.counters}")
            n += 1
    return f"RTL check: {n} runs, cycles and every unit's busy/stall counter equal the model's"


def bench(shape, cfg, memory):
    cn, (M, K, N) = compiled(shape, cfg)
    (p,) = predict_network(cn, cfg, memory).values()
    R, C = cfg.rows, cfg.cols
    m_rows = R * math.ceil(M / R) if cfg.dataflow == "os" else M
    ideal = m_rows * math.ceil(K / R) * math.ceil(N / C)
    c = p.counters
    return {"M": M, "K": K, "N": N, "cycles": p.cycles, "ideal": ideal, "util": M * K * N / (p.cycles * R * C),
            "x_ideal": p.cycles / ideal, "matmul": c["matmul_busy"] / p.cycles, "load": c["load_busy"] / p.cycles,
            "store": c["store_busy"] / p.cycles, "wait": c["wait_busy"] / p.cycles,
            "mem_stall": c["idle_mem_stall"] / p.cycles, "instructions": len(p.instructions)}


#: Utilization goals (the GEMM on 16x16 WS; every ResNet-18 conv on 8x8 and 16x16 WS; the large layers on 16x16 OS).
GOALS = {"gemm": 0.95, "r18 ws": 0.90, "large os": 0.90}


def summary(rows, seconds) -> str:
    """The one-line summary: the utilization goals, each with its worst row and whether it is met."""
    def goal(label, sel, target):
        if not sel:
            return None
        worst = min(sel, key=lambda r: r["util"])
        bound = worst["util"] * worst["x_ideal"]      # the utilization at the ideal cycles
        why = f"; at most {100 * bound:.1f}% at its ideal cycles" if bound < target else ""
        return (f"{label} >= {100 * target:.0f}%: {'met' if worst['util'] >= target else 'NOT met'} (lowest "
                f"{100 * worst['util']:.1f}%, {worst['shape'].split()[0] + ' ' + worst['shape'].split()[1]} "
                f"{worst['dataflow']} {worst['array']}{why})")
    parts = [
        goal("GEMM 256x512x128 16x16 ws", [r for r in rows if r["shape"] == "gemm 256x512x128"
                                          and r["dataflow"] == "ws" and r["array"] == "16x16"], GOALS["gemm"]),
        goal("ResNet-18 convs 8x8/16x16 ws", [r for r in rows if r["shape"].startswith("r18") and r["dataflow"] == "ws"
                                             and r["array"] in ("8x8", "16x16")], GOALS["r18 ws"]),
        goal("large layers 16x16 os", [r for r in rows if r["dataflow"] == "os" and r["array"] == "16x16"
                                       and r["M"] * r["K"] * r["N"] >= 1 << 24], GOALS["large os"]),
    ]
    return f"summary: {len(rows)} runs in {seconds:.1f} s; " + "; ".join(p for p in parts if p)


def _load_rows(path) -> list:
    with open(path) as f:
        rows = json.load(f).get("rows")
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: not a bench_cycles --json file (no list of rows)")
    return rows


def compare(before: list, after: list) -> str:
    """A Markdown table: cycles and utilization of every row before and after (rows keyed by shape, dataflow,
    array; a row the earlier run did not have shows as not run)."""
    def key(r):
        return r["shape"], r["dataflow"], r["array"]

    old = {key(r): r for r in before}
    out = ["| shape | df | array | cycles before | cycles after | util before | util after |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in after:
        b = old.get(key(r))
        cb, ub = (f"{b['cycles']:,}", f"{100 * b['util']:.1f}%") if b else ("not run", "–")
        out.append(f"| {r['shape']} | {r['dataflow']} | {r['array']} | {cb} | {r['cycles']:,} | {ub} | "
                   f"{100 * r['util']:.1f}% |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the small shapes and the 256x512x128 GEMM")
    ap.add_argument("--json", help="write every row as JSON here")
    ap.add_argument("--max-matmuls", type=int, default=None,
                    help="skip a run whose program has more MATMULs than this (default: no limit; every row "
                         "compiles in seconds since the compiler's fast paths)")
    ap.add_argument("--check-rtl", action="store_true", help="first check the model against the RTL (digits shapes)")
    ap.add_argument("--compare", metavar="BEFORE.json",
                    help="also print a Markdown before/after table of every row against an earlier --json run")
    args = ap.parse_args(argv)
    memory = MemoryModel()
    if args.check_rtl:
        print(check_rtl(memory), flush=True)
    shapes = {k: v for k, v in SHAPES.items() if not args.quick or k in QUICK}
    t0 = time.perf_counter()
    rows = []
    print(f"memory: {memory}")
    print(f"{'shape':26} {'df':2} {'array':>5} {'M':>6} {'K':>5} {'N':>4} {'cycles':>10} {'ideal':>10} "
          f"{'util':>6} {'x ideal':>7} {'arr%':>5} {'ld%':>5} {'st%':>5} {'wait%':>5} {'mem%':>5}")
    for name, shape in shapes.items():
        for df in ("ws", "os"):
            for n in ARRAYS:
                cfg = config_for(n, df)
                mm = matmuls(shape, cfg)
                if mm is None or (args.max_matmuls is not None and mm > args.max_matmuls):
                    why = "K does not fit scratchpad A" if mm is None else f"{mm} MATMULs > --max-matmuls"
                    print(f"{name:26} {df:2} {n:2d}x{n:<2d} skipped: {why}")
                    continue
                r = bench(shape, cfg, memory)
                r.update(shape=name, dataflow=df, array=f"{n}x{n}")
                rows.append(r)
                print(f"{name:26} {df:2} {r['array']:>5} {r['M']:6d} {r['K']:5d} {r['N']:4d} {r['cycles']:10d} "
                      f"{r['ideal']:10d} {100 * r['util']:5.1f}% {r['x_ideal']:7.2f} {100 * r['matmul']:5.1f} "
                      f"{100 * r['load']:5.1f} {100 * r['store']:5.1f} {100 * r['wait']:5.1f} {100 * r['mem_stall']:5.1f}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"memory": memory.to_dict(), "rows": rows}, f, indent=1)
    print(summary(rows, time.perf_counter() - t0))
    if args.compare:
        print(compare(_load_rows(args.compare), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
