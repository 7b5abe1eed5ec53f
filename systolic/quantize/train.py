"""Training loops (torch): float training, fake-quant retraining, FAT's label-free loss."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .data import load_split

__all__ = ["tensors", "accuracy", "predict", "train_float", "train_quant", "fat_loss"]


def tensors(split: str, layout: str, dtype=torch.float32):
    x, y = load_split(split, layout)
    return torch.from_numpy(x).to(dtype), torch.from_numpy(y)


@torch.no_grad()
def predict(net, x: torch.Tensor, quant=None) -> np.ndarray:
    was = net.training
    net.eval()
    out = net(x, quant=quant)
    net.train(was)
    return out.reshape(len(x), -1).cpu().numpy().argmax(axis=1)


def accuracy(net, layout: str, split: str = "test", quant=None) -> float:
    x, y = tensors(split, layout)
    return float((predict(net, x, quant) == y.numpy()).mean())


def _batches(n, batch, gen):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def train_float(net, layout: str, seed: int = 0, epochs: int = 40, lr: float = 3e-3, batch: int = 32,
                progress=False):
    """Adam + cross entropy on the train split; returns the net with the best validation weights."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = tensors("train", layout)
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
        acc = accuracy(net, layout, "val", quant=False)
        if acc > best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net


def fat_loss(yq, yf):
    """FAT's label-free loss: mean over the batch of ``sum_classes sqrt((y_q - y_fp)**2 + 1e-5)``."""
    return torch.sqrt((yq - yf) ** 2 + 1e-5).sum(dim=1).mean()


def train_quant(net, layout: str, seed: int = 0, epochs: int = 3, w_lr: float = 1e-4, q_lr: float = 1e-2,
                batch: int = 24, loss: str = "ce", teacher=None, train_weights: bool = True,
                after_step=None, before_epoch=None, progress=False, desc="retraining"):
    """Fake-quant training with two Adam optimizers (weights, quantizer parameters).

    ``loss="ce"``: cross entropy with the labels; ``loss="fat"``: :func:`fat_loss` against the
    float logits of *teacher* (labels unused). The state of the best validation epoch (fake-quant
    accuracy, the epoch-0 state included) is kept. ``after_step(net)`` runs after every step
    (FAT's alpha clipping); ``before_epoch(net, epoch)`` before every epoch (SQ's ratio schedule).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = tensors("train", layout)
    opts = []
    if train_weights and w_lr > 0:
        opts.append(torch.optim.Adam(net.weight_params(), lr=w_lr, betas=(0.9, 0.999), eps=1e-8))
    qp = net.quant_params()
    if qp and q_lr > 0:
        opts.append(torch.optim.Adam(qp, lr=q_lr, betas=(0.9, 0.999), eps=1e-8))
    if teacher is not None:
        teacher.eval()
    best, best_state = accuracy(net, layout, "val", quant=True), copy.deepcopy(net.state_dict())
    if before_epoch is not None:  # the epoch-0 state is only a candidate where no schedule applies
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
        acc = accuracy(net, layout, "val", quant=True)
        if acc >= best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net
