"""Simulation command: ``simulate`` (a compiled network on the Accelerator RTL; the work is
:func:`systolic.flows.simulate`), and the waveform options ``simulate`` and ``demo`` share."""

from __future__ import annotations

import argparse
import json
import sys


def _cycle(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"a cycle number >= 0, not {text!r}")
    return n


def add_waves_arguments(p) -> None:
    """``--waves FILE`` and its limits (``--waves-from``, ``--waves-to``, ``--waves-layer``) on parser *p*."""
    g = p.add_argument_group("waveforms")
    g.add_argument("--waves", metavar="FILE",
                   help="write a waveform file of the run: FST, or VCD if FILE ends in .vcd (direct and cocotb "
                        "backends; a tracing build, cached beside the fast one)")
    g.add_argument("--waves-from", type=_cycle, default=None, metavar="CYCLE",
                   help="trace from this cycle on (counted from reset over the whole run, or from the start of "
                        "the --waves-layer program; direct backend)")
    g.add_argument("--waves-to", type=_cycle, default=None, metavar="CYCLE",
                   help="trace up to this cycle, excluded (direct backend)")
    g.add_argument("--waves-layer", metavar="NAME", default=None,
                   help="trace only while this layer's program runs (each time it runs; direct backend)")


def waves_from_args(args):
    """The :class:`~systolic.sim.backend.Waves` the arguments ask for (checked: one-line errors), or None."""
    from .backend import Waves

    if args.waves is None:
        given = [o for o, v in (("--waves-from", args.waves_from), ("--waves-to", args.waves_to),
                                ("--waves-layer", args.waves_layer)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --waves FILE")
        return None
    return Waves(args.waves, args.waves_from or 0, args.waves_to, args.waves_layer)


def first_mismatch_lines(m: dict | None, backend: str = "direct") -> list[str]:
    """What to print about the first element that differs from the golden model (``first_mismatch`` of a run)."""
    if not m:
        return []
    where = f"[{', '.join(map(str, m['element']))}]"
    lines = [f"first mismatch: layer {m['layer']}, image {m['image']}, element {where} (index {m['index']} of "
             f"the image's output): RTL {m['rtl']}, golden {m['golden']}"]
    lo, hi = m["batch_images"]
    size = lo // m["batch"] if m["batch"] else hi - lo
    if m["program_cycles"] is not None:
        lines.append(f"  in batch {m['batch']} (images {lo}..{hi - 1}), whose {m['layer']} program ran "
                     f"{m['program_cycles']} cycles; its waves: the same command with --images {hi} --batch {size} "
                     f"--waves FILE --waves-layer {m['layer']}" + ("" if backend == "direct" else " --backend direct"))
    else:
        lines.append(f"  in batch {m['batch']} (images {lo}..{hi - 1}); {m['layer']} runs on the host, so its "
                     f"input differs: look at the layer before it")
    return lines


def _images(text: str):
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--images takes a positive number or 'all', not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--images takes a positive number or 'all', not {text!r}")
    return n


def _simulate(args) -> int:
    from ..arch.memory import MemoryModel
    from ..flows import simulate

    waves = waves_from_args(args)
    if args.batch is None and args.images == "all":
        args.batch = 32
    if args.progress is None:
        args.progress = args.images == "all" or sys.stderr.isatty()
    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle, stall=args.stall,
                         seed=args.seed)
    images = args.images if args.images == "all" else int(args.images)
    out = simulate(args.config, args.model, images, memory, args.seed, batch=args.batch, backend=args.backend,
                   progress=args.progress, waves=waves, data=args.data, layers=args.layers)
    if args.json == "-":            # the JSON alone on stdout
        print(json.dumps(out))
        return 0 if out["mismatches"] == 0 else 1
    print(f"{out['model']} on {args.config}: {out['images']} images, {out['cycles']} cycles "
          f"({out['cycles_per_image']:.0f} per image), mismatches vs golden: {out['mismatches']} "
          f"of {out['compared_elements']} elements")
    same = "equal" if out["cycles_predicted"] == out["cycles"] else "differ: random stalls" if args.stall else "DIFFER"
    print(f"cycle model: {out['cycles_predicted']} cycles ({same})")
    if out["layers_run"] is not None:
        print(f"only {len(out['layers_run'])} layers ran, each on its golden inputs: {', '.join(out['layers_run'])}")
    if "accuracy_rtl" in out:
        print(f"accuracy: RTL {out['accuracy_rtl']:.2%}, golden {out['accuracy_golden']:.2%} "
              f"({out['prediction_mismatches']} predictions differ)")
    print(f"{'layer':<14}{'cycles':>10}{'MACs':>12}{'util':>7}{'read B':>9}{'written B':>10}{'mism.':>7}")
    for r in out["layers"]:
        print(f"{r['layer']:<14}{r['cycles']:>10}{r['macs']:>12}{r['utilization']:>7.1%}"
              f"{r['dram_bytes_read']:>9}{r['dram_bytes_written']:>10}{r['mismatches']:>7}")
    for layer, where in out["placement"].items():
        if where != "accelerator" and (out["layers_run"] is None or layer in out["layers_run"]):
            print(f"  {layer}: {where}")
    print(f"simulation ({out['backend']}, batches of {out['batch']}): {out['images_per_second']:.2f} images/s, "
          f"{out['cycles_per_second']:.0f} cycles/s (process {out['process_seconds']:.1f} s)")
    for line in first_mismatch_lines(out["first_mismatch"], out["backend"]):
        print(line)
    if waves is not None:
        print(f"waves: {waves.path} ({waves.format.upper()}; open it with GTKWave or Surfer)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["mismatches"] == 0 else 1


def register(sub) -> None:
    p = sub.add_parser("simulate", help="run a network on the accelerator RTL (Verilator or amaranth.sim)",
                       description="Compile a network for a config, run it on the Accelerator RTL with a "
                                   "simulated memory (the direct Verilator driver, the cocotb testbench or "
                                   "amaranth.sim), compare every layer with the golden model and print "
                                   "per-layer cycles and traffic. Exit code 1 if any element differs.")
    p.add_argument("--config", default="default", metavar="CONFIG",
                   help="preset name (tiny, small, default, large) or JSON config file (default: %(default)s)")
    p.add_argument("--model", default="digits-cnn",
                   help="shipped model name, golden .npz path, an already-quantized .onnx (QONNX or QDQ), or "
                        "random:mlp|cnn|resnet (default: %(default)s); a float .onnx or FILE.py:FUNCTION is "
                        "quantized first with systolic quantize")
    p.add_argument("--images", type=_images, default=32,
                   help="number of test images, or 'all' for the whole test split (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None,
                   help="images per compiled batch (default: all at once, or 32 with --images all)")
    p.add_argument("--backend", choices=["direct", "cocotb", "amaranth"], default=None,
                   help="RTL backend: direct (Verilated model driven from C++, default), cocotb, or amaranth "
                        "(amaranth.sim: no build, slow)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with ETA on stderr (default: on for a terminal or --images all)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency in cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64,
                   help="memory bandwidth; a request waits ceil(bus_bytes / this) - 1 cycles (default: %(default)s)")
    p.add_argument("--stall", type=float, default=0.0,
                   help="probability of each further random stall cycle per request (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stalls and random inputs (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="the summary as JSON: alone on stdout (--json), or also written to FILE (--json FILE)")
    p.add_argument("--data", default=None, metavar="D",
                   help="data set of the images: digits, mnist or a .npz data file (default: by the model's "
                        "input shape; random inputs for random models)")
    p.add_argument("--layers", default=None, metavar="NAMES",
                   help="run only these layers on the RTL, each on its inputs as the golden model computes "
                        "them: names or shell patterns separated by commas, e.g. 'layer3.*,fc' (default: "
                        "the whole network; systolic inspect lists the names)")
    add_waves_arguments(p)
    p.set_defaults(func=_simulate)
