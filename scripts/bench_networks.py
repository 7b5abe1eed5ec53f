"""Whole ImageNet-shaped networks (ResNet-18, ResNet-50, MobileNetV2 at 224x224, batch 1) on 8x8 and 16x16,
both dataflows: cycles, utilization, energy, and the time to compile, to run the cycle model and to count the
events on the NumPy executor.

The networks are the zoo's ``resnet18-imagenet``, ``resnet50-imagenet`` and ``mobilenetv2-imagenet``
(:mod:`systolic.models.imagenet`): the real layer shapes with seeded random weights, so **no accuracy is
claimed**; cycles, traffic and energy do not depend on the weight values. Arrays: 8x8 = the ``default``
preset, 16x16 = ``large`` (scratchpads, accumulator and bus of the preset), each with both dataflows; DRAM
sized to the network; memory ``MemoryModel()``. Per run: compile
(:func:`systolic.flows.compile_checked`), the cycle model (:func:`systolic.report.cycles.predict_network`,
equal to the RTL counters), one image on the executor (:func:`systolic.compiler.run_compiled`: its event
counts give the energy, its outputs are compared with the golden model's), then the report of
``systolic report`` (:func:`systolic.report.report.build_report`). Every layer of these networks runs on
the accelerator (pooling and residual adds on the vector unit, depthwise convolutions on the array); a layer
that did not would be listed as a host layer, its work in neither the cycles nor the energy.

    python scripts/bench_networks.py [--networks resnet18-imagenet,...] [--arrays 8,16] [--dataflows ws,os]
                                     [--md docs/results/imagenet.md] [--json OUT.json] [--reports DIR]
                                     [--rtl resnet50-imagenet:16:ws,...]

It prints one row per run as it goes and asserts nothing about time. ``--md`` writes the table as Markdown
(docs/results/imagenet.md); ``--reports DIR`` writes each run's report (report.md, report.json, plots of
per-layer cycles, utilization and energy by component) into ``DIR/<network>-<array>-<dataflow>/``.

``--rtl NETWORK:ARRAY:DATAFLOW,...`` also runs one image of each on the accelerator RTL (the direct Verilator
driver): ``systolic simulate --images 1`` in a child process, after the simulator is built here (its build
time as recorded in the build cache), so the child's peak resident memory (its ``VmHWM``) is that of compiling,
the golden model and the RTL run of that image, every layer compared with the golden model and the RTL
cycles with the cycle model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import run_compiled
from systolic.flows import compile_checked, split_cycles
from systolic.golden.random import random_input
from systolic.models.imagenet import IMAGENET, imagenet_network
from systolic.report.cycles import predict_network
from systolic.report.report import build_report, records_from_run, write_report

ARRAYS = {8: "default", 16: "large"}


def run(name: str, net, size: int, dataflow: str, memory: MemoryModel, reports: Path | None) -> dict:
    cfg = dataclasses.replace(PRESETS[ARRAYS[size]], dataflow=dataflow)
    t = time.perf_counter()
    cn = compile_checked(net, cfg, 1)
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    pred = predict_network(cn, cfg, memory)
    t_model = time.perf_counter() - t
    x = random_input(net, 1, 0)
    t = time.perf_counter()
    outs, counters = run_compiled(cn, x)
    t_exec = time.perf_counter() - t
    exact = bool(np.array_equal(outs[net.output_name], net(x)))
    cycles = {layer: {**split_cycles(p.counters), "predicted": p.cycles} for layer, p in pred.items()}
    rep = build_report(records_from_run(cn, counters, cycles), cfg, counts_source="executor",
                       cycles_source="cycle-model", extra={"model": name, "images": 1})
    if reports is not None:
        write_report(rep, reports / f"{name}-{size}x{size}-{dataflow}")
    tot = rep["totals"]
    return {"network": name, "array": f"{size}x{size}", "dataflow": dataflow, "cycles": tot["cycles"],
            "macs": tot["useful_macs"], "utilization": tot["utilization"],
            "energy_uj": tot["dynamic_energy_pj"] / 1e6, "dram_bytes": cn.spec.dram_bytes,
            "instructions": sum(len(getattr(s, "program", ())) for s in cn.steps),
            "host_layers": len(rep["host_layers"]), "host_kinds": _host_kinds(net, rep["host_layers"]),
            "compile_s": t_compile, "model_s": t_model, "executor_s": t_exec, "golden_equal": exact}


#: A child process running ``systolic <args>`` that writes its peak resident memory (``VmHWM`` of
#: /proc/self/status, KiB) to the file named by its first argument when the command returns. Not ``wait4``'s
#: ``ru_maxrss``: that high-water mark survives ``exec``, so a child of this (large) process would report
#: this process's size.
_PEAK_RSS = """
import sys
from systolic.cli import main
code = main(sys.argv[2:])
status = open("/proc/self/status").read()
kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
open(sys.argv[1], "w").write(kib)
sys.exit(code)
"""


def rtl_run(name: str, size: int, dataflow: str) -> dict:
    """One image of network *name* on the *size* x *size* RTL: the simulator built here (or found in the
    cache; its build time as recorded then), then ``systolic simulate`` in a child process that reports its
    peak RSS (:data:`_PEAK_RSS`)."""
    from systolic.sim.build import MARKER
    from systolic.sim.direct import build_direct

    cfg = dataclasses.replace(PRESETS[ARRAYS[size]], dataflow=dataflow)
    build_s = json.loads((build_direct(cfg) / MARKER).read_text())["seconds"]   # as recorded when it was built
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        cfg_file.write_text(json.dumps(cfg.to_dict()))
        hwm = Path(tmp) / "vmhwm"
        t = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", _PEAK_RSS, str(hwm), "simulate", "--config", str(cfg_file),
                                "--model", name, "--images", "1", "--no-progress", "--json", str(out)],
                               stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        if not out.exists() or not hwm.exists():
            raise SystemExit(f"systolic simulate of {name} on {size}x{size} {dataflow} failed (exit {code}) "
                             f"before writing its summary")
        o = json.loads(out.read_text())
        peak_kib = int(hwm.read_text())
    return {"network": name, "array": f"{size}x{size}", "dataflow": dataflow, "mismatches": o["mismatches"],
            "compared": o["compared_elements"], "cycles": o["cycles"], "cycles_model": o["cycles_predicted"],
            "host_layers": len(o["host_layers"]), "build_s": build_s, "wall_s": wall, "rtl_s": o["rtl_seconds"],
            "cycles_per_s": o["cycles_per_second"], "peak_rss_mib": peak_kib / 1024}


def _rtl_line(r) -> str:
    return (f"RTL {r['network']:22s} {r['array']:>5s} {r['dataflow']:3s} {r['cycles']:>12,} cycles "
            f"(model {'equal' if r['cycles'] == r['cycles_model'] else 'DIFFERS'}), {r['mismatches']} mismatches of "
            f"{r['compared']:,}; build {r['build_s']:.0f} s, wall {r['wall_s']:.0f} s (RTL {r['rtl_s']:.0f} s, "
            f"{r['cycles_per_s']:,.0f} cycles/s), peak RSS {r['peak_rss_mib']:,.0f} MiB")


def _rtl_markdown(rows) -> list[str]:
    if not rows:
        return []
    out = ["", "## On the RTL", "",
           "One image of each on the accelerator RTL (the direct Verilator driver, `systolic simulate --images 1` "
           "in a child process), every tensor of every layer compared with the golden model; RTL cycles are the "
           "hardware's counters, compared with the cycle model's total. Build: Verilating and compiling the "
           "system (once per config, cached after; the time recorded when it was built). Wall: the child process "
           "from start to exit (compile, golden model, RTL run, checks); RTL: the time inside accelerator "
           "programs. Peak RSS: the child's maximum resident memory (`VmHWM`), the build excluded (done before "
           "it). The `--layers` option of `systolic simulate` runs a subset of the layers, each on its golden "
           "inputs.", "",
           "| network | array | dataflow | mismatches / compared | RTL cycles | cycle model | build (s) | "
           "wall (s) | RTL (s) | cycles/s | peak RSS (MiB) | host layers |",
           "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        model = "equal" if r["cycles"] == r["cycles_model"] else f"{r['cycles_model']:,} (differs)"
        out.append(f"| {r['network']} | {r['array']} | {r['dataflow']} | {r['mismatches']} / {r['compared']:,} | "
                   f"{r['cycles']:,} | {model} | "
                   f"{r['build_s']:.0f} | {r['wall_s']:.0f} | {r['rtl_s']:.0f} | {r['cycles_per_s']:,.0f} | "
                   f"{r['peak_rss_mib']:,.0f} | {r['host_layers'] or 'none'} |")
    return out


def _host_cell(r) -> str:
    """The host-layers cell: ``none``, or the count and the kinds."""
    if not r["host_layers"]:
        return "none"
    return f"{r['host_layers']} ({', '.join(f'{k} x{n}' for k, n in r['host_kinds'].items())})"


def _host_kinds(net, host_layers) -> dict:
    """How many host layers of each kind (a grouped convolution counted as ``depthwise conv``)."""
    kinds = {}
    for h in host_layers:
        layer = net.layer(h["layer"])
        kind = "depthwise conv" if getattr(layer, "groups", 1) > 1 else layer.kind
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _line(r) -> str:
    return (f"{r['network']:22s} {r['array']:>5s} {r['dataflow']:3s} {r['cycles']:>12,} {100 * r['utilization']:6.1f}% "
            f"{r['energy_uj']:10.1f} uJ {r['instructions']:>10,} {r['compile_s']:7.1f} s {r['model_s']:6.1f} s "
            f"{r['executor_s']:7.1f} s host {r['host_layers']:3d} {'equal' if r['golden_equal'] else 'DIFFER'}")


def markdown(rows, memory, seconds, rtl_rows=()) -> str:
    out = ["# ImageNet-shaped networks: cycles, utilization, energy (`scripts/bench_networks.py`)", "",
           "Regenerated by `python scripts/bench_networks.py --md docs/results/imagenet.md`; do not edit by hand.",
           "",
           "ResNet-18, ResNet-50 (v1.5) and MobileNetV2 at 224x224x3, batch 1, with **seeded random weights: no "
           "accuracy is claimed**; cycles, traffic and energy do not depend on the weight values. Cycles from the "
           "cycle model (equal to the RTL counters), energy from the executor's event counts and the sourced 45 nm "
           "table (dynamic only). Utilization = useful MACs / (cycles x PEs) of the layers the accelerator runs. "
           "Every layer runs on the accelerator: convolutions and the classifier on the array (MobileNetV2's "
           "depthwise convolutions as block-diagonal dense ones, so at most 1/rows of the array does useful work "
           "on them, docs/isa.md), max pool, global average pool and residual adds on the vector unit (VEC, DIV). "
           "A layer that did not would be counted under host layers, its work in neither the cycles nor the "
           "energy. Times: one run each on a shared 2-core machine (they vary by about +-30 %).", "",
           f"Memory: `{memory!r}`. Machine: {platform.machine()}, Python {platform.python_version()}; "
           f"{len(rows)} runs in {seconds:.0f} s.", "",
           "Per-layer reports (report.md, report.json, plots of cycles, utilization and energy by component) of the "
           "16x16 weight-stationary runs are in [imagenet/](imagenet/) (`python scripts/bench_networks.py --arrays 16 "
           "--dataflows ws --reports docs/results/imagenet`).", "",
           "| network | array | dataflow | cycles | MACs | utilization | energy (uJ) | instructions | DRAM | "
           "compile (s) | cycle model (s) | executor (s) | host layers | outputs = golden |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        out.append(f"| {r['network']} | {r['array']} | {r['dataflow']} | {r['cycles']:,} | {r['macs']:,} | "
                   f"{100 * r['utilization']:.1f}% | {r['energy_uj']:,.0f} | {r['instructions']:,} | "
                   f"{r['dram_bytes'] >> 20} MiB | {r['compile_s']:.1f} | {r['model_s']:.1f} | {r['executor_s']:.1f} | "
                   f"{_host_cell(r)} | "
                   f"{'yes' if r['golden_equal'] else 'NO'} |")
    return "\n".join(out + _rtl_markdown(rtl_rows)) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", default=",".join(IMAGENET))
    ap.add_argument("--arrays", default="8,16", help="array sizes: 8 (default preset), 16 (large)")
    ap.add_argument("--dataflows", default="ws,os")
    ap.add_argument("--md", help="write the table as Markdown here")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--reports", help="write each run's report directory under this folder")
    ap.add_argument("--rtl", default="", metavar="NETWORK:ARRAY:DATAFLOW,...",
                    help="also run one image of each of these on the RTL, e.g. resnet50-imagenet:16:ws")
    args = ap.parse_args(argv)
    names = [n for n in args.networks.split(",") if n]
    unknown = [n for n in names if n not in IMAGENET]
    if unknown:
        ap.error(f"unknown network(s) {', '.join(unknown)}; they are {', '.join(IMAGENET)}")
    sizes = [int(s) for s in args.arrays.split(",") if s]
    if any(s not in ARRAYS for s in sizes):
        ap.error(f"--arrays takes {', '.join(map(str, ARRAYS))}")
    dataflows = [d for d in args.dataflows.split(",") if d]
    if any(d not in ("ws", "os") for d in dataflows):
        ap.error("--dataflows takes ws, os")
    rtl = []
    for spec in filter(None, args.rtl.split(",")):
        parts = spec.split(":")
        if (len(parts) != 3 or parts[0] not in IMAGENET or parts[1] not in {str(a) for a in ARRAYS}
                or parts[2] not in ("ws", "os")):
            ap.error(f"--rtl takes NETWORK:ARRAY:DATAFLOW with a network of {', '.join(IMAGENET)}, an array of "
                     f"{', '.join(map(str, ARRAYS))} and ws or os, not {spec!r}")
        rtl.append((parts[0], int(parts[1]), parts[2]))
    memory = MemoryModel()
    reports = Path(args.reports) if args.reports else None
    rows, t0 = [], time.perf_counter()
    for name in names:
        net = imagenet_network(name)
        for size in sizes:
            for df in dataflows:
                r = run(name, net, size, df, memory, reports)
                print(_line(r), flush=True)
                rows.append(r)
    seconds = time.perf_counter() - t0
    rtl_rows = []
    for name, size, df in rtl:
        r = rtl_run(name, size, df)
        print(_rtl_line(r), flush=True)
        rtl_rows.append(r)
    if args.md:
        Path(args.md).write_text(markdown(rows, memory, seconds, rtl_rows))
        print(f"wrote {args.md}")
    if args.json:
        Path(args.json).write_text(json.dumps({"memory": repr(memory), "seconds": seconds, "rows": rows,
                                               "rtl": rtl_rows}, indent=1))
        print(f"wrote {args.json}")
    ok = all(r["golden_equal"] for r in rows) and all(r["mismatches"] == 0 for r in rtl_rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
