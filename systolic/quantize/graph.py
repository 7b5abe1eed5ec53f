"""`GraphNet`: a small torch graph of the layer kinds the golden model has.

Activations are NHWC (the golden layout) between nodes; convolutions permute to
NCHW internally. Node ops: ``conv`` (``nn.Conv2d``, grouped or depthwise, +
optional ``BatchNorm2d`` + optional ReLU or ReLU6-style clamp), ``dense``
(``nn.Linear`` + optional ``BatchNorm1d`` + optional ReLU / clamp), ``maxpool``
and ``avgpool`` (any window, stride and padding; the average divides by the
whole window), ``flatten`` (HWC order), ``add`` (+ optional ReLU / clamp) and
``concat`` (on channels).

The same module runs in float mode or, after :meth:`GraphNet.attach`, in
fake-quant mode, where it computes exactly what the integer golden network
computes (docs/quantization.md, "Fake quant = golden"):

* the input is quantized by ``net.qin``;
* conv/dense: ``acc = conv(x_q, w_q) + b_q`` with ``b_q`` the bias rounded at the
  accumulator scale ``s_in * s_w``; the output quantizer then rounds and clips
  ``acc`` to the output scale (ReLU = an unsigned output type, clip at 0);
* add: ``a + b`` re-quantized by its output quantizer; concat: the operands joined
  on channels and re-quantized by its output quantizer; pools and flatten are
  exact, the average pool rounded to its input's type;
* a clamp (``Node.clamp``, ReLU6: 6.0) limits a node's quantized output to the
  largest grid value not above it: ``min(q(y), floor(clamp / s) * s)``, which is
  the golden layer's ``out_max = floor(clamp * 2**f_out)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .dsconv import bfp_quantize
from .quantizers import Quantizer, round_ste

__all__ = ["Node", "GraphNet", "from_sequential", "fold_batchnorm", "SUPPORTED_TORCH_LAYERS", "OPS", "ACT_OPS"]

OPS = ("conv", "dense", "maxpool", "avgpool", "flatten", "add", "concat")
#: Ops whose output has its own activation quantizer.
ACT_OPS = ("conv", "dense", "add", "concat")
SUPPORTED_TORCH_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.BatchNorm1d, nn.ReLU,
                          nn.MaxPool2d, nn.AvgPool2d, nn.Flatten)


@dataclass
class Node:
    name: str
    op: str
    inputs: tuple
    #: ReLU on the output (conv, dense, add); for concat: every operand is non-negative (unsigned output).
    relu: bool = False
    pool: tuple = (2, 2)
    stride: tuple = (2, 2)
    #: ``(top, bottom, left, right)`` zero padding of a pool (max: never wins) or a conv whose module has none.
    padding: tuple = (0, 0, 0, 0)
    #: Upper clamp of the output after the ReLU (ReLU6: 6.0), in real units; None: none.
    clamp: float | None = None


class GraphNet(nn.Module):
    """Nodes in execution order reading earlier outputs (or ``"input"``) by name."""

    def __init__(self, input_shape, nodes, modules: dict[str, nn.Module], bns: dict[str, nn.Module] | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.nodes = list(nodes)
        for n in self.nodes:
            if n.op not in OPS:
                raise ValueError(f"node {n.name!r}: unknown op {n.op!r}; supported ops: {', '.join(OPS)}")
        self.mods = nn.ModuleDict(modules)
        self.bns = nn.ModuleDict(bns or {})
        self.qin: Quantizer | None = None
        self.wq = nn.ModuleDict()
        self.aq = nn.ModuleDict()
        self.quantized = False
        #: Block-floating-point activations after the quantizer: node name -> ``(block, mantissa_bits)``
        #: (DSConv; the golden ``bfp`` layer).
        self.bfp: dict[str, tuple[int, int]] = {}

    # ----------------------------------------------------------------- helpers
    def compute_nodes(self):
        return [n for n in self.nodes if n.op in ("conv", "dense")]

    def act_nodes(self):
        """Nodes whose output gets its own quantizer (conv, dense, add, concat)."""
        return [n for n in self.nodes if n.op in ACT_OPS]

    def attach(self, qin: Quantizer, wq: dict, aq: dict):
        """Switch to fake-quant mode with the given quantizers (BN must be folded)."""
        if len(self.bns):
            raise ValueError("fold batch norm (fold_batchnorm) before attaching quantizers")
        self.qin = qin
        self.wq = nn.ModuleDict(wq)
        self.aq = nn.ModuleDict(aq)
        self.quantized = True
        return self

    def weight_params(self):
        return [p for m in self.mods.values() for p in m.parameters()]

    def quant_params(self):
        ps = [p for q in self.wq.values() for p in q.parameters()]
        ps += [p for q in self.aq.values() for p in q.parameters()]
        return ps

    # ----------------------------------------------------------------- forward
    def forward(self, x, quant: bool | None = None, collect: dict | None = None):
        """Run the graph on ``x`` (NHWC or ``(batch, features)``); return the last node's output.

        ``quant`` (default: whether quantizers are attached) selects fake-quant mode. ``collect``,
        a dict, receives every quant point's float input (after ReLU where the node has one) in
        float mode, for calibration, plus the GEMM input of every compute node as ``"in:<name>"``.
        """
        q = self.quantized if quant is None else quant
        vals, scales = {}, {}
        if q:
            x = self.qin(x)
            scales["input"] = self.qin.scale()
        vals["input"] = x
        for n in self.nodes:
            ins = [vals[i] for i in n.inputs]
            if n.op in ("conv", "dense"):
                m = self.mods[n.name]
                w, b = m.weight, m.bias
                if collect is not None:
                    collect["in:" + n.name] = ins[0].detach()
                if q:
                    wq = self.wq[n.name]
                    w = wq(w)
                    if b is not None:
                        s_acc = (scales[n.inputs[0]] * wq.scale()).to(x.dtype).detach()
                        b = round_ste(b / s_acc, self.aq[n.name].rounding) * s_acc
                if n.op == "conv":
                    xc = ins[0].permute(0, 3, 1, 2)
                    if any(n.padding):
                        t, bo, le, ri = n.padding
                        xc = F.pad(xc, (le, ri, t, bo))
                    y = F.conv2d(xc, w, b, m.stride, m.padding, groups=m.groups)
                    if not q and n.name in self.bns:
                        y = self.bns[n.name](y)
                    y = y.permute(0, 2, 3, 1)
                else:
                    y = F.linear(ins[0], w, b)
                    if not q and n.name in self.bns:
                        y = self.bns[n.name](y)
            elif n.op in ("maxpool", "avgpool"):
                xc = ins[0].permute(0, 3, 1, 2)
                if any(n.padding):      # max: -inf never wins; average: zeros, divided by the whole window
                    t, bo, le, ri = n.padding
                    xc = F.pad(xc, (le, ri, t, bo), value=float("-inf") if n.op == "maxpool" else 0.0)
                pool = F.max_pool2d if n.op == "maxpool" else F.avg_pool2d
                y = pool(xc, n.pool, n.stride).permute(0, 2, 3, 1)
            elif n.op == "flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif n.op == "concat":
                y = torch.cat(ins, dim=-1)
            else:  # add
                y = ins[0] + ins[1]
            if n.op in ACT_OPS:
                if q:
                    aq = self.aq[n.name]
                    y = aq(y)
                    scales[n.name] = aq.scale()
                    if n.clamp is not None:      # the largest grid value not above the clamp
                        s_out = scales[n.name].detach()
                        y = torch.minimum(y, torch.floor(n.clamp / s_out) * s_out)
                    if n.name in self.bfp:
                        block, mant = self.bfp[n.name]
                        y = bfp_quantize(y, float(scales[n.name]), aq.bits, aq.signed, block, mant, aq.rounding)
                else:
                    if n.relu and n.op != "concat":
                        y = F.relu(y)
                    if n.clamp is not None:
                        y = torch.clamp(y, max=n.clamp)
                    if collect is not None:
                        collect[n.name] = y.detach()
            else:
                if q:
                    scales[n.name] = scales[n.inputs[0]]
                    if n.op == "avgpool":  # golden: requantize the mean to the input's own type
                        s = self.act_source(n.inputs[0])
                        src = self.qin if s is None else self.aq[s]
                        y = torch.clamp(round_ste(y / scales[n.name], src.rounding), src.lo, src.hi) * scales[n.name]
            vals[n.name] = y
        return vals[self.nodes[-1].name]

    def act_source(self, name: str) -> str | None:
        """The quantized node (conv, dense, add, concat) whose output reaches *name* through pools and
        flattens; None: the network input."""
        nodes = {n.name: n for n in self.nodes}
        while name != "input":
            if nodes[name].op in ACT_OPS:
                return name
            name = nodes[name].inputs[0]
        return None


def fold_batchnorm(net: GraphNet) -> GraphNet:
    """Fold every BN into its conv/dense: ``w * gamma / sqrt(var + eps)``,
    ``beta + (b - mean) * gamma / sqrt(var + eps)`` (in place; returns *net*)."""
    with torch.no_grad():
        for name in list(net.bns.keys()):
            bn, m = net.bns[name], net.mods[name]
            g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shape = (-1,) + (1,) * (m.weight.dim() - 1)
            m.weight.mul_(g.reshape(shape))
            b0 = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
            new_b = bn.bias + (b0 - bn.running_mean) * g
            if m.bias is None:
                m.bias = nn.Parameter(new_b.clone())
            else:
                m.bias.copy_(new_b)
    net.bns = nn.ModuleDict()
    return net


def _supported_names():
    return ", ".join(f"nn.{c.__name__}" for c in SUPPORTED_TORCH_LAYERS)


def from_sequential(seq: nn.Module, input_shape) -> GraphNet:
    """Convert an ``nn.Sequential`` of supported layers to a :class:`GraphNet`.

    *input_shape* is the per-sample golden shape: ``(H, W, C)`` for conv nets, ``(features,)``
    otherwise. The Sequential runs on NCHW tensors; its modules are shared (not copied), and
    the first Linear after a Flatten of a ``(C, H, W)`` map gets its columns permuted from CHW
    to the golden HWC order so the GraphNet computes the same function.

    Raises
    ------
    TypeError
        For a layer that is not one of :data:`SUPPORTED_TORCH_LAYERS` (the message lists them).
    ValueError
        For supported layers with unsupported settings (dilation, padding modes, ceil mode,
        BN or ReLU without a preceding conv/linear). Networks of any structure: :mod:`.importer`.
    """
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential, not {type(seq).__name__}; supported layers: {_supported_names()}")
    shape = tuple(input_shape)
    chw = (shape[2], shape[0], shape[1]) if len(shape) == 3 else None
    nodes, mods, bns = [], {}, {}
    prev = "input"
    pending_perm = None
    for i, layer in enumerate(seq):
        if not isinstance(layer, SUPPORTED_TORCH_LAYERS):
            raise TypeError(f"layer {i} ({type(layer).__name__}) is not supported; supported layers: {_supported_names()}")
        name = f"l{i}"
        if isinstance(layer, nn.Conv2d):
            if tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise ValueError(f"layer {i} (Conv2d): only dilation=1 and integer zero padding are supported")
            nodes.append(Node(name, "conv", (prev,)))
            mods[name] = layer
            c, h, w = chw
            ph, pw = layer.padding
            kh, kw = layer.kernel_size
            sh, sw = layer.stride
            chw = (layer.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        elif isinstance(layer, nn.Linear):
            if pending_perm is not None:
                c, h, w = pending_perm
                idx = torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)
                with torch.no_grad():
                    layer.weight.copy_(layer.weight[:, idx])
                pending_perm = None
            nodes.append(Node(name, "dense", (prev,)))
            mods[name] = layer
        elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if not nodes or nodes[-1].op not in ("conv", "dense") or nodes[-1].relu or nodes[-1].name in bns:
                raise ValueError(f"layer {i} ({type(layer).__name__}) must follow a Conv2d or Linear directly")
            bns[nodes[-1].name] = layer
            continue
        elif isinstance(layer, nn.ReLU):
            if not nodes or nodes[-1].op not in ("conv", "dense", "add") or nodes[-1].relu:
                raise ValueError(f"layer {i} (ReLU) must follow a Conv2d or Linear (with optional batch norm)")
            nodes[-1].relu = True
            continue
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
            s = layer.stride if isinstance(layer.stride, tuple) else (layer.stride,) * 2
            pad = layer.padding if isinstance(layer.padding, tuple) else (layer.padding,) * 2
            if getattr(layer, "ceil_mode", False) or getattr(layer, "dilation", 1) not in (1, (1, 1)):
                raise ValueError(f"layer {i} ({type(layer).__name__}): ceil_mode and dilation are not supported")
            if isinstance(layer, nn.AvgPool2d) and (not layer.count_include_pad or layer.divisor_override):
                raise ValueError(f"layer {i} (AvgPool2d): count_include_pad=False and divisor_override are not "
                                 "supported (the average divides by the whole window)")
            op = "maxpool" if isinstance(layer, nn.MaxPool2d) else "avgpool"
            nodes.append(Node(name, op, (prev,), pool=tuple(k), stride=tuple(s),
                              padding=(pad[0], pad[0], pad[1], pad[1])))
            c, h, w = chw
            chw = (c, (h + 2 * pad[0] - k[0]) // s[0] + 1, (w + 2 * pad[1] - k[1]) // s[1] + 1)
        elif isinstance(layer, nn.Flatten):
            nodes.append(Node(name, "flatten", (prev,)))
            if chw is not None:
                pending_perm = chw
            chw = None
        prev = name
    if not nodes:
        raise ValueError("the Sequential has no layers")
    return GraphNet(shape, nodes, mods, bns)
