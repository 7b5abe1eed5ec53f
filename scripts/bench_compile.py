"""Compile time and cycle-model time of a whole ResNet-50 (224x224, batch 1) on the 8x8 and 16x16 presets.

The network is a golden :class:`~systolic.golden.network.QuantizedNetwork` of ResNet-50's shapes with seeded
random int8 weights (torchvision layout, v1.5: the stride on the 3x3 conv of a bottleneck): every convolution
with its batch norm folded is a Conv2D with bias (ReLU where the network has one), residual adds are Add
layers, the stem's 3x3/2 max pool and the global 7x7 average pool run on the host, the classifier is a Dense
layer. Cycles do not depend on the weight values, so random ones time the real thing.

For each preset (``default``: 8x8 WS, ``large``: 16x16 WS) it prints the time of
:func:`systolic.compiler.compile_network` and of the cycle model
(:func:`systolic.report.cycles.predict_network`), the program sizes (instructions, MATMULs) and the
predicted cycles. With ``--reference`` it also times the straightforward compiler and cycle model that the
identity test keeps (tests/compiler/reference_lower.py, the code before the fast paths), checks that they give
the same programs, DRAM image and cycles, and prints the ratio: before and after come from one run.

    python scripts/bench_compile.py [--presets default,large] [--reference] [--profile] [--md out.md]

It prints figures; it asserts nothing about time. ``--profile`` runs cProfile over the fast path and prints
the top functions. ``--md`` writes the table as Markdown (docs/results/compile_speed.md).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import importlib.util
import io
import platform
import pstats
import sys
import time
from pathlib import Path

import numpy as np

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import MachineSpec, Opcode, compile_network
from systolic.compiler.lower import AccelStep
from systolic.golden.layers import Add, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D
from systolic.golden.network import QuantizedNetwork
from systolic.golden.qtypes import QType
from systolic.report.cycles import predict_network

ROOT = Path(__file__).resolve().parent.parent

#: ResNet-50 stages: (bottleneck width, output channels, blocks, stride of the first block).
STAGES = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2))
#: DRAM of the compiled network: weights (~25 M bytes, tile padded) and every activation at batch 1.
DRAM_BYTES = 1 << 26
#: Fractional bits of every activation.
FRAC = 4


def resnet50(seed: int = 0, hw: int = 224, classes: int = 1000) -> QuantizedNetwork:
    """ResNet-50 of *hw* x *hw* x 3 inputs with seeded random int8 weights and biases (batch norm folded)."""
    rng = np.random.default_rng(seed)
    in_t = QType(8, True, FRAC)
    layers = []
    types = {"input": in_t}
    shapes = {"input": (hw, hw, 3)}

    def conv(name, src, cout, k, stride, relu):
        h, w, cin = shapes[src]
        pad = k // 2
        # Shift so that a typical accumulator (sqrt(K) * 64 * 32) lands in the output's upper half.
        shift = max(0, int(np.log2(np.sqrt(k * k * cin) * 64 * 32 / 64)))
        out_t = QType(8, not relu, FRAC)      # every activation at FRAC bits: the weight carries the shift
        layer = Conv2D(name=name, inputs=(src,), weight=rng.integers(-127, 128, (k, k, cin, cout)),
                       w_type=QType(8, True, shift + FRAC - types[src].frac_bits),
                       out_type=out_t, bias=rng.integers(-1 << 12, 1 << 12, cout), relu=relu,
                       stride=stride, padding=pad)
        layers.append(layer)
        types[name] = out_t
        oh = (h + 2 * pad - k) // stride + 1
        ow = (w + 2 * pad - k) // stride + 1
        shapes[name] = (oh, ow, cout)
        return name

    def add(name, a, b):
        f = min(types[a].frac_bits, types[b].frac_bits)
        out_t = QType(8, False, f)
        layers.append(Add(name=name, inputs=(a, b), out_type=out_t, relu=True))
        types[name], shapes[name] = out_t, shapes[a]
        return name

    src = conv("conv1", "input", 64, 7, 2, True)
    layers.append(MaxPool2D(name="pool1", inputs=(src,), pool=3, stride=2, padding=1))
    h, w, c = shapes[src]
    types["pool1"], shapes["pool1"] = types[src], ((h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1, c)
    src = "pool1"
    for s, (width, cout, blocks, stride) in enumerate(STAGES, start=2):
        for b in range(blocks):
            st = stride if b == 0 else 1
            name = f"layer{s}.{b}"
            x = conv(f"{name}.conv1", src, width, 1, 1, True)
            x = conv(f"{name}.conv2", x, width, 3, st, True)
            x = conv(f"{name}.conv3", x, cout, 1, 1, False)
            skip = conv(f"{name}.down", src, cout, 1, st, False) if b == 0 else src
            src = add(f"{name}.add", skip, x)
    h, w, c = shapes[src]
    layers.append(AvgPool2D(name="avgpool", inputs=(src,), pool=(h, w)))
    layers.append(Flatten(name="flat", inputs=("avgpool",)))
    fc = Dense(name="fc", inputs=("flat",), weight=rng.integers(-127, 128, (c, classes)), w_type=QType(8, True, 10),
               out_type=QType(8, True, FRAC),
               bias=rng.integers(-1 << 12, 1 << 12, classes), relu=False)
    layers.append(fc)
    return QuantizedNetwork(in_t, (hw, hw, 3), layers, "half_even", {"model": "resnet50", "random": seed})


def load_reference():
    """tests/compiler/reference_lower.py: the straightforward compiler and cycle model (before the fast paths)."""
    path = ROOT / "tests" / "compiler" / "reference_lower.py"
    spec = importlib.util.spec_from_file_location("reference_lower", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sizes(cn) -> tuple[int, int]:
    """(instructions, MATMULs) of every accelerated program of *cn*."""
    progs = [s.program for s in cn.steps if isinstance(s, AccelStep)]
    return sum(map(len, progs)), sum(1 for p in progs for i in p if i.op == Opcode.MATMUL)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def bench_preset(net, preset, memory, reference=None, profile=False):
    cfg = PRESETS[preset]
    spec = MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES)
    row = dict(preset=preset, array=f"{cfg.rows}x{cfg.cols} {cfg.dataflow}")
    ref = ref_pred = None
    if reference is not None:
        # The reference first, so that its garbage collections do not also walk the fast path's program.
        ref, row["ref_compile_s"] = timed(reference.compile_network, net, spec, 1)
        ref_pred, row["ref_cycles_s"] = timed(reference.predict_network, ref, cfg, memory)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    cn, row["compile_s"] = timed(compile_network, net, spec, 1)
    pred, row["cycles_s"] = timed(predict_network, cn, cfg, memory)
    if prof:
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())
    n_instr, n_mm = sizes(cn)
    row.update(accel_layers=sum(isinstance(s, AccelStep) for s in cn.steps),
               host_layers=sum(not isinstance(s, AccelStep) for s in cn.steps),
               instructions=n_instr, matmuls=n_mm, cycles=sum(p.cycles for p in pred.values()))
    if reference is not None:
        row["identical"] = (reference.same_compiled(cn, ref) and set(pred) == set(ref_pred)
                            and all(pred[k].counters == ref_pred[k] for k in pred))
    return row


def markdown(rows, net_name, memory) -> str:
    ref = all("ref_compile_s" in r for r in rows)
    lines = [
        "# Compile and cycle-model speed: ResNet-50 at 224x224",
        "",
        "Generated by `python scripts/bench_compile.py" + (" --reference" if ref else "")
        + " --md docs/results/compile_speed.md`.",
        "",
        f"Network: {net_name} (golden model, seeded random int8 weights, batch norm folded into conv biases; "
        "max pool and global average pool on the host), batch 1. Cycle model: `predict_network` on "
        f"`{memory}`. Machine: a shared 2-core box ({platform.machine()}, Python {platform.python_version()}) "
        "with another long job running, so times vary by tens of percent between runs.",
        "",
    ]
    cols = ["preset", "array", "accelerated layers (host)", "instructions", "MATMULs", "predicted cycles",
            "compile (s)", "cycle model (s)", "total (s)"]
    if ref:
        cols += ["before: compile (s)", "before: cycle model (s)", "before: total (s)",
                 "speedup (compile, cycle model)", "identical programs, image, cycles"]
    lines += ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        cells = [r["preset"], r["array"], f"{r['accel_layers']} ({r['host_layers']})", f"{r['instructions']:,}",
                 f"{r['matmuls']:,}", f"{r['cycles']:,}", f"{r['compile_s']:.1f}", f"{r['cycles_s']:.1f}",
                 f"{r['compile_s'] + r['cycles_s']:.1f}"]
        if ref:
            cells += [f"{r['ref_compile_s']:.1f}", f"{r['ref_cycles_s']:.1f}",
                      f"{r['ref_compile_s'] + r['ref_cycles_s']:.1f}",
                      f"{r['ref_compile_s'] / r['compile_s']:.1f}x, {r['ref_cycles_s'] / r['cycles_s']:.1f}x",
                      "yes" if r["identical"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\"before\" is the straightforward compiler and cycle model kept in "
              "tests/compiler/reference_lower.py "
              "(the code before the fast paths: one checked `Instr` per instruction, a per-instruction record in the "
              "cycle model, the garbage collector running), timed in the same run, before the fast path; "
              "\"identical\": the same instruction lists (every field), accounting, DRAM image and cycle counters.",
              "", "Target of the issue: a whole ResNet-50 at 224x224 compiled and its cycle model evaluated in <= 30 s "
              "per preset.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="default,large", help="comma-separated presets (default: default,large)")
    ap.add_argument("--hw", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--reference", action="store_true", help="also time the reference (old) path and compare")
    ap.add_argument("--profile", action="store_true", help="cProfile the fast path, print the top functions")
    ap.add_argument("--md", help="write the table as Markdown here")
    args = ap.parse_args(argv)
    memory = MemoryModel()
    net, t_net = timed(resnet50, 0, args.hw)
    name = f"ResNet-50 {args.hw}x{args.hw}"
    print(f"{name}: {len(net.layers)} layers, built in {t_net:.1f} s; memory {memory}", flush=True)
    reference = load_reference() if args.reference else None
    rows = []
    for preset in args.presets.split(","):
        r = bench_preset(net, preset, memory, reference, args.profile)
        rows.append(r)
        msg = (f"{preset:8} {r['array']:9} accel layers {r['accel_layers']:3d} (host {r['host_layers']}): "
               f"{r['instructions']:>9,} instructions, {r['matmuls']:>9,} MATMULs, {r['cycles']:>13,} cycles; "
               f"compile {r['compile_s']:6.1f} s, cycle model {r['cycles_s']:6.1f} s")
        if reference is not None:
            msg += (f"; before: compile {r['ref_compile_s']:6.1f} s, cycle model {r['ref_cycles_s']:6.1f} s "
                    f"({r['ref_compile_s'] / r['compile_s']:.1f}x, {r['ref_cycles_s'] / r['cycles_s']:.1f}x); "
                    f"identical: {r['identical']}")
        print(msg, flush=True)
    if args.md:
        Path(args.md).write_text(markdown(rows, name, memory))
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
