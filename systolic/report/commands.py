"""``systolic report``: per-layer cycles, utilization, traffic and energy of a network on a config."""

from __future__ import annotations

import json


#: Images of a report when none are asked for: of the model's data set; one for random inputs.
DEFAULT_IMAGES = {"data": 32, "random": 1}


def make_report(model: str, config: str, images: int | None, out, *, source: str = "model", memory=None,
                table=None, progress: bool = True, backend: str | None = None) -> dict:
    """Profile *model* on *config* over *images* inputs (``None``: :data:`DEFAULT_IMAGES`) and write a report
    directory; the report dict. The images run in batches of up to 32, fewer when the golden check of a
    batch would exceed its size limits (an ImageNet-shaped network)."""
    from ..arch.config import load_config
    from ..flows import largest_batch, load_inputs, resolve_model, run_images
    from .report import build_report, write_report

    cfg = load_config(config)
    net, kind = resolve_model(model)
    if images is None:
        images = DEFAULT_IMAGES["random" if kind == "random" else "data"]
    x, _ = load_inputs(net, images, kind=kind)
    batch = largest_batch(net, min(32, len(x)))
    run = run_images(net, cfg, x, source=source, backend=backend, memory=memory, progress=progress, batch=batch)
    counts = "rtl" if source == "rtl" else "executor"
    cycles = "rtl" if source == "rtl" else "cycle-model"
    rep = build_report(run.records(), cfg, counts_source=counts, cycles_source=cycles, table=table, extra={
        "model": model, "images": run.images, "mismatches_vs_golden": sum(run.mismatches.values()),
        "cycles_predicted": run.predicted_cycles, "cycles": run.total_cycles,
        "memory": (memory.to_dict() if memory else None)})
    files = write_report(rep, out)
    rep["files"] = [str(f) for f in files]
    return rep


def _cmd(args) -> int:
    from ..arch.memory import MemoryModel
    from .energy_table import EnergyTable

    table = EnergyTable.from_user(args.energy_table) if args.energy_table else EnergyTable()
    if args.node is not None:
        table = EnergyTable(entries=table.entries, node_nm=args.node)
    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle)
    rep = make_report(args.model, args.config, args.images, args.out, source=args.source, memory=memory,
                      table=table, progress=not args.json, backend=args.backend)
    if args.json:
        print(json.dumps({k: rep[k] for k in ("schema", "version", "counts_source", "cycles_source", "totals",
                                               "host_layers", "layers", "run", "files")}))
        return 0
    t = rep["totals"]
    print(f"{args.model} on {args.config}, {rep['run']['images']} images "
          f"(counts: {rep['counts_source']}, cycles: {rep['cycles_source']})")
    print(f"{'layer':<10}{'ran on':<14}{'cycles':>10}{'compute':>9}{'stall':>8}{'util':>7}{'ideal':>7}{'nJ':>10}"
          f"{'MACs/1pt':>10}{'W/1pt':>7}")
    for l in rep["layers"]:
        if l["placement"] == "accelerator":
            c = l["cycles"]
            v = l.get("vs_one_point") or {}
            ratios = "".join(f"{x:>{w}.2f}" if x is not None else f"{'-':>{w}}"
                             for x, w in ((v.get("array_macs"), 10), (v.get("weight_bytes"), 7)))
            # (a vector-unit layer, pooling or add, has no GEMM: no ideal utilization)
            util = "".join(f"{x:>7.1%}" if x is not None else f"{'-':>7}"
                           for x in (l["utilization"], l["ideal_utilization"]))
            print(f"{l['name']:<10}{'accelerator':<14}{c['total']:>10}{c['compute']:>9}{c['stall']:>8}"
                  f"{util}{sum(l['energy_pj'].values()) / 1e3:>10.1f}{ratios}")
        else:
            print(f"{l['name']:<10}{l['placement']}")
    print(f"total: {t['cycles']} cycles, utilization {t['utilization']:.1%}, "
          f"dynamic energy {t['dynamic_energy_pj'] / 1e6:.3f} uJ")
    print(f"array MACs {t['array_macs']} (one point: {t['one_point']['array_macs']}), weight bytes loaded "
          f"{t['weight_bytes']} (one point: {t['one_point']['weight_bytes']}); MACs/1pt, W/1pt: against a "
          "one-point layer of the same shape")
    print(f"report written to {args.out}/ (report.md, report.json, cycles.png, energy.png, utilization.png)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="per-layer cycles, utilization, memory traffic and energy, with plots",
                       description="Profile a network on an accelerator config and write report.json "
                                   "(versioned schema), report.md and PNG plots. --source model uses the NumPy "
                                   "executor's event counts and the analytic cycle model (equal to the RTL "
                                   "without random stalls); --source rtl simulates the RTL.")
    p.add_argument("--model", default="digits-cnn",
                   help="shipped model name, .npz file, random:mlp|cnn|resnet or an ImageNet-shaped network with "
                        "random weights: resnet18-imagenet, resnet50-imagenet, mobilenetv2-imagenet "
                        "(default: %(default)s)")
    p.add_argument("--config", default="default", help="preset name or config JSON (default: %(default)s)")
    p.add_argument("--images", type=int, default=None,
                   help="test images of the model's data set (default: 32), or random inputs for a model without "
                        "one (default: 1; random:... and the ImageNet-shaped networks)")
    p.add_argument("--source", choices=("model", "rtl"), default="model", help="where counts and cycles come from")
    p.add_argument("--backend", choices=("direct", "cocotb", "amaranth"), default=None,
                   help="RTL backend with --source rtl (default: direct)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency, cycles (default: %(default)s)")
    p.add_argument("--bytes-per-cycle", type=int, default=64, help="memory bandwidth (default: %(default)s)")
    p.add_argument("--energy-table", metavar="FILE", help="JSON energy table overriding the sourced defaults")
    p.add_argument("--node", type=int, default=None, help="technology node in nm (45, 32, 28, 22, 16, 7)")
    p.add_argument("--out", default="report", help="output directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd)
