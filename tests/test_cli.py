"""The command-line entry point."""

import json
import subprocess
import sys

import pytest

from systolic.cli import main
from systolic.golden.random import random_network


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "inspect" in out


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "systolic", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("systolic ")


def test_inspect_json_and_overflow_error(tmp_path, capsys):
    path = tmp_path / "m.npz"
    net = random_network(4, "resnet", 8)
    net.save(path)
    assert main(["inspect", str(path), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert [l["name"] for l in obj["layers"]] == [l.name for l in net.layers]
    assert obj["layers"][0]["acc_bound"] == list(net.accumulator_bounds()[net.layers[0].name])
    assert main(["inspect", str(path), "--acc-bits", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("systolic: error: layer 'conv1': worst case") and "8-bit accumulator" in err


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a systolic model file" in err
