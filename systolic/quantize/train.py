"""Training loops (torch): float training, fake-quant retraining, FAT's label-free loss.

Every function takes the data as ``data``: ``"digits"`` (the default), ``"mnist"``, a path to a ``.npz``
data file or a :class:`~systolic.quantize.data.Dataset` (:func:`~systolic.quantize.data.load_dataset`).
The network's ``input_shape`` must fit the data set (its sample shape, or flattened for an image data
set); otherwise a ``ValueError`` names both shapes before anything runs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .data import load_dataset

__all__ = ["tensors", "accuracy", "predict", "train_float", "train_quant", "fat_loss"]


def tensors(split: str, shape=None, dtype=torch.float32, data="digits"):
    """``(x, y)`` tensors of *split*; *shape*: a network input shape, ``"nhwc"`` / ``"flat"`` or None
    (the data set's sample shape)."""
    x, y = load_dataset(data).split(split, shape)
    return torch.from_numpy(x).to(dtype), torch.from_numpy(y)


def _data(net, data):
    """The resolved data set, after checking that it fits *net*'s input shape."""
    ds = load_dataset(data)
    ds.check_shape(net.input_shape, "the model")
    return ds


@torch.no_grad()
def predict(net, x: torch.Tensor, quant=None) -> np.ndarray:
    was = net.training
    net.eval()
    out = net(x, quant=quant)
    net.train(was)
    return out.reshape(len(x), -1).cpu().numpy().argmax(axis=1)


def accuracy(net, split: str = "test", quant=None, data="digits") -> float:
    """Top-1 accuracy of *net* on *split* of *data* (fake quant if *quant*, default: if attached)."""
    ds = _data(net, data)
    x, y = tensors(split, net.input_shape, data=ds)
    return float((predict(net, x, quant) == y.numpy()).mean())


def _batches(n, batch, gen):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def train_float(net, data="digits", seed: int = 0, epochs: int = 40, lr: float = 3e-3, batch: int = 32,
                progress=False):
    """Adam + cross entropy on the train split of *data*; returns the net with the best validation weights."""
    ds = _data(net, data)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = tensors("train", net.input_shape, data=ds)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best, best_state = -1.0, None
    for _ in tqdm(range(epochs), desc="float training", unit="epoch", disable=not progress, leave=False):
        net.train()
        for idx in _batches(len(x), batch, gen):
            opt.zero_grad()
            F.cross_entropy(net(x[idx], quant=False), y[idx]).backward()
            opt.step()
        sched.step()
        acc = accuracy(net, "val", quant=False, data=ds)
        if acc > best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net


def fat_loss(yq, yf):
    """FAT's label-free loss: mean over the batch of ``sum_classes sqrt((y_q - y_fp)**2 + 1e-5)``."""
    return torch.sqrt((yq - yf) ** 2 + 1e-5).sum(dim=1).mean()


def train_quant(net, data="digits", seed: int = 0, epochs: int = 3, w_lr: float = 1e-4, q_lr: float = 1e-2,
                batch: int = 24, loss: str = "ce", teacher=None, train_weights: bool = True,
                after_step=None, before_epoch=None, progress=False, desc="retraining", select_from: int = 0):
    """Fake-quant training with two Adam optimizers (weights, quantizer parameters).

    ``loss="ce"``: cross entropy with the labels; ``loss="fat"``: :func:`fat_loss` against the
    float logits of *teacher* (labels unused). The state of the best validation epoch (fake-quant
    accuracy, the epoch-0 state included) is kept. ``after_step(net)`` runs after every step
    (FAT's alpha clipping); ``before_epoch(net, epoch)`` before every epoch (SQ's ratio schedule).
    Only the states at the end of epochs ``select_from`` and later (0-based) are candidates when it is
    > 0 (SQ: the last, fully quantized stage; the epoch-0 state is then no candidate either).
    """
    ds = _data(net, data)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = tensors("train", net.input_shape, data=ds)
    opts = []
    if train_weights and w_lr > 0:
        opts.append(torch.optim.Adam(net.weight_params(), lr=w_lr, betas=(0.9, 0.999), eps=1e-8))
    qp = net.quant_params()
    if qp and q_lr > 0:
        opts.append(torch.optim.Adam(qp, lr=q_lr, betas=(0.9, 0.999), eps=1e-8))
    if teacher is not None:
        teacher.eval()
    best, best_state = accuracy(net, "val", quant=True, data=ds), copy.deepcopy(net.state_dict())
    if before_epoch is not None or select_from > 0:  # the epoch-0 state: a candidate only without a schedule
        best = -1.0
    for ep in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        if before_epoch is not None:
            before_epoch(net, ep)
        net.train()
        for idx in _batches(len(x), batch, gen):
            for o in opts:
                o.zero_grad()
            out = net(x[idx], quant=True)
            if loss == "fat":
                with torch.no_grad():
                    ref = teacher(x[idx], quant=False)
                lval = fat_loss(out, ref)
            else:
                lval = F.cross_entropy(out, y[idx])
            lval.backward()
            for o in opts:
                o.step()
            if after_step is not None:
                after_step(net)
        if ep < select_from:
            continue
        acc = accuracy(net, "val", quant=True, data=ds)
        if acc >= best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net
