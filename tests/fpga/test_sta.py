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


def _design():
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
    return HEAD + _top(wires) + "".join(cells) + ")\n"


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
