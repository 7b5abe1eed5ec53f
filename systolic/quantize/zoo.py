"""Model zoo: ``digits-mlp``, ``digits-cnn``, ``digits-resnet``, ``mnist-lenet5``, ``mnist-resnet8``,
``mnist-mobilenet``, and the shipped integer models.

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

The MNIST models (built for ``data="mnist"``, 28x28x1, shown for it; on other image data the same
layers are built for its shape and classes):

* ``mnist-lenet5`` (LeNet-5): conv 5x5 6ch pad 2 + ReLU (``c1``) -> maxpool 2 -> conv 5x5 16ch + ReLU
  (``c2``, 10x10) -> maxpool 2 -> flatten (16*5*5 = 400) -> dense 120 + ReLU -> dense 84 + ReLU ->
  dense 10 (no batch norm; needs images of at least 12x12).
* ``mnist-resnet8`` (ResNet-8, the MLPerf Tiny image-classification topology for 28x28x1): conv 3x3 16ch
  + BN + ReLU (``stem``); three stacks ``s1``, ``s2``, ``s3`` of 16, 32, 64 filters and strides 1, 2, 2,
  each conv 3x3 (stride) + BN + ReLU (``sNa``), conv 3x3 + BN (``sNb``), a 1x1 conv (stride) + BN
  shortcut (``sNsc``) where the stride or width changes (``s2``, ``s3``), add + ReLU (``sNadd``); global
  average pool (7x7, the golden model divides by 49) -> flatten (64) -> dense 10.
* ``mnist-mobilenet`` (depthwise separable): conv 3x3 16ch stride 2 + BN + ReLU6 (``stem``, 14x14);
  four blocks ``bN``: depthwise 3x3 (groups = channels, stride) + BN + ReLU6 (``bNdw``) and pointwise
  1x1 + BN + ReLU6 (``bNpw``), widths 32, 64, 64, 128 and strides 1, 2, 1, 1 (7x7); global average pool
  (7x7) -> flatten (128) -> dense 10.
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
    if name == "mnist-lenet5":
        if s[0] < 12 or s[1] < 12:
            raise ValueError(f"model {name!r} (conv 5x5, pool 2, conv 5x5, pool 2) needs images of at least "
                             f"12x12; data set {ds.name!r} has samples of shape {s}")
    elif s[0] < 4 or s[1] < 4:
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
    if name == "mnist-lenet5":
        return _lenet5(shape, classes)
    if name == "mnist-resnet8":
        return _resnet8(shape, classes)
    if name == "mnist-mobilenet":
        return _mobilenet(shape, classes)
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


def _out_side(n: int, k: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - k) // stride + 1


def _lenet5(shape, classes):
    """LeNet-5 (no batch norm): see the module docstring. Modules are created in node order (seeded)."""
    from torch import nn

    from .graph import GraphNet, Node

    h, w, c = shape
    fh, fw = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    mods = {
        "c1": nn.Conv2d(c, 6, 5, padding=2), "c2": nn.Conv2d(6, 16, 5),
        "f1": nn.Linear(16 * fh * fw, 120), "f2": nn.Linear(120, 84), "fc": nn.Linear(84, classes),
    }
    nodes = [
        Node("c1", "conv", ("input",), relu=True),
        Node("p1", "maxpool", ("c1",)),
        Node("c2", "conv", ("p1",), relu=True),
        Node("p2", "maxpool", ("c2",)),
        Node("flat", "flatten", ("p2",)),
        Node("f1", "dense", ("flat",), relu=True),
        Node("f2", "dense", ("f1",), relu=True),
        Node("fc", "dense", ("f2",)),
    ]
    return GraphNet(shape, nodes, mods)


#: ResNet-8 stacks: (name, filters, stride).
RESNET8_STACKS = (("s1", 16, 1), ("s2", 32, 2), ("s3", 64, 2))
#: MobileNet blocks: (name, pointwise filters, depthwise stride); the stem has 16 filters, stride 2.
MOBILENET_BLOCKS = (("b1", 32, 1), ("b2", 64, 2), ("b3", 64, 1), ("b4", 128, 1))


def _global_pool(nodes, src, hw):
    from .graph import Node

    nodes.append(Node("gap", "avgpool", (src,), pool=hw, stride=hw))
    nodes.append(Node("flat", "flatten", ("gap",)))


def _resnet8(shape, classes):
    """ResNet-8 (MLPerf Tiny topology, BN on every conv, the shortcut's too): see the module docstring."""
    from torch import nn

    from .graph import GraphNet, Node

    h, w, c = shape
    mods = {"stem": nn.Conv2d(c, 16, 3, padding=1, bias=False)}
    nodes = [Node("stem", "conv", ("input",), relu=True)]
    src, width = "stem", 16
    for name, f, st in RESNET8_STACKS:
        mods[f"{name}a"] = nn.Conv2d(width, f, 3, stride=st, padding=1, bias=False)
        mods[f"{name}b"] = nn.Conv2d(f, f, 3, padding=1, bias=False)
        nodes += [Node(f"{name}a", "conv", (src,), relu=True), Node(f"{name}b", "conv", (f"{name}a",))]
        short = src
        if st != 1 or f != width:
            mods[f"{name}sc"] = nn.Conv2d(width, f, 1, stride=st, bias=False)
            nodes.append(Node(f"{name}sc", "conv", (src,)))
            short = f"{name}sc"
        nodes.append(Node(f"{name}add", "add", (short, f"{name}b"), relu=True))
        src, width = f"{name}add", f
        h, w = _out_side(h, 3, st, 1), _out_side(w, 3, st, 1)
    _global_pool(nodes, src, (h, w))
    mods["fc"] = nn.Linear(width, classes)
    nodes.append(Node("fc", "dense", ("flat",)))
    bns = {k: nn.BatchNorm2d(m.out_channels) for k, m in mods.items() if isinstance(m, nn.Conv2d)}
    return GraphNet(shape, nodes, mods, bns)


def _mobilenet(shape, classes):
    """Depthwise-separable MobileNet-style network (ReLU6 everywhere): see the module docstring."""
    from torch import nn

    from .graph import GraphNet, Node

    h, w, c = shape
    mods = {"stem": nn.Conv2d(c, 16, 3, stride=2, padding=1, bias=False)}
    nodes = [Node("stem", "conv", ("input",), relu=True, clamp=6.0)]
    h, w = _out_side(h, 3, 2, 1), _out_side(w, 3, 2, 1)
    src, width = "stem", 16
    for name, f, st in MOBILENET_BLOCKS:
        mods[f"{name}dw"] = nn.Conv2d(width, width, 3, stride=st, padding=1, groups=width, bias=False)
        mods[f"{name}pw"] = nn.Conv2d(width, f, 1, bias=False)
        nodes += [Node(f"{name}dw", "conv", (src,), relu=True, clamp=6.0),
                  Node(f"{name}pw", "conv", (f"{name}dw",), relu=True, clamp=6.0)]
        src, width = f"{name}pw", f
        h, w = _out_side(h, 3, st, 1), _out_side(w, 3, st, 1)
    _global_pool(nodes, src, (h, w))
    mods["fc"] = nn.Linear(width, classes)
    nodes.append(Node("fc", "dense", ("flat",)))
    bns = {k: nn.BatchNorm2d(m.out_channels) for k, m in mods.items() if isinstance(m, nn.Conv2d)}
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
