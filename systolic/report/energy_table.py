"""Per-operation energy table with sources, node scaling and user overrides.

The default figures are published 45 nm values (docs/energy.md lists them);
each entry keeps its source beside its value. Absolute numbers are uncertain by
2-3x across published tools; ratios (DRAM >> SRAM >> register ~ MAC) are the
robust part, and every report states the table it used.

A user table is a JSON object ``{"node_nm": 28, "entries": {"mac_int8":
{"pj": 0.25, "source": "my PDK"}, ...}}``: entries override defaults by key;
unknown keys, negative or missing values are clear errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..golden.limits import loads_json

__all__ = ["EnergyEntry", "EnergyTable", "DEFAULT_ENTRIES", "NODE_SCALING", "EnergyTableError"]


class EnergyTableError(ValueError):
    """A malformed user energy table."""


@dataclass(frozen=True)
class EnergyEntry:
    pj: float
    unit: str
    source: str
    #: DRAM does not scale with the logic node.
    scales_with_node: bool = True


_H = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm, 0.9 V)"
_C = "CACTI via Accelergy, timeloop-accelergy-exercises reference outputs (45 nm)"
_A = "Aladdin (40 nm)"
_D = "Accelergy CACTI plug-in, DRAM per bit"

#: Largest energy table file read (a table of every entry is a few KB).
MAX_TABLE_BYTES = 1 << 20

#: Default 45 nm table. SRAM entries are per access of the stated width.
DEFAULT_ENTRIES: dict[str, EnergyEntry] = {
    "mac_int8_mul": EnergyEntry(0.2, "pJ per 8-bit multiply", _H),
    "add_int8": EnergyEntry(0.03, "pJ per 8-bit add", _H),
    "add_int32": EnergyEntry(0.1, "pJ per 32-bit add", _H),
    "mul_int32": EnergyEntry(3.1, "pJ per 32-bit multiply", _H),
    "register_bit": EnergyEntry(0.009, "pJ per bit written to a register", _A),
    "shifter_32": EnergyEntry(0.417, "pJ per 32-bit shift", _A),
    "adder_32": EnergyEntry(0.21, "pJ per 32-bit add at 1 ns", _A),
    "sram_4kb_read": EnergyEntry(4.82, "pJ per 32-bit read, 4 KB array", _C),
    "sram_4kb_write": EnergyEntry(4.49, "pJ per 32-bit write, 4 KB array", _C),
    "sram_8kb_read": EnergyEntry(10.27, "pJ per 64-bit read, 8 KB array", _C),
    "sram_8kb_write": EnergyEntry(11.34, "pJ per 64-bit write, 8 KB array", _C),
    "sram_100kb_read": EnergyEntry(28.43, "pJ per 64-bit read, 100 KB array", _C),
    "sram_100kb_write": EnergyEntry(23.50, "pJ per 64-bit write, 100 KB array", _C),
    "sram_128kb_read": EnergyEntry(32.38, "pJ per 64-bit read, 128 KB array", _C),
    "sram_128kb_write": EnergyEntry(26.16, "pJ per 64-bit write, 128 KB array", _C),
    "dram_lpddr4_bit": EnergyEntry(8.0, "pJ per bit", _D, scales_with_node=False),
    "dram_ddr3_bit": EnergyEntry(70.0, "pJ per bit", _D, scales_with_node=False),
    "dram_hbm2_bit": EnergyEntry(3.9, "pJ per bit", _D, scales_with_node=False),
    "leakage_pe_cycle": EnergyEntry(0.0, "pJ per PE per cycle",
                                    "no sourced figure: 0 unless a user table sets it"),
}

#: Energy factor from 45 nm (Stillmaker & Baas 2017 via Accelergy, 0.8 V).
NODE_SCALING = {45: 1.0, 32: 0.66, 28: 0.51, 22: 0.29, 16: 0.17, 7: 0.094}
NODE_SOURCE = ("Stillmaker & Baas, 'Scaling equations for the accurate prediction of CMOS device "
               "performance from 180 nm to 7 nm', Integration 58 (2017), via Accelergy at 0.8 V")


@dataclass(frozen=True)
class EnergyTable:
    """Energy per event in pJ at a technology node; ``table[key]`` is the scaled value."""

    entries: dict = field(default_factory=lambda: dict(DEFAULT_ENTRIES))
    node_nm: int = 45

    def __post_init__(self):
        if self.node_nm not in NODE_SCALING:
            raise EnergyTableError(
                f"node_nm must be one of {', '.join(map(str, sorted(NODE_SCALING)))}, not {self.node_nm!r}")

    def __getitem__(self, key: str) -> float:
        try:
            e = self.entries[key]
        except KeyError:
            raise KeyError(f"no energy entry {key!r}; known: {', '.join(sorted(self.entries))}") from None
        return e.pj * (NODE_SCALING[self.node_nm] if e.scales_with_node else 1.0)

    def sram_access_pj(self, size_bytes: int, width_bits: int, write: bool) -> float:
        """Energy of one access to an SRAM of *size_bytes*, *width_bits* wide.

        Interpolates the CACTI points linearly in log(size), scales per bit of
        width from the reference width, clamps outside the table's range.
        """
        if size_bytes <= 0 or width_bits <= 0:
            raise ValueError(f"SRAM size and width must be positive, not {size_bytes} B x {width_bits} b")
        kind = "write" if write else "read"
        pts = []
        for kb, ref_bits in ((4, 32), (8, 64), (100, 64), (128, 64)):
            pts.append((kb * 1024, self[f"sram_{kb}kb_{kind}"] / ref_bits))
        if size_bytes <= pts[0][0]:
            per_bit = pts[0][1]
        elif size_bytes >= pts[-1][0]:
            per_bit = pts[-1][1]
        else:
            for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
                if s0 <= size_bytes <= s1:
                    t = (math.log(size_bytes) - math.log(s0)) / (math.log(s1) - math.log(s0))
                    per_bit = e0 + t * (e1 - e0)
                    break
        return per_bit * width_bits

    def to_json(self) -> dict:
        return {
            "node_nm": self.node_nm, "node_scaling": NODE_SCALING[self.node_nm], "node_source": NODE_SOURCE,
            "entries": {k: {"pj_45nm": e.pj, "pj": self[k], "unit": e.unit, "source": e.source,
                            "scales_with_node": e.scales_with_node} for k, e in sorted(self.entries.items())},
        }

    @classmethod
    def from_user(cls, obj_or_path) -> "EnergyTable":
        """Defaults overridden by a user table (a dict, or a JSON file path)."""
        if isinstance(obj_or_path, (str, Path)):
            path = Path(obj_or_path)
            try:
                with open(path, "rb") as fh:
                    data = fh.read(MAX_TABLE_BYTES + 1)        # never more than the limit
            except OSError as exc:
                raise EnergyTableError(f"cannot read energy table {path}: {exc.strerror}") from None
            try:
                obj = loads_json(data, f"energy table {path}", MAX_TABLE_BYTES)
            except ValueError as exc:      # too large, not UTF-8 / JSON, duplicate keys, nested too deeply
                raise EnergyTableError(str(exc)) from None
        else:
            obj = obj_or_path
        if not isinstance(obj, dict):
            raise EnergyTableError("an energy table must be a JSON object")
        unknown_top = set(obj) - {"node_nm", "entries"}
        if unknown_top:
            raise EnergyTableError(f"unknown energy table fields {sorted(unknown_top)}; allowed: entries, node_nm")
        given = obj.get("entries", {})
        if not isinstance(given, dict):
            raise EnergyTableError(f"energy table 'entries' must be an object of entry name -> pJ, not {given!r}")
        entries = dict(DEFAULT_ENTRIES)
        for key, val in given.items():
            if key not in DEFAULT_ENTRIES:
                raise EnergyTableError(f"unknown energy entry {key!r}; known: {', '.join(sorted(DEFAULT_ENTRIES))}")
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                val = {"pj": val}
            if not isinstance(val, dict) or "pj" not in val:
                raise EnergyTableError(f"energy entry {key!r} needs a value in pJ ('pj'), got {val!r}")
            pj = val["pj"]
            if not isinstance(pj, (int, float)) or isinstance(pj, bool) or not math.isfinite(pj) or pj < 0:
                raise EnergyTableError(f"energy entry {key!r} must be a finite non-negative number of pJ, not {pj!r}")
            source = val.get("source", "user table")
            if not isinstance(source, str) or set(val) - {"pj", "source"}:
                raise EnergyTableError(f"energy entry {key!r} takes 'pj' (a number) and 'source' (a string), "
                                       f"not {val!r}")
            base = DEFAULT_ENTRIES[key]
            entries[key] = EnergyEntry(float(pj), base.unit, source,
                                       base.scales_with_node)
        node = obj.get("node_nm", 45)
        return cls(entries=entries, node_nm=node)
