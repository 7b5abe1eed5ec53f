"""Parsing of captured Yosys ``stat -json`` and nextpnr ``--report`` files (no tools run).

Fixtures: the 2x2 ``tiny`` GemmCore behind the register-bank harness on an
LFE5U-85F-6-CABGA381, and one PE of it synthesized alone (Yosys 0.70,
nextpnr 0.11.1, seed 1).
"""

import gzip
import json
from pathlib import Path

import pytest

from systolic.fpga import reports
from systolic.fpga.synth import SynthResult

FIX = Path(__file__).parent / "fixtures"


def _json(name):
    path = FIX / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)


def test_yosys_stat_design_and_resources():
    cells = reports.design_cells(_json("ecp5_tiny_core_stat.json"))
    assert cells["LUT4"] == 1270 and cells["CCU2C"] == 246
    assert reports.cell_resources("ecp5", cells) == {"luts": 1270 + 2 * 246, "ffs": 848, "dsps": 4, "brams": 0}


def test_yosys_stat_one_pe():
    pe = reports.cell_resources("ecp5", reports.design_cells(_json("ecp5_pe_stat.json")))
    # 32-bit psum adder = 16 CCU2C (32 LUTs), weight swap mux 8 LUTs; a 8, swap 1, psum 32, 2 x w 8 FFs.
    assert pe == {"luts": 40, "ffs": 57, "dsps": 1, "brams": 0}


def test_yosys_stat_without_design_totals():
    stat = {"modules": {"\\top": {"num_cells_by_type": {"SB_LUT4": 5, "SB_DFFE": 2, "SB_DFFSR": 1,
                                                          "SB_CARRY": 3, "SB_MAC16": 1, "SB_RAM40_4K": 2}}}}
    cells = reports.design_cells(stat)
    assert reports.cell_resources("ice40", cells) == {"luts": 5, "ffs": 3, "dsps": 1, "brams": 2}
    with pytest.raises(ValueError, match="no 'design' totals and more than one module"):
        reports.design_cells({"modules": {"a": {}, "b": {}}})


def test_nextpnr_utilization_and_fmax():
    rep = _json("ecp5_tiny_core_report.json.gz")
    util = reports.nextpnr_utilization("ecp5", rep)
    assert util == {"luts": (1836, 83640), "ffs": (848, 83640), "dsps": (4, 156), "brams": (0, 208),
                    "io": (24, 365)}
    assert reports.nextpnr_fmax(rep) == pytest.approx(57.971, abs=1e-3)
    assert reports.nextpnr_fmax({"fmax": {}}) is None
    with pytest.raises(ValueError, match="no 'utilization'"):
        reports.nextpnr_utilization("ecp5", {})


def test_critical_path_summary():
    cp = reports.critical_path(_json("ecp5_tiny_core_report.json.gz"))
    assert cp["from"] == "dut.requant.lane0.k1_TRELLIS_FF_Q"
    assert cp["to"] == "dut.requant.lane0.z_TRELLIS_FF_Q_31"
    assert cp["delay_ns"] == pytest.approx(17.25, abs=0.01)
    assert cp["delay_ns"] == pytest.approx(cp["logic_ns"] + cp["routing_ns"], abs=1e-3)
    assert (cp["logic_levels"], cp["carry_hops"]) == (12, 49)
    assert cp["through"] == ["dut.requant.lane0"]
    assert cp["summary"] == ("requant.lane0.k1 -> requant.lane0.z, 17.25 ns (7.83 logic + 9.42 routing; "
                             "12 cell levels, 49 carry hops)")
    assert reports.critical_path({"critical_paths": []}) is None


def test_cell_names():
    assert reports.hierarchy_of("accel.array.pe_0_1.psum_out_TRELLIS_FF_Q_3") == "accel.array.pe_0_1"
    assert reports.hierarchy_of("accel.x.$auto$ff.cc:266$12") == "accel.x"
    assert reports.hierarchy_of("csr_rdata_TRELLIS_FF_Q") == "(top)"
    assert reports.register_of("dut.requant.lane0.z_TRELLIS_FF_Q_31") == "dut.requant.lane0.z"
    assert reports.register_of("csr_rdata_TRELLIS_FF_Q") == "csr_rdata"


def test_instance_counts():
    from systolic.arch.config import AcceleratorConfig

    cfg = AcceleratorConfig(rows=4, cols=2)
    assert reports.instance_counts(cfg, "system") == {"pe": 8, "lane": 2}
    assert reports.instance_counts(cfg, "array") == {"pe": 8}


def test_result_text_and_json_roundtrip():
    r = SynthResult(config={}, config_name="x", target="ecp5", device="LFE5U-85F-6-CABGA381", top="system",
                    freq_mhz=100.0, luts=1836, ffs=848, dsps=4, brams=0, io=24,
                    available={"luts": 83640, "io": 365}, fmax_mhz=57.97, timing_met=False,
                    critical_path={"summary": "a -> b"}, routed=True,
                    per_module={"pe": {"count": 4, "each": {"luts": 40, "ffs": 57, "dsps": 1, "brams": 0},
                                       "total": {}}})
    text = r.to_text()
    assert "LUTs   1836 / 83640 (2.2%)" in text
    assert "Fmax   58.0 MHz (constraint 100 MHz: MISSED)" in text
    assert "critical path: a -> b" in text
    assert "per pe    40.0 LUTs, 57.0 FFs, 1.00 DSPs" in text
    assert SynthResult.from_dict(json.loads(r.to_json())) == r
    assert r.per_pe() == {"luts": 40, "ffs": 57, "dsps": 1, "brams": 0}
