"""Energy model: event counts x energy per event, per component.

``energy = sum(count_e * pJ_e)`` over the events of
:class:`~systolic.compiler.executor.Counters` (from the RTL's counters when a
simulation ran, from the cycle model or the NumPy executor otherwise; the
result records which). Per-event energies come from an
:class:`~systolic.report.energy_table.EnergyTable` (sourced, node-scaled,
user-overridable). Modelling choices, stated so they can be argued with:

* a MAC is one ``in_bits x w_bits`` multiply, scaled from the 8-bit figure by
  ``(in_bits * w_bits) / 64`` (array multipliers grow with the product of
  widths), plus one ``acc_bits`` add scaled from the 32-bit figure; with the
  shift PE (``pe="shift"``) the multiply is one ``in_bits``-wide shift, scaled
  linearly in width from the 32-bit shifter figure (:data:`PE_PRODUCT_PJ`);
* PE register movement per MAC: weight-stationary moves an activation and a
  partial sum between neighbours (``in_bits + acc_bits`` register bits);
  output-stationary moves an activation and a weight and updates the local
  accumulator (``in_bits + w_bits + acc_bits``);
* scratchpad and accumulator accesses are one line wide, priced by the CACTI
  points interpolated to the memory's size and scaled to the line width;
* a requantize is one 32-bit add (bias) and one 32-bit shift per element;
* the vector unit: a VEC element is one 32-bit shift and one 32-bit add (or
  compare); a DIV element is ``acc_bits`` subtract-and-compare steps of the
  divisor's width plus one, each priced as a 32-bit add scaled by width;
* DRAM energy is per bit moved (LPDDR4 by default), not node-scaled;
* control: one 128-bit instruction register write per instruction;
* leakage: the table's ``leakage_pj_per_pe_cycle`` times PEs times cycles,
  reported separately (0 unless the user table sets it: no sourced figure).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arch.isa import FIELDS, Opcode
from .energy_table import EnergyTable

__all__ = ["EnergyBreakdown", "estimate_energy", "COMPONENTS", "PE_PRODUCT_PJ"]

COMPONENTS = ("mac", "pe_registers", "spad_a", "spad_w", "accumulator", "requantizer", "vector", "dram",
              "control")

#: Width of one DIV step's subtract-and-compare: the divisor's bits plus one.
DIV_STEP_BITS = FIELDS[Opcode.DIV]["divisor"][1] + 1

#: Register bits each PE moves per MAC, per dataflow: weight-stationary PEs
#: pass on the activation and the partial sum (the weight stays); output-
#: stationary PEs pass on the activation and the weight and update their sum.
PE_MOVED_BITS = {
    "ws": lambda c: c.in_bits + c.acc_bits,
    "os": lambda c: c.in_bits + c.w_bits + c.acc_bits,
}

#: Energy (pJ) of the product of one MAC, per PE kind (``config.pe``), from table *t*: a multiplier grows
#: with the product of the operand widths, a shifter of the activation roughly with its width.
PE_PRODUCT_PJ = {
    "multiplier": lambda c, t: t["mac_int8_mul"] * (c.in_bits * c.w_bits) / 64,
    "shift": lambda c, t: t["shifter_32"] * c.in_bits / 32,
}


@dataclass(frozen=True)
class EnergyBreakdown:
    """Dynamic energy per component (pJ), leakage separately, and where the counts came from."""

    components: dict
    leakage_pj: float
    counts_source: str
    table: EnergyTable

    @property
    def dynamic_pj(self) -> float:
        return sum(self.components.values())

    def to_json(self) -> dict:
        return {"components_pj": dict(self.components), "dynamic_pj": self.dynamic_pj,
                "leakage_pj": self.leakage_pj, "counts_source": self.counts_source,
                "table": self.table.to_json()}


def _get(counters, name):
    return counters[name] if isinstance(counters, dict) else getattr(counters, name)


def estimate_energy(counters, config, table: EnergyTable | None = None, *, cycles: int = 0,
                    counts_source: str = "rtl", dram: str = "lpddr4") -> EnergyBreakdown:
    """Energy of one run with event *counters* on an accelerator *config*.

    Parameters
    ----------
    counters : Counters or dict
        Event counts (see :class:`~systolic.compiler.executor.Counters`).
    config : AcceleratorConfig
        Bit widths, array and memory sizes.
    table : EnergyTable, optional
        Per-event energies; the sourced 45 nm default when omitted.
    cycles : int
        Cycles of the run, for leakage.
    counts_source : {"rtl", "cycle-model", "executor"}
        Where the counts came from; recorded in the result.
    dram : {"lpddr4", "ddr3", "hbm2"}
    """
    if counts_source not in ("rtl", "cycle-model", "executor"):
        raise ValueError(f"counts_source must be rtl, cycle-model or executor, not {counts_source!r}")
    if dram not in ("lpddr4", "ddr3", "hbm2"):
        raise ValueError(f"dram must be lpddr4, ddr3 or hbm2, not {dram!r}")
    t = table or EnergyTable()
    c = config
    macs = _get(counters, "macs")
    mul = PE_PRODUCT_PJ[c.pe](c, t)
    add = t["add_int32"] * c.acc_bits / 32
    moved_bits = PE_MOVED_BITS[c.dataflow](c)
    a_line, w_line, acc_line = c.rows * c.in_bits, c.cols * c.w_bits, c.cols * c.acc_bits
    acc_bytes = c.acc_entries * c.cols * c.acc_bits // 8
    comp = {
        "mac": macs * (mul + add),
        "pe_registers": macs * moved_bits * t["register_bit"],
        "spad_a": _get(counters, "spad_a_reads") * t.sram_access_pj(c.spad_a_bytes, a_line, False)
        + _get(counters, "spad_a_writes") * t.sram_access_pj(c.spad_a_bytes, a_line, True),
        "spad_w": _get(counters, "spad_w_reads") * t.sram_access_pj(c.spad_w_bytes, w_line, False)
        + _get(counters, "spad_w_writes") * t.sram_access_pj(c.spad_w_bytes, w_line, True),
        "accumulator": _get(counters, "acc_reads") * t.sram_access_pj(acc_bytes, acc_line, False)
        + _get(counters, "acc_writes") * t.sram_access_pj(acc_bytes, acc_line, True),
        "requantizer": _get(counters, "requant_ops") * (t["adder_32"] + t["shifter_32"]),
        "vector": _get(counters, "vec_ops") * (t["adder_32"] + t["shifter_32"])
        + _get(counters, "div_ops") * c.acc_bits * t["adder_32"] * (DIV_STEP_BITS / 32),
        "dram": (_get(counters, "dram_bytes_read") + _get(counters, "dram_bytes_written")) * 8
        * t[f"dram_{dram}_bit"],
        "control": _get(counters, "instructions") * 128 * t["register_bit"],
    }
    leak = cycles * c.rows * c.cols * t["leakage_pe_cycle"]
    return EnergyBreakdown(comp, leak, counts_source, t)
