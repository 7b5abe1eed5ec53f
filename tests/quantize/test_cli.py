"""The ``quantize`` and ``eval`` commands through ``systolic.cli.main``."""

import importlib.util
import json

import pytest

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the quantize extra (torch)")

from systolic import cli
from systolic.golden import load


@pytest.fixture
def cli_main(monkeypatch):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ["systolic.golden.commands", "systolic.quantize.commands"])
    return cli.main


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_eval_shipped_json(cli_main, capsys, name):
    assert cli_main(["eval", name, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 360 and len(r["predictions"]) == 360
    assert r["accuracy"] == pytest.approx(r["meta"]["test_accuracy"])
    assert r["meta"]["model"] == name and r["meta"]["method"] == "tqt"


def test_eval_text_and_images(cli_main, capsys):
    assert cli_main(["eval", "digits-cnn", "--images", "25"]) == 0
    out = capsys.readouterr().out
    assert "/25 test images correct" in out


@needs_torch
def test_quantize_then_eval_file(cli_main, capsys, tmp_path):
    out = tmp_path / "q.npz"
    rc = cli_main(["quantize", "digits-mlp", "max", "--w-bits", "4", "--a-bits", "8", "--out", str(out),
                   "--float-epochs", "2", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["method"] == "max" and s["w_bits"] == 4
    net = load(out)
    assert net.meta["test_accuracy"] == s["golden_acc"]
    assert cli_main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(s["golden_acc"])


@needs_torch
def test_quantize_text_output(cli_main, capsys, tmp_path):
    rc = cli_main(["quantize", "digits-mlp", "lsq", "--out", str(tmp_path / "l.npz"), "--float-epochs", "1",
                   "--epochs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "float model" in out and "before power-of-two rounding" in out and "integer golden model" in out


@pytest.mark.parametrize("argv,msg", [
    (["quantize", "digits-vgg", "tqt", "--out", "x.npz"], "unknown model 'digits-vgg'; supported models: digits-mlp"),
    (["quantize", "digits-cnn", "gptq", "--out", "x.npz"], "unknown quantization method 'gptq'; supported methods: max"),
    (["quantize", "digits-cnn", "tqt", "--w-bits", "9", "--out", "x.npz"], "--w-bits must be an integer between 2 and 8, not 9"),
    (["quantize", "digits-cnn", "tqt", "--a-bits", "1", "--out", "x.npz"], "--a-bits must be an integer between 2 and 8, not 1"),
    (["eval", "digits-vgg"], "unknown model 'digits-vgg'"),
    (["eval", "digits-cnn", "--images", "0"], "images must be a positive integer"),
    (["eval", "missing.npz"], "no such model file"),
])
def test_user_errors_one_line(cli_main, capsys, argv, msg):
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
