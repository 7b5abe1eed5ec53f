"""The ``quantize`` and ``eval`` commands through ``systolic.cli.main``."""

import json

import numpy as np
import pytest

from systolic import cli
from systolic.golden import load
from systolic.quantize.data import load_split
from tests.requirements import require

N_TEST = 360  # images in the digits test split


@pytest.fixture
def cli_main(monkeypatch):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ["systolic.golden.commands", "systolic.quantize.commands"])
    return cli.main


def check_eval_counts(r, n):
    """The eval report's count and accuracy against a count made here from its predictions and the
    labels of the split (loaded independently); returns that count."""
    _, y = load_split("test", "flat")
    assert r["n"] == n and r["labels"] == y[:n].tolist() and len(r["predictions"]) == n
    correct = int(np.count_nonzero(np.array(r["predictions"]) == y[:n]))
    assert r["correct"] == correct
    # Exact: r["accuracy"] is float((pred == y).mean()), the correctly rounded quotient correct / n,
    # and Python's correct / n is the same correctly rounded quotient of the same two ints.
    assert r["accuracy"] == correct / n
    return correct


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_eval_shipped_json(cli_main, capsys, name):
    assert cli_main(["eval", name, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    correct = check_eval_counts(r, N_TEST)
    # The accuracy recorded at training time was measured on the same 360 images, so it is the
    # same ratio of the same ints: compare the counts, and the floats exactly (JSON keeps repr).
    assert round(r["meta"]["test_accuracy"] * N_TEST) == correct
    assert r["meta"]["test_accuracy"] == correct / N_TEST
    assert correct > 0.9 * N_TEST
    assert r["meta"]["model"] == name and r["meta"]["method"] == "tqt"


def test_eval_text_and_images(cli_main, capsys):
    assert cli_main(["eval", "digits-cnn", "--images", "25", "--json"]) == 0
    correct = check_eval_counts(json.loads(capsys.readouterr().out), 25)
    assert cli_main(["eval", "digits-cnn", "--images", "25"]) == 0
    out = capsys.readouterr().out
    assert out == f"digits-cnn (tqt w8a8): {correct}/25 test images correct, accuracy {100 * correct / 25:.2f}%\n"


def test_quantize_then_eval_file(cli_main, capsys, tmp_path):
    require("torch", "quantize")
    out = tmp_path / "q.npz"
    rc = cli_main(["quantize", "digits-mlp", "max", "--w-bits", "4", "--a-bits", "8", "--out", str(out),
                   "--float-epochs", "2", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["method"] == "max" and s["w_bits"] == 4 and s["a_bits"] == 8 and s["out"] == str(out)
    net = load(out)
    assert net.meta["test_accuracy"] == s["golden_acc"]  # the file records the reported number
    assert cli_main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    correct = check_eval_counts(r, N_TEST)
    # quantize measured golden_acc on the same 360 test images: the same count, so the same float.
    assert round(s["golden_acc"] * N_TEST) == correct
    assert s["golden_acc"] == correct / N_TEST


def test_quantize_text_output(cli_main, capsys, tmp_path):
    require("torch", "quantize")
    rc = cli_main(["quantize", "digits-mlp", "lsq", "--out", str(tmp_path / "l.npz"), "--float-epochs", "1",
                   "--epochs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "float model" in out and "before power-of-two rounding" in out and "integer golden model" in out
    assert out.endswith(f"written to {tmp_path / 'l.npz'}\n")


MODELS_TEXT = "digits-mlp, digits-cnn, digits-resnet, mnist-lenet5, mnist-resnet8, mnist-mobilenet"


@pytest.mark.parametrize("argv,msg", [
    (["quantize", "digits-vgg", "tqt", "--out", "x.npz"], f"unknown model 'digits-vgg'; supported models: {MODELS_TEXT}"),
    (["quantize", "digits-cnn", "gptq", "--out", "x.npz"],
     "unknown quantization method 'gptq'; supported methods: max, percentile, mse, klj, tqt, fat, lsq, sq, multipoint, dsconv, inq"),
    (["quantize", "digits-cnn", "tqt", "--w-bits", "9", "--out", "x.npz"], "--w-bits must be an integer between 2 and 8, not 9"),
    (["quantize", "digits-cnn", "tqt", "--a-bits", "1", "--out", "x.npz"], "--a-bits must be an integer between 2 and 8, not 1"),
    (["quantize", "digits-cnn", "tqt", "--epochs", "-1", "--out", "x.npz"], "--epochs must be non-negative, not -1"),
    (["eval", "digits-vgg"],
     f"unknown model 'digits-vgg': give a .npz file, random:<mlp|cnn|resnet> or one of {MODELS_TEXT}, "
     "resnet18-imagenet, resnet50-imagenet, mobilenetv2-imagenet"),
    (["eval", "digits-cnn", "--images", "0"], "images must be a positive integer, not 0"),
    (["eval", "missing.npz"], "missing.npz: no such model file"),
])
def test_user_errors_one_line(cli_main, capsys, monkeypatch, tmp_path, argv, msg):
    monkeypatch.chdir(tmp_path)  # an empty directory: missing.npz is missing, nothing is written
    assert cli_main(argv) == 1
    cap = capsys.readouterr()
    assert cap.err == f"systolic: error: {msg}\n" and cap.out == ""
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ --data (MNIST, a user .npz)

def mnist_test_labels():
    from systolic.quantize.data import load_dataset

    return load_dataset("mnist").split("test")[1]


def test_quantize_mnist_then_eval_json(cli_main, capsys, tmp_path):
    require("torch", "quantize")
    out = tmp_path / "m.npz"
    rc = cli_main(["quantize", "digits-mlp", "max", "--w-bits", "8", "--a-bits", "8", "--data", "mnist",
                   "--out", str(out), "--float-epochs", "1", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["data"] == "mnist" and s["model"] == "digits-mlp"
    net = load(out)
    assert net.input_shape == (784,) and net.meta["dataset"] == "mnist"
    y = mnist_test_labels()
    # --data mnist and the default (the data set of the model's input shape) give the same report
    for argv in (["eval", str(out), "--json"], ["eval", str(out), "--data", "mnist", "--json"]):
        assert cli_main(argv) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["images"] == r["n"] == 1000 and r["data"] == "mnist"
        assert r["labels"] == y.tolist()
        correct = int(np.count_nonzero(np.array(r["predictions"]) == y))
        assert r["correct"] == correct and r["accuracy"] == correct / 1000
        assert r["accuracy"] == s["golden_acc"]      # quantize measured on the same 1,000 MNIST test images
    assert s["golden_acc"] > 0.5                     # one float epoch learns MNIST far above chance (0.1)
    assert cli_main(["eval", str(out), "--images", "40"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{out} (max w8a8): ")
    assert "/40 mnist test images correct, accuracy " in text


def test_eval_user_npz(cli_main, capsys, tmp_path):
    """A user data file whose test split is the first 50 digits test images gives exactly the digits
    result on those 50 images."""
    x, y = load_split("test", "nhwc")
    xt, yt = load_split("train", "nhwc")
    p = tmp_path / "mine.npz"
    np.savez(p, x_train=xt, y_train=yt, x_val=x[50:], y_val=y[50:], x_test=x[:50], y_test=y[:50])
    assert cli_main(["eval", "digits-cnn", "--data", str(p), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 50 and r["data"] == str(p) and r["labels"] == y[:50].tolist()
    assert cli_main(["eval", "digits-cnn", "--images", "50", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert r["predictions"] == ref["predictions"] and r["accuracy"] == ref["accuracy"]
    check_eval_counts(ref, 50)


@pytest.mark.parametrize("argv,msg", [
    (["eval", "digits-cnn", "--data", "mnist"],
     "model digits-cnn has input shape (8, 8, 1), which does not match data set 'mnist' (samples of shape "
     "(28, 28, 1), or (784,) flattened)"),
    (["eval", "digits-mlp", "--data", "cifar10"], "unknown data set 'cifar10': give digits, mnist or a path to a .npz file"),
    (["eval", "digits-mlp", "--data", "none.npz"], "none.npz: no such data file"),
    (["quantize", "digits-cnn", "max", "--data", "none.npz", "--out", "x.npz"], "none.npz: no such data file"),
    (["quantize", "digits-cnn", "max", "--data", "bad.npz", "--out", "x.npz"],
     "bad.npz: not an .npz archive (truncated, a .npy or pickle file, or another format); a data file is an .npz "
     "archive (numpy.savez) with arrays x and y, or x_train, y_train, x_val, y_val, x_test, y_test"),
])
def test_data_errors_one_line(cli_main, capsys, monkeypatch, tmp_path, argv, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert cli_main(argv) == 1
    cap = capsys.readouterr()
    assert cap.err == f"systolic: error: {msg}\n" and cap.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]      # nothing written
