"""Model zoo: ``digits-mlp``, ``digits-cnn``, ``digits-resnet``, and the shipped integer models.

The shipped-model helpers (:func:`shipped_model_path`, :func:`load_shipped`) are
torch-free; :func:`build` and :func:`train_float` import torch when called.

Architectures (float, BN folded before quantization):

* ``digits-mlp``: 64 -> dense 64 + ReLU -> dense 32 + ReLU -> dense 10.
* ``digits-cnn``: 8x8x1 -> conv 3x3 8ch pad 1 + BN + ReLU -> maxpool 2 -> conv 3x3 16ch pad 1
  + BN + ReLU -> maxpool 2 -> flatten (64) -> dense 10.
* ``digits-resnet``: 8x8x1 -> conv 3x3 8ch pad 1 + BN + ReLU (``c1``) -> conv 3x3 8ch + BN + ReLU
  -> conv 3x3 8ch + BN (``c3``) -> add(c1, c3) + ReLU -> maxpool 2 -> conv 3x3 16ch + BN + ReLU
  -> maxpool 2 -> flatten -> dense 10.
"""

from __future__ import annotations

from ..models import SHIPPED, load_shipped, shipped_model_path
from . import MODELS, check_model

__all__ = ["MODELS", "SHIPPED", "shipped_model_path", "load_shipped", "build", "input_layout", "train_float",
           "evaluate"]


def input_layout(name: str) -> str:
    """``"flat"`` for the MLP, ``"nhwc"`` for the convolutional models."""
    return "flat" if check_model(name) == "digits-mlp" else "nhwc"


def build(name: str, seed: int = 0):
    """A freshly initialised float :class:`~systolic.quantize.graph.GraphNet` (seeded)."""
    import torch
    from torch import nn

    from .graph import GraphNet, Node, from_sequential

    check_model(name)
    torch.manual_seed(seed)
    if name == "digits-mlp":
        seq = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        return from_sequential(seq, (64,))
    if name == "digits-cnn":
        seq = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64, 10))
        return from_sequential(seq, (8, 8, 1))
    mods = {
        "c1": nn.Conv2d(1, 8, 3, padding=1), "c2": nn.Conv2d(8, 8, 3, padding=1),
        "c3": nn.Conv2d(8, 8, 3, padding=1), "c4": nn.Conv2d(8, 16, 3, padding=1),
        "fc": nn.Linear(64, 10),
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
    return GraphNet((8, 8, 1), nodes, mods, bns)


def train_float(name: str, seed: int = 0, epochs: int = 40, lr: float = 3e-3, batch: int = 32, progress=False):
    """Build and train the float model *name*; keep the weights of the best validation epoch."""
    from .train import train_float as _train

    net = build(name, seed)
    return _train(net, input_layout(name), seed=seed, epochs=epochs, lr=lr, batch=batch, progress=progress)


def evaluate(net, name: str, split: str = "test", quant=None) -> float:
    from .train import accuracy

    return accuracy(net, input_layout(name), split, quant=quant)
