"""Float import: a PyTorch ``nn.Module`` (traced with ``torch.fx``) or a float ONNX file -> :class:`GraphNet`.

The imported graph is an ordinary float :class:`~systolic.quantize.graph.GraphNet`
(activations NHWC, the golden layout), so every quantization method runs on it
(:func:`systolic.quantize.methods.quantize_model` takes it in place of a zoo
name) and :func:`~systolic.quantize.convert.to_golden` turns the result into a
golden network. Supported operations and how each maps (docs/import.md):

========================================  ===========================================================
PyTorch / ONNX                            GraphNet node
========================================  ===========================================================
Conv2d / Conv (groups, depthwise)         ``conv`` (zero padding, dilation 1)
Linear / Gemm / MatMul (+ Add of a bias)  ``dense``
BatchNorm2d/1d / BatchNormalization       folded into the conv / dense before it (``fold_batchnorm``)
ReLU / Relu                               the ReLU of the conv / dense / add before it
ReLU6, Hardtanh(0, x), clamp(0, x) / Clip  ReLU + upper clamp of the node before it
MaxPool2d / MaxPool                       ``maxpool`` (padding never wins; no ceil mode, no dilation)
AvgPool2d / AveragePool                   ``avgpool`` (padding counts as zeros in the divisor)
AdaptiveAvgPool2d(1), mean over H, W /    ``avgpool`` over the whole map (then ``flatten`` when the
GlobalAveragePool                         result is 2-D)
add / Add                                 ``add`` (residual)
flatten, view/reshape(N, -1) / Flatten,   ``flatten`` (HWC order: the next Linear's columns are
Reshape to 2-D                            permuted from PyTorch's CHW order)
cat(dim=1) / Concat(axis=1)               ``concat`` on channels
Identity, Dropout (inference)             nothing
========================================  ===========================================================

Anything else raises :class:`UnsupportedModelError` naming the node, its
operation and the supported list. Importing never runs code from a file: a
PyTorch module is the caller's object (``FILE.py:FUNCTION`` on the command line
imports the user's file, as Python's import does); an ONNX file is a protobuf,
read with size checks (no external data files).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..golden.limits import MAX_LAYERS, MAX_NAME_CHARS, MAX_PADDING
from .graph import GraphNet, Node

__all__ = ["UnsupportedModelError", "from_torch", "from_onnx", "from_python", "import_model", "is_import_spec",
           "load_onnx", "TORCH_SUPPORTED", "ONNX_SUPPORTED"]

#: What :func:`from_torch` accepts (for messages and docs).
TORCH_SUPPORTED = ("Conv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "ReLU", "ReLU6", "Hardtanh(0, x)",
                   "clamp(min=0, max=x)", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d(1)", "mean over (2, 3)",
                   "add", "flatten", "view/reshape(N, -1)", "cat(dim=1)", "Identity", "Dropout")
#: ONNX operators :func:`from_onnx` accepts.
ONNX_SUPPORTED = ("Conv", "Gemm", "MatMul", "Add", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
                  "GlobalAveragePool", "Flatten", "Reshape", "Concat", "Identity", "Dropout", "Constant")


class UnsupportedModelError(ValueError):
    """A model the importer cannot map: an unsupported node or setting, a shape it cannot follow."""


@dataclass
class _Value:
    """A tensor of the imported graph: the GraphNet node that makes it and its per-sample golden shape."""

    node: str                   #: GraphNet node name (``"input"`` for the network input)
    shape: tuple                #: (H, W, C) or (features,)
    chw: tuple | None = None    #: a flattened (C, H, W) map with H*W > 1: the next Linear permutes its columns


class _Builder:
    """Accumulates GraphNet nodes, modules and batch norms, with the checks every front end shares."""

    def __init__(self, input_shape, where: str):
        self.where = where
        self.input = _Value("input", tuple(int(d) for d in input_shape))
        self.nodes: list[Node] = []
        self.mods: dict[str, nn.Module] = {}
        self.bns: dict[str, nn.Module] = {}
        self.names: set[str] = {"input"}

    # ------------------------------------------------------------ helpers
    def fail(self, node: str, op: str, why: str):
        raise UnsupportedModelError(f"{self.where}: node {node!r} ({op}): {why}")

    def name(self, raw: str) -> str:
        base = "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(raw))[:MAX_NAME_CHARS - 8] or "node"
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def _add(self, node: Node, shape, chw=None) -> _Value:
        if len(self.nodes) >= MAX_LAYERS:
            raise UnsupportedModelError(f"{self.where}: more than {MAX_LAYERS} layers (MAX_LAYERS)")
        self.nodes.append(node)
        return _Value(node.name, tuple(shape), chw)

    def producer(self, v: _Value) -> Node | None:
        return next((n for n in self.nodes if n.name == v.node), None)

    def spatial(self, v: _Value, node: str, op: str) -> tuple:
        if len(v.shape) != 3:
            self.fail(node, op, f"needs a (C, H, W) feature map, its input is 2-D {v.shape}")
        return v.shape

    # ------------------------------------------------------------ layers
    def conv(self, raw, v: _Value, m: nn.Conv2d, op: str, pads=None) -> _Value:
        h, w, c = self.spatial(v, raw, op)
        if m.in_channels != c:
            self.fail(raw, op, f"expects {m.in_channels} input channels, gets {c}")
        if tuple(m.dilation) != (1, 1):
            self.fail(raw, op, f"dilation {tuple(m.dilation)} is not supported (only 1)")
        if m.padding_mode != "zeros":
            self.fail(raw, op, f"padding mode {m.padding_mode!r}: only zero padding is supported")
        if m.padding == "valid":
            m.padding = (0, 0)
        elif m.padding == "same":
            if tuple(m.stride) != (1, 1) or not all(k % 2 for k in m.kernel_size):
                self.fail(raw, op, "padding='same' needs stride 1 and an odd kernel")
            m.padding = tuple(k // 2 for k in m.kernel_size)
        node_pad = (0, 0, 0, 0)
        if pads is not None:
            t, bo, le, ri = (int(p) for p in pads)
            if t == bo and le == ri:
                m.padding = (t, le)
            else:                                              # asymmetric: padded by the node
                node_pad, m.padding = (t, bo, le, ri), (0, 0)
        pt, pb, pl, pr = node_pad if any(node_pad) else (m.padding[0], m.padding[0], m.padding[1], m.padding[1])
        if max(pt, pb, pl, pr) > MAX_PADDING:
            self.fail(raw, op, f"padding {max(pt, pb, pl, pr)} is above {MAX_PADDING}")
        kh, kw = m.kernel_size
        sh, sw = m.stride
        oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
        if oh < 1 or ow < 1:
            self.fail(raw, op, f"kernel {kh}x{kw} does not fit the {h}x{w} input")
        name = self.name(raw)
        self.mods[name] = m
        return self._add(Node(name, "conv", (v.node,), padding=node_pad), (oh, ow, m.out_channels))

    def dense(self, raw, v: _Value, m: nn.Linear, op: str) -> _Value:
        if len(v.shape) != 1:
            self.fail(raw, op, f"needs a 2-D (N, features) input, gets a feature map of shape {v.shape} "
                               "(flatten it first)")
        if m.in_features != v.shape[0]:
            self.fail(raw, op, f"expects {m.in_features} input features, gets {v.shape[0]}")
        if v.chw is not None:           # PyTorch flattens CHW, the golden model HWC: permute the columns
            c, h, w = v.chw
            idx = torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)
            with torch.no_grad():
                m.weight.copy_(m.weight[:, idx])
        name = self.name(raw)
        self.mods[name] = m
        return self._add(Node(name, "dense", (v.node,)), (m.out_features,))

    def _fusable(self, v: _Value, raw, op, users: int, what: str) -> Node:
        prod = self.producer(v)
        if prod is None or prod.op not in ("conv", "dense", "add"):
            self.fail(raw, op, f"{what} must follow a convolution, a linear layer or an add, not "
                               f"{'the input' if prod is None else prod.op}")
        if users != 1:
            self.fail(raw, op, f"{what} of a value that is also used without it (by {users} consumers) "
                               "cannot be fused into its producer")
        return prod

    def batchnorm(self, raw, v: _Value, bn: nn.Module, op: str, users: int) -> _Value:
        prod = self._fusable(v, raw, op, users, "a batch norm")
        if prod.op == "add" or prod.relu or prod.name in self.bns:
            self.fail(raw, op, "a batch norm must follow a convolution or linear layer directly (before its ReLU)")
        n = bn.num_features
        if n != (v.shape[-1]):
            self.fail(raw, op, f"has {n} features, its input {v.shape[-1]} channels")
        self.bns[prod.name] = bn
        return v

    def relu(self, raw, v: _Value, op: str, users: int, clamp: float | None = None) -> _Value:
        prod = self.producer(v)
        if prod is not None and prod.op in ("maxpool", "avgpool", "flatten", "concat") and clamp is None \
                and self.nonneg(v):
            return v                                   # a ReLU of values that are never negative: nothing
        prod = self._fusable(v, raw, op, users, "a ReLU / clamp")
        if prod.relu and (clamp is None or prod.clamp is not None):
            if clamp is None:
                return v                               # ReLU(ReLU(x))
            self.fail(raw, op, "two clamps in a row")
        if clamp is not None and not clamp > 0:
            self.fail(raw, op, f"the upper clamp must be positive, not {clamp}")
        prod.relu = True
        if clamp is not None:
            prod.clamp = float(clamp)
        return v

    def nonneg(self, v: _Value) -> bool:
        prod = self.producer(v)
        if prod is None:
            return False                                # the input's sign is the data's
        if prod.op in ("conv", "dense", "add", "concat"):
            return prod.relu
        return self.nonneg(_Value(prod.inputs[0], ()))

    def pool(self, raw, v: _Value, kind: str, k, s, pads, op: str) -> _Value:
        h, w, c = self.spatial(v, raw, op)
        k, s, pads = tuple(int(x) for x in k), tuple(int(x) for x in s), tuple(int(x) for x in pads)
        if max(pads[:2]) >= k[0] or max(pads[2:]) >= k[1]:
            self.fail(raw, op, f"padding {pads} must be smaller than the window {k[0]}x{k[1]}")
        oh, ow = (h + pads[0] + pads[1] - k[0]) // s[0] + 1, (w + pads[2] + pads[3] - k[1]) // s[1] + 1
        if oh < 1 or ow < 1:
            self.fail(raw, op, f"window {k[0]}x{k[1]} does not fit the {h}x{w} input")
        name = self.name(raw)
        return self._add(Node(name, kind, (v.node,), pool=k, stride=s, padding=pads), (oh, ow, c))

    def global_pool(self, raw, v: _Value, op: str, flatten: bool) -> _Value:
        h, w, c = self.spatial(v, raw, op)
        out = self.pool(raw, v, "avgpool", (h, w), (h, w), (0, 0, 0, 0), op)
        return self.flatten(f"{raw}_flatten", out, op) if flatten else out

    def flatten(self, raw, v: _Value, op: str) -> _Value:
        if len(v.shape) == 1:
            return v
        h, w, c = v.shape
        name = self.name(raw)
        return self._add(Node(name, "flatten", (v.node,)), (h * w * c,), (c, h, w) if h * w > 1 else None)

    def add(self, raw, a: _Value, b: _Value, op: str) -> _Value:
        if a.shape != b.shape:
            self.fail(raw, op, f"adds shapes {a.shape} and {b.shape}; only equal shapes (no broadcasting)")
        if a.chw is not None or b.chw is not None:
            self.fail(raw, op, "adds flattened feature maps; add before flattening")
        name = self.name(raw)
        return self._add(Node(name, "add", (a.node, b.node)), a.shape)

    def concat(self, raw, vs: list, op: str) -> _Value:
        if len(vs) < 2:
            return vs[0]
        shapes = [v.shape for v in vs]
        if len({s[:-1] for s in shapes}) != 1 or any(len(s) != len(shapes[0]) for s in shapes):
            self.fail(raw, op, f"concatenates shapes {shapes}; only on channels, with equal H and W")
        if any(v.chw is not None for v in vs):
            self.fail(raw, op, "concatenates flattened feature maps; concatenate before flattening")
        name = self.name(raw)
        node = Node(name, "concat", tuple(v.node for v in vs), relu=all(self.nonneg(v) for v in vs))
        return self._add(node, (*shapes[0][:-1], sum(s[-1] for s in shapes)))

    def finish(self, out: _Value) -> GraphNet:
        if not self.nodes:
            raise UnsupportedModelError(f"{self.where}: the model has no layers")
        if out.node != self.nodes[-1].name:
            raise UnsupportedModelError(f"{self.where}: the output must be the last layer's result "
                                        f"(it is {out.node!r}, the last layer {self.nodes[-1].name!r})")
        used = {i for n in self.nodes for i in n.inputs}
        dead = [n.name for n in self.nodes[:-1] if n.name not in used]
        if dead:
            raise UnsupportedModelError(f"{self.where}: layers whose results are never used: {', '.join(dead)}")
        return GraphNet(self.input.shape, self.nodes, self.mods, self.bns)


# ====================================================================== PyTorch


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def from_torch(module: nn.Module, input_shape) -> GraphNet:
    """Trace *module* with ``torch.fx`` and map it to a float :class:`GraphNet` (the module is copied, not
    changed). *input_shape*: one sample in the kit's layout, ``(H, W, C)`` for a network that takes NCHW
    images, ``(features,)`` for one that takes ``(N, features)``.

    Raises :class:`UnsupportedModelError` naming the first node it cannot map.
    """
    import torch.fx as fx

    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch nn.Module, not {type(module).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) not in (1, 3) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be (H, W, C) or (features,) of positive ints, not {input_shape!r}")
    module = copy.deepcopy(module).eval()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:            # fx raises many types for untraceable code
        raise UnsupportedModelError(f"{type(module).__name__}: torch.fx cannot trace the module "
                                    f"(data-dependent control flow?): {type(exc).__name__}: {exc}") from None
    b = _Builder(shape, type(module).__name__)
    env: dict = {}
    batch = object()                    # the value of x.size(0)
    for node in gm.graph.nodes:
        # Consumers of this node's first input: a ReLU or batch norm fuses into the producer of a value only
        # when it is that value's one consumer.
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        users = len(first.users) if first is not None else 0
        op_name = _torch_op_name(node)

        def val(a):
            if isinstance(a, fx.Node):
                return env[a]
            if isinstance(a, (list, tuple)):
                return type(a)(val(x) for x in a)
            return a

        args = [val(a) for a in node.args]
        kwargs = {k: val(a) for k, a in node.kwargs.items()}
        if node.op == "placeholder":
            if any(isinstance(v, _Value) for v in env.values()):
                b.fail(node.name, "input", "the module takes more than one input")
            env[node] = b.input
        elif node.op == "output":
            out = args[0]
            if not isinstance(out, _Value):
                b.fail(node.name, "output", "the module must return one tensor")
            return b.finish(out)
        elif node.op == "call_module":
            env[node] = _torch_module(b, node.name, gm.get_submodule(node.target), args, users)
        elif node.op in ("call_function", "call_method"):
            env[node] = _torch_function(b, node, op_name, args, kwargs, users, batch)
        else:
            b.fail(node.name, node.op, f"is not supported; supported: {', '.join(TORCH_SUPPORTED)}")
    raise UnsupportedModelError(f"{type(module).__name__}: the traced graph has no output")


def _torch_op_name(node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return node.op


def _torch_module(b: _Builder, raw, m, args, users):
    (x,) = args[:1]
    op = type(m).__name__
    if isinstance(m, nn.Conv2d):
        return b.conv(raw, x, m, op)
    if isinstance(m, nn.Linear):
        return b.dense(raw, x, m, op)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        if not m.track_running_stats or m.running_mean is None:
            b.fail(raw, op, "a batch norm without running statistics cannot be folded")
        return b.batchnorm(raw, x, m, op, users)
    if isinstance(m, nn.ReLU):
        return b.relu(raw, x, op, users)
    if isinstance(m, nn.ReLU6):
        return b.relu(raw, x, op, users, 6.0)
    if isinstance(m, nn.Hardtanh):
        if m.min_val != 0:
            b.fail(raw, op, f"Hardtanh({m.min_val}, {m.max_val}): only a lower bound of 0 (a clamped ReLU)")
        return b.relu(raw, x, op, users, float(m.max_val))
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or _pair(m.dilation) != (1, 1) or m.return_indices:
            b.fail(raw, op, "ceil_mode, dilation and return_indices are not supported")
        ph, pw = _pair(m.padding)
        return b.pool(raw, x, "maxpool", _pair(m.kernel_size), _pair(m.stride or m.kernel_size),
                      (ph, ph, pw, pw), op)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            b.fail(raw, op, "ceil_mode, count_include_pad=False and divisor_override are not supported")
        ph, pw = _pair(m.padding)
        return b.pool(raw, x, "avgpool", _pair(m.kernel_size), _pair(m.stride or m.kernel_size),
                      (ph, ph, pw, pw), op)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return _adaptive(b, raw, x, m.output_size, op)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            b.fail(raw, op, f"Flatten({m.start_dim}, {m.end_dim}): only Flatten(1, -1)")
        return b.flatten(raw, x, op)
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return x
    b.fail(raw, op, f"is not supported; supported: {', '.join(TORCH_SUPPORTED)}")


def _adaptive(b, raw, x, size, op):
    h, w, _ = b.spatial(x, raw, op)
    oh, ow = _pair(size)
    oh, ow = oh or h, ow or w
    if (oh, ow) == (1, 1):
        return b.global_pool(raw, x, op, flatten=False)
    if h % oh or w % ow:
        b.fail(raw, op, f"output {oh}x{ow} does not divide the {h}x{w} input")
    k = (h // oh, w // ow)
    return b.pool(raw, x, "avgpool", k, k, (0, 0, 0, 0), op)


def _torch_function(b: _Builder, node, op, args, kwargs, users, batch):
    raw, t = node.name, node.target
    x = args[0] if args else None
    if t in (operator.add, torch.add, "add", "add_", operator.iadd):
        if len(args) != 2 or not all(isinstance(a, _Value) for a in args) or kwargs.get("alpha", 1) != 1:
            b.fail(raw, op, "only the sum of two tensors (no constants, no alpha) is supported")
        return b.add(raw, args[0], args[1], op)
    if t in (F.relu, torch.relu, "relu", "relu_"):
        return b.relu(raw, x, op, users)
    if t in (F.relu6,):
        return b.relu(raw, x, op, users, 6.0)
    if t in (F.hardtanh, torch.clamp, torch.clip, "clamp", "clip", "clamp_"):
        lo = kwargs.get("min", kwargs.get("min_val", args[1] if len(args) > 1 else None))
        hi = kwargs.get("max", kwargs.get("max_val", args[2] if len(args) > 2 else None))
        if t is F.hardtanh:
            lo = -1.0 if lo is None else lo
            hi = 1.0 if hi is None else hi
        if lo != 0 or isinstance(hi, _Value):
            b.fail(raw, op, f"clamp({lo}, {hi}): only a lower bound of 0 and a constant upper bound")
        return b.relu(raw, x, op, users, None if hi is None else float(hi))
    if t in (torch.flatten, "flatten"):
        start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
        end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
        if start != 1 or end != -1:
            b.fail(raw, op, f"flatten({start}, {end}): only flatten(x, 1)")
        return b.flatten(raw, x, op)
    if t == "size":
        if args[1:] != [0] and kwargs.get("dim") != 0:
            b.fail(raw, op, "only x.size(0) (the batch) is supported")
        return batch
    if t in ("view", "reshape", torch.reshape):
        dims = list(args[1:]) if t != torch.reshape else list(args[1])
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = list(dims[0])
        n = int(np.prod(x.shape))
        if len(dims) == 2 and (dims[0] is batch or dims[0] == -1) and dims[1] in (-1, n) and dims[0] != dims[1]:
            return b.flatten(raw, x, op)
        b.fail(raw, op, f"reshape to {dims}: only to (N, -1), flattening each sample")
    if t in (torch.cat, torch.concat):
        ts = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(ts, (list, tuple)) or not ts or not all(isinstance(v, _Value) for v in ts):
            b.fail(raw, op, "only a list of tensors")
        if dim not in (1, -3 if len(ts[0].shape) == 3 else -1):
            b.fail(raw, op, f"cat on dim {dim}: only on channels (dim=1)")
        return b.concat(raw, list(ts), op)
    if t in (torch.mean, "mean"):
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if dims is None or sorted(d % 4 for d in _pair(dims) if isinstance(d, int)) != [2, 3]:
            b.fail(raw, op, f"mean over {dims}: only over (2, 3), the spatial axes")
        return b.global_pool(raw, x, op, flatten=not keep)
    if t is F.adaptive_avg_pool2d:
        return _adaptive(b, raw, x, kwargs.get("output_size", args[1] if len(args) > 1 else None), op)
    if t in (F.max_pool2d, F.avg_pool2d):
        names = ("kernel_size", "stride", "padding")
        vals = {k: kwargs.get(k, args[i + 1] if len(args) > i + 1 else None) for i, k in enumerate(names)}
        k = _pair(vals["kernel_size"])
        s = _pair(vals["stride"] or k)
        ph, pw = _pair(vals["padding"] or 0)
        if kwargs.get("ceil_mode") or (t is F.avg_pool2d and kwargs.get("count_include_pad") is False):
            b.fail(raw, op, "ceil_mode and count_include_pad=False are not supported")
        return b.pool(raw, x, "maxpool" if t is F.max_pool2d else "avgpool", k, s, (ph, ph, pw, pw), op)
    if t in (F.dropout, "contiguous"):
        return x
    b.fail(raw, op, f"is not supported; supported: {', '.join(TORCH_SUPPORTED)}")


# ====================================================================== ONNX


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def load_onnx(path):
    """Read and check an ONNX file (the same reader as the quantized import: size, parse, opset >= 13,
    every tensor's declared size and bytes, no external data, no subgraphs, the checker); ``(model, where)``."""
    from ..golden.onnx_import import QuantizedImportError, read_onnx

    try:
        return read_onnx(path)
    except QuantizedImportError as exc:
        raise UnsupportedModelError(str(exc)) from None


def _input_shape(model, where, inits) -> tuple:
    from ..golden.onnx_import import QuantizedImportError, onnx_input

    try:
        name, shape, _ = onnx_input(model, where, inits)
    except QuantizedImportError as exc:
        raise UnsupportedModelError(str(exc)) from None
    return name, shape


class _OnnxNode:
    """One ONNX node being mapped: its name, op type and attributes, with access to the graph's values."""

    def __init__(self, g: "_OnnxGraph", n, k: int):
        self.g, self.n, self.b = g, n, g.b
        self.raw = n.name or f"{n.op_type.lower()}_{k}"
        self.op = n.op_type
        self.a = _attrs(n)

    def fail(self, why):
        self.b.fail(self.raw, self.op, why)

    def tensor(self, i) -> _Value:
        name = self.n.input[i]
        if name not in self.g.env:
            if name in self.g.inits or name in self.g.consts:
                self.fail(f"input {i} ({name!r}) is a constant where a tensor is expected")
            self.fail(f"input {name!r} is neither a graph input, an initializer nor an earlier node's output "
                      "(a missing initializer?)")
        return self.g.env[name]

    def const(self, i) -> np.ndarray:
        return self.g.const(self.n.input[i], self)

    def has(self, i) -> bool:
        return len(self.n.input) > i and bool(self.n.input[i])

    @property
    def users(self) -> int:
        """Consumers of the first input (a ReLU or batch norm fuses only into a value's one consumer)."""
        return self.g.users.get(self.n.input[0], 0) if self.n.input else 0

    def explicit_pads(self):
        if self.a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            self.fail(f"auto_pad {self.a['auto_pad']!r}: give explicit pads")
        p = self.a.get("pads", [0, 0, 0, 0])
        return p[0], p[2], p[1], p[3]          # ONNX (top, left, bottom, right) -> (top, bottom, left, right)


class _OnnxGraph:
    """The values of an ONNX graph being mapped onto a :class:`_Builder`."""

    def __init__(self, model, where):
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consts: dict[str, np.ndarray] = {}
        in_name, shape = _input_shape(model, where, self.inits)
        self.b = _Builder(shape, where)
        self.env = {in_name: self.b.input}
        self.users: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                self.users[i] = self.users.get(i, 0) + 1
        for o in model.graph.output:
            self.users[o.name] = self.users.get(o.name, 0) + 1

    def const(self, name, node: _OnnxNode) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self.consts:
            if name not in self.inits:
                node.fail(f"needs input {name!r} as a constant (an initializer), and it is not one")
            self.consts[name] = numpy_helper.to_array(self.inits[name])
        return self.consts[name]


def _onnx_conv(x: _OnnxNode):
    w = x.const(1)
    bias = x.const(2) if x.has(2) else None
    if w.ndim != 4:
        x.fail(f"only 2-D convolutions (weight of shape {w.shape})")
    if any(d != 1 for d in x.a.get("dilations", [1, 1])):
        x.fail(f"dilations {x.a['dilations']}: only 1")
    pads = x.explicit_pads()
    g = int(x.a.get("group", 1))
    m = nn.Conv2d(w.shape[1] * g, w.shape[0], (w.shape[2], w.shape[3]), tuple(x.a.get("strides", [1, 1])),
                  groups=g, bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        if bias is not None:
            m.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return x.b.conv(x.raw, x.tensor(0), m, x.op, pads)


def _onnx_dense(x: _OnnxNode):
    w = x.const(1).astype(np.float32)
    if w.ndim != 2:
        x.fail(f"the weight must be 2-D, not of shape {w.shape}")
    bias = None
    if x.op == "Gemm":
        if x.a.get("transA", 0):
            x.fail("transA=1 is not supported")
        w = w * x.a.get("alpha", 1.0)
        w = w if x.a.get("transB", 0) else w.T
        if x.has(2):
            bias = x.const(2).astype(np.float32) * x.a.get("beta", 1.0)
    else:
        w = w.T
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    if bias is not None:
        _set_bias(x, m, bias)
    return x.b.dense(x.raw, x.tensor(0), m, x.op)


def _set_bias(x: _OnnxNode, m: nn.Linear, bias: np.ndarray):
    if bias.size not in (1, m.out_features):
        x.fail(f"bias of shape {bias.shape} for {m.out_features} outputs")
    m.bias = nn.Parameter(torch.from_numpy(np.broadcast_to(bias.reshape(-1), (m.out_features,)).copy()))


def _onnx_add(x: _OnnxNode):
    env = x.g.env
    if all(i in env for i in x.n.input):
        return x.b.add(x.raw, x.tensor(0), x.tensor(1), x.op)
    ti, ci = (0, 1) if x.n.input[0] in env else (1, 0)      # MatMul + Add(bias): the dense's bias
    v, bias = x.tensor(ti), x.const(ci).astype(np.float32)
    prod = x.b.producer(v)
    m = x.b.mods.get(prod.name) if prod is not None else None
    if not isinstance(m, nn.Linear) or m.bias is not None or prod.relu or x.g.users.get(x.n.input[ti]) != 1:
        x.fail("adds a constant; only a bias right after a MatMul is supported")
    _set_bias(x, m, bias)
    return v


def _onnx_batchnorm(x: _OnnxNode):
    scale, shift, mean, var = (x.const(i).astype(np.float32) for i in range(1, 5))
    v = x.tensor(0)
    bn_cls = nn.BatchNorm2d if len(v.shape) == 3 else nn.BatchNorm1d
    bn = bn_cls(scale.size, eps=float(x.a.get("epsilon", 1e-5)))
    with torch.no_grad():
        for p, val in ((bn.weight, scale), (bn.bias, shift), (bn.running_mean, mean), (bn.running_var, var)):
            p.copy_(torch.from_numpy(val))
    return x.b.batchnorm(x.raw, v, bn.eval(), x.op, x.users)


def _onnx_clip(x: _OnnxNode):
    lo = x.const(1) if x.has(1) else None
    hi = x.const(2) if x.has(2) else None
    if lo is None or float(lo) != 0.0:
        x.fail(f"Clip({lo}, {hi}): only a lower bound of 0")
    return x.b.relu(x.raw, x.tensor(0), x.op, x.users, None if hi is None else float(hi))


def _onnx_pool(x: _OnnxNode):
    a = x.a
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("storage_order", 0):
        x.fail("ceil_mode, dilations and storage_order are not supported")
    pads = x.explicit_pads()
    if x.op == "AveragePool" and any(pads) and not a.get("count_include_pad", 0):
        x.fail("padding with count_include_pad=0: the kit divides by the whole window (count_include_pad=1)")
    kind = "maxpool" if x.op == "MaxPool" else "avgpool"
    return x.b.pool(x.raw, x.tensor(0), kind, a["kernel_shape"], a.get("strides", [1, 1]), pads, x.op)


def _onnx_flatten(x: _OnnxNode):
    if x.a.get("axis", 1) != 1:
        x.fail(f"axis {x.a.get('axis')}: only 1")
    return x.b.flatten(x.raw, x.tensor(0), x.op)


def _onnx_reshape(x: _OnnxNode):
    v, target = x.tensor(0), [int(d) for d in x.const(1).reshape(-1)]
    total = int(np.prod(v.shape))
    if not (len(target) == 2 and target[0] in (0, -1, 1) and target[1] in (-1, total) and target != [-1, -1]):
        x.fail(f"reshape to {target}: only to (N, -1), flattening each sample")
    return x.b.flatten(x.raw, v, x.op)


def _onnx_concat(x: _OnnxNode):
    vs = [x.tensor(i) for i in range(len(x.n.input))]
    axis = x.a.get("axis")
    if axis not in (1, -3 if len(vs[0].shape) == 3 else -1):
        x.fail(f"axis {axis}: only on channels (axis 1)")
    return x.b.concat(x.raw, vs, x.op)


#: ONNX op type -> its mapping (``Constant`` is handled by :func:`from_onnx`).
_ONNX_OPS = {
    "Identity": lambda x: x.tensor(0), "Dropout": lambda x: x.tensor(0),
    "Conv": _onnx_conv, "Gemm": _onnx_dense, "MatMul": _onnx_dense, "Add": _onnx_add,
    "BatchNormalization": _onnx_batchnorm, "Relu": lambda x: x.b.relu(x.raw, x.tensor(0), x.op, x.users),
    "Clip": _onnx_clip, "MaxPool": _onnx_pool, "AveragePool": _onnx_pool,
    "GlobalAveragePool": lambda x: x.b.global_pool(x.raw, x.tensor(0), x.op, flatten=False),
    "Flatten": _onnx_flatten, "Reshape": _onnx_reshape, "Concat": _onnx_concat,
}


def from_onnx(path) -> GraphNet:
    """Read a float ONNX file (opset >= 13) into a float :class:`GraphNet`. Raises
    :class:`UnsupportedModelError` for an unsupported node (naming it, its op type and the supported list),
    a dynamic shape, a missing initializer or a malformed file."""
    from onnx import numpy_helper

    model, where = load_onnx(path)
    g = _OnnxGraph(model, where)
    for k, n in enumerate(model.graph.node):
        x = _OnnxNode(g, n, k)
        if n.domain not in ("", "ai.onnx"):
            g.b.fail(x.raw, f"{n.domain}.{x.op}", f"custom domain {n.domain!r}; supported: {', '.join(ONNX_SUPPORTED)}")
        out = n.output[0] if n.output else None
        if x.op == "Constant":
            if "value" not in x.a:
                x.fail("only a tensor 'value' constant is supported")
            g.consts[out] = numpy_helper.to_array(x.a["value"])
        elif x.op in _ONNX_OPS:
            g.env[out] = _ONNX_OPS[x.op](x)
        else:
            x.fail(f"is not supported; supported ONNX ops: {', '.join(ONNX_SUPPORTED)}")
    outs = list(model.graph.output)
    if len(outs) != 1:
        raise UnsupportedModelError(f"{where}: the graph has {len(outs)} outputs; one is supported")
    if outs[0].name not in g.env:
        raise UnsupportedModelError(f"{where}: the output {outs[0].name!r} is not computed by any node")
    return g.b.finish(g.env[outs[0].name])


# ====================================================================== model specs


def is_import_spec(spec) -> bool:
    """Whether *spec* names a float model to import: an ``.onnx`` file or ``FILE.py:FUNCTION``."""
    return isinstance(spec, str) and (spec.endswith(".onnx") or (".py:" in spec and not spec.endswith(".npz")))


def from_python(spec: str, shapes) -> GraphNet:
    """``FILE.py:FUNCTION``: import FILE (this runs its code, as Python's import does), call FUNCTION() for an
    ``nn.Module`` and import it at the first of *shapes* (per-sample input shapes to try) that fits."""
    import importlib.util

    path, _, func = spec.rpartition(":")
    if not path.endswith(".py") or not func.isidentifier():
        raise ValueError(f"{spec}: give a Python file and a function, FILE.py:FUNCTION")
    if not Path(path).is_file():
        raise ValueError(f"{spec}: no such file {path!r}")
    mspec = importlib.util.spec_from_file_location(f"systolic_user_model_{Path(path).stem}", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ValueError(f"{spec}: {path} has no function {func!r}")
    module = fn()
    if not isinstance(module, nn.Module):
        raise ValueError(f"{spec}: {func}() returned {type(module).__name__}, not a torch nn.Module")
    errors = []
    for shape in shapes:
        try:
            return from_torch(module, shape)
        except UnsupportedModelError as exc:
            errors.append(f"as {tuple(shape)}: {exc}")
    raise UnsupportedModelError(f"{spec}: " + "; ".join(errors))


def import_model(spec: str, shapes) -> GraphNet:
    """The float GraphNet of an ``.onnx`` file or ``FILE.py:FUNCTION`` (*shapes*: the input shapes the data
    offers, tried in order for a PyTorch module; an ONNX file declares its own)."""
    if spec.endswith(".onnx"):
        return from_onnx(spec)
    return from_python(spec, shapes)
