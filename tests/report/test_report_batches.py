"""Batches the golden check can hold: ``largest_batch``, run_images refusing an oversized batch before any
compile, and the report's default images (a data set's 32, or 1 random input)."""

import pytest

from systolic import flows
from systolic.flows import largest_batch, run_images
from systolic.golden.random import random_input
from systolic.models.imagenet import imagenet_network
from systolic.report.commands import DEFAULT_IMAGES, make_report


@pytest.fixture(scope="module")
def resnet50():
    return imagenet_network("resnet50-imagenet", 0)


def _fits(net, b):
    try:
        net.check_batch(b)
        return True
    except ValueError:
        return False


def test_largest_batch_is_the_boundary(resnet50):
    b = largest_batch(resnet50, 32)
    assert 1 <= b < 32
    assert _fits(resnet50, b) and not _fits(resnet50, b + 1)
    assert largest_batch(resnet50, 1) == 1 and largest_batch(resnet50, b) == b


def test_run_images_refuses_a_batch_the_check_cannot_hold_before_compiling(resnet50, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before the batch was checked")

    monkeypatch.setattr(flows, "compile_checked", no_compile)
    x = random_input(resnet50, 8, 0)
    with pytest.raises(ValueError) as e:
        run_images(resnet50, "large", x, source="model", batch=8, progress=False)
    msg = str(e.value)
    assert "a batch of 8" in msg and "above the limit" in msg
    assert msg.endswith(f"the largest batch of this network the golden check holds is "
                        f"{largest_batch(resnet50, 8)} (run the images in batches of that size)")


@pytest.mark.parametrize("model, kind", [("random:mlp", "random"), ("digits-mlp", "data")])
def test_report_default_images(model, kind, tmp_path):
    rep = make_report(model, "small", None, tmp_path, progress=False)
    assert rep["run"]["images"] == DEFAULT_IMAGES[kind]
    assert DEFAULT_IMAGES == {"data": 32, "random": 1}
