"""Static timing from nextpnr's SDF (systolic.fpga.sta) on small hand-written delay files."""

import pytest

from systolic.fpga import sta

HEAD = """(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "top")
  (VENDOR "nextpnr")
  (DIVIDER /)
  (TIMESCALE 1ps)
"""


def _ff(name, clk_q=500, setup_di=0, setup_ce=150):
    return f"""  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE {name})
    (DELAY
      (ABSOLUTE
        (IOPATH CLK Q ({clk_q}:{clk_q}:{clk_q}) ({clk_q}:{clk_q}:{clk_q}))
      )
    )
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) ({setup_di}:{setup_di}:{setup_di}) (285:285:285))
      (SETUPHOLD (posedge CE) (posedge CLK) (100:120:{setup_ce}) (147:147:147))
    )
    )
"""


def _lut(name, delay=236):
    return f"""  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE {name})
    (DELAY
      (ABSOLUTE
        (IOPATH A F (200:218:{delay}) (200:218:{delay}))
        (IOPATH B F (200:218:{delay}) (200:218:{delay}))
      )
    )
    )
"""


def _top(wires):
    lines = "\n".join(f"        (INTERCONNECT {a} {b} (0:0:{d}) (0:0:{d}))" for a, b, d in wires)
    return f"""  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
{lines}
      )
    )
    )
"""


def _design(extra_cells=(), extra_wires=()):
    """Two units: ``accel.ctl`` (r0 -> lut -> lut -> r1 over a slow wire; r1's enable from a pin of the top,
    the slowest path of all but not register to register) and ``accel.array.pe_0_1`` / ``pe_1_0`` (two
    registers each fed by one LUT); the clock reaches every register through a buffer."""
    cells = [_ff(r"accel.ctl.r0_TRELLIS_FF_Q"), _ff(r"accel.ctl.r1_TRELLIS_FF_Q_3"),
             _lut("accel.ctl.r1_DI_LUT4_Z"), _lut("accel.ctl.r1_DI_LUT4_Z_1"),
             _ff(r"accel.array.pe_0_1.prod_d0_TRELLIS_FF_Q"), _ff(r"accel.array.pe_1_0.prod_d0_TRELLIS_FF_Q_2"),
             _lut(r"accel.array.pe_0_1.x_LUT4_Z"), _lut(r"accel.array.pe_1_0.x_LUT4_Z"),
             _ff(r"\\\$38_TRELLIS_FF_Q")]
    clock = [(r"\$gbuf\$clk/CLKO", f"{r}/CLK", 3000) for r in
             (r"accel.ctl.r0_TRELLIS_FF_Q", r"accel.ctl.r1_TRELLIS_FF_Q_3", r"accel.array.pe_0_1.prod_d0_TRELLIS_FF_Q",
              r"accel.array.pe_1_0.prod_d0_TRELLIS_FF_Q_2", r"\\\$38_TRELLIS_FF_Q")]
    wires = clock + [
        (r"accel.ctl.r0_TRELLIS_FF_Q/Q", "accel.ctl.r1_DI_LUT4_Z/A", 1000),
        ("accel.ctl.r1_DI_LUT4_Z/F", "accel.ctl.r1_DI_LUT4_Z_1/B", 4000),
        ("accel.ctl.r1_DI_LUT4_Z_1/F", r"accel.ctl.r1_TRELLIS_FF_Q_3/DI", 2000),
        (r"rst\$tr_io/O", r"accel.ctl.r1_TRELLIS_FF_Q_3/CE", 20000),
        (r"accel.ctl.r0_TRELLIS_FF_Q/Q", r"accel.array.pe_0_1.x_LUT4_Z/A", 3000),
        (r"accel.array.pe_0_1.x_LUT4_Z/F", r"accel.array.pe_0_1.prod_d0_TRELLIS_FF_Q/DI", 500),
        (r"accel.array.pe_0_1.prod_d0_TRELLIS_FF_Q/Q", r"accel.array.pe_1_0.x_LUT4_Z/B", 100),
        (r"accel.array.pe_1_0.x_LUT4_Z/F", r"accel.array.pe_1_0.prod_d0_TRELLIS_FF_Q_2/DI", 100),
        (r"accel.ctl.r0_TRELLIS_FF_Q/Q", r"\\\$38_TRELLIS_FF_Q/CE", 700),
    ]
    return HEAD + _top(wires + list(extra_wires)) + "".join(cells + list(extra_cells)) + ")\n"


def test_worst_path_per_unit_sums_cells_wires_and_setup():
    d = sta.parse_sdf(_design())
    paths = {p["unit"]: p for p in sta.unit_paths(d)}
    # r0 (clock to Q 0.5) + 1.0 + LUT 0.236 + 4.0 + LUT 0.236 + 2.0 + DI setup 0: 7.972 ns. The enable from
    # the top's pin (20 ns) starts at no register and is left out; the clock's wires (3 ns) are not data.
    ctl = paths["accel.ctl"]
    assert ctl["delay_ns"] == pytest.approx(0.5 + 1.0 + 0.236 + 4.0 + 0.236 + 2.0)
    assert ctl["from"] == "accel.ctl.r0" and ctl["to"] == "accel.ctl.r1"
    assert ctl["routing_ns"] == pytest.approx(7.0) and ctl["logic_ns"] == pytest.approx(0.972)
    assert ctl["cells"] == 4 and ctl["fmax_mhz"] == pytest.approx(1000 / 7.972, abs=0.01)
    # Both PEs in one folded unit, the worse one kept: r0 -> pe_0_1 is 0.5 + 3.0 + 0.236 + 0.5.
    pe = paths["accel.array.pe_*_*"]
    assert pe["delay_ns"] == pytest.approx(4.236) and pe["to"] == "accel.array.pe_0_1.prod_d0"
    # An escaped top-level cell: its enable's setup is the maximum of the triple (0.15 ns).
    top = paths["(top)"]
    assert top["delay_ns"] == pytest.approx(0.5 + 0.7 + 0.15) and top["to"] == "$38_TRELLIS_FF_Q"
    assert [p["unit"] for p in sta.unit_paths(d)] == ["accel.ctl", "accel.array.pe_*_*", "(top)"]
    assert len(sta.unit_paths(d, top=1)) == 1


def test_slow_paths_grouped_by_start_and_end_register():
    # _design plus two bits of one register r2 (each fed from r0 through its own LUT: 0.5 + 2.0 + 0.236 + 1.0
    # and 0.5 + 1.0 + 0.236 + 1.0): one group of two endpoints, its worst path kept.
    extra_cells = [_ff("accel.ctl.r2_TRELLIS_FF_Q"), _ff("accel.ctl.r2_TRELLIS_FF_Q_1"),
                   _lut("accel.ctl.r2_DI_LUT4_Z"), _lut("accel.ctl.r2_DI_LUT4_Z_1")]
    extra_wires = [(r"accel.ctl.r0_TRELLIS_FF_Q/Q", "accel.ctl.r2_DI_LUT4_Z/A", 2000),
                   ("accel.ctl.r2_DI_LUT4_Z/F", "accel.ctl.r2_TRELLIS_FF_Q/DI", 1000),
                   (r"accel.ctl.r0_TRELLIS_FF_Q/Q", "accel.ctl.r2_DI_LUT4_Z_1/A", 1000),
                   ("accel.ctl.r2_DI_LUT4_Z_1/F", "accel.ctl.r2_TRELLIS_FF_Q_1/DI", 1000)]
    text = _design(extra_cells, extra_wires)
    d = sta.parse_sdf(text)
    slow = sta.path_groups(d, slower_than_ns=1.0)
    # r0 -> r1 (7.972), r0 -> r2 (3.736 and 2.736), r0 -> pe_0_1 (4.236), r0 -> $38's enable (1.35); not the
    # enable from the top's pin (20 ns, no register) nor pe_0_1 -> pe_1_0 (0.936, under the period).
    assert slow["period_ns"] == 1.0 and slow["endpoints"] == 5 and slow["count"] == 4
    assert [(g["from"], g["to"], g["endpoints"]) for g in slow["groups"]] == [
        ("accel.ctl.r0", "accel.ctl.r1", 1), ("accel.ctl.r0", "accel.array.pe_0_1.prod_d0", 1),
        ("accel.ctl.r0", "accel.ctl.r2", 2), ("accel.ctl.r0", "$38_TRELLIS_FF_Q", 1)]
    r2 = slow["groups"][2]
    assert r2["delay_ns"] == pytest.approx(0.5 + 2.0 + 0.236 + 1.0) and r2["routing_ns"] == pytest.approx(3.0)
    assert r2["logic_ns"] == pytest.approx(0.736) and r2["cells"] == 3
    assert r2["fmax_mhz"] == pytest.approx(1000 / 3.736, abs=0.01)
    # The worst group is the worst path of all (unit_paths' first).
    assert slow["groups"][0]["delay_ns"] == sta.unit_paths(d)[0]["delay_ns"]
    assert sta.path_groups(d, slower_than_ns=5.0)["endpoints"] == 1
    assert sta.path_groups(d, slower_than_ns=8.0) == {"period_ns": 8.0, "endpoints": 0, "count": 0, "groups": []}
    listed = sta.path_groups(d, slower_than_ns=1.0, top=2)
    assert listed["count"] == 4 and len(listed["groups"]) == 2
    with pytest.raises(ValueError, match="slower_than_ns must be a positive time"):
        sta.path_groups(d, slower_than_ns=0)


def test_unit_names_fold_indices_and_memories():
    assert sta.unit_of("accel.array.pe_0_6.prod_d0_TRELLIS_FF_Q") == "accel.array.pe_*_*"
    assert sta.unit_of("accel.spad_w.mem.0.7") == "accel.spad_w"
    assert sta.unit_of("accel.store.lane7.x_TRELLIS_FF_Q") == "accel.store.lane*"
    assert sta.unit_of(r"\\\$38_TRELLIS_FF_Q") == "(top)"
    assert sta.signal_of("accel.controller.checker.ins_TRELLIS_FF_Q_12") == "accel.controller.checker.ins"


def test_time_scale_is_read():
    text = _design().replace("(TIMESCALE 1ps)", "(TIMESCALE 1ns)")
    d = sta.parse_sdf(text)
    assert sta.unit_paths(d)[0]["delay_ns"] == pytest.approx(7972.0)


@pytest.mark.parametrize("text, match", [
    ("", "no \\(DELAYFILE"),
    ("module top; endmodule", "no \\(DELAYFILE"),
    (HEAD.replace("1ps", "3ps") + ")", "unknown SDF time scale '3ps'"),
    (HEAD + ")", "without cells"),
])
def test_malformed_files_are_refused(text, match):
    with pytest.raises(sta.SdfError, match=match):
        sta.parse_sdf(text)
