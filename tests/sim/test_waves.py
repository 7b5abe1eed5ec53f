"""Waveforms of RTL runs (``--waves FILE`` of ``systolic simulate`` / ``demo``) and the first-mismatch report.

The VCD and FST files are read here with the formats' own rules (VCD: ``$var`` lines and value changes;
FST: its block layout and the LZ4-compressed hierarchy), not with the writer's code. Expected clock
edges come from the cycle window asked for, or from the RTL's own cycle counter.
"""

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import EVENT_REGISTER
from systolic.cli import main
from systolic.hw.generate import module_name

TINY = AcceleratorConfig.preset("tiny")
TOP = module_name(TINY, "system")
PS_PER_CYCLE = 10_000          # 10 ns per cycle, in the models' 1 ps precision
SIM = ["simulate", "--config", "tiny", "--no-progress"]


# --------------------------------------------------------------------------------------------- readers
def read_vcd(path: Path):
    """``(vars, changes)``: scope-qualified variable name -> id code; value changes as (time, id, value)."""
    text = path.read_text()
    header, body = text.split("$enddefinitions", 1)
    scopes, names = [], {}
    for tok in re.finditer(r"\$scope \w+ (\S+) \$end|\$upscope \$end|\$var \w+ \d+ (\S+) (\S+)", header):
        if tok.group(0).startswith("$scope"):
            scopes.append(tok.group(1))
        elif tok.group(0).startswith("$upscope"):
            scopes.pop()
        else:
            names[".".join(scopes + [tok.group(3)])] = tok.group(2)
    changes, now = [], None
    for line in body.splitlines()[1:]:
        if line.startswith("#"):
            now = int(line[1:])
        elif line[:1] in "01xz" and len(line) > 1:
            changes.append((now, line[1:], line[0]))
    return names, changes


def rising_edges(names, changes, clk="TOP.clk"):
    """Times at which ``clk`` becomes 1."""
    code = names[clk]
    return [t for t, c, v in changes if c == code and v == "1"]


def _lz4_block(src: bytes, size: int) -> bytes:
    """An LZ4 block (the format FST compresses its hierarchy with), decompressed."""
    out, i = bytearray(), 0
    while i < len(src):
        token = src[i]
        i += 1
        n = token >> 4
        if n == 15:
            while True:
                n += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        out += src[i:i + n]
        i += n
        if i >= len(src):
            break
        offset = src[i] | src[i + 1] << 8
        i += 2
        m = token & 15
        if m == 15:
            while True:
                m += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        for _ in range(m + 4):
            out.append(out[-offset])
    assert len(out) == size
    return bytes(out)


def _varint(d: bytes, i: int):
    v = s = 0
    while True:
        b = d[i]
        i += 1
        v |= (b & 0x7F) << s
        s += 7
        if b < 0x80:
            return v, i


def _cstr(d: bytes, i: int):
    j = d.index(0, i)
    return d[i:j].decode(), j + 1


def read_fst(path: Path):
    """``(start_time, end_time, names)`` of an FST file: its header block and its hierarchy's variables."""
    import zlib

    b = path.read_bytes()
    i, header, hier = 0, None, None
    while i < len(b):
        kind, length = b[i], struct.unpack(">Q", b[i + 1:i + 9])[0]
        payload = b[i + 9:i + 1 + length]
        if kind == 0:                                   # FST_BL_HDR: start time, end time, ...
            header = struct.unpack(">QQ", payload[:16])
        elif kind == 4:                                 # FST_BL_HIER: gzip
            hier = zlib.decompress(payload[8:], 31)
        elif kind == 6:                                 # FST_BL_HIER_LZ4
            hier = _lz4_block(payload[8:], struct.unpack(">Q", payload[:8])[0])
        i += 1 + length
    assert header is not None and hier is not None, "no header or hierarchy block"
    scopes, names, i = [], set(), 0
    while i < len(hier):
        tag = hier[i]
        i += 1
        if tag == 254:                                  # scope: type, name, component
            name, i = _cstr(hier, i + 1)
            _, i = _cstr(hier, i)
            scopes.append(name)
        elif tag == 255:                                # upscope
            scopes.pop()
        elif tag == 252:                                # attribute: type, subtype, name, argument
            _, i = _cstr(hier, i + 2)
            _, i = _varint(hier, i)
        elif tag != 253:                                # a variable: type, direction, name, length, alias
            name, i = _cstr(hier, i + 1)
            _, i = _varint(hier, i)
            _, i = _varint(hier, i)
            names.add(".".join(scopes + [name.split(" ")[0]]))
    return header[0], header[1], names


# ------------------------------------------------------------------------------------ errors before a build
@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(root))
    return root


@pytest.mark.parametrize("args, message", [
    (["--waves", "{tmp}/missing/w.fst"], "cannot write waveforms to {tmp}/missing/w.fst: the folder {tmp}/missing "
                                         "does not exist"),
    (["--waves", "{tmp}"], "cannot write waveforms to {tmp}: it is a folder, give a file name (.fst or .vcd)"),
    (["--waves-from", "5"], "--waves-from needs --waves FILE"),
    (["--waves-to", "5", "--waves-layer", "fc0"], "--waves-to, --waves-layer need --waves FILE"),
    (["--waves", "{tmp}/w.vcd", "--waves-from", "30", "--waves-to", "10"],
     "the traced cycles from 30 to 10 are none: --waves-to must be greater than --waves-from"),
    (["--waves", "{tmp}/w.vcd", "--backend", "amaranth"],
     "the amaranth backend writes no waveforms; use --backend direct or cocotb"),
    (["--waves", "{tmp}/w.vcd", "--backend", "cocotb", "--waves-to", "100"],
     "the cocotb backend traces whole runs; --waves-from, --waves-to and --waves-layer need the direct backend"),
    (["--waves", "{tmp}/w.vcd", "--waves-layer", "nope"],
     "--waves-layer 'nope' is not a layer of the model; its layers: conv1, pool1, conv4, flat, fc"),
    (["--waves", "{tmp}/w.vcd", "--waves-layer", "flat"],
     "--waves-layer 'flat' runs on the host: flatten is a no-op on NHWC memory, not on the accelerator; layers "
     "on the accelerator: conv1, pool1, conv4, fc"),
])
def test_bad_waves_options_are_one_line_errors_before_any_build(tmp_path, empty_cache, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*SIM, "--model", "random:cnn", "--images", "1", *args]) == 1
    out = capsys.readouterr()
    assert out.err == f"systolic: error: {message.replace('{tmp}', str(tmp_path))}\n" and out.out == ""
    assert not empty_cache.exists()                     # nothing was built


def test_demo_refuses_a_waves_file_in_a_missing_folder(tmp_path, empty_cache, capsys):
    bad = tmp_path / "nowhere" / "d.fst"
    assert main(["demo", "--config", "tiny", "--images", "1", "--out", str(tmp_path / "rep"), "--waves",
                 str(bad)]) == 1
    assert capsys.readouterr().err == (f"systolic: error: cannot write waveforms to {bad}: the folder "
                                       f"{bad.parent} does not exist\n")
    assert not empty_cache.exists() and not (tmp_path / "rep").exists()


def test_a_negative_cycle_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main([*SIM, "--waves", "w.vcd", "--waves-from", "-3"])
    assert info.value.code == 2
    assert "argument --waves-from: a cycle number >= 0, not '-3'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the first mismatch
def test_simulate_names_the_first_mismatching_layer_element_and_cycles(tmp_path, monkeypatch, capsys):
    """A golden model made wrong at one known element (fc0, image 0, output 3): simulate reports exactly it."""
    from systolic.golden.network import QuantizedNetwork

    real_run = QuantizedNetwork.run
    seen = {}

    def wrong_run(self, x):
        out = real_run(self, x)
        seen["value"] = int(out["fc0"][0, 3])
        out["fc0"] = out["fc0"].copy()
        out["fc0"][0, 3] += 1
        return out

    monkeypatch.setattr(QuantizedNetwork, "run", wrong_run)
    report = tmp_path / "out.json"
    assert main([*SIM, "--model", "random:mlp", "--images", "1", "--backend", "amaranth", "--json",
                 str(report)]) == 1
    lines = capsys.readouterr().out.splitlines()
    out = json.loads(report.read_text())
    cycles = out["layers"][0]["cycles"]
    assert out["layers"][0]["layer"] == "fc0" and cycles > 0
    assert lines[-2:] == [
        f"first mismatch: layer fc0, image 0, element [3] (index 3 of the image's output): RTL {seen['value']}, "
        f"golden {seen['value'] + 1}",
        f"  in batch 0 (images 0..0), whose fc0 program ran {cycles} cycles; its waves: the same command with "
        f"--images 1 --batch 1 --waves FILE --waves-layer fc0 --backend direct"]
    assert out["first_mismatch"] == {"layer": "fc0", "batch": 0, "batch_images": [0, 1], "image": 0, "element": [3],
                                     "index": 3, "rtl": seen["value"], "golden": seen["value"] + 1,
                                     "program_cycles": cycles}


# ------------------------------------------------------------------------------------------ waveforms
def _simulate(tmp_path, *args, model="random:mlp", images="1"):
    report = tmp_path / "out.json"
    assert main([*SIM, "--model", model, "--images", images, "--json", str(report), *args]) == 0
    return json.loads(report.read_text())


@pytest.mark.slow
def test_direct_vcd_of_a_cycle_window(tmp_path, capsys):
    wave = tmp_path / "w.vcd"
    out = _simulate(tmp_path, "--waves", str(wave), "--waves-from", "10", "--waves-to", "30")
    assert out["waves"] == str(wave) and out["cycles"] > 30
    assert f"waves: {wave} (VCD; open it with GTKWave or Surfer)" in capsys.readouterr().out
    names, changes = read_vcd(wave)
    for port in ("clk", "done", "busy", "start", "bus__req_valid"):
        assert f"TOP.{port}" in names, port
    assert f"TOP.{TOP}.clk" in names                    # the design's own scope
    rises = rising_edges(names, changes)
    assert len(rises) == 30 - 10
    assert rises == [c * PS_PER_CYCLE for c in range(10, 30)]
    assert changes[-1][0] == 29 * PS_PER_CYCLE + PS_PER_CYCLE // 2      # the last falling edge


@pytest.mark.slow
def test_direct_vcd_of_one_layer(tmp_path):
    """Only while the fc program runs, in each of the two batches: its cycle counter + 1 + EVENT_REGISTER
    edges each (the edge that takes ``start`` is cycle 0; the counter counts from the next one to HALT; ``busy``
    falls EVENT_REGISTER cycles after the controller stops)."""
    wave = tmp_path / "fc.vcd"
    out = _simulate(tmp_path, "--waves", str(wave), "--waves-layer", "fc", "--batch", "1", model="random:cnn",
                    images="2")
    fc = [r for r in out["layers"] if r["layer"] == "fc"][0]["cycles"]      # both batches
    names, changes = read_vcd(wave)
    rises = rising_edges(names, changes)
    assert len(rises) == fc + 2 * (1 + EVENT_REGISTER)
    gaps = [b - a for a, b in zip(rises, rises[1:]) if b - a != PS_PER_CYCLE]
    assert len(gaps) == 1                               # two traced stretches: one per batch
    # With a window inside the layer: cycles 5..24 of each run of the program.
    wave2 = tmp_path / "fc5.vcd"
    _simulate(tmp_path, "--waves", str(wave2), "--waves-layer", "fc", "--waves-from", "5", "--waves-to", "25",
              "--batch", "1", model="random:cnn", images="2")
    names2, changes2 = read_vcd(wave2)
    rises2 = rising_edges(names2, changes2)
    assert len(rises2) == 2 * 20
    split = next(k for k in range(1, len(rises)) if rises[k] - rises[k - 1] != PS_PER_CYCLE)
    assert rises2[:20] == rises[5:25] and rises2[20:] == rises[split + 5:split + 25]


@pytest.mark.slow
def test_direct_fst_by_default(tmp_path):
    from systolic.sim.verilator import check_fst
    from tests.requirements import in_ci

    try:
        check_fst()
    except ValueError as exc:                         # no LZ4 headers: skip (fail under CI)
        (pytest.fail if in_ci() else pytest.skip)(str(exc))
    wave = tmp_path / "w.fst"
    _simulate(tmp_path, "--waves", str(wave), "--waves-from", "5", "--waves-to", "15")
    assert wave.stat().st_size > 0
    start, end, names = read_fst(wave)
    assert {"TOP.clk", "TOP.done", "TOP.busy", f"TOP.{TOP}.clk"} <= names
    assert (start, end) == (5 * PS_PER_CYCLE, 14 * PS_PER_CYCLE + PS_PER_CYCLE // 2)


@pytest.mark.slow
def test_demo_writes_waves_too(tmp_path, capsys):
    wave = tmp_path / "demo.vcd"
    assert main(["demo", "--config", "tiny", "--images", "1", "--out", str(tmp_path / "rep"), "--waves", str(wave),
                 "--waves-to", "12"]) == 0
    assert f"waves: {wave} (VCD; open it with GTKWave or Surfer)" in capsys.readouterr().out
    names, changes = read_vcd(wave)
    assert rising_edges(names, changes) == [c * PS_PER_CYCLE for c in range(12)]


@pytest.mark.slow
def test_cocotb_vcd_of_the_whole_run(tmp_path):
    from systolic.sim.cocotb_backend import build_cocotb

    wave = tmp_path / "c.vcd"
    out = _simulate(tmp_path, "--waves", str(wave), "--backend", "cocotb")
    names, changes = read_vcd(wave)
    clk = next(n for n in names if n.endswith(f"{TOP}.clk"))
    assert any(n.endswith(f"{TOP}.done") for n in names)
    # The whole run: reset, then the program; cocotb's clock has a 10 ns period too.
    rises = rising_edges(names, changes, clk)
    assert len(rises) >= out["cycles"] and np.all(np.diff(rises) == PS_PER_CYCLE)
    assert not list(build_cocotb(TINY, trace="vcd").glob("run-*"))       # the run folder is gone
