"""``systolic export-fpga`` end to end: through ``systolic.cli.main`` and through the installed console script.

Expected names are written out by hand from the tiny preset (2x2, WS, 8-bit
operands, 32-bit accumulator, 8-bit signed output, half_even rounding) and the
naming rule of docs/fpga.md (``<config name>_fpga``, ``<config name>_core_bank``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from systolic.arch.config import AcceleratorConfig
from systolic.cli import main

CONFIG_NAME = "systolic_ws_2x2_i8s_w8s_a32_o8s_he"
MODULES = {"system": f"{CONFIG_NAME}_fpga", "core": f"{CONFIG_NAME}_core_bank"}


def _parse_core(text: str) -> dict:
    """The YAML subset the CAPI2 ``.core`` file uses: nested mappings, ``- item`` lists, flow lists
    ``[a, b]`` (possibly over several lines), an ``&anchor`` and ``<<: *anchor`` merges."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "CAPI=2:"
    root, anchors = {}, {}
    stack = [(-1, root)]          # (indent, container) of the open blocks
    pending = None                # (container, key, text) of an unclosed flow list

    def scalar(v):
        v = v.strip()
        if v.startswith("[") and v.endswith("]"):
            return [scalar(x) for x in v[1:-1].split(",")]
        return v[1:-1] if len(v) > 1 and v[0] == v[-1] and v[0] in "'\"" else v

    for pos, ln in enumerate(lines[1:], start=1):
        indent, s = len(ln) - len(ln.lstrip()), ln.strip()
        if pending is not None:
            container, key, acc = pending
            acc += " " + s
            if acc.endswith("]"):
                container[key], pending = scalar(acc), None
            else:
                pending = (container, key, acc)
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if s.startswith("- "):
            assert isinstance(parent, list), ln
            parent.append(scalar(s[2:]))
            continue
        key, _, value = s.partition(":")
        value = value.strip()
        if key == "<<":
            parent.update(anchors[value.lstrip("*")])
        elif value == "" or value.startswith("&"):
            # A block: a mapping, or a list if the next line is an item.
            nxt = lines[pos + 1].strip() if pos + 1 < len(lines) else ""
            child = [] if nxt.startswith("- ") else {}
            parent[key] = child
            if value.startswith("&"):
                anchors[value[1:]] = child
            stack.append((indent, child))
        elif value.startswith("[") and not value.endswith("]"):
            pending = (parent, key, value)
        else:
            parent[key] = scalar(value)
    return root


@pytest.mark.parametrize("top", ["system", "core"])
def test_cli_export_fpga_writes_verilog_config_and_core(top, tmp_path, capsys):
    out = tmp_path / "export"            # not there yet: the command creates it
    argv = ["export-fpga", "--config", "tiny", "--out", str(out)]
    if top != "system":
        argv += ["--top", top]
    assert main(argv) == 0
    module = MODULES[top]
    names = [f"{module}.v", f"{CONFIG_NAME}.json", f"{CONFIG_NAME}.core"]
    if top == "system":
        names.append(f"{CONFIG_NAME}_csr.h")      # the C header of the CSR map (tests/fpga/test_csr_header.py)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out / n) for n in names]
    assert captured.err == ""
    assert sorted(p.name for p in out.iterdir()) == sorted(names)

    # Verilog: one top module of that name; every other module's name is prefixed with it.
    v = (out / names[0]).read_text()
    mods = re.findall(r"^module \\?(\S+?) ?\(", v, re.M)
    assert mods[0] == module and mods.count(module) == 1
    assert all(m.startswith(module + ".") for m in mods[1:]) and len(mods) > 1
    header = re.search(rf"^module {module}\((.*?)\);", v, re.M).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert {"clk", "rst", "csr_addr", "csr_we", "csr_wdata", "csr_rdata"} <= ports
    assert ("irq" in ports) == (top == "system")
    assert v.rstrip().endswith("endmodule")

    # The config file: JSON of the tiny preset.
    cfg = json.loads((out / names[1]).read_text())
    assert (cfg["rows"], cfg["cols"], cfg["dataflow"], cfg["bus_bytes"]) == (2, 2, "ws", 4)
    assert (cfg["spad_a_bytes"], cfg["spad_w_bytes"], cfg["acc_entries"]) == (1024, 1024, 64)
    assert AcceleratorConfig.load(out / names[1]) == AcceleratorConfig.preset("tiny")

    # The FuseSoC core: name, files, top level of every target, the ECP5-85 CABGA381 speed 6 device.
    core = _parse_core((out / names[2]).read_text())
    assert core["name"] == f"systolic:accel:{CONFIG_NAME}:0.1.0"
    assert core["filesets"]["rtl"] == {"files": [names[0]], "file_type": "verilogSource"}
    assert core["filesets"]["config"]["files"][0].startswith(f"{CONFIG_NAME}.json:")
    targets = core["targets"]
    assert set(targets) == {"default", "lint", "synth"}
    assert {t["toplevel"] for t in targets.values()} == {module}
    assert targets["synth"]["filesets"] == ["rtl", "config"]
    opts = targets["synth"]["tools"]["trellis"]["nextpnr_options"]
    assert opts[:6] == ["--85k", "--package", "CABGA381", "--speed", "6", "--freq"]
    assert targets["lint"]["default_tool"] == "verilator" and targets["synth"]["default_tool"] == "trellis"


def test_cli_export_fpga_custom_vlnv(tmp_path, capsys):
    assert main(["export-fpga", "--config", "tiny", "--vlnv", "acme:npu:gemm:2.0", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    core = _parse_core((tmp_path / f"{CONFIG_NAME}.core").read_text())
    assert core["name"] == "acme:npu:gemm:2.0"


@pytest.mark.parametrize("argv, message", [
    (["--config", "nope"],
     "config must be a preset (tiny, small, default, large) or an existing JSON file, not 'nope'"),
    (["--config", "tiny", "--vlnv", "bad name"],
     "vlnv must look like vendor:library:name:version, not 'bad name'"),
], ids=["bad_config", "bad_vlnv"])
def test_cli_export_fpga_bad_value_is_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["export-fpga", *argv, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"systolic: error: {message}\n"
    assert captured.out == ""
    assert not out.exists()                     # refused before anything is written


def test_cli_export_fpga_bad_choice_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export-fpga", "--config", "tiny", "--top", "soc", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("systolic export-fpga: error: argument --top: invalid choice: 'soc' "
                                    "(choose from 'system', 'axi', 'core', 'array')")
    assert err.startswith("usage: systolic export-fpga ")
    assert not (tmp_path / "x").exists()


def test_console_script_export_fpga_error(tmp_path):
    """The installed ``systolic`` entry point (pyproject ``[project.scripts]``): exit 1, one stderr line."""
    exe = Path(sys.executable).with_name("systolic")
    assert exe.is_file()
    proc = subprocess.run([str(exe), "export-fpga", "--config", "nope", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == ("systolic: error: config must be a preset (tiny, small, default, large) or an "
                           "existing JSON file, not 'nope'\n")


def test_cli_export_fpga_help_names_the_real_module(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export-fpga", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "<config name>_fpga" in text
    assert "systolic_fpga_top" not in text       # no module of that name is ever written


@pytest.mark.parametrize("argv, config, top, note", [
    (["--target", "ice40"], "tiny", "core", True),                  # the defaults that fit an iCE40
    (["--target", "ice40", "--top", "array"], "tiny", "array", True),
    (["--target", "ice40", "--config", "small", "--top", "system"], "small", "system", False),
    ([], "default", "system", False),                                # ECP5: the whole default accelerator
])
def test_cli_synth_defaults_per_target(argv, config, top, note, monkeypatch, capsys):
    import systolic.fpga.synth as synth_module
    from systolic.arch.config import AcceleratorConfig

    seen = {}

    class Result:
        def to_text(self):
            return "ok"

    def fake_synth(cfg, **kwargs):
        seen.update(config=cfg, **kwargs)
        return Result()

    monkeypatch.setattr(synth_module, "synth", fake_synth)
    assert main(["synth", *argv, "--no-pnr"]) == 0
    assert seen["config"] == AcceleratorConfig.preset(config) and seen["top"] == top
    assert seen["target"] == ("ice40" if "ice40" in argv else "ecp5")
    assert ("iCE40 defaults: the tiny config's core" in capsys.readouterr().err) == note
