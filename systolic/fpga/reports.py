"""Parsing of Yosys ``stat -json`` and nextpnr ``--report`` files.

Plain Python over the JSON the tools write, so the parsers are tested on small
captured files (tests/fpga/fixtures) without running any tool.
"""

from __future__ import annotations

import re

__all__ = ["design_cells", "module_cells", "cell_resources", "instance_counts", "nextpnr_utilization",
           "nextpnr_fmax", "critical_path", "hierarchy_of", "register_of", "short_name"]

# Cell types -> resource kind (Yosys names after synth_ecp5 / synth_ice40). A carry
# cell of ECP5 (CCU2C) holds two LUT4s, so it counts as two LUTs.
_ECP5 = {
    "luts": {"LUT4": 1, "CCU2C": 2, "DPR16X4": 2},
    "ffs": {"TRELLIS_FF": 1},
    "dsps": {"MULT18X18D": 1, "ALU54B": 1, "MULT9X9D": 1},
    "brams": {"DP16KD": 1, "PDPW16KD": 1},
}
_ICE40 = {
    "luts": {"SB_LUT4": 1},
    "ffs": {},  # every SB_DFF* variant, matched by prefix below
    "dsps": {"SB_MAC16": 1},
    "brams": {"SB_RAM40_4K": 1, "SB_RAM40_4KNR": 1, "SB_RAM40_4KNW": 1, "SB_RAM40_4KNRNW": 1,
              "SB_SPRAM256KA": 1},
}

def _strip(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def design_cells(stat: dict) -> dict:
    """``{cell type: count}`` of the whole design from Yosys ``stat -json``."""
    d = stat.get("design")
    if d and "num_cells_by_type" in d:
        return dict(d["num_cells_by_type"])
    mods = stat.get("modules", {})
    if len(mods) == 1:
        return dict(next(iter(mods.values())).get("num_cells_by_type", {}))
    raise ValueError("Yosys stat JSON has no 'design' totals and more than one module")


def module_cells(stat: dict) -> dict:
    """``{module name: {cell type: count}}`` (the module's own cells, not its submodules')."""
    return {_strip(name): dict(m.get("num_cells_by_type", {})) for name, m in stat.get("modules", {}).items()}


def cell_resources(target: str, cells: dict) -> dict:
    """LUTs, FFs, DSPs and block RAMs of a ``{cell type: count}`` map."""
    table = _ECP5 if target == "ecp5" else _ICE40
    out = {}
    for kind, weights in table.items():
        out[kind] = sum(int(cells.get(t, 0)) * w for t, w in weights.items())
    if target == "ice40":
        out["ffs"] = sum(int(n) for t, n in cells.items() if t.startswith("SB_DFF"))
    return out


def instance_counts(config, top: str) -> dict:
    """How many PEs and requantizer lanes the ``top`` of *config* holds."""
    counts = {"pe": config.rows * config.cols}
    if top != "array":
        counts["lane"] = config.cols
    return counts


# ----------------------------------------------------------------------------------------- nextpnr

_UTIL_KEYS = {
    "ecp5": {"luts": ("TRELLIS_COMB",), "ffs": ("TRELLIS_FF",), "dsps": ("MULT18X18D",),
             "brams": ("DP16KD",), "io": ("TRELLIS_IO",)},
    "ice40": {"luts": ("ICESTORM_LC",), "ffs": (), "dsps": ("ICESTORM_DSP",),
              "brams": ("ICESTORM_RAM", "ICESTORM_SPRAM"), "io": ("SB_IO",)},
}


def nextpnr_utilization(target: str, report: dict) -> dict:
    """``{kind: (used, available)}`` from a nextpnr ``--report`` JSON.

    ``available`` is the sum over the bel types of the kind; iCE40 has no
    separate flip-flop count (an FF shares its logic cell with a LUT), so
    ``ffs`` is ``(None, None)`` there.
    """
    util = report.get("utilization")
    if not isinstance(util, dict):
        raise ValueError("nextpnr report has no 'utilization' object")
    out = {}
    for kind, keys in _UTIL_KEYS[target].items():
        if not keys:
            out[kind] = (None, None)
            continue
        used = sum(int(util.get(k, {}).get("used", 0)) for k in keys)
        avail = sum(int(util.get(k, {}).get("available", 0)) for k in keys)
        out[kind] = (used, avail)
    return out


def nextpnr_fmax(report: dict) -> float | None:
    """The lowest achieved Fmax over the clocks in MHz (None if no clock was analysed)."""
    fmax = report.get("fmax") or {}
    vals = [float(v["achieved"]) for v in fmax.values() if isinstance(v, dict) and "achieved" in v]
    return min(vals) if vals else None


_HIER = re.compile(r"^((?:[A-Za-z_][A-Za-z0-9_]*\.)+)")


def hierarchy_of(cell: str) -> str:
    """The instance path of a flattened cell name: ``accel.array.pe_0_1.x$12`` -> ``accel.array.pe_0_1``."""
    mt = _HIER.match(cell or "")
    return mt.group(1).rstrip(".") if mt else "(top)"


_CELL_SUFFIX = re.compile(r"(_TRELLIS_|_SB_|_DP16KD|_MULT18X18D|\$|_LUT4|_CCU2C|_PFUMX|_L6MUX).*$")


def register_of(cell: str) -> str:
    """``dut.requant.lane0.z_TRELLIS_FF_Q_31`` -> ``dut.requant.lane0.z`` (the signal a packed cell came from)."""
    h = hierarchy_of(cell)
    local = cell[len(h) + 1:] if h != "(top)" else cell
    local = _CELL_SUFFIX.sub("", local) or local
    return f"{h}.{local}" if h != "(top)" else local


def critical_path(report: dict) -> dict | None:
    """The worst clock-to-clock path of a nextpnr report, summarized.

    Returns ``{"from", "to", "delay_ns", "logic_ns", "routing_ns",
    "logic_levels", "carry_hops", "through", "summary"}``: start and end
    cells, the total and its split into cell and routing delay, the number
    of cells on the path (LUTs, muxes, DSPs, carry entries) and of carry-chain
    hops, and the instance paths it passes through, in order.
    """
    paths = report.get("critical_paths") or []
    best = None
    for p in paths:
        steps = p.get("path") or []
        if not steps:
            continue
        total = sum(float(s.get("delay", 0.0)) for s in steps)
        # Register-to-register paths first; I/O paths (<async>) only if there is nothing else.
        key = ("<async>" not in (p.get("from"), p.get("to")), total)
        if best is None or key > best[0]:
            best = (key, p, steps)
    if best is None:
        return None
    (_, total), p, steps = best
    routing = sum(float(s.get("delay", 0.0)) for s in steps if s.get("type") == "routing")
    logic = [s for s in steps if s.get("type") == "logic"]
    # A carry-chain hop (FCI -> FCO / F inside a CCU2C) is not a LUT level.
    carry = sum(1 for s in logic if (s.get("from") or {}).get("port") in ("FCI", "CI"))
    levels = len(logic) - carry
    cells = []
    for s in steps:
        for end in ("from", "to"):
            c = (s.get(end) or {}).get("cell")
            if c and (not cells or cells[-1] != c):
                cells.append(c)
    through = []
    for c in cells:
        h = hierarchy_of(c)
        if not through or through[-1] != h:
            through.append(h)
    start, end = (cells[0], cells[-1]) if cells else ("?", "?")
    summary = (f"{short_name(register_of(start))} -> {short_name(register_of(end))}, {total:.2f} ns "
               f"({total - routing:.2f} logic + {routing:.2f} routing; {levels} cell levels, {carry} carry hops)")
    # Cells Yosys created without a hierarchical name show as "(top)": not a place, leave them out.
    via = [short_name(h) for h in through[1:-1] if h != "(top)"]
    if via:
        summary += " via " + " -> ".join(via)
    return {"from": start, "to": end, "clock": p.get("from", ""), "delay_ns": round(total, 3),
            "logic_ns": round(total - routing, 3), "routing_ns": round(routing, 3), "logic_levels": levels,
            "carry_hops": carry, "through": through, "summary": summary}


def short_name(path: str) -> str:
    """Drop the wrapper's instance name (``accel.``, ``dut.``) for the summary."""
    for pre in ("accel.", "dut."):
        if path.startswith(pre):
            return path[len(pre):]
    return path
