"""Hostile command lines (docs/reliability.md): a one-line error and a nonzero exit, before any build."""

import json
import subprocess
import sys

import pytest

from systolic.arch.config import PRESETS
from systolic.cli import main
from systolic.report.energy_table import EnergyTable, EnergyTableError


def _config_file(tmp_path, **changes):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(PRESETS["default"].replace(**changes).to_dict()))
    return str(path)


def test_accumulator_overflow_is_found_before_any_build(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(cache))
    assert main(["simulate", "--config", _config_file(tmp_path, acc_bits=16), "--model", "digits-cnn",
                 "--images", "2"]) == 1
    err = capsys.readouterr().err
    assert err == ("systolic: error: layer 'l0' (pass 0): worst case [-91290, 95625] does not fit a 16-bit "
                   "accumulator [-32768, 32767]\n")
    assert not cache.exists()                        # no simulator was built


@pytest.mark.parametrize("command", [["simulate", "--images", "2"], ["demo", "--images", "2"],
                                     ["report", "--images", "2", "--source", "rtl"]])
def test_a_config_on_which_no_layer_runs_is_an_error(tmp_path, capsys, monkeypatch, command):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    cfg = PRESETS["default"].replace(in_bits=4, w_bits=4, out_bits=4)
    rc = main(command + ["--config", _config_file(tmp_path, in_bits=4, w_bits=4, out_bits=4),
                         "--model", "digits-mlp"])
    out = capsys.readouterr()
    assert rc == 1
    assert out.err == (f"systolic: error: no layer of the network runs on the accelerator {cfg.name} (l0: input "
                       "is 8-bit, the array takes 4; l2: input is 8-bit, the array takes 4; l4: input is 8-bit, "
                       "the array takes 4)\n")
    assert "100.00" not in out.out and not cache.exists()


@pytest.mark.parametrize("stall", ["0.9999999", "1", "-0.5"])
def test_stall_probability_is_bounded(capsys, stall):
    assert main(["simulate", "--config", "small", "--model", "digits-mlp", "--images", "1", "--stall", stall]) == 1
    assert capsys.readouterr().err == (
        "systolic: error: stall must be a probability between 0 and 0.99 (each request waits stall / (1 - stall) "
        f"extra cycles on average), not {float(stall)!r}\n")


@pytest.mark.parametrize("args,msg", [
    (["--timeout", "-1"], "timeout_s must be a number of seconds above 0 and at most 86400, not -1.0"),
    (["--freq", "inf"], "freq_mhz must be a number above 0 and at most 2000 MHz, not inf"),
    (["--freq", "0"], "freq_mhz must be a number above 0 and at most 2000 MHz, not 0.0"),
    (["--seed", "-3"], "seed must be an int between 0 and 2**31 - 1, not -3"),
])
def test_synth_arguments_are_checked_first(tmp_path, capsys, args, msg):
    out = tmp_path / "synth"
    assert main(["synth", "--config", "tiny", "--out", str(out)] + args) == 1
    assert capsys.readouterr().err == f"systolic: error: {msg}\n"
    assert not out.exists()                                    # nothing generated


@pytest.mark.parametrize("table,msg", [
    ({"entries": [1]}, "energy table 'entries' must be an object of entry name -> pJ, not [1]"),
    ({"entries": {"mac_int8_mul": {"pj": 1, "source": 3}}},
     "energy entry 'mac_int8_mul' takes 'pj' (a number) and 'source' (a string), not {'pj': 1, 'source': 3}"),
    ({"entries": {"mac_int8_mul": {"pj": 1, "cost": 3}}},
     "energy entry 'mac_int8_mul' takes 'pj' (a number) and 'source' (a string), not {'pj': 1, 'cost': 3}"),
])
def test_energy_table_schema(table, msg):
    with pytest.raises(EnergyTableError) as info:
        EnergyTable.from_user(table)
    assert str(info.value) == msg


def test_energy_table_nested_too_deeply_or_too_large(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"entries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(EnergyTableError) as info:
        EnergyTable.from_user(deep)
    assert str(info.value) == f"energy table {deep} nests arrays/objects deeper than 32 levels"
    big = tmp_path / "big.json"
    big.write_text(" " * ((1 << 20) + 1))
    with pytest.raises(EnergyTableError) as info:
        EnergyTable.from_user(big)
    assert str(info.value) == f"energy table {big} is {(1 << 20) + 1} bytes, above the limit of 1048576 bytes"


def test_closed_pipe_is_not_an_error():
    """``systolic eval --json | head``: the reader leaves early; no error message, SIGPIPE's exit code."""
    with subprocess.Popen([sys.executable, "-m", "systolic", "eval", "digits-mlp", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        p.stdout.close()        # the reader is gone before the first write (as `head -0`): the write must fail
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141 and err == ""


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    import systolic.golden.commands as gc

    def huge(args):
        raise MemoryError()

    monkeypatch.setattr(gc, "_inspect", huge)
    assert main(["inspect", "digits-mlp"]) == 1
    assert capsys.readouterr().err == ("systolic: error: out of memory (a tensor, batch or file larger than this "
                                       "machine holds; use fewer images or a smaller model)\n")


@pytest.mark.parametrize("bits", ["0", "1", "63"])
def test_inspect_checks_every_accumulator_width(capsys, bits):
    """``--acc-bits 0`` used to skip the proof (falsy) and exit 0."""
    assert main(["inspect", "digits-mlp", "--acc-bits", bits]) == 1
    out = capsys.readouterr()
    assert out.err == f"systolic: error: acc_bits must be between 2 and 62, not {bits}\n" and out.out == ""


def test_export_onnx_check_too_large_writes_nothing(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", "digits-mlp", str(out), "--check", "1000000000"]) == 1
    assert capsys.readouterr().err == (
        "systolic: error: a random input of 1000000000 samples would hold 1000000000 x 64 = 64000000000 elements, "
        "above the limit of 16777216 (MAX_TENSOR_ELEMENTS)\n")
    assert not out.exists()
