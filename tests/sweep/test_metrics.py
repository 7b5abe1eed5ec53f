"""The two sweep metrics with tools behind them: ``rtl`` (the direct Verilator backend) against the cycle
model, and ``synth`` (Yosys without place and route), each on a one-point sweep run in this process."""

import pytest

from systolic.sweep.run import run_sweep
from systolic.sweep.spec import parse_spec


def _one_point(tmp_path, **kw):
    """The single row of a one-point sweep on the tiny preset, run in this process (``--workers 0``)."""
    spec = parse_spec({"base": "tiny", "models": ["random:mlp"], "images": 2, **kw})
    run = run_sweep(spec, tmp_path, workers=0, progress=False)
    assert len(run.rows) == 1 and run.computed == 1 and run.cached == 0
    row = run.rows[0]
    assert row["status"] == "ok" and row["error"] is None, row["error"]
    return row


@pytest.mark.slow
def test_rtl_metric_equals_cycle_model(tmp_path):
    row = _one_point(tmp_path, metrics=["cycles", "rtl"])
    assert row["rtl_bit_exact"] is True
    assert row["rtl_equals_model"] is True
    # Two independent mechanisms: the RTL's cycle counter and the analytic cycle model.
    assert row["cycles_per_image"] > 0
    assert row["rtl_cycles_per_image"] == row["cycles_per_image"]


@pytest.mark.slow
def test_synth_metric_without_pnr(tmp_path):
    # iCE40: on this Yosys (YoWASP 0.70) synth_ecp5 of the tiny system top stops on an internal assertion in
    # ABC9 (ABC_OPS_REINTEGRATE, kernel/rtlil.cc:3091); the small preset on ECP5 and tiny on iCE40 synthesize.
    row = _one_point(tmp_path, metrics=["synth"], synth={"target": "ice40", "pnr": False})
    assert row["luts"] > 0 and row["ffs"] > 0
    assert row["fmax_mhz"] is None                      # no place and route: no timing
    assert "cycles_per_image" not in row                # only the synth columns


@pytest.mark.parametrize("synth, exc, message", [
    ({"target": "xilinx"}, ValueError, "synth.target must be ecp5 or ice40, not 'xilinx'"),
    ({"pnr": False, "route": True}, ValueError,
     "unknown synth key(s): route (known keys: target, device, pnr, freq_mhz, seed)"),
    ({"freq_mhz": 0}, ValueError, "synth.freq_mhz must be a positive number, not 0"),
])
def test_invalid_synth_option_is_a_spec_error(synth, exc, message):
    with pytest.raises(exc) as info:
        parse_spec({"base": "tiny", "models": ["random:mlp"], "metrics": ["synth"], "synth": synth})
    assert str(info.value) == message
