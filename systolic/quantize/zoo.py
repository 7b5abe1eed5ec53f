"""Model zoo: ``digits-mlp``, ``digits-cnn``, ``digits-resnet``, and the shipped integer models.

The shipped-model helpers (:func:`shipped_model_path`, :func:`load_shipped`) are
torch-free; :func:`build` and :func:`train_float` import torch when called.

Architectures (float, BN folded before quantization), shown for the digits data
(8x8x1, ten classes); on another data set (``data=``) the same layers are built for its
sample shape and number of classes (the first layer's inputs, the flattened size and the
classifier's outputs change; the names stay):

* ``digits-mlp``: 64 -> dense 64 + ReLU -> dense 32 + ReLU -> dense 10 (input: the sample
  flattened, ``H * W * C`` or ``F`` features).
* ``digits-cnn``: 8x8x1 -> conv 3x3 8ch pad 1 + BN + ReLU -> maxpool 2 -> conv 3x3 16ch pad 1
  + BN + ReLU -> maxpool 2 -> flatten (64) -> dense 10 (needs image samples, at least 4x4).
* ``digits-resnet``: 8x8x1 -> conv 3x3 8ch pad 1 + BN + ReLU (``c1``) -> conv 3x3 8ch + BN + ReLU
  -> conv 3x3 8ch + BN (``c3``) -> add(c1, c3) + ReLU -> maxpool 2 -> conv 3x3 16ch + BN + ReLU
  -> maxpool 2 -> flatten -> dense 10 (needs image samples, at least 4x4).
"""

from __future__ import annotations

from ..models import SHIPPED, load_shipped, shipped_model_path
from . import MODELS, check_model

__all__ = ["MODELS", "SHIPPED", "shipped_model_path", "load_shipped", "build", "input_layout", "input_shape",
           "train_float", "evaluate"]


def input_layout(name: str) -> str:
    """``"flat"`` for the MLP, ``"nhwc"`` for the convolutional models."""
    return "flat" if check_model(name) == "digits-mlp" else "nhwc"


def input_shape(name: str, data="digits") -> tuple:
    """Input shape of zoo model *name* built for *data*: the sample flattened for the MLP, the image
    ``(H, W, C)`` for the convolutional models (a ``ValueError`` for feature data or images below 4x4)."""
    from .data import load_dataset

    ds = load_dataset(data)
    if input_layout(name) == "flat":
        return ds.flat_shape
    s = ds.input_shape
    if len(s) != 3:
        raise ValueError(f"model {name!r} needs image samples (H, W, C); data set {ds.name!r} has samples of "
                         f"shape {s}")
    if s[0] < 4 or s[1] < 4:
        raise ValueError(f"model {name!r} pools twice by 2 and needs images of at least 4x4; data set "
                         f"{ds.name!r} has samples of shape {s}")
    return s


def build(name: str, seed: int = 0, data="digits"):
    """A freshly initialised float :class:`~systolic.quantize.graph.GraphNet` (seeded) for *data*'s sample
    shape and number of classes (default: the digits, 8x8x1 and ten classes)."""
    import torch
    from torch import nn

    from .data import load_dataset
    from .graph import GraphNet, Node, from_sequential

    check_model(name)
    ds = load_dataset(data)
    shape = input_shape(name, ds)
    classes = ds.num_classes
    torch.manual_seed(seed)
    if name == "digits-mlp":
        seq = nn.Sequential(nn.Linear(shape[0], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes))
        return from_sequential(seq, shape)
    h, w, c = shape
    flat = 16 * (h // 2 // 2) * (w // 2 // 2)
    if name == "digits-cnn":
        seq = nn.Sequential(
            nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, classes))
        return from_sequential(seq, shape)
    mods = {
        "c1": nn.Conv2d(c, 8, 3, padding=1), "c2": nn.Conv2d(8, 8, 3, padding=1),
        "c3": nn.Conv2d(8, 8, 3, padding=1), "c4": nn.Conv2d(8, 16, 3, padding=1),
        "fc": nn.Linear(flat, classes),
    }
    bns = {k: nn.BatchNorm2d(mods[k].out_channels) for k in ("c1", "c2", "c3", "c4")}
    nodes = [
        Node("c1", "conv", ("input",), relu=True),
        Node("c2", "conv", ("c1",), relu=True),
        Node("c3", "conv", ("c2",)),
        Node("add", "add", ("c1", "c3"), relu=True),
        Node("p1", "maxpool", ("add",)),
        Node("c4", "conv", ("p1",), relu=True),
        Node("p2", "maxpool", ("c4",)),
        Node("flat", "flatten", ("p2",)),
        Node("fc", "dense", ("flat",)),
    ]
    return GraphNet(shape, nodes, mods, bns)


def train_float(name: str, seed: int = 0, epochs: int = 40, lr: float = 3e-3, batch: int = 32, progress=False,
                data="digits"):
    """Build and train the float model *name* on *data*; keep the weights of the best validation epoch."""
    from .data import load_dataset
    from .train import train_float as _train

    ds = load_dataset(data)
    net = build(name, seed, ds)
    return _train(net, ds, seed=seed, epochs=epochs, lr=lr, batch=batch, progress=progress)


def evaluate(net, name: str | None = None, split: str = "test", quant=None, data="digits") -> float:
    """Accuracy of float / fake-quant *net* on *split* of *data* (*name*, a zoo model, is only checked)."""
    from .train import accuracy

    if name is not None:
        check_model(name)
    return accuracy(net, split, quant=quant, data=data)
