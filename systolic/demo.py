"""``systolic demo``: the main job on its embedded default.

The shipped 8-bit TQT ``digits-cnn`` on the default 8x8 weight-stationary
accelerator: compiled, its Verilog generated, a batch of digits test images
simulated on the RTL (cocotb + Verilator), every layer output compared with
the golden model, accuracy and cycles printed, and a report directory
written (report.json, report.md, plots, the Verilog, demo.json).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEFAULT_MODEL = "digits-cnn"
DEFAULT_CONFIG = "default"
#: None: the whole digits test split (360 images).
DEFAULT_IMAGES = None
#: Images per simulator process: the progress bar advances once per chunk.
CHUNK = 32


def run_demo(model: str = DEFAULT_MODEL, config: str = DEFAULT_CONFIG, images: int | None = DEFAULT_IMAGES,
             out: str | Path = "demo-report", progress: bool = True, memory=None, backend: str = "direct") -> dict:
    """Run the demo; return the JSON summary (also written to ``out/demo.json``)."""
    import numpy as np
    from tqdm import tqdm

    from .golden.commands import resolve_model
    from .arch.config import load_config
    from .quantize.data import load_for_network
    from .report.profile import profile_network
    from .report.report import build_report, write_report
    from .arch.memory import MemoryModel
    from .sim.direct import build_direct
    from .sim.system import build_system, system_top_name, system_verilog

    if images is not None and (not isinstance(images, int) or images < 1):
        raise ValueError(f"images must be a positive int, not {images!r}")
    t_start = time.perf_counter()
    cfg = load_config(config)
    memory = memory or MemoryModel()
    net = resolve_model(model)
    net.check_accumulators(cfg.acc_bits)
    xf, labels = load_for_network(net, "test")
    images = len(xf) if images is None else images
    if images > len(xf):
        raise ValueError(f"the digits test split has {len(xf)} images, not {images}")
    x = net.quantize_input(xf[:images])
    labels = labels[:images]
    out = Path(out)
    (out / "verilog").mkdir(parents=True, exist_ok=True)

    steps = tqdm(total=3, desc="prepare", unit="step", disable=not progress, leave=False)
    steps.set_postfix_str("Verilog")
    top = system_top_name(cfg)
    verilog = system_verilog(cfg)
    (out / "verilog" / f"{top}.v").write_text(verilog)
    steps.update()
    steps.set_postfix_str("Verilator build (cached after the first run)")
    t0 = time.perf_counter()
    if backend == "direct":
        build_direct(cfg, verilog=verilog)
    else:
        build_system(cfg)
    build_s = time.perf_counter() - t0
    steps.update()
    steps.set_postfix_str("golden model")
    gold = net.run(x)
    steps.update()
    steps.close()

    prof = profile_network(net, cfg, x, source="rtl", memory=memory, chunk=CHUNK, progress=progress,
                           backend=backend)
    rtl_outs = prof.outputs
    mismatches = {k: int(np.count_nonzero(rtl_outs[k] != gold[k])) for k in gold}
    compared = int(sum(v.size for v in gold.values()))
    out_name = net.output_name
    pred_rtl = rtl_outs[out_name].reshape(images, -1).argmax(axis=1)
    pred_gold = gold[out_name].reshape(images, -1).argmax(axis=1)
    total_cycles = prof.total_cycles
    result = {
        "model": model, "config": cfg.name, "images": images, "backend": backend,
        "bit_exact": all(v == 0 for v in mismatches.values()),
        "mismatches": sum(mismatches.values()), "compared_elements": compared,
        "accuracy_rtl": float((pred_rtl == labels).mean()),
        "accuracy_golden": float((pred_gold == labels).mean()),
        "cycles": total_cycles, "cycles_per_image": total_cycles / images,
        "cycles_predicted": prof.predicted_cycles,
        "placement": prof.compiled.placement,
        "memory": memory.to_dict(),
        "build_seconds": round(build_s, 2), "simulation_seconds": round(prof.sim_seconds, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "report_dir": str(out),
    }
    recs = prof.records()
    rep = build_report(recs, cfg, counts_source="rtl", cycles_source="rtl", extra={
        k: result[k] for k in ("model", "images", "bit_exact", "mismatches", "accuracy_rtl", "accuracy_golden",
                               "cycles_per_image", "cycles_predicted")})
    write_report(rep, out)
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _cmd(args) -> int:
    from .arch.memory import MemoryModel

    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle)
    r = run_demo(args.model, args.config, args.images, args.out, progress=not args.json, memory=memory,
                 backend=args.backend)
    if args.json:
        print(json.dumps(r))
        return 0 if r["bit_exact"] else 1
    print(f"{r['model']} on {r['config']}: {r['images']} digits test images on RTL ({r['backend']} Verilator driver)")
    print(f"  RTL == golden on every layer: {'yes' if r['bit_exact'] else 'NO'} "
          f"({r['mismatches']} mismatches in {r['compared_elements']} elements)")
    print(f"  accuracy: RTL {100 * r['accuracy_rtl']:.2f}%, golden {100 * r['accuracy_golden']:.2f}%")
    print(f"  cycles: {r['cycles']} ({r['cycles_per_image']:.0f} per image; analytic model "
          f"{r['cycles_predicted']})")
    host = [f"{k} ({v[6:]})" for k, v in r["placement"].items() if v != "accelerator"]
    print(f"  on the accelerator: {', '.join(k for k, v in r['placement'].items() if v == 'accelerator')}")
    print(f"  on the host: {'; '.join(host) or 'none'}")
    print(f"  time: {r['seconds']:.1f} s (build {r['build_seconds']:.1f} s, simulation {r['simulation_seconds']:.1f} s)")
    print(f"  report: {r['report_dir']}/report.md")
    return 0 if r["bit_exact"] else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: a shipped digits network on the accelerator RTL, checked bit for bit",
                       description="Compile the shipped digits-cnn for the default 8x8 weight-stationary "
                                   "accelerator, generate its Verilog, simulate a batch of digits test images "
                                   "on the RTL (cocotb + Verilator), check every layer against the golden "
                                   "model, and write a report directory. Exit code 1 unless bit-exact.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or .npz file (default: %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="preset name or config JSON (default: %(default)s)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="test images (default: all 360)")
    p.add_argument("--backend", choices=("direct", "cocotb"), default="direct",
                   help="RTL driver: the direct Verilator driver (fast) or the cocotb testbench (default: %(default)s)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency, cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64, help="memory bandwidth (default: %(default)s)")
    p.add_argument("--out", default="demo-report", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_cmd)
