"""The command-line entry point."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from systolic.cli import main
from systolic.golden.layers import Dense
from systolic.golden.network import QuantizedNetwork
from systolic.golden.qtypes import QType
from systolic.golden.random import random_network


def _readme_commands():
    """The commands of the README's command table (the documentation, not the parser, is the reference)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.findall(r"^\| `systolic ([a-z-]+)", text, flags=re.M)


def test_help_lists_commands(capsys):
    documented = _readme_commands()
    assert len(documented) == 13 and "demo" in documented and "export-fpga" in documented
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    listed = out.split("commands:", 1)[1]
    assert re.findall(r"^    ([a-z-]+)", listed, flags=re.M) == documented   # the same commands, same order
    for cmd in documented:                                 # each one's own help works and names it
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0, cmd
        assert capsys.readouterr().out.startswith(f"usage: systolic {cmd} "), cmd


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
    assert all(l["acc_bound"][0] <= 0 <= l["acc_bound"][1] for l in obj["layers"] if l["acc_bound"])
    # A layer whose bound is worked by hand: W = [[1, -2], [3, 4]], bias [5, -6], int8 inputs.
    # Column 0: 127 * 1 + 127 * 3 + 5 = 513 and -128 * 4 + 5 = -507; column 1: -2 * -128 + 4 * 127 - 6 = 758
    # and -2 * 127 + 4 * -128 - 6 = -772: the layer's range is [-772, 758].
    hand = QuantizedNetwork(QType(8, True, 0), (2,), [Dense(
        name="d", inputs=("input",), weight=np.array([[1, -2], [3, 4]]), w_type=QType(8, True, 0),
        bias=np.array([5, -6]), out_type=QType(8, True, 0))])
    hand.save(tmp_path / "hand.npz")
    assert main(["inspect", str(tmp_path / "hand.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["acc_bound"] == [-772, 758]
    assert main(["inspect", str(path), "--acc-bits", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("systolic: error: layer 'conv1': worst case") and "8-bit accumulator" in err


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a systolic model file" in err
