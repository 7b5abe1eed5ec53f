"""Simulation command: ``simulate`` (a compiled network on the Accelerator RTL)."""

from __future__ import annotations

import argparse
import json


def _load_net(spec: str, seed: int):
    """A golden network from a shipped model name, a ``.npz`` path or ``random:<kind>``."""
    if spec.startswith("random:"):
        from ..golden.random import random_network

        return random_network(seed, spec.split(":", 1)[1], 8), True
    from ..golden import load

    try:
        from ..models import SHIPPED, shipped_model_path
    except ImportError:  # pragma: no cover - models package absent
        SHIPPED = ()
    if spec in SHIPPED:
        return load(shipped_model_path(spec)), False
    return load(spec), False


class _Progress:
    """A one-line progress bar with ETA on stderr."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30):
        import sys
        import time

        self.total, self.enabled, self.width = total, enabled, width
        self.stream, self.t0, self.clock = sys.stderr, time.perf_counter(), time.perf_counter

    def update(self, done: int, extra: str = ""):
        if not self.enabled:
            return
        el = self.clock() - self.t0
        eta = f"{el / done * (self.total - done):5.1f} s" if done else "    ? s"
        fill = int(self.width * done / self.total) if self.total else self.width
        end = "\n" if done >= self.total else ""
        self.stream.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} images  "
                          f"{el:6.1f} s  ETA {eta} {extra}{end}")
        self.stream.flush()


def simulate_network(config, model: str = "digits-cnn", images=32, memory=None, seed: int = 0,
                     dram_bytes: int = 1 << 18, batch: int | None = None, backend: str | None = None,
                     progress: bool = False) -> dict:
    """Run *images* inputs of *model* on the RTL of *config*; a JSON-ready summary.

    Inputs: the first *images* digits test images for a digits model (input
    shape ``(8, 8, 1)`` or ``(64,)``; ``images="all"``: the whole test split),
    random inputs otherwise. With *batch*, the images run in batches of that
    size (one compiled program and one simulator run per batch; the counters
    add up); accuracy on the RTL and on the golden model is reported when
    labels exist. *progress*: a progress bar with ETA on stderr.
    """
    import time

    import numpy as np

    from ..compiler import MachineSpec, compile_network
    from ..golden.random import random_input
    from ..arch.config import load_config
    from ..arch.memory import MemoryModel
    from .system import _backend, build_system, run_network_rtl

    config = load_config(config)
    memory = memory or MemoryModel()
    backend = _backend(backend)
    net, is_random = _load_net(model, seed)
    labels = None
    if images == "all" and is_random:
        raise ValueError("--images all needs a model with a data set (a digits model), not random inputs")
    if is_random:
        x = random_input(net, int(images), seed)
    else:
        try:
            from ..quantize.data import load_for_network

            xf, yl = load_for_network(net, "test")
            n = len(xf) if images == "all" else int(images)
            x = net.quantize_input(xf[:n])
            labels = np.asarray(yl[:n])
        except ValueError:
            if images == "all":
                raise ValueError(f"--images all needs a digits model; {model} has no data set") from None
            x = random_input(net, int(images), seed)
    total = int(x.shape[0])
    batch = total if not batch else min(int(batch), total)
    t0 = time.perf_counter()
    if backend == "direct":
        from .direct import build_direct

        build_direct(config)
    else:
        build_system(config)
    build_s = time.perf_counter() - t0
    bar = _Progress(total, progress)
    bar.update(0)
    compiled = {}
    counters, mismatches = {}, {}
    process_s, sim_s, compared = 0.0, 0.0, 0
    final_rtl, final_gold = [], []
    placement = None
    for lo in range(0, total, batch):
        xb = x[lo:lo + batch]
        nb = int(xb.shape[0])
        if nb not in compiled:
            compiled[nb] = compile_network(net, MachineSpec.from_config(config, dram_bytes=dram_bytes), batch=nb)
        cn = compiled[nb]
        placement = cn.placement
        run = run_network_rtl(cn, xb, config, memory, backend=backend)
        gold = net.run(xb)
        for name in gold:
            mismatches[name] = mismatches.get(name, 0) + int(np.count_nonzero(run.outputs[name] != gold[name]))
            compared += int(gold[name].size)
        for name, c in run.counters.items():
            if name in counters:
                counters[name] += c
            else:
                counters[name] = c
        last = net.layers[-1].name
        final_rtl.append(run.outputs[last])
        final_gold.append(gold[last])
        process_s += run.seconds
        sim_s += sum(run.sim_seconds.values())
        done = lo + nb
        bar.update(done, f"mismatches {sum(mismatches.values())}")
    peak = config.rows * config.cols
    cycles = sum(c.cycles for c in counters.values())
    layers = []
    for name, c in counters.items():
        layers.append({"layer": name, "cycles": c.cycles, "macs": c.macs,
                       "utilization": c.macs / (peak * c.cycles) if c.cycles else 0.0,
                       "dram_bytes_read": c.dram_bytes_read, "dram_bytes_written": c.dram_bytes_written,
                       "instructions": c.instructions, "mismatches": mismatches[name],
                       **{k: v for k, v in c.rtl.items() if k.endswith(("_busy", "_stall"))}})
    out = {
        "config": config.to_dict(), "model": model, "images": total, "batch": batch, "backend": backend,
        "memory": memory.to_dict(), "placement": placement, "mismatches": sum(mismatches.values()),
        "compared_elements": compared,
        "cycles": cycles, "cycles_per_image": cycles / total,
        "process_seconds": process_s, "rtl_seconds": sim_s, "build_seconds": build_s,
        "images_per_second": total / process_s if process_s else 0.0,
        "cycles_per_second": cycles / sim_s if sim_s else 0.0,
        "layers": layers,
    }
    if labels is not None:
        pred_rtl = np.concatenate(final_rtl).reshape(total, -1).argmax(axis=1)
        pred_gold = np.concatenate(final_gold).reshape(total, -1).argmax(axis=1)
        out["accuracy_rtl"] = float(np.mean(pred_rtl == labels))
        out["accuracy_golden"] = float(np.mean(pred_gold == labels))
        out["prediction_mismatches"] = int(np.count_nonzero(pred_rtl != pred_gold))
    return out


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
    import sys

    from ..arch.memory import MemoryModel

    if args.batch is None and args.images == "all":
        args.batch = 32
    if args.progress is None:
        args.progress = args.images == "all" or sys.stderr.isatty()
    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle, stall=args.stall,
                         seed=args.seed)
    images = args.images if args.images == "all" else int(args.images)
    out = simulate_network(args.config, args.model, images, memory, args.seed, batch=args.batch,
                           backend=args.backend, progress=args.progress)
    print(f"{out['model']} on {args.config}: {out['images']} images, {out['cycles']} cycles "
          f"({out['cycles_per_image']:.0f} per image), mismatches vs golden: {out['mismatches']} "
          f"of {out['compared_elements']} elements")
    if "accuracy_rtl" in out:
        print(f"accuracy: RTL {out['accuracy_rtl']:.2%}, golden {out['accuracy_golden']:.2%} "
              f"({out['prediction_mismatches']} predictions differ)")
    print(f"{'layer':<14}{'cycles':>10}{'MACs':>12}{'util':>7}{'read B':>9}{'written B':>10}{'mism.':>7}")
    for r in out["layers"]:
        print(f"{r['layer']:<14}{r['cycles']:>10}{r['macs']:>12}{r['utilization']:>7.1%}"
              f"{r['dram_bytes_read']:>9}{r['dram_bytes_written']:>10}{r['mismatches']:>7}")
    for layer, where in out["placement"].items():
        if where != "accelerator":
            print(f"  {layer}: {where}")
    print(f"simulation ({out['backend']}, batches of {out['batch']}): {out['images_per_second']:.2f} images/s, "
          f"{out['cycles_per_second']:.0f} cycles/s (process {out['process_seconds']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["mismatches"] == 0 else 1


def register(sub) -> None:
    p = sub.add_parser("simulate", help="run a network on the accelerator RTL (cocotb + Verilator)",
                       description="Compile a network for a config, run it on the Accelerator RTL under "
                                   "cocotb + Verilator with a simulated memory, compare every layer with "
                                   "the golden model and print per-layer cycles and traffic. Exit code 1 "
                                   "if any element differs.")
    p.add_argument("--config", default="default", metavar="CONFIG",
                   help="preset name (tiny, small, default, large) or JSON config file (default: %(default)s)")
    p.add_argument("--model", default="digits-cnn",
                   help="shipped model name, golden .npz path, or random:mlp|cnn|resnet (default: %(default)s)")
    p.add_argument("--images", type=_images, default=32,
                   help="number of test images, or 'all' for the whole test split (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None,
                   help="images per compiled batch (default: all at once, or 32 with --images all)")
    p.add_argument("--backend", choices=["direct", "cocotb"], default=None,
                   help="RTL driver: direct (Verilated model driven from C++, default) or cocotb")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with ETA on stderr (default: on for a terminal or --images all)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency in cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64,
                   help="memory bandwidth; a request waits ceil(bus_bytes / this) - 1 cycles (default: %(default)s)")
    p.add_argument("--stall", type=float, default=0.0,
                   help="probability of each further random stall cycle per request (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stalls and random inputs (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=_simulate)
