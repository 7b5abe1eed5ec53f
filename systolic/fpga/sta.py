"""Static timing of a routed design from nextpnr's SDF: the worst register-to-register path into every unit.

nextpnr's own report names one critical path per clock; a design's next paths (those a fix of the worst one
leaves) and the worst path of each unit are not in it. ``nextpnr --sdf`` writes the routed design's delays:
each cell's arcs (``IOPATH``: input pin -> output pin, clock -> output for a register or a block RAM), each
routed connection (``INTERCONNECT``: driver pin -> sink pin) and each clocked input's setup
(``SETUPHOLD``). :func:`analyze` propagates arrival times through them (the maximum corner, as nextpnr's
report does), so a path's delay is its start's clock-to-output, its cells and its routing, plus the setup
of its end; :func:`unit_paths` keeps the worst path ending in each unit (instance path, indices folded:
``accel.array.pe_*_*``).

Paths from the top's input pins (the memory port's data, ``rst``) start at no register: nextpnr reports
them as ``<async>``; they are left out here, and the clock network is not followed.

The reader takes the subset nextpnr writes (one item per line; see :func:`parse_sdf`), not SDF in general:
the general parser on PyPI (``sdf-timing``) stops at the escaped ``$`` of Yosys's cell names.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from .reports import register_of

__all__ = ["SdfDesign", "parse_sdf", "analyze", "unit_paths", "path_groups", "unit_of", "SdfError"]


class SdfError(ValueError):
    """The file is not an SDF file as nextpnr writes it."""


_TRIPLE = r"\((-?[\d.]*):(-?[\d.]*):(-?[\d.]*)\)"
_CELLTYPE = re.compile(r'^\s*\(CELLTYPE\s+"([^"]*)"\)\s*$')
_INSTANCE = re.compile(r"^\s*\(INSTANCE\s*(\S*)\)\s*$")
_IOPATH = re.compile(r"^\s*\(IOPATH\s+(\S+)\s+(\S+)\s+" + _TRIPLE)
_INTERCONNECT = re.compile(r"^\s*\(INTERCONNECT\s+(\S+)\s+(\S+)\s+" + _TRIPLE)
_SETUP = re.compile(r"^\s*\(SETUP(?:HOLD)?\s+\((?:posedge|negedge)\s+(\S+)\)\s+\((?:posedge|negedge)\s+(\S+)\)\s+"
                    + _TRIPLE)


@dataclass
class SdfDesign:
    """The delays of one SDF file, in ns (the maximum of each triple).

    ``arcs``: cell arcs ``(instance, from pin, to pin, delay)``; ``wires``: routed connections ``(driver,
    sink, delay)`` as ``instance/pin``; ``setup``: ``instance/pin -> (clock pin, setup)``; ``types``:
    ``instance -> cell type``; ``scale``: the file's time unit in ns.
    """

    arcs: list = field(default_factory=list)
    wires: list = field(default_factory=list)
    setup: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)
    scale: float = 1.0


_UNITS = {"1ps": 1e-3, "10ps": 1e-2, "100ps": 1e-1, "1ns": 1.0, "10ns": 10.0, "100ns": 100.0}


def _max(groups, scale: float) -> float:
    vals = [float(v) for v in groups if v not in ("", "-")]
    return max(vals) * scale if vals else 0.0


def parse_sdf(text: str) -> SdfDesign:
    """Read the SDF nextpnr writes: ``(TIMESCALE ...)``, then per cell ``(CELLTYPE "..")``,
    ``(INSTANCE ..)``, and one ``IOPATH`` / ``INTERCONNECT`` / ``SETUPHOLD`` per line."""
    head = text[:4096]
    if "(DELAYFILE" not in head:
        raise SdfError("not an SDF file: no (DELAYFILE at its start")
    mt = re.search(r"\(TIMESCALE\s+(\S+?)\s*\)", head)
    if mt and mt.group(1) not in _UNITS:
        raise SdfError(f"unknown SDF time scale {mt.group(1)!r} (known: {', '.join(_UNITS)})")
    d = SdfDesign(scale=_UNITS[mt.group(1)] if mt else 1.0)
    inst, ctype = "", ""
    for line in text.splitlines():
        if "IOPATH" in line:
            mt = _IOPATH.match(line)
            if mt:
                d.arcs.append((inst, mt.group(1), mt.group(2), _max(mt.groups()[2:5], d.scale)))
        elif "INTERCONNECT" in line:
            mt = _INTERCONNECT.match(line)
            if mt:
                d.wires.append((mt.group(1), mt.group(2), _max(mt.groups()[2:5], d.scale)))
        elif "SETUP" in line:
            mt = _SETUP.match(line)
            if mt:
                pin = f"{inst}/{mt.group(1)}"
                s = _max(mt.groups()[2:5], d.scale)
                if s >= d.setup.get(pin, (None, -1.0))[1]:
                    d.setup[pin] = (mt.group(2), s)
        elif "CELLTYPE" in line:
            mt = _CELLTYPE.match(line)
            ctype = mt.group(1) if mt else ""
        elif "INSTANCE" in line:
            mt = _INSTANCE.match(line)
            inst = mt.group(1) if mt else ""
            d.types[inst] = ctype
    if not d.types:
        raise SdfError("SDF file without cells")
    return d


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", r"\1", name)


def analyze(d: SdfDesign) -> dict:
    """Arrival times: ``{"arrival": pin -> ns, "prev": pin -> (pin, kind) on its worst path, "starts": set of
    register / RAM outputs}``. Kind is ``"cell"`` or ``"wire"``; a start has no ``prev``."""
    clock_pins = {clk for clk, _ in d.setup.values()}
    into = defaultdict(list)            # pin -> [(from pin, delay, kind)]
    starts = {}
    for inst, a, b, delay in d.arcs:
        if a in clock_pins or a.startswith("CLK"):
            out = f"{inst}/{b}"
            starts[out] = max(delay, starts.get(out, 0.0))
        else:
            into[f"{inst}/{b}"].append((f"{inst}/{a}", delay, "cell"))
    for src, dst, delay in d.wires:
        inst, _, pin = dst.rpartition("/")
        if pin in clock_pins or pin.startswith("CLK"):
            continue                    # the clock network
        into[dst].append((src, delay, "wire"))
    arrival, prev = dict(starts), {}
    state = {}                          # pin -> 1 visiting, 2 done
    for root in list(into):
        if state.get(root) == 2:
            continue
        stack = [root]
        while stack:
            pin = stack[-1]
            if state.get(pin) == 2:
                stack.pop()
                continue
            if state.get(pin) != 1:
                state[pin] = 1
                pending = [p for p, _, _ in into.get(pin, ()) if state.get(p) is None and p not in starts]
                if pending:
                    stack.extend(pending)
                    continue
            # All inputs done (or on a loop, which is cut there: a routed design has none).
            best = None
            if pin in starts:
                best = (starts[pin], None)
            for p, delay, kind in into.get(pin, ()):
                if p in arrival:
                    t = arrival[p] + delay
                    if best is None or t > best[0]:
                        best = (t, (p, kind))
            if best is not None:
                arrival[pin] = best[0]
                if best[1] is not None:
                    prev[pin] = best[1]
            state[pin] = 2
            stack.pop()
    return {"arrival": arrival, "prev": prev, "starts": set(starts)}


_INDEX = re.compile(r"\d+")


def unit_of(instance: str) -> str:
    """The unit a cell of a flattened netlist lies in, indices folded: ``accel.array.pe_0_6.prod_d0_TRELLIS_FF_Q``
    -> ``accel.array.pe_*_*``; ``accel.spad_w.mem.0.7`` (a memory's block RAM) -> ``accel.spad_w``; a cell
    without a hierarchical name -> ``(top)``."""
    parts = _unescape(instance).split(".")
    parts = [p for p in parts[:-1] if not p.isdigit()]
    while parts and parts[-1] and parts[-1][0].isdigit():
        parts.pop()
    if len(parts) > 1 and parts[-1] == "mem":        # amaranth.lib.memory's storage: its block RAMs
        parts.pop()
    return ".".join(_INDEX.sub("*", p) for p in parts) or "(top)"


def signal_of(instance: str) -> str:
    """``accel.controller.checker.ins_TRELLIS_FF_Q_12`` -> ``accel.controller.checker.ins``
    (:func:`.reports.register_of` of the unescaped name)."""
    return register_of(_unescape(instance).lstrip("\\"))


def _path(pin: str, res: dict) -> list:
    steps = [pin]
    prev = res["prev"]
    while steps[-1] in prev and len(steps) < 100000:
        steps.append(prev[steps[-1]][0])
    return steps[::-1]


def _register_endpoints(d: SdfDesign, res: dict):
    """``(delay, steps)`` of the worst path into every timed input whose path starts at a register or RAM
    output (paths from the top's input pins start at no register and are left out); the delay includes the
    input's setup."""
    arrival = res["arrival"]
    for pin, (_, setup) in d.setup.items():
        if pin not in arrival:
            continue
        steps = _path(pin, res)
        if steps[0] in res["starts"]:
            yield arrival[pin] + setup, steps


def _routing(steps: list, res: dict) -> float:
    arrival = res["arrival"]
    return sum(arrival[b] - arrival[a] for a, b in zip(steps, steps[1:]) if res["prev"][b][1] == "wire")


def _cells(steps: list) -> list:
    cells = []
    for pin in steps:
        inst = pin.rpartition("/")[0]
        if not cells or cells[-1] != inst:
            cells.append(inst)
    return cells


def unit_paths(d: SdfDesign, res: dict | None = None, *, top: int | None = None) -> list:
    """The worst register-to-register path ending in each unit, worst first (*top*: only that many).

    Each: ``{"unit", "delay_ns", "fmax_mhz", "from", "to", "logic_ns", "routing_ns", "cells", "summary"}``:
    the end's unit, the path's delay (its end's setup included) and the clock it would allow, start and end
    register (signal names), the split into cell and routing delay, the cells it passes.
    """
    res = analyze(d) if res is None else res
    worst = {}
    for t, steps in _register_endpoints(d, res):
        u = unit_of(steps[-1].rpartition("/")[0])
        if u not in worst or t > worst[u][0]:
            worst[u] = (t, steps)
    out = []
    for u, (t, steps) in sorted(worst.items(), key=lambda kv: -kv[1][0]):
        routing = _routing(steps, res)
        cells = _cells(steps)
        start, end = signal_of(cells[0]), signal_of(cells[-1])
        out.append({
            "unit": u, "delay_ns": round(t, 3), "fmax_mhz": round(1000.0 / t, 2) if t > 0 else None,
            "from": start, "to": end, "logic_ns": round(t - routing, 3), "routing_ns": round(routing, 3),
            "cells": len(cells),
            "summary": f"{start} -> {end}: {t:.2f} ns ({t - routing:.2f} logic + {routing:.2f} routing, "
                       f"{len(cells)} cells)",
        })
    return out[:top] if top else out


def path_groups(d: SdfDesign, res: dict | None = None, *, slower_than_ns: float, top: int | None = None) -> dict:
    """Every register-to-register path slower than *slower_than_ns* (a clock period), grouped by the register
    it starts from and the one it ends in, worst group first (*top*: only that many groups listed).

    A design that misses its clock by a little has hundreds of such endpoints, and a fix of one path only
    counts once every group is under the period: the groups say how many independent paths are left and
    where. Returns ``{"period_ns", "endpoints", "count", "groups"}``: the threshold, the number of slow
    endpoints and of groups, and per listed group ``{"from", "to", "endpoints", "delay_ns", "fmax_mhz",
    "logic_ns", "routing_ns", "cells"}`` (the group's worst path).
    """
    if not slower_than_ns > 0:
        raise ValueError(f"path_groups: slower_than_ns must be a positive time in ns, got {slower_than_ns!r}")
    res = analyze(d) if res is None else res
    groups = {}
    endpoints = 0
    for t, steps in _register_endpoints(d, res):
        if t <= slower_than_ns:
            continue
        endpoints += 1
        key = (signal_of(steps[0].rpartition("/")[0]), signal_of(steps[-1].rpartition("/")[0]))
        g = groups.setdefault(key, [0, 0.0, None])
        g[0] += 1
        if t > g[1]:
            g[1], g[2] = t, steps
    out = []
    for (start, end), (n, t, steps) in sorted(groups.items(), key=lambda kv: (-kv[1][1], kv[0])):
        routing = _routing(steps, res)
        out.append({"from": start, "to": end, "endpoints": n, "delay_ns": round(t, 3),
                    "fmax_mhz": round(1000.0 / t, 2), "logic_ns": round(t - routing, 3),
                    "routing_ns": round(routing, 3), "cells": len(_cells(steps))})
    return {"period_ns": slower_than_ns, "endpoints": endpoints, "count": len(out),
            "groups": out[:top] if top else out}
