import json

import pytest

from systolic.report.energy_table import DEFAULT_ENTRIES, EnergyTable, EnergyTableError


def test_defaults_keep_sources_and_scale_with_node():
    t45, t7 = EnergyTable(), EnergyTable(node_nm=7)
    assert all(e.source for e in DEFAULT_ENTRIES.values())
    assert t45["mac_int8_mul"] == 0.2
    assert t7["mac_int8_mul"] == pytest.approx(0.2 * 0.094)
    # DRAM does not scale with the logic node.
    assert t7["dram_lpddr4_bit"] == t45["dram_lpddr4_bit"] == 8.0
    j = t7.to_json()
    assert j["entries"]["mac_int8_mul"]["source"].startswith("Horowitz")


def test_sram_energy_grows_with_size_and_width():
    t = EnergyTable()
    assert t.sram_access_pj(4096, 32, False) == pytest.approx(4.82)
    assert t.sram_access_pj(8192, 64, False) == pytest.approx(10.27)
    small, mid, big = (t.sram_access_pj(s, 64, False) for s in (4096, 32768, 1 << 20))
    assert small < mid < big
    assert t.sram_access_pj(8192, 128, True) == pytest.approx(2 * 11.34)


def test_user_table_overrides(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"node_nm": 28, "entries": {"mac_int8_mul": {"pj": 0.5, "source": "my PDK"},
                                                         "add_int8": 0.01}}))
    t = EnergyTable.from_user(p)
    assert t.entries["mac_int8_mul"].source == "my PDK"
    assert t["mac_int8_mul"] == pytest.approx(0.5 * 0.51)
    assert t["add_int8"] == pytest.approx(0.01 * 0.51)


@pytest.mark.parametrize("obj,msg", [
    ({"entries": {"flux_capacitor": 1}}, "unknown energy entry 'flux_capacitor'; known: "),
    ({"entries": {"add_int8": -1}}, "energy entry 'add_int8' must be a finite non-negative number of pJ, not -1"),
    ({"entries": {"add_int8": {"source": "x"}}}, "energy entry 'add_int8' needs a value in pJ ('pj')"),
    ({"entries": {"add_int8": "cheap"}}, "energy entry 'add_int8' needs a value in pJ"),
    ({"node_nm": 5}, "node_nm must be one of 7, 16, 22, 28, 32, 45, not 5"),
    ({"colour": 1}, "unknown energy table fields ['colour']"),
    ([1, 2], "an energy table must be a JSON object"),
])
def test_user_table_errors(obj, msg):
    with pytest.raises(EnergyTableError) as info:
        EnergyTable.from_user(obj)
    assert msg in str(info.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(EnergyTableError, match="cannot read energy table"):
        EnergyTable.from_user(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text("{")
    with pytest.raises(EnergyTableError, match="is not valid JSON"):
        EnergyTable.from_user(p)
