"""The shipped-model loader (``systolic.models``, re-exported by ``systolic.quantize.zoo``): present
files load; a shipped name whose file is missing from the installation, and a missing ``.npz``
file, give the documented error with its exact type and whole message."""

from pathlib import Path
from types import SimpleNamespace

import pytest

import systolic.models
from systolic.flows import resolve_model
from systolic.golden import ModelFormatError, load
from systolic.quantize import zoo

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


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_shipped_path_is_the_package_file(name):
    path = zoo.shipped_model_path(name)
    assert path == PACKAGE_DIR / f"{name}.npz" and path.is_file()
    assert zoo.load_shipped(name).meta["model"] == name


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
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
