"""``systolic demo``: the main job on its embedded default.

The shipped 8-bit TQT ``digits-cnn`` on the default 8x8 weight-stationary
accelerator: its Verilog generated, all 360 digits test images simulated on
the RTL (the direct Verilator driver; ``--backend cocotb`` for the cocotb
testbench), every layer output compared with the golden model, accuracy and
cycles printed, and a report directory written (report.json, report.md,
plots, the Verilog, demo.json). The work is :func:`systolic.flows.demo`.
"""

from __future__ import annotations

import json

DEFAULT_MODEL = "digits-cnn"
DEFAULT_CONFIG = "default"
#: None: the whole digits test split (360 images).
DEFAULT_IMAGES = None


def _cmd(args) -> int:
    from .arch.memory import MemoryModel
    from .flows import demo
    from .sim.commands import first_mismatch_lines, waves_from_args

    waves = waves_from_args(args)
    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle)
    r = demo(args.model, args.config, args.images, args.out, progress=not args.json, memory=memory,
             backend=args.backend, waves=waves)
    if args.json:
        print(json.dumps(r))
        return 0 if r["bit_exact"] else 1
    print(f"{r['model']} on {r['config']}: {r['images']} digits test images on RTL ({r['backend']} backend)")
    print(f"  RTL == golden on every layer: {'yes' if r['bit_exact'] else 'NO'} "
          f"({r['mismatches']} mismatches in {r['compared_elements']} elements)")
    if r["accuracy_rtl"] is not None:
        print(f"  accuracy: RTL {100 * r['accuracy_rtl']:.2f}%, golden {100 * r['accuracy_golden']:.2f}%")
    print(f"  cycles: {r['cycles']} ({r['cycles_per_image']:.0f} per image; analytic model "
          f"{r['cycles_predicted']})")
    host = [f"{h['layer']} ({h['reason']})" for h in r["host_layers"]]
    print(f"  on the accelerator: {', '.join(k for k, v in r['placement'].items() if v == 'accelerator')}")
    print(f"  on the host: {'; '.join(host) or 'none'}")
    print(f"  time: {r['seconds']:.1f} s (build {r['build_seconds']:.1f} s, simulation {r['simulation_seconds']:.1f} s)")
    print(f"  report: {r['report_dir']}/report.md")
    if waves is not None:
        print(f"  waves: {waves.path} ({waves.format.upper()}; open it with GTKWave or Surfer)")
    for line in first_mismatch_lines(r["first_mismatch"], r["backend"]):
        print(f"  {line}")
    return 0 if r["bit_exact"] else 1


def register(sub) -> None:
    from .sim.commands import add_waves_arguments

    p = sub.add_parser("demo", help="the main job: a shipped digits network on the accelerator RTL, checked bit for bit",
                       description="Compile the shipped digits-cnn for the default 8x8 weight-stationary "
                                   "accelerator, generate its Verilog, simulate the digits test images "
                                   "on the RTL (Verilator), check every layer against the golden "
                                   "model, and write a report directory. Exit code 1 unless bit-exact.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or .npz file (default: %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="preset name or config JSON (default: %(default)s)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="test images (default: all 360)")
    p.add_argument("--backend", choices=("direct", "cocotb", "amaranth"), default="direct",
                   help="RTL backend: the direct Verilator driver (fast), the cocotb testbench or amaranth.sim "
                        "(slow, no build) (default: %(default)s)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency, cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64, help="memory bandwidth (default: %(default)s)")
    p.add_argument("--out", default="demo-report", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_waves_arguments(p)
    p.set_defaults(func=_cmd)
