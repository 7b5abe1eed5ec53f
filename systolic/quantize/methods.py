"""One call from (model, method, bits, data) to a trained, converted integer network.

:func:`quantize_model` trains (or takes) the float model on a data set (``data``:
``"digits"``, the default, ``"mnist"``, a ``.npz`` data file or a
:class:`~systolic.quantize.data.Dataset`), folds batch norm,
calibrates / retrains with the chosen method, rounds FAT / LSQ scales to
powers of two, converts to the golden :class:`~systolic.golden.QuantizedNetwork`
and measures test accuracy on it. Methods (docs/quantization.md):

=============  =====================================================================
``max``        post-training; thresholds ``max|x|`` (weights and activations)
``percentile`` post-training; 99.99th percentile of ``|x|`` (weights and activations)
``mse``        post-training; power-of-two MSE search (weights and activations)
``klj``        post-training; KL-J histogram search on activations, max on weights
``tqt``        retraining of weights and log2 thresholds (two Adam optimizers);
               init: weights ``max|w|``, activations KL-J
``fat``        weights frozen; alpha per tensor trained on FAT's label-free loss from max
               calibration; exported by rounding ``t'`` up to a power of two
``lsq``        retraining of weights and step sizes; exported by rounding ``log2 s``
``sq``         stochastic quantization of the weight filters, ratio 50/75/87.5/100 %,
               one stage each; power-of-two MSE scales; activations MSE-calibrated
``multipoint`` post-training; weights as up to two points with a power-of-two ratio
               (golden ``extra_weights``/``extra_shifts``); activations MSE-calibrated
=============  =====================================================================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from . import check_bits, check_method, check_model
from .calibrate import calibrate
from .convert import to_golden
from .data import dataset_for_network, load_dataset
from .graph import GraphNet, fold_batchnorm
from .dsconv import DSConvWeightQuantizer
from .inq import INQ_RATIOS, INQWeightQuantizer
from .quantizers import (FATQuantizer, FixedQuantizer, LSQQuantizer, MultipointWeightQuantizer,
                         SQWeightQuantizer, TQTQuantizer, multipoint_points)
from .train import accuracy, tensors, train_quant
from .zoo import train_float

__all__ = ["QuantResult", "quantize_model", "default_data", "quantize_graph", "golden_accuracy", "layer_bits",
           "point_cost", "DEFAULT_EPOCHS", "SQ_RATIOS", "POST_TRAINING", "DSCONV_BLOCK", "BFP_BITS",
           "CALIBRATION_IMAGES"]

#: Retraining epochs per method (tiny data: 1,077 training images); SQ and INQ: per stage; DSConv: epochs
#: of its optional label-free distillation (0: post-training, as the paper).
DEFAULT_EPOCHS = {"tqt": 6, "lsq": 6, "fat": 4, "sq": 2, "inq": 2, "dsconv": 0}
#: The post-training calibration baselines.
POST_TRAINING = ("max", "percentile", "mse", "klj")
#: DSConv's default block: K elements per kernel shift (the default array's rows: one MATMUL).
DSCONV_BLOCK = 8
#: Fixed-point width of the activations before their block-floating-point rounding (DSConv ``bfp``).
BFP_BITS = 16
#: Learning rates of the two Adam optimizers (weights, quantizer parameters) per retraining method.
#: The published TQT recipe (ImageNet) uses 1e-6 for weights; on 1,077 digits images and 6 epochs
#: 1e-3 recovers more (measured, docs/quantization.md), thresholds keep the published 1e-2.
LEARNING_RATES = {"tqt": (1e-3, 1e-2), "lsq": (1e-3, 1e-3), "fat": (0.0, 1e-3), "sq": (1e-3, 0.0),
                  "inq": (1e-3, 0.0), "dsconv": (1e-4, 0.0)}
#: TQT weight-threshold initialisation: "max" (max|w|, the paper's post-training init) or
#: "3std" (|mean| + 3 std, the paper's retraining init); "max" measured better here at 6 epochs.
TQT_WEIGHT_INIT = "max"
#: SQ ratio schedule, one stage each (``DEFAULT_EPOCHS["sq"]`` epochs per stage).
SQ_RATIOS = (0.5, 0.75, 0.875, 1.0)
#: Most training images whose activations calibrate the thresholds; a larger training split is sampled
#: (seeded, without replacement). The digits' 1,077 are all used; MNIST's 3,000 are sampled.
CALIBRATION_IMAGES = 2048
#: Images per golden-model batch in :func:`golden_accuracy` (the predictions do not depend on it).
GOLDEN_BATCH = 128


@dataclass
class QuantResult:
    model: str
    method: str
    w_bits: int
    a_bits: int
    seed: int
    rounding: str
    float_acc: float
    #: Test accuracy of the torch fake-quant model before power-of-two rounding (FAT, LSQ);
    #: equal to ``golden_acc`` for the other methods (their scales are powers of two throughout).
    fakequant_acc: float
    #: Test accuracy of the integer golden network.
    golden_acc: float
    network: object = None
    torch_net: object = None
    extra: dict = field(default_factory=dict)
    #: Golden-model predictions on the test split (for paired tests between methods).
    predictions: np.ndarray | None = None

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "method", "w_bits", "a_bits", "seed", "rounding",
                                                 "float_acc", "fakequant_acc", "golden_acc")} | self.extra


def golden_accuracy(network, split: str = "test", data=None) -> tuple[float, np.ndarray]:
    """Accuracy and predictions of a golden network on *split* of *data* (default: the built-in data set
    of its input shape, :func:`~systolic.quantize.data.dataset_for_network`); a ``ValueError`` names both
    shapes if the network does not fit the data."""
    ds = dataset_for_network(network) if data is None else load_dataset(data)
    x, y = ds.split(split, network.input_shape)
    pred = np.concatenate([network.predict(network.quantize_input(x[i:i + GOLDEN_BATCH]))
                           for i in range(0, len(x), GOLDEN_BATCH)])
    return float((pred == y).mean()), pred


def _collect(net, ds, seed: int = 0):
    x, _ = tensors("train", net.input_shape, data=ds)
    if len(x) > CALIBRATION_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), CALIBRATION_IMAGES, replace=False))
        x = x[torch.from_numpy(keep)]
    acts = {}
    with torch.no_grad():
        net.eval()
        net(x, quant=False, collect=acts)
    return {k: v.double().numpy() for k, v in acts.items()}


def _gemm_cols(net, node, a: np.ndarray, limit: int = 4096, seed: int = 0) -> np.ndarray:
    """Calibration GEMM inputs ``(M, K)`` in torch weight order (``weight.reshape(O, -1)``)."""
    m = net.mods[node.name]
    if node.op == "conv":
        xa = torch.from_numpy(a).permute(0, 3, 1, 2)
        if any(node.padding):
            t, b, le, r = node.padding
            xa = F.pad(xa, (le, r, t, b))
        cols = F.unfold(xa, m.kernel_size, padding=m.padding, stride=m.stride)
        cols = cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).numpy()
    else:
        cols = a
    if len(cols) > limit:
        cols = cols[np.random.default_rng(seed).choice(len(cols), limit, replace=False)]
    return cols


def _ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight ``(O, C/G, kh, kw)`` as the dense ``(O, C, kh, kw)`` it equals: zeros outside
    each output channel's group. Quantizing it keeps the zeros (every point rounds 0 to 0), so the points
    of the dense weight are the grouped points in place (:func:`_regrouped`)."""
    if groups == 1:
        return w
    o, cig = w.shape[:2]
    out = np.zeros((o, cig * groups, *w.shape[2:]), dtype=w.dtype)
    for c in range(o):
        g = c // (o // groups)
        out[c, g * cig:(g + 1) * cig] = w[c]
    return out


def _regrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """The inverse of :func:`_ungrouped`: each output channel's own group slice."""
    if groups == 1:
        return w
    o, c = w.shape[:2]
    cig = c // groups
    return np.stack([w[k, (k // (o // groups)) * cig:(k // (o // groups) + 1) * cig] for k in range(o)])


def layer_bits(net, w_bits: int, a_bits: int, first_last_bits: int | None = None):
    """Weight bits per compute node and activation bits per quantized node.

    Every layer at ``w_bits`` / ``a_bits``, unless *first_last_bits* is given (the TQT paper's convention):
    then the first compute layer's weights, and the last compute layer's weights, its input activation
    and its output are at *first_last_bits* (the network input keeps its data set's type).
    """
    comp = net.compute_nodes()
    wb = {n.name: w_bits for n in comp}
    ab = {n.name: a_bits for n in net.act_nodes()}
    if first_last_bits is not None and comp:
        check_bits(first_last_bits, "first_last_bits")
        first, last = comp[0], comp[-1]
        wb[first.name] = wb[last.name] = first_last_bits
        ab[last.name] = first_last_bits
        src = net.act_source(last.inputs[0])
        if src is not None:
            ab[src] = first_last_bits
    return wb, ab


def _act_quantizer(method: str, a: np.ndarray, bits: int, signed: bool, rounding: str):
    """The activation quantizer of *method*, calibrated on the samples *a*."""
    if method in POST_TRAINING:
        return FixedQuantizer.from_threshold(calibrate(a, method, bits, signed, rounding=rounding), bits, signed,
                                             rounding)
    if method == "tqt":
        return TQTQuantizer(bits, signed, calibrate(a, "klj", bits, signed, rounding=rounding), rounding)
    if method == "fat":
        return FATQuantizer(bits, signed, calibrate(a, "max", bits, signed, rounding=rounding), rounding)
    if method == "lsq":
        return LSQQuantizer(bits, signed, LSQQuantizer.init_step(a, bits, signed), a[0].size, rounding)
    # sq, multipoint, inq, dsconv: weight methods; activations power-of-two MSE
    return FixedQuantizer.from_threshold(calibrate(a, "mse", bits, signed, rounding=rounding), bits, signed, rounding)


def _weight_quantizer(method: str, net, node, bits: int, rounding: str, seed: int, acts: dict, block: int):
    """The weight quantizer of *method* for compute *node*."""
    weight = net.mods[node.name].weight
    w = weight.detach().double().numpy()
    if method in POST_TRAINING:
        wm = "max" if method == "klj" else method
        return FixedQuantizer.from_threshold(calibrate(w, wm, bits, True, rounding=rounding), bits, True, rounding)
    if method == "tqt":
        t0 = abs(w.mean()) + 3 * w.std() if TQT_WEIGHT_INIT == "3std" else np.abs(w).max()
        return TQTQuantizer(bits, True, t0, rounding)
    if method == "fat":
        return FATQuantizer(bits, True, calibrate(w, "max", bits, True), rounding)
    if method == "lsq":
        return LSQQuantizer(bits, True, LSQQuantizer.init_step(w, bits, True), w.size, rounding)
    if method == "sq":
        return SQWeightQuantizer(bits, rounding, seed=seed)
    if method == "inq":
        return INQWeightQuantizer(bits, weight, rounding)
    if method == "dsconv":
        return DSConvWeightQuantizer(bits, weight, block, block, rounding)
    # multipoint
    o = w.shape[0]
    groups = getattr(net.mods[node.name], "groups", 1)
    wd = _ungrouped(w, groups)            # a grouped weight as its block-diagonal dense equal
    cols = _gemm_cols(net, node, acts["in:" + node.name], seed=seed)
    pts, base, shifts = multipoint_points(wd.reshape(o, -1).T, cols, bits, rounding=rounding)
    pts = [_regrouped(p.T.reshape(wd.shape), groups) for p in pts]
    return MultipointWeightQuantizer(bits, pts, base, shifts, torch.from_numpy, rounding)


def quantize_graph(net, name: str | None, method: str, w_bits: int = 8, a_bits: int = 8, seed: int = 0,
                   rounding: str = "half_even", epochs: int | None = None, teacher=None, progress=False,
                   data="digits", first_last_bits: int | None = None, block: int = DSCONV_BLOCK,
                   bfp: bool = False):
    """Attach *method*'s quantizers to a BN-folded float GraphNet (a copy is not made) and train them on
    *data* (calibration: its training split; the input quantizer: its input type). *name* is unused
    (kept for callers that pass the zoo name). Bits per layer: :func:`layer_bits`. ``block`` and ``bfp``:
    DSConv's block of K elements and its block-floating-point activations (``bfp`` needs ``dsconv``).

    Returns the fake-quant net (FAT / LSQ still at their trained, non-power-of-two scales).
    """
    if bfp and method != "dsconv":
        raise ValueError(f"bfp (block-floating-point activations) belongs to the dsconv method, not {method!r}")
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 4096:
        raise ValueError(f"block must be an integer between 1 and 4096, not {block!r}")
    ds = load_dataset(data)
    ds.check_shape(net.input_shape, "the model")
    acts = _collect(net, ds, seed)
    it = ds.input_type
    qin = FixedQuantizer(it.bits, it.signed, it.frac_bits, rounding)
    ep = DEFAULT_EPOCHS.get(method, 0) if epochs is None else int(epochs)
    wb, ab = layer_bits(net, w_bits, a_bits, first_last_bits)
    aq = {}
    last = net.nodes[-1].name
    for n in net.act_nodes():
        signed = not n.relu
        if bfp and n.name != last:       # fixed point wide enough for the BFP mantissas, then BFP
            aq[n.name] = FixedQuantizer.from_threshold(calibrate(acts[n.name], "max", BFP_BITS, signed),
                                                       BFP_BITS, signed, rounding)
            net.bfp[n.name] = (block, ab[n.name])
        else:
            aq[n.name] = _act_quantizer(method, acts[n.name], ab[n.name], signed, rounding)
    wq = {n.name: _weight_quantizer(method, net, n, wb[n.name], rounding, seed, acts, block)
          for n in net.compute_nodes()}
    net.attach(qin, wq, aq)
    _retrain(net, method, ds, seed, ep, teacher, progress)
    return net


def _retrain(net, method: str, ds, seed: int, ep: int, teacher, progress) -> None:
    """*method*'s training after the quantizers are attached (none for the post-training methods)."""
    if method in ("tqt", "lsq") and ep > 0:
        w_lr, q_lr = LEARNING_RATES[method]
        train_quant(net, ds, seed=seed, epochs=ep, w_lr=w_lr, q_lr=q_lr, progress=progress,
                    desc=f"{method} retraining")
    elif method == "fat" and ep > 0:
        def clip(m):
            for q in list(m.wq.values()) + list(m.aq.values()):
                q.clip_alpha()
        train_quant(net, ds, seed=seed, epochs=ep, q_lr=LEARNING_RATES["fat"][1], loss="fat", teacher=teacher,
                    train_weights=False, after_step=clip, progress=progress, desc="fat alpha training")
    elif method == "sq" and ep > 0:
        def stage(m, e):
            r = SQ_RATIOS[min(e // ep, len(SQ_RATIOS) - 1)]
            for q in m.wq.values():
                q.ratio = r
        # Only epochs of the last, fully quantized stage are candidates for the kept state.
        train_quant(net, ds, seed=seed, epochs=ep * len(SQ_RATIOS), w_lr=LEARNING_RATES["sq"][0], q_lr=0.0,
                    before_epoch=stage, select_from=ep * (len(SQ_RATIOS) - 1), progress=progress,
                    desc="sq stages")
    elif method == "inq":
        for i, r in enumerate(INQ_RATIOS):
            for n in net.compute_nodes():
                net.wq[n.name].quantize_fraction(net.mods[n.name].weight, r)
            if r < 1.0 and ep > 0:        # retrain the part not yet quantized
                train_quant(net, ds, seed=seed + i, epochs=ep, w_lr=LEARNING_RATES["inq"][0], q_lr=0.0,
                            progress=progress, desc=f"inq {100 * r:g} % quantized")
    elif method == "dsconv" and ep > 0:   # optional label-free distillation from the float model
        train_quant(net, ds, seed=seed, epochs=ep, w_lr=LEARNING_RATES["dsconv"][0], q_lr=0.0, loss="fat",
                    teacher=teacher, progress=progress, desc="dsconv distillation")
    if method == "sq":
        for n in net.compute_nodes():
            net.wq[n.name].freeze(net.mods[n.name].weight)


def point_cost(gnet) -> dict:
    """MACs and weight bytes of the weight points against a one-point network (the golden layers).

    A channel's depth is the most points that are non-zero at one weight of it (at least 1): a multipoint
    channel with a second point has depth 2, a DSConv channel depth 1 (its points cover disjoint blocks).
    A layer costs ``M * K * sum(depth)`` MACs and ``K * sum(depth)`` weights against ``M * K * N`` and
    ``K * N`` for one point (the paper's accounting; the compiled program's cost, tile by tile, is in
    ``systolic report``). Per layer ``{"points", "channels_with_extra", "macs_ratio", "weight_bytes_ratio"}``,
    and the network's ``macs_ratio`` / ``weight_bytes_ratio``.
    """
    layers, macs, macs1, wb, wb1 = {}, 0, 0, 0, 0
    for layer in gnet.layers:
        if not hasattr(layer, "points"):
            continue
        k, n = layer.gemm_weight().shape
        m = int(np.prod(gnet.shape(layer.name)[:-1]))       # output pixels (a grouped K is per group)
        nz = np.stack([e.reshape(k, n) != 0 for e, _ in layer.points]).sum(axis=0)
        depth = np.maximum(1, nz.max(axis=0))
        d = int(depth.sum())
        layers[layer.name] = {"points": len(layer.points), "channels_with_extra": int(np.count_nonzero(depth > 1)),
                              "macs_ratio": round(d / n, 4), "weight_bytes_ratio": round(d / n, 4)}
        macs, macs1, wb, wb1 = macs + m * k * d, macs1 + m * k * n, wb + k * d, wb1 + k * n
    return {"layers": layers, "macs_ratio": round(macs / max(macs1, 1), 4),
            "weight_bytes_ratio": round(wb / max(wb1, 1), 4)}


def default_data(model) -> str:
    """The data set a model trains on when none is given: ``"mnist"`` for the ``mnist-*`` zoo models, else
    ``"digits"``."""
    return "mnist" if isinstance(model, str) and model.startswith("mnist-") else "digits"


def quantize_model(model, method: str, w_bits: int = 8, a_bits: int = 8, seed: int = 0,
                   rounding: str = "half_even", float_net=None, epochs: int | None = None,
                   float_epochs: int = 40, progress=False, data=None, first_last_bits: int | None = None,
                   block: int = DSCONV_BLOCK, bfp: bool = False) -> QuantResult:
    """Quantize *model* with *method* at ``w_bits``/``a_bits`` on *data* and convert it to the golden model.

    Parameters
    ----------
    model : one of :data:`systolic.quantize.MODELS` (built for *data*'s sample shape and classes), or a
        trained float :class:`~systolic.quantize.graph.GraphNet` (e.g. from ``from_sequential``, trained
        with :func:`systolic.quantize.train.train_float`; not modified; recorded as ``"custom"``).
    method : one of :data:`systolic.quantize.METHODS`
    w_bits, a_bits : 2..8
    float_net : a trained float GraphNet of zoo model *model* to start from (not modified); trained here if
        None.
    epochs : retraining epochs (per SQ stage); default :data:`DEFAULT_EPOCHS`.
    data : ``"digits"``, ``"mnist"``, a path to a ``.npz`` data file or a
        :class:`~systolic.quantize.data.Dataset`: training, calibration, the input type and every accuracy.
        Default (None): :func:`default_data` of the model (``mnist`` for the ``mnist-*`` zoo models, else
        ``digits``). A network whose input shape does not fit it is a ``ValueError`` naming both shapes.
    first_last_bits : the first and last layers at this width (:func:`layer_bits`); None: every layer at
        ``w_bits`` / ``a_bits``.
    block, bfp : DSConv's block of K elements per kernel shift, and block-floating-point activations
        (refused by the accelerator's compiler; golden and fake quant only).
    """
    from ..golden import check_rounding

    custom = isinstance(model, GraphNet)
    if not custom:
        check_model(model)
    check_method(method)
    check_bits(w_bits, "w_bits")
    check_bits(a_bits, "a_bits")
    check_rounding(rounding)
    ds = load_dataset(default_data(model) if data is None else data)
    if custom:
        if float_net is not None:
            raise ValueError("give the float network either as model or as float_net, not both")
        float_net, model = model, "custom"
    if float_net is not None:
        ds.check_shape(float_net.input_shape, "the model")
    torch.manual_seed(seed)
    if float_net is None:
        float_net = train_float(model, seed=seed, epochs=float_epochs, progress=progress, data=ds)
    float_acc = accuracy(float_net, "test", quant=False, data=ds)
    teacher = copy.deepcopy(float_net)
    net = fold_batchnorm(copy.deepcopy(float_net))
    quantize_graph(net, model, method, w_bits, a_bits, seed, rounding, epochs, teacher=teacher, progress=progress,
                   data=ds, first_last_bits=first_last_bits, block=block, bfp=bfp)
    extra = {}
    fq_acc = None
    if method in ("fat", "lsq"):      # the only methods whose fake quant differs from the golden model
        fq_acc = accuracy(net, "test", quant=True, data=ds)
        extra["fakequant_val_acc"] = accuracy(net, "val", quant=True, data=ds)
        for q in list(net.wq.values()) + list(net.aq.values()):
            q.to_pow2()
    meta = {"model": model, "method": method, "w_bits": w_bits, "a_bits": a_bits, "seed": seed,
            "float_test_accuracy": float_acc, "dataset": ds.name}
    if first_last_bits is not None:
        meta["first_last_bits"] = first_last_bits
    gnet = to_golden(net, rounding, meta)
    gnet.check_accumulators(32)
    gacc, pred = golden_accuracy(gnet, data=ds)
    gnet.meta["test_accuracy"] = gacc
    if method in ("multipoint", "dsconv"):
        extra["point_cost"] = point_cost(gnet)
    return QuantResult(model, method, w_bits, a_bits, seed, rounding, float_acc,
                       gacc if fq_acc is None else fq_acc, gacc, gnet, net, extra, pred)
