"""Verilog generation, lint and the ``generate`` command."""

import argparse
import re

import pytest

from systolic.arch.config import AcceleratorConfig
from systolic.hw.generate import TOPS, design_fingerprint, generate_verilog, module_name, source_closure
from systolic.sim.verilator import LINT_WAIVERS, LintError, lint, lint_flags


@pytest.mark.parametrize("cfg", [
    AcceleratorConfig(rows=1, cols=1, dataflow="ws", per_channel_shift=False),
    AcceleratorConfig(rows=2, cols=3, dataflow="os", in_bits=4, in_signed=False, w_bits=4,
                      acc_bits=16, out_bits=4, out_signed=False, rounding="half_up", shift_bits=4),
    AcceleratorConfig(rows=3, cols=2, dataflow="ws", w_signed=False, out_bits=16, shift_bits=7),
], ids=lambda c: c.name)
def test_generate_and_lint(cfg, tmp_path):
    name = module_name(cfg, "core")
    path = generate_verilog(cfg, tmp_path)
    assert path == tmp_path / f"{name}.v"
    text = path.read_text()
    assert re.search(rf"^module {name}\(", text, re.M)
    for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready", "bias", "shift"):
        assert port in text
    assert ("w__payload" in text) == (cfg.dataflow == "ws")
    mtime = path.stat().st_mtime_ns
    generate_verilog(cfg, tmp_path)  # unchanged text: file left alone
    assert path.stat().st_mtime_ns == mtime
    lint(path, top=name)


def test_every_top_one_naming_scheme(tmp_path):
    """core, system, fpga and axi: <config name>_<top>.v holding module <config name>_<top>, submodules
    prefixed."""
    cfg = AcceleratorConfig.preset("tiny")
    assert tuple(TOPS) == ("core", "system", "fpga", "axi")
    for top in TOPS:
        path = generate_verilog(cfg, tmp_path, top=top)
        name = f"{cfg.name}_{top}"
        assert path.name == f"{name}.v" and module_name(cfg, top) == name
        modules = re.findall(r"^module (\S+?)\(", path.read_text(), re.M)
        assert name in modules and all(m == name or m.startswith(name + ".") for m in modules)
    ports = re.search(rf"^module {cfg.name}_fpga\((.*?)\);", (tmp_path / f"{cfg.name}_fpga.v").read_text(),
                      re.M | re.S).group(1)
    assert {"csr_addr", "csr_rdata", "irq", "bus__req_valid"} <= {p.strip() for p in ports.split(",")}
    ports = re.search(rf"^module {cfg.name}_axi\((.*?)\);", (tmp_path / f"{cfg.name}_axi.v").read_text(),
                      re.M | re.S).group(1)
    assert {"m_axi_arvalid", "m_axi_rdata", "s_axil_awaddr", "s_axil_rdata", "irq"} <= {p.strip() for p in
                                                                                         ports.split(",")}
    with pytest.raises(ValueError, match="top must be one of core, system, fpga, axi, not 'soc'"):
        generate_verilog(cfg, tmp_path, top="soc")


def test_design_fingerprint_follows_the_sources():
    cfg = AcceleratorConfig.preset("tiny")
    core, system = design_fingerprint(cfg, "core"), design_fingerprint(cfg, "system")
    assert core != system and design_fingerprint(cfg, "core") == core
    assert design_fingerprint(cfg.replace(rounding="half_up"), "core") != core
    files = {p.name for p in source_closure("systolic.hw.system")}
    # The system's Verilog depends on its units (each dataflow's array unit too) and the contract ...
    assert {"system.py", "controller.py", "array_unit_ws.py", "array_unit_os.py", "latency.py", "isa.py"} <= files
    # ... the core's on fewer files: edits to the controller keep the core's builds.
    assert "controller.py" not in {p.name for p in source_closure("systolic.hw.core")}


def test_lint_waivers_are_few_and_explained():
    assert len(LINT_WAIVERS) <= 6
    assert all(isinstance(why, str) and why for why in LINT_WAIVERS.values())
    flags = lint_flags()
    assert flags[0] == "-Wall" and "-Wno-fatal" not in flags and "-Wno-lint" not in flags


def test_lint_reports_new_warnings(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input [3:0] a, output [1:0] y);\n  assign y = a;\nendmodule\n")
    with pytest.raises(LintError, match="WIDTHTRUNC"):
        lint(bad)


def test_generate_command(tmp_path, capsys):
    from systolic.hw import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    cfg = AcceleratorConfig(rows=2, cols=2, dataflow="os")
    cfg_path = cfg.save(tmp_path / "cfg.json")
    args = parser.parse_args(["generate", "--config", str(cfg_path), "--out", str(tmp_path / "v"),
                              "--save-config"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "v" / f"{cfg.name}_core.v")
    assert AcceleratorConfig.load(tmp_path / "v" / f"{cfg.name}.json") == cfg
    args = parser.parse_args(["generate", "--config", "tiny", "--out", str(tmp_path / "t"), "--lint"])
    assert args.func(args) == 0
    assert (tmp_path / "t" / "systolic_ws_2x2_i8s_w8s_a32_o8s_he_core.v").exists()
    args = parser.parse_args(["generate", "--top", "system", "--config", "tiny", "--out", str(tmp_path / "t"),
                              "--lint"])
    assert args.func(args) == 0
    assert (tmp_path / "t" / "systolic_ws_2x2_i8s_w8s_a32_o8s_he_system.v").exists()
    args = parser.parse_args(["generate", "--top", "system", "--config", str(AcceleratorConfig(in_bits=12).save(
        tmp_path / "wide.json")), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="in_bits must be at most 8 for the system"):
        args.func(args)
    args = parser.parse_args(["generate", "--config", "nope", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="config must be a preset"):
        args.func(args)


def test_commands_module_imports_no_amaranth():
    import subprocess
    import sys

    code = "import sys, systolic.hw.commands; print('amaranth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
