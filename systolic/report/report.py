"""Per-layer and per-network reports: report.json (versioned), report.md, PNG plots.

A report is built from per-layer records (see :class:`LayerRecord`): where
the layer ran, its GEMM shape, its event counters, and its cycles split into
compute, memory stall and other. Energy comes from
:func:`~systolic.report.energy.estimate_energy`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .energy import COMPONENTS, estimate_energy
from .energy_table import EnergyTable

__all__ = ["LayerRecord", "build_report", "write_report", "records_from_run", "ideal_utilization",
           "REPORT_SCHEMA", "REPORT_VERSION", "COST_KEYS"]

REPORT_SCHEMA = "systolic-report"
REPORT_VERSION = 4  # 2: cycles split = compute (array busy) / stall (array idle, memory) / other; no dma/control keys
#                     3: per layer and in the totals: array_macs, weight_bytes and their one-point figures
#                     4: host_layers (the layers the host runs, with the reason)


@dataclass
class LayerRecord:
    """One layer of a run.

    ``cycles`` is ``{"total", "compute", "stall", "other"}`` (host layers: None).
    ``gemm`` is ``(M, K, N)`` for accelerated GEMM layers.
    ``cost`` (accelerated layers) is ``{"array_macs", "weight_bytes", "one_point_array_macs",
    "one_point_weight_bytes"}``: the MACs the array issues and the weight bytes loaded, and the same for a
    one-point layer of the same shape (:class:`~systolic.compiler.lower.AccelStep`).
    """

    name: str
    kind: str
    placement: str
    gemm: tuple | None = None
    useful_macs: int = 0
    counters: dict = field(default_factory=dict)
    cycles: dict | None = None
    cost: dict | None = None


#: The :attr:`LayerRecord.cost` keys.
COST_KEYS = ("array_macs", "weight_bytes", "one_point_array_macs", "one_point_weight_bytes")


def _ratio(a, b):
    return a / b if b else None


def ideal_utilization(gemm, rows: int, cols: int) -> float:
    """Best utilization the array can reach on an ``M x K x N`` GEMM: padding of K and N tiles only."""
    m, k, n = gemm
    return (k * n) / (math.ceil(k / rows) * rows * math.ceil(n / cols) * cols)


def build_report(records, config, *, counts_source: str, cycles_source: str,
                 table: EnergyTable | None = None, extra: dict | None = None) -> dict:
    """The report as a JSON-able dict (schema ``systolic-report`` version :data:`REPORT_VERSION`)."""
    table = table or EnergyTable()
    pes = config.rows * config.cols
    layers, totals = [], {c: 0.0 for c in COMPONENTS}
    total_cycles = total_macs = 0
    cost_totals = dict.fromkeys(COST_KEYS, 0)
    for r in records:
        entry = {"name": r.name, "kind": r.kind, "placement": r.placement}
        if r.placement == "accelerator":
            e = estimate_energy(r.counters, config, table, cycles=(r.cycles or {}).get("total", 0),
                                counts_source=counts_source)
            cyc = r.cycles or {}
            util = r.useful_macs / (pes * cyc["total"]) if cyc.get("total") else None
            entry.update({
                "gemm": list(r.gemm) if r.gemm else None,
                "useful_macs": r.useful_macs,
                "counters": {k: v for k, v in r.counters.items() if k != "by_opcode"},
                "cycles": cyc or None,
                "utilization": util,
                "ideal_utilization": ideal_utilization(r.gemm, config.rows, config.cols) if r.gemm else None,
                "energy_pj": dict(e.components),
                "leakage_pj": e.leakage_pj,
            })
            if r.cost is not None:
                entry.update({k: r.cost[k] for k in ("array_macs", "weight_bytes")})
                entry["one_point"] = {"array_macs": r.cost["one_point_array_macs"],
                                      "weight_bytes": r.cost["one_point_weight_bytes"]}
                entry["vs_one_point"] = {
                    "array_macs": _ratio(r.cost["array_macs"], r.cost["one_point_array_macs"]),
                    "weight_bytes": _ratio(r.cost["weight_bytes"], r.cost["one_point_weight_bytes"])}
                for k in COST_KEYS:
                    cost_totals[k] += r.cost[k]
            for k, v in e.components.items():
                totals[k] += v
            total_cycles += cyc.get("total", 0)
            total_macs += r.useful_macs
        layers.append(entry)
    report = {
        "schema": REPORT_SCHEMA, "version": REPORT_VERSION,
        "config": json.loads(config.to_json()) if hasattr(config, "to_json") else None,
        "counts_source": counts_source, "cycles_source": cycles_source,
        "layers": layers,
        # The layers the host golden model runs between programs (a flatten, a no-op on NHWC memory, is not one).
        "host_layers": [{"layer": l["name"], "reason": l["placement"].removeprefix("host: ")} for l in layers
                        if l["placement"] != "accelerator" and l["kind"] != "flatten"],
        "totals": {
            "cycles": total_cycles, "useful_macs": total_macs,
            "utilization": total_macs / (pes * total_cycles) if total_cycles else None,
            "array_macs": cost_totals["array_macs"], "weight_bytes": cost_totals["weight_bytes"],
            "one_point": {"array_macs": cost_totals["one_point_array_macs"],
                          "weight_bytes": cost_totals["one_point_weight_bytes"]},
            "energy_pj": totals, "dynamic_energy_pj": sum(totals.values()),
        },
        "energy_table": table.to_json(),
    }
    if extra:
        report["run"] = extra
    return report


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _points_table(rep: dict) -> list:
    """The weight-point cost section of report.md: per accelerated layer, the MACs the array issued and the
    weight bytes it loaded against a one-point layer of the same shape (multipoint / DSConv cost more)."""
    acc = [l for l in rep["layers"] if l["placement"] == "accelerator" and "one_point" in l]
    if not acc:
        return []
    out = ["", "## Weight points", "",
           "Array MACs (rows x cols per MATMUL row, all-zero weight tiles skipped) and weight bytes loaded, "
           "against a one-point layer of the same shape (docs/isa.md, \"Zero weight tiles\").", "",
           "| layer | array MACs | one point | ratio | weight bytes | one point | ratio |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for l in acc:
        v, o = l["vs_one_point"], l["one_point"]
        out.append(f"| {l['name']} | {_fmt(l['array_macs'])} | {_fmt(o['array_macs'])} | "
                   f"{_fmt(v['array_macs'], 2)} | {_fmt(l['weight_bytes'])} | {_fmt(o['weight_bytes'])} | "
                   f"{_fmt(v['weight_bytes'], 2)} |")
    return out


def _markdown(rep: dict) -> str:
    cfg = rep.get("config") or {}
    lines = ["# systolic report", ""]
    if cfg:
        lines += [f"Accelerator: {cfg.get('rows')}x{cfg.get('cols')} {cfg.get('dataflow', '').upper()}, "
                  f"int{cfg.get('in_bits')} x int{cfg.get('w_bits')} -> int{cfg.get('acc_bits')} accumulators, "
                  f"{cfg.get('rounding')} rounding.", ""]
    if "run" in rep:
        lines += ["## Run", ""] + [f"- {k}: {v}" for k, v in rep["run"].items()] + [""]
    lines += [f"Event counts from: **{rep['counts_source']}**; cycles from: **{rep['cycles_source']}**.", "",
              "## Layers", "",
              "| layer | kind | ran on | GEMM MxKxN | cycles | compute | stall | other | utilization | ideal | energy (nJ) |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for l in rep["layers"]:
        if l["placement"] == "accelerator":
            c = l.get("cycles") or {}
            g = "x".join(map(str, l["gemm"])) if l.get("gemm") else "-"
            lines.append(
                f"| {l['name']} | {l['kind']} | accelerator | {g} | {_fmt(c.get('total'))} | {_fmt(c.get('compute'))} | "
                f"{_fmt(c.get('stall'))} | {_fmt(c.get('other'))} | "
                f"{_fmt(100 * l['utilization'] if l.get('utilization') is not None else None)}% | "
                f"{_fmt(100 * l['ideal_utilization'] if l.get('ideal_utilization') is not None else None)}% | "
                f"{_fmt(sum(l['energy_pj'].values()) / 1000, 2)} |")
        else:
            lines.append(f"| {l['name']} | {l['kind']} | {l['placement']} | - | - | - | - | - | - | - | - |")
    lines += _points_table(rep)
    t = rep["totals"]
    lines += ["", "## Totals", "",
              f"- cycles: {_fmt(t['cycles'])}",
              f"- useful MACs: {_fmt(t['useful_macs'])}",
              f"- utilization: {_fmt(100 * t['utilization']) + '%' if t['utilization'] is not None else '-'}",
              f"- dynamic energy: {t['dynamic_energy_pj'] / 1000:.2f} nJ", "",
              "| component | energy (nJ) | share |", "| --- | ---: | ---: |"]
    tot = t["dynamic_energy_pj"] or 1.0
    for k, v in t["energy_pj"].items():
        lines.append(f"| {k} | {v / 1000:.3f} | {100 * v / tot:.1f}% |")
    et = rep["energy_table"]
    lines += ["", f"## Energy table ({et['node_nm']} nm, scaling {et['node_scaling']})", "",
              "Absolute figures are uncertain by 2-3x across published tools; ratios are the robust part.", "",
              "| entry | pJ | unit | source |", "| --- | ---: | --- | --- |"]
    for k, e in et["entries"].items():
        lines.append(f"| {k} | {e['pj']:.4g} | {e['unit']} | {e['source']} |")
    return "\n".join(lines) + "\n"


def _plots(rep: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = [l for l in rep["layers"] if l["placement"] == "accelerator"]
    if not acc:
        return []
    names = [l["name"] for l in acc]
    x = range(len(acc))
    files = []

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(acc)) + 3.2, 3.6))
    bottom = [0] * len(acc)
    for part, label, colour in (("compute", "compute (array busy)", "#4c72b0"),
                                ("stall", "memory stall (array idle)", "#dd8452"),
                                ("other", "other (array idle: DMA, fetch, STORE)", "#8c8c8c")):
        vals = [(l.get("cycles") or {}).get(part, 0) for l in acc]
        ax.bar(x, vals, bottom=bottom, label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("cycles")
    ax.set_title(f"Cycles per layer ({rep['cycles_source']})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    files.append(out / "cycles.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(acc)), 3.6))
    bottom = [0.0] * len(acc)
    cmap = plt.get_cmap("tab10")
    for ci, comp in enumerate(COMPONENTS):
        vals = [l["energy_pj"][comp] / 1000 for l in acc]
        ax.bar(x, vals, bottom=bottom, label=comp, color=cmap(ci))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("energy (nJ)")
    ax.set_title(f"Energy per layer by component ({rep['energy_table']['node_nm']} nm table)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    files.append(out / "energy.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(acc)), 3.6))
    w = 0.4
    ax.bar([i - w / 2 for i in x], [100 * (l.get("utilization") or 0) for l in acc], w, label="measured")
    ax.bar([i + w / 2 for i in x], [100 * (l.get("ideal_utilization") or 0) for l in acc], w,
           label="ideal for shape")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("utilization (%)")
    ax.set_ylim(0, 105)
    ax.set_title("MACs / (PEs x cycles) per layer")
    ax.legend()
    fig.tight_layout()
    files.append(out / "utilization.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files


def write_report(rep: dict, out_dir) -> list[Path]:
    """Write report.json, report.md and the PNG plots into *out_dir*; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(rep))
    return [out / "report.json", out / "report.md"] + _plots(rep, out)


def records_from_run(cn, counters: dict, cycles: dict | None = None) -> list[LayerRecord]:
    """Layer records of a compiled network run: *counters* and *cycles* by layer name."""
    from ..compiler.lower import AccelStep

    by_name = {l.name: l for l in cn.net.layers}
    recs = []
    for step in cn.steps:
        layer = by_name[step.layer]
        placement = cn.placement[step.layer]
        if isinstance(step, AccelStep):
            c = counters[step.layer]
            recs.append(LayerRecord(step.layer, layer.kind, placement, gemm=step.gemm, useful_macs=step.macs,
                                    counters=c.to_dict() if hasattr(c, "to_dict") else dict(c),
                                    cycles=(cycles or {}).get(step.layer),
                                    cost={k: getattr(step, k) for k in COST_KEYS}))
        else:
            recs.append(LayerRecord(step.layer, layer.kind, placement))
    return recs
