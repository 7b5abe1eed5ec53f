"""Run a covering set of accelerator configs on the RTL and print a Markdown table.

Each config is built with Verilator (cocotb's runner, cached like the tests;
``--fresh`` builds into a new temporary cache so build times are real), then
random requantized GEMMs with rounding ties and saturation
(:func:`systolic.sim.core.cases.random_gemm_cases`) run in one simulation with
random idle input cycles and output back-pressure, and every output is
compared with the golden model by exact integer equality.

Usage::

    python scripts/hw_table.py [--cases N] [--seed S] [--fresh] [--simulator verilator|icarus]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from systolic.arch.config import AcceleratorConfig
from systolic.sim import build_rtl, run_gemm_batch
from systolic.sim.core.cases import random_gemm_cases, tie_and_saturation_counts
from systolic.sim.core.driver import golden_gemm


def covering_configs() -> list[AcceleratorConfig]:
    """Every array size of the test matrix, both dataflows, 4/8-bit, both rounding modes."""
    def cfg(r, c, dataflow, bits, rounding, **kw):
        base = dict(rows=r, cols=c, dataflow=dataflow, in_bits=bits, w_bits=bits, out_bits=bits,
                    rounding=rounding, acc_bits=16 if bits == 4 else 32)
        base.update(kw)
        return AcceleratorConfig(**base)

    return [
        cfg(1, 1, "ws", 8, "half_even"),
        cfg(1, 1, "os", 4, "half_up"),
        cfg(2, 3, "ws", 4, "half_up"),
        cfg(2, 3, "os", 8, "half_even"),
        cfg(4, 4, "ws", 8, "half_up", per_channel_shift=False),
        cfg(4, 4, "os", 4, "half_even", in_signed=False, out_signed=False),
        cfg(8, 8, "ws", 8, "half_even"),
        cfg(8, 8, "os", 8, "half_up"),
        cfg(16, 16, "ws", 8, "half_even"),
        cfg(16, 16, "os", 4, "half_up", out_signed=False),
    ]


def run_table(configs, n_cases: int = 8, seed: int = 0, simulator: str = "verilator",
              cache_dir=None) -> list[dict]:
    rows = []
    for cfg in configs:
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        build = build_rtl(cfg, simulator, cache_dir)
        build_wall = time.perf_counter() - t0
        cases = random_gemm_cases(cfg, rng, n_cases)
        stats = []
        t0 = time.perf_counter()
        results = run_gemm_batch(cfg, cases, simulator, seed=seed, idle=0.3, stall=0.3,
                                 cache_dir=cache_dir, stats=stats)
        sim_wall = time.perf_counter() - t0
        elements = mismatches = ties = saturated = 0
        for case, got in zip(cases, results):
            want = golden_gemm(cfg, case["a"], case["w"], case["bias"], case["shift"], case["relu"])
            elements += want.size
            mismatches += int(np.sum(got != want)) if got.shape == want.shape else want.size
            t, s = tie_and_saturation_counts(cfg, case)
            ties += t
            saturated += s
        rows.append({
            "config": cfg.name, "size": f"{cfg.rows}x{cfg.cols}", "cases": len(cases),
            "elements": elements, "mismatches": mismatches, "ties": ties, "saturated": saturated,
            "build_s": build.build_seconds, "cached": build.cached, "build_wall_s": build_wall,
            "cycles": sum(s.cycles for s in stats), "sim_s": sim_wall,
        })
    return rows


def markdown(rows, simulator="verilator") -> str:
    out = [f"| config | cases | elements compared | mismatches | ties | saturated | "
           f"{simulator} build (s) | sim cycles | sim wall (s) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        build = f"{r['build_s']:.1f}" + (" (cached)" if r["cached"] else "")
        out.append(f"| `{r['config']}` | {r['cases']} | {r['elements']} | {r['mismatches']} | "
                   f"{r['ties']} | {r['saturated']} | {build} | {r['cycles']} | {r['sim_s']:.1f} |")
    by_size = defaultdict(list)
    for r in rows:
        by_size[r["size"]].append(r["build_s"])
    out += ["", f"| array | {simulator} build time (s), per config |", "|---|---|"]
    for size, times in by_size.items():
        out.append(f"| {size} | {', '.join(f'{t:.1f}' for t in times)} |")
    total = sum(r["mismatches"] for r in rows)
    out += ["", f"total: {sum(r['elements'] for r in rows)} elements compared, {total} mismatches"]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=8, help="GEMM cases per config (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    ap.add_argument("--fresh", action="store_true",
                    help="build into a new temporary cache (real build times)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hw_table-") as tmp:
        rows = run_table(covering_configs(), args.cases, args.seed, args.simulator,
                         cache_dir=tmp if args.fresh else None)
    print(markdown(rows, args.simulator))
    return 1 if any(r["mismatches"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
