"""The shipped-model loader (``systolic.models``, re-exported by ``systolic.quantize.zoo``): present
files load; a shipped name whose file is missing from the installation, and a missing ``.npz``
file, give the documented error with its exact type and whole message. Every shipped model's recorded
test accuracy equals a fresh golden evaluation on its data set's test split (the digits' 360 images,
MNIST's 1,000), exactly."""

from pathlib import Path
from types import SimpleNamespace

import pytest

import systolic.models
from systolic.flows import resolve_model
from systolic.golden import ModelFormatError, load
from systolic.models import SHIPPED
from systolic.quantize import zoo
from systolic.quantize.data import dataset_for_network

PACKAGE_DIR = Path(systolic.models.__file__).resolve().parent


@pytest.fixture
def empty_installation(monkeypatch, tmp_path):
    """``systolic.models`` resolves its data files in an empty directory (as if they were not installed)."""
    asked = []

    def files(package):
        asked.append(package)
        return tmp_path

    monkeypatch.setattr(systolic.models, "resources", SimpleNamespace(files=files))
    return tmp_path, asked


def missing_message(name, directory):
    return (f"shipped model {name!r} is missing from this installation ({directory / (name + '.npz')}); "
            "regenerate it with scripts/train_models.py")


MNIST_SHIPPED = ("mnist-lenet5", "mnist-resnet8", "mnist-mobilenet")


def test_shipped_list():
    assert SHIPPED == ("digits-mlp", "digits-cnn", "digits-resnet") + MNIST_SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_path_is_the_package_file(name):
    path = zoo.shipped_model_path(name)
    assert path == PACKAGE_DIR / f"{name}.npz" and path.is_file()
    assert zoo.load_shipped(name).meta["model"] == name
    assert path.stat().st_size < 200_000  # small files


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accuracy_is_a_fresh_golden_evaluation(name):
    """meta's ``test_accuracy`` (written by scripts/train_models.py) equals the golden network run now on the
    test split of the data set of its input shape, exactly (a count over 360 or 1,000 images)."""
    from systolic.quantize.commands import evaluate

    net = zoo.load_shipped(name)
    m = net.meta
    assert (m["model"], m["method"], m["w_bits"], m["a_bits"], m["seed"]) == (name, "tqt", 8, 8, 0)
    ds = dataset_for_network(net)
    assert ds.name == ("mnist" if name in MNIST_SHIPPED else "digits")
    if name in MNIST_SHIPPED:
        assert net.input_shape == (28, 28, 1) and "MNIST" in m["dataset"]
    r = evaluate(name)  # the golden model on the whole test split (what `systolic eval NAME` runs)
    n = ds.sizes["test"]
    assert r["images"] == n == (1000 if name in MNIST_SHIPPED else 360)
    assert r["accuracy"] == m["test_accuracy"] == r["correct"] / n
    assert 0 < m["float_test_accuracy"] <= 1 and round(m["float_test_accuracy"] * n) / n == m["float_test_accuracy"]
    net.check_accumulators(32)
    if name == "mnist-resnet8":  # the requirement: TQT w8a8 within 0.5 points of float
        assert round(m["test_accuracy"] * n) >= round(m["float_test_accuracy"] * n) - 5  # 5 images = 0.5 points


@pytest.mark.parametrize("name", SHIPPED)
def test_missing_shipped_file(empty_installation, name):
    directory, asked = empty_installation
    for fn in (zoo.shipped_model_path, zoo.load_shipped, resolve_model):
        with pytest.raises(ValueError) as info:
            fn(name)
        assert type(info.value) is ValueError
        assert str(info.value) == missing_message(name, directory)
    assert asked == ["systolic.models"] * 3  # the loader looked in the (patched) package data


def test_missing_shipped_file_through_cli(empty_installation, monkeypatch, capsys):
    from systolic import cli

    directory, _ = empty_installation
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ["systolic.golden.commands", "systolic.quantize.commands"])
    assert cli.main(["eval", "digits-cnn"]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err == f"systolic: error: {missing_message('digits-cnn', directory)}\n"


def test_missing_model_file(tmp_path):
    path = tmp_path / "nowhere" / "digits-cnn.npz"
    for fn in (load, lambda p: resolve_model(str(p))):
        with pytest.raises(ModelFormatError) as info:
            fn(path)
        assert type(info.value) is ModelFormatError
        assert str(info.value) == f"{path}: no such model file"
