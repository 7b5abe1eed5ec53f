import pytest

from systolic.compiler.executor import Counters
from systolic.arch.config import AcceleratorConfig
from systolic.report.energy import COMPONENTS, estimate_energy
from systolic.report.energy_table import EnergyTable


def _counters(**kw):
    c = Counters()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_each_component_is_count_times_table_value():
    cfg = AcceleratorConfig(rows=8, cols=8, dataflow="ws")
    t = EnergyTable()
    e = estimate_energy(_counters(macs=1000), cfg, t)
    assert e.components["mac"] == pytest.approx(1000 * (t["mac_int8_mul"] + t["add_int32"]))
    assert e.components["pe_registers"] == pytest.approx(1000 * (8 + 32) * t["register_bit"])
    assert e.components["dram"] == 0 and e.leakage_pj == 0
    d = estimate_energy(_counters(dram_bytes_read=10, dram_bytes_written=6), cfg, t)
    assert d.components["dram"] == pytest.approx(16 * 8 * 8.0)
    assert set(d.components) == set(COMPONENTS)


def test_dram_dominates_and_node_scaling_spares_dram():
    cfg = AcceleratorConfig()
    c = _counters(macs=64, dram_bytes_read=1, spad_a_reads=1)
    e45 = estimate_energy(c, cfg, EnergyTable(node_nm=45))
    e7 = estimate_energy(c, cfg, EnergyTable(node_nm=7))
    assert e45.components["dram"] > e45.components["spad_a"] > 0
    assert e7.components["dram"] == e45.components["dram"]
    assert e7.components["mac"] == pytest.approx(0.094 * e45.components["mac"])


def test_leakage_is_separate_and_user_set():
    cfg = AcceleratorConfig(rows=4, cols=4)
    t = EnergyTable.from_user({"entries": {"leakage_pe_cycle": 0.01}})
    e = estimate_energy(_counters(macs=16), cfg, t, cycles=100)
    assert e.leakage_pj == pytest.approx(100 * 16 * 0.01)
    assert e.dynamic_pj == pytest.approx(sum(e.components.values()))
    assert e.to_json()["counts_source"] == "rtl"


def test_bad_arguments():
    with pytest.raises(ValueError, match="counts_source must be rtl, cycle-model or executor, not 'guess'"):
        estimate_energy(_counters(), AcceleratorConfig(), counts_source="guess")
    with pytest.raises(ValueError, match="dram must be lpddr4, ddr3 or hbm2, not 'sdram'"):
        estimate_energy(_counters(), AcceleratorConfig(), dram="sdram")
