"""Simulation command: ``simulate`` (a compiled network on the Accelerator RTL)."""

from __future__ import annotations

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


def simulate_network(config, model: str = "digits-cnn", images: int = 32, memory=None, seed: int = 0,
                     dram_bytes: int = 1 << 18) -> dict:
    """Run *images* inputs of *model* on the RTL of *config*; a JSON-ready summary.

    Inputs: the first *images* digits test images for a digits model (input
    shape ``(8, 8, 1)`` or ``(64,)``), random inputs otherwise.
    """
    import time

    import numpy as np

    from ..compiler import MachineSpec, compile_network
    from ..golden.random import random_input
    from ..hw.config import load_config
    from .memory import MemoryModel
    from .system import build_system, run_network_rtl

    config = load_config(config)
    memory = memory or MemoryModel()
    net, is_random = _load_net(model, seed)
    if is_random:
        x = random_input(net, images, seed)
    else:
        try:
            from ..quantize.data import load_for_network

            xf, _ = load_for_network(net, "test")
            x = net.quantize_input(xf[:images])
        except ValueError:
            x = random_input(net, images, seed)
    cn = compile_network(net, MachineSpec.from_config(config, dram_bytes=dram_bytes), batch=int(x.shape[0]))
    t0 = time.perf_counter()
    build_system(config)
    build_s = time.perf_counter() - t0
    run = run_network_rtl(cn, x, config, memory)
    gold = net.run(x)
    mismatches = {name: int(np.count_nonzero(run.outputs[name] != gold[name])) for name in gold}
    peak = config.rows * config.cols
    layers = []
    for name, c in run.counters.items():
        layers.append({"layer": name, "cycles": c.cycles, "macs": c.macs,
                       "utilization": c.macs / (peak * c.cycles) if c.cycles else 0.0,
                       "dram_bytes_read": c.dram_bytes_read, "dram_bytes_written": c.dram_bytes_written,
                       "instructions": c.instructions, "mismatches": mismatches[name],
                       **{k: v for k, v in c.rtl.items() if k.endswith(("_busy", "_stall"))}})
    sim_s = sum(run.sim_seconds.values())
    return {
        "config": config.to_dict(), "model": model, "images": int(x.shape[0]), "memory": memory.to_dict(),
        "placement": cn.placement, "mismatches": sum(mismatches.values()),
        "compared_elements": int(sum(v.size for v in gold.values())),
        "cycles": run.cycles, "cycles_per_image": run.cycles / x.shape[0],
        "process_seconds": run.seconds, "rtl_seconds": sim_s, "build_seconds": build_s,
        "images_per_second": x.shape[0] / run.seconds, "cycles_per_second": run.cycles / sim_s if sim_s else 0.0,
        "layers": layers,
    }


def _simulate(args) -> int:
    from .memory import MemoryModel

    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle, stall=args.stall,
                         seed=args.seed)
    out = simulate_network(args.config, args.model, args.images, memory, args.seed)
    print(f"{out['model']} on {args.config}: {out['images']} images, {out['cycles']} cycles "
          f"({out['cycles_per_image']:.0f} per image), mismatches vs golden: {out['mismatches']} "
          f"of {out['compared_elements']} elements")
    print(f"{'layer':<14}{'cycles':>10}{'MACs':>12}{'util':>7}{'read B':>9}{'written B':>10}{'mism.':>7}")
    for r in out["layers"]:
        print(f"{r['layer']:<14}{r['cycles']:>10}{r['macs']:>12}{r['utilization']:>7.1%}"
              f"{r['dram_bytes_read']:>9}{r['dram_bytes_written']:>10}{r['mismatches']:>7}")
    for layer, where in out["placement"].items():
        if where != "accelerator":
            print(f"  {layer}: {where}")
    print(f"simulation: {out['images_per_second']:.2f} images/s, {out['cycles_per_second']:.0f} cycles/s "
          f"(process {out['process_seconds']:.1f} s)")
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
    p.add_argument("--images", type=int, default=32, help="batch size (default: %(default)s)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency in cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64,
                   help="memory bandwidth; a request waits ceil(bus_bytes / this) - 1 cycles (default: %(default)s)")
    p.add_argument("--stall", type=float, default=0.0,
                   help="probability of each further random stall cycle per request (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stalls and random inputs (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=_simulate)
