"""Integer layers of the golden model.

Layout: activations are NHWC (``(batch, height, width, channels)``) for
convolutional tensors and ``(batch, features)`` for dense ones. Conv weights
are HWIO ``(kh, kw, c_in, c_out)``; dense weights are ``(k, n)``. A
convolution is computed as an im2col GEMM whose K axis is ordered
``(kh, kw, c_in)``, the order the accelerator's compiler uses.

A grouped convolution (``groups > 1``) has weights ``(kh, kw, c_in/groups,
c_out)``: output channel ``n`` belongs to group ``n // (c_out/groups)`` and
reads only that group's input-channel slice (depthwise: ``groups == c_in``).

Each layer is a frozen dataclass with a ``kind`` string, a ``name``, the names
of its ``inputs`` and its integer parameters. ``forward(xs, in_types,
rounding)`` maps integer inputs to the integer output; ``out_qtype(in_types)``
gives the output type; ``acc_bounds(in_types)`` gives the worst-case
accumulator range used by the overflow proof.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .limits import MAX_NAME_CHARS, MAX_PADDING, MAX_WINDOW, check_elements, short_repr
from .ops import abs_max, clamp_saturate, gemm_abs_bound, grouped_matmul, matmul, requantize
from .primitives import INT64_MAX, MAX_SHIFT, add_exact, as_int_array, round_div, round_shift, saturate
from .qtypes import MAX_FRAC, QType

__all__ = [
    "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Add", "Concat", "Flatten", "BlockFloat",
    "LAYER_KINDS", "im2col", "conv_output_size", "bound_gemm", "MAX_BFP_BLOCK", "BFP_MANTISSA_BITS",
]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(v, what: str) -> tuple[int, int]:
    if _is_int(v):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(e) for e in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{what} must be an int or a pair of ints, not {short_repr(v)}")


def _check_bool(layer: str, field: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"layer {layer!r}: {field} must be a bool, not {short_repr(v)}")
    return bool(v)


def _check_between(layer: str, field: str, values: tuple, lo: int, hi: int) -> None:
    if min(values) < lo or max(values) > hi:
        raise ValueError(f"layer {layer!r}: {field} must be between {lo} and {hi}, not {values}")


def _padding(layer: str, p) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from an int, a pair ``(ph, pw)`` or four ints, each 0..MAX_PADDING."""
    if isinstance(p, (tuple, list)) and len(p) == 4:
        if not all(_is_int(v) for v in p):
            raise TypeError(f"layer {layer!r} padding must be an int, a pair or four ints, not {short_repr(p)}")
        p = tuple(int(v) for v in p)
    else:
        ph, pw = _pair(p, f"layer {layer!r} padding")
        p = (ph, ph, pw, pw)
    _check_between(layer, "padding", p, 0, MAX_PADDING)
    return p


def _check_out_max(layer: str, out_max, relu: bool) -> int | None:
    """The upper clamp: None, or an int in ``[0, 2**63 - 1]`` of a layer with ``relu=True``."""
    if out_max is None:
        return None
    if not _is_int(out_max):
        raise TypeError(f"layer {layer!r}: out_max must be an int or None, not {short_repr(out_max)}")
    v = int(out_max)
    if not 0 <= v <= INT64_MAX:
        raise ValueError(f"layer {layer!r}: out_max must be between 0 and 2**63 - 1, not {short_repr(v)}")
    if not relu:
        raise ValueError(f"layer {layer!r}: out_max={v} needs relu=True: the clamp is y = min(max(y, 0), out_max) "
                         "(ReLU6 / Clip(0, x)), applied after the ReLU")
    return v


def _amax(t: QType) -> int:
    """Largest magnitude of a value of type *t*."""
    return max(-t.lo, t.hi)


def _check_shift(layer: str, k: int, what: str = "requantization shift") -> None:
    if not -MAX_SHIFT <= k <= MAX_SHIFT:
        raise ValueError(f"layer {layer!r}: {what} {k} is outside [{-MAX_SHIFT}, {MAX_SHIFT}] "
                         "(the golden model's shifts, in int64)")


def _check_int64(layer: str, bound: int, k: int, what: str) -> None:
    """*bound* is a worst-case magnitude before the shift by *k*: it must fit int64 after it."""
    if bound > INT64_MAX:
        raise OverflowError(f"layer {layer!r}: the worst case of {what} is {bound}, beyond the int64 range "
                            "[-2**63, 2**63 - 1] the golden model computes in")
    if k < 0 and bound > INT64_MAX >> -k:
        raise OverflowError(f"layer {layer!r}: the worst case of {what} is {bound}; the left shift by {-k} "
                            f"(shift {k}) takes it beyond the int64 range [-2**63, 2**63 - 1]")


def conv_output_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int) -> int:
    return (size + pad_lo + pad_hi - k) // stride + 1


def im2col(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """NHWC ``x`` -> ``(N*OH*OW, KH*KW*C)`` patches, zero padded (zero point 0).

    ``padding`` is ``(top, bottom, left, right)``.
    """
    n, h, w, c = x.shape
    kh, kw = kernel
    sh, sw = stride
    pt, pb, pl, pr = padding
    oh = conv_output_size(h, kh, sh, pt, pb)
    ow = conv_output_size(w, kw, sw, pl, pr)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
    return cols.reshape(n * oh * ow, kh * kw * c)


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class: a named node with the names of its inputs."""

    kind: ClassVar[str] = "layer"
    #: Number of inputs; None: a variable number, at least :attr:`min_inputs`.
    n_inputs: ClassVar[int | None] = 1
    min_inputs: ClassVar[int] = 1

    name: str
    inputs: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == "input":
            raise ValueError(f"layer name must be a non-empty string other than 'input', not {short_repr(self.name)}")
        if len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"layer name {short_repr(self.name)} is longer than {MAX_NAME_CHARS} characters")
        ins = tuple(self.inputs) if isinstance(self.inputs, (list, tuple)) else (self.inputs,)
        if self.n_inputs is None:
            count_ok, count = len(ins) >= self.min_inputs, f"at least {self.min_inputs}"
        else:
            count_ok, count = len(ins) == self.n_inputs, str(self.n_inputs)
        if not count_ok or not all(isinstance(i, str) for i in ins):
            raise ValueError(f"layer {self.name!r}: a {self.kind} layer takes {count} input name(s), "
                             f"not {short_repr(self.inputs)}")
        object.__setattr__(self, "inputs", ins)

    # Subclasses implement these.
    def out_qtype(self, in_types: list[QType]) -> QType:
        return in_types[0]

    def out_shape(self, in_shapes: list[tuple]) -> tuple:
        return in_shapes[0]

    def forward(self, xs: list[np.ndarray], in_types: list[QType], rounding: str) -> np.ndarray:
        raise NotImplementedError

    def acc_bounds(self, in_types: list[QType]) -> tuple[int, int] | None:
        """Worst-case accumulator range ``(lo, hi)``, or None if the layer does not accumulate."""
        return None

    def work_tensors(self, in_shapes: list[tuple]) -> list[tuple[str, tuple]]:
        """``(what, per-sample shape)`` of every tensor :meth:`forward` allocates, for the size limits."""
        return [("output", tuple(self.out_shape(in_shapes)))]

    def check_arithmetic(self, in_types: list[QType]) -> None:
        """Raise unless :meth:`forward` is exact in int64 for every input in range.

        ``ValueError`` for a shift outside ``[-62, 62]``, ``OverflowError`` when a worst-case
        intermediate (over all inputs of *in_types*) could leave ``[-2**63, 2**63 - 1]``.
        """

    # Serialization: scalar attributes go in the JSON manifest, arrays in the npz.
    def params(self) -> dict:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


def bound_gemm(w: np.ndarray, bias: np.ndarray | None, a_type: QType, taps: int = 1) -> tuple[int, int]:
    """Exact worst case of ``sum_k a[k] w[k, n] + bias[n]`` over all inputs ``a`` in range.

    Each term is extreme at one end of the input range, so the bound is tight.
    """
    lo_a, hi_a = a_type.lo, a_type.hi
    w2 = as_int_array(w, "w").reshape(-1, w.shape[-1])
    b = None if bias is None else as_int_array(bias, "bias")
    if gemm_abs_bound(np.abs(w2).view(np.uint64), _amax(a_type),
                      None if b is None else np.abs(b).view(np.uint64)) is not None:
        w2 = w2.astype(object)  # beyond int64: Python ints, so the proof itself cannot overflow
        b = None if b is None else b.astype(object)
    # Otherwise every partial sum is bounded by max|a| * sum_k |w| + |bias| <= 2**63 - 1: exact in int64.
    pos = np.where(w2 > 0, w2, 0)
    neg = np.where(w2 < 0, w2, 0)
    hi = (pos * hi_a + neg * lo_a).sum(axis=0)
    lo = (pos * lo_a + neg * hi_a).sum(axis=0)
    if b is not None:
        hi = hi + b
        lo = lo + b
    return int(min(lo)), int(max(hi))


@dataclass(frozen=True, eq=False)
class _GemmLayer(Layer):
    """Shared part of Dense and Conv2D: weights, bias, shift, output type, ReLU, upper clamp.

    ``y = sat(min(relu?(round_shift(acc + bias, k)), out_max))`` with ``k = f_in + f_w - f_out`` per output
    channel; ``out_max`` (None: no clamp) is in ``out_type`` integer units and needs ``relu=True``, so the
    clamp is ``Clip(0, out_max)`` (ReLU6 at ``f_out``: ``out_max = 6 << f_out``; a value above the type's
    maximum clamps nothing that saturation would not).
    """

    weight: np.ndarray = None
    w_type: QType = None
    out_type: QType = None
    bias: np.ndarray | None = None
    relu: bool = False
    #: Per-output-channel weight fractional bits; None means per tensor (``w_type.frac_bits``).
    w_frac: np.ndarray | None = None
    #: Multipoint quantization: extra integer weight points ``(P, *weight.shape)``, each
    #: of ``w_type``, accumulated with a left shift: ``acc = a@W + sum_p (a@E_p) << s_p``.
    extra_weights: np.ndarray | None = None
    #: Left shifts ``(P,)`` of the extra points, each 0..16.
    extra_shifts: np.ndarray | None = None
    #: Upper clamp in ``out_type`` integer units (ReLU6 at ``f_out``: ``6 << f_out``); needs ``relu``.
    out_max: int | None = None

    def __post_init__(self):
        super().__post_init__()
        name = self.name
        if not isinstance(self.w_type, QType) or not isinstance(self.out_type, QType):
            raise TypeError(f"layer {name!r}: w_type and out_type must be QType")
        shape = np.shape(self.weight)        # sizes before any copy
        check_elements(f"layer {name!r}: weight", shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"layer {name!r}: weight must have at least one element along every axis, "
                             f"not shape {shape}")
        object.__setattr__(self, "weight", self.w_type.check(self.weight, f"layer {name!r} weight"))
        n = self.weight.shape[-1]
        if self.bias is not None:
            b = as_int_array(self.bias, f"layer {name!r} bias")
            if b.shape != (n,):
                raise ValueError(f"layer {name!r}: bias must have shape ({n},), not {b.shape}")
            lo, hi = -(1 << 31), (1 << 31) - 1
            if int(b.min()) < lo or int(b.max()) > hi:     # Python ints: exact for every int64
                bad = int(b.min()) if int(b.min()) < lo else int(b.max())
                raise ValueError(f"layer {name!r}: bias must fit int32 [{lo}, {hi}], holds {bad}")
            object.__setattr__(self, "bias", b)
        if self.w_frac is not None:
            f = as_int_array(self.w_frac, f"layer {name!r} w_frac")
            if f.shape != (n,):
                raise ValueError(f"layer {name!r}: w_frac must have shape ({n},), not {f.shape}")
            if int(f.min()) < -MAX_FRAC or int(f.max()) > MAX_FRAC:
                bad = int(f.min()) if int(f.min()) < -MAX_FRAC else int(f.max())
                raise ValueError(f"layer {name!r}: w_frac must be between {-MAX_FRAC} and {MAX_FRAC}, holds {bad}")
            object.__setattr__(self, "w_frac", f)
        object.__setattr__(self, "relu", _check_bool(name, "relu", self.relu))
        object.__setattr__(self, "out_max", _check_out_max(name, self.out_max, self.relu))
        if (self.extra_weights is None) != (self.extra_shifts is None):
            raise ValueError(f"layer {name!r}: extra_weights and extra_shifts go together")
        if self.extra_weights is not None:
            check_elements(f"layer {name!r}: extra_weights", np.shape(self.extra_weights))
            e = self.w_type.check(self.extra_weights, f"layer {name!r} extra_weights")
            sh = as_int_array(self.extra_shifts, f"layer {name!r} extra_shifts")
            if e.shape[1:] != self.weight.shape or sh.shape != (e.shape[0],):
                raise ValueError(
                    f"layer {name!r}: extra_weights must have shape (P, {', '.join(map(str, self.weight.shape))}) "
                    f"and extra_shifts (P,), not {e.shape} and {sh.shape}")
            if sh.size and (int(sh.min()) < 0 or int(sh.max()) > 16):
                raise ValueError(f"layer {name!r}: extra_shifts must be between 0 and 16, "
                                 f"not {short_repr(sh.tolist())}")
            # The effective weight W + sum_p E_p * 2**s_p (and its magnitude) must be an int64.
            bound = abs_max(self.weight) + sum(abs_max(ep) << int(sp) for ep, sp in zip(e, sh))
            if bound > INT64_MAX:
                raise OverflowError(f"layer {name!r}: the effective weight W + sum_p E_p * 2**s_p could reach "
                                    f"{bound}, beyond the int64 range")
            object.__setattr__(self, "extra_weights", e)
            object.__setattr__(self, "extra_shifts", sh)

    @property
    def points(self) -> list[tuple[np.ndarray, int]]:
        """All weight points as ``(weight, left_shift)``; one point unless multipoint."""
        pts = [(self.weight, 0)]
        if self.extra_weights is not None:
            pts += [(e, int(s)) for e, s in zip(self.extra_weights, self.extra_shifts)]
        return pts

    def effective_weight(self) -> np.ndarray:
        """``W + sum_p E_p * 2**s_p``: the single weight the points add up to (wider than ``w_type``)."""
        w = self.weight.copy()
        for e, s in self.points[1:]:
            w = w + np.left_shift(e, s)     # |W| + sum_p |E_p| * 2**s_p <= 2**63 - 1: checked on construction
        return w

    def abs_effective_weight(self) -> np.ndarray:
        """``|W| + sum_p |E_p| * 2**s_p`` as ``(K, N)``: bounds every partial sum of the passes."""
        w = np.abs(self.weight)
        for e, s in self.points[1:]:
            w = w + np.left_shift(np.abs(e), s)
        return w.reshape(-1, self.out_channels)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[-1]

    @property
    def weight_frac(self) -> np.ndarray:
        """Weight fractional bits per output channel, shape ``(N,)``."""
        if self.w_frac is not None:
            return self.w_frac
        return np.full(self.out_channels, self.w_type.frac_bits, dtype=np.int64)

    @property
    def per_channel(self) -> bool:
        return self.w_frac is not None

    def shift(self, in_type: QType) -> np.ndarray:
        """Requantization shift ``k = f_in + f_w - f_out`` per output channel."""
        return in_type.frac_bits + self.weight_frac - self.out_type.frac_bits

    def out_qtype(self, in_types):
        return self.out_type

    def gemm_weight(self) -> np.ndarray:
        return self.weight.reshape(-1, self.out_channels)

    def _point_gemm(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        """``a @ e`` for one weight point *e* (shaped like ``weight``): the ``(M, N)`` accumulator."""
        return matmul(a, e.reshape(-1, self.out_channels))

    def _gemm(self, a: np.ndarray) -> np.ndarray:
        """The accumulator, computed pass by pass as the hardware does: ``acc += (a@E_p) << s_p``."""
        acc = self._point_gemm(a, self.weight)
        for e, s in self.points[1:]:
            acc = add_exact(acc, round_shift(self._point_gemm(a, e), -s), f"layer {self.name!r}: accumulator")
        return acc

    def check_arithmetic(self, in_types):
        in_t = in_types[0]
        k = self.shift(in_t)
        bad = np.flatnonzero((k < -MAX_SHIFT) | (k > MAX_SHIFT))
        if bad.size:
            n = int(bad[0])
            where = f" of output channel {n}" if self.per_channel else ""
            _check_shift(self.name, int(k[n]), f"requantization shift k = f_in + f_w - f_out{where} =")
        # Every partial sum of acc + bias is at most max|a| * sum_k (|W| + sum_p |E_p| 2**s_p) + |bias|; after
        # a left shift (k < 0) it must still fit.
        limit = np.right_shift(np.int64(INT64_MAX), np.maximum(-k, 0))
        absb = None if self.bias is None else np.abs(self.bias)
        res = gemm_abs_bound(self.abs_effective_weight(), _amax(in_t), absb, limit)
        if res is not None:
            n, bound = res
            _check_int64(self.name, bound, int(k[n]), f"|acc + bias| (output channel {n}, inputs in {in_t})")

    def acc_bounds(self, in_types):
        # The passes sum to a GEMM with the effective weight, so its exact bound is the worst case
        # of the final accumulator; each partial pass sum is bounded by it too when points share sign
        # patterns, and the compiler re-checks each pass separately.
        return bound_gemm(self.effective_weight().reshape(-1, self.out_channels), self.bias, in_types[0])

    def _requant(self, acc, in_type, rounding):
        k = self.shift(in_type)
        kk = int(k[0]) if np.all(k == k[0]) else k
        return requantize(acc, self.bias, kk, self.out_type, self.relu, rounding, self.out_max)

    def params(self):
        p = {"w_type": self.w_type.to_json(), "out_type": self.out_type.to_json(), "relu": self.relu}
        if self.out_max is not None:        # written only when set: files without a clamp are unchanged
            p["out_max"] = self.out_max
        return p

    def arrays(self):
        out = {"weight": self.weight}
        if self.bias is not None:
            out["bias"] = self.bias
        if self.w_frac is not None:
            out["w_frac"] = self.w_frac
        if self.extra_weights is not None:
            out["extra_weights"] = self.extra_weights
            out["extra_shifts"] = self.extra_shifts
        return out


@dataclass(frozen=True, eq=False)
class Dense(_GemmLayer):
    """``y = requant(x @ W + b)``; ``x`` is ``(batch, K)``, ``W`` is ``(K, N)`` (requant: see ``_GemmLayer``)."""

    kind: ClassVar[str] = "dense"

    def __post_init__(self):
        super().__post_init__()
        if self.weight.ndim != 2:
            raise ValueError(f"layer {self.name!r}: dense weight must be 2-D (K, N), not shape {self.weight.shape}")

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) != 1 or s[0] != self.weight.shape[0]:
            raise ValueError(f"layer {self.name!r}: dense expects ({self.weight.shape[0]},) features per sample, got {s}")
        return (self.weight.shape[1],)

    def forward(self, xs, in_types, rounding):
        return self._requant(self._gemm(xs[0]), in_types[0], rounding)

    def work_tensors(self, in_shapes):
        return [("accumulator", self.out_shape(in_shapes))]


@dataclass(frozen=True, eq=False)
class Conv2D(_GemmLayer):
    """2-D convolution as im2col GEMM; NHWC in and out, HWIO weights, zero padding.

    With ``groups = G > 1`` the weight is ``(kh, kw, c_in/G, c_out)`` and group ``g`` maps input channels
    ``[g*c_in/G, (g+1)*c_in/G)`` to output channels ``[g*c_out/G, (g+1)*c_out/G)``: one im2col GEMM per
    group (K ordered ``(kh, kw, c_in/G)``), then the same requantization as an ungrouped layer. Depthwise
    is ``G = c_in``.
    """

    kind: ClassVar[str] = "conv2d"

    stride: tuple[int, int] = (1, 1)
    #: ``(top, bottom, left, right)``; an int or a pair ``(ph, pw)`` is expanded.
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: Channel groups: c_in and c_out are divisible by it (depthwise: ``groups == c_in``).
    groups: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.weight.ndim != 4:
            raise ValueError(f"layer {self.name!r}: conv2d weight must be 4-D (kh, kw, c_in, c_out), not shape {self.weight.shape}")
        s = _pair(self.stride, f"layer {self.name!r} stride")
        _check_between(self.name, "stride", s, 1, MAX_WINDOW)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "padding", _padding(self.name, self.padding))
        g = self.groups
        if not _is_int(g):
            raise TypeError(f"layer {self.name!r}: groups must be an int, not {short_repr(g)}")
        g, cout = int(g), self.weight.shape[3]
        if g < 1 or cout % g:
            raise ValueError(f"layer {self.name!r}: groups={g} must be a positive divisor of the {cout} output "
                             f"channels (weight (kh, kw, c_in/groups, c_out) of shape {self.weight.shape})")
        object.__setattr__(self, "groups", g)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[0], self.weight.shape[1]

    @property
    def in_channels(self) -> int:
        """``c_in = groups * weight.shape[2]``."""
        return self.groups * self.weight.shape[2]

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        kh, kw, cig, cout = self.weight.shape
        cin = self.in_channels
        if len(s) != 3 or s[2] != cin:
            per_group = (f" (groups={self.groups} x {cig} input channels per group, from the weight of shape "
                         f"{self.weight.shape})" if self.groups > 1 else "")
            raise ValueError(f"layer {self.name!r}: conv2d expects (H, W, {cin}) per sample{per_group}, got {s}")
        oh = conv_output_size(s[0], kh, self.stride[0], self.padding[0], self.padding[1])
        ow = conv_output_size(s[1], kw, self.stride[1], self.padding[2], self.padding[3])
        if oh < 1 or ow < 1:
            raise ValueError(f"layer {self.name!r}: kernel {kh}x{kw} does not fit input {s[0]}x{s[1]} with this padding")
        return (oh, ow, cout)

    def _group_patches(self, cols: np.ndarray) -> np.ndarray:
        """im2col patches ``(M, kh*kw*c_in)`` -> ``(G, M, kh*kw*c_in/G)``: each group's K axis ``(kh, kw, c_in/G)``."""
        m, g = cols.shape[0], self.groups
        kh, kw, cig, _ = self.weight.shape
        return np.ascontiguousarray(cols.reshape(m, kh * kw, g, cig).transpose(2, 0, 1, 3)).reshape(g, m, kh * kw * cig)

    def _point_gemm(self, a, e):
        if self.groups == 1:
            return super()._point_gemm(a, e)
        g, n = self.groups, self.out_channels
        kh, kw, cig, _ = e.shape
        wg = e.reshape(kh * kw * cig, g, n // g).transpose(1, 0, 2)        # (G, Kg, N/G)
        acc = grouped_matmul(a, wg)                                          # (G, M, N/G)
        return acc.transpose(1, 0, 2).reshape(a.shape[1], n)                 # channel g*N/G + j

    def forward(self, xs, in_types, rounding):
        x = xs[0]
        oh, ow, cout = self.out_shape([x.shape[1:]])
        cols = im2col(x, self.kernel, self.stride, self.padding)
        if self.groups > 1:
            cols = self._group_patches(cols)
        y = self._requant(self._gemm(cols), in_types[0], rounding)
        return y.reshape(x.shape[0], oh, ow, cout)

    def work_tensors(self, in_shapes):
        (h, w, c), (kh, kw, _, n) = in_shapes[0], self.weight.shape
        oh, ow, _ = self.out_shape(in_shapes)
        pt, pb, pl, pr = self.padding
        out = [("padded input", (h + pt + pb, w + pl + pr, c)), ("im2col patch matrix", (oh, ow, kh * kw * c)),
               ("accumulator", (oh, ow, n))]
        if self.groups > 1:
            out.append(("grouped patch matrix", (oh, ow, kh * kw * c)))
        return out

    def params(self):
        p = {**super().params(), "stride": list(self.stride), "padding": list(self.padding)}
        if self.groups != 1:                # written only when grouped: ungrouped files are unchanged
            p["groups"] = self.groups
        return p


@dataclass(frozen=True, eq=False)
class MaxPool2D(Layer):
    """Max over ``pool`` windows with ``stride`` (default = pool) and ``padding``; exact.

    ``padding`` ``(top, bottom, left, right)`` (an int or a pair is expanded, like Conv2D) pads with the
    input type's minimum ``lo``, which never exceeds an input element: every window holds at least one
    input element (each side's padding is smaller than the window along its axis), so the result is the
    max over the window's input elements (PyTorch / ONNX semantics). Output size
    ``(H + pt + pb - ph) // sh + 1`` (floor, no ceil mode).
    """

    kind: ClassVar[str] = "maxpool2d"
    pool: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self):
        super().__post_init__()
        p = _pair(self.pool, f"layer {self.name!r} pool")
        _check_between(self.name, "pool", p, 1, MAX_WINDOW)
        s = _pair(self.stride if self.stride is not None else p, f"layer {self.name!r} stride")
        _check_between(self.name, "stride", s, 1, MAX_WINDOW)
        pad = _padding(self.name, self.padding)
        if max(pad[:2]) >= p[0] or max(pad[2:]) >= p[1]:
            raise ValueError(f"layer {self.name!r}: pooling padding {pad} (top, bottom, left, right) must be smaller "
                             f"than the window {p[0]}x{p[1]} on each side, so that every window holds an input "
                             "element")
        object.__setattr__(self, "pool", p)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "padding", pad)

    @property
    def area(self) -> int:
        """Window area ``ph * pw`` (padding included)."""
        return self.pool[0] * self.pool[1]

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) != 3:
            raise ValueError(f"layer {self.name!r}: {self.kind} expects (H, W, C) per sample, got {s}")
        pt, pb, pl, pr = self.padding
        oh = conv_output_size(s[0], self.pool[0], self.stride[0], pt, pb)
        ow = conv_output_size(s[1], self.pool[1], self.stride[1], pl, pr)
        if oh < 1 or ow < 1:
            padded = f" with padding {self.padding}" if any(self.padding) else ""
            raise ValueError(f"layer {self.name!r}: pool {self.pool} does not fit input {s[0]}x{s[1]}{padded}")
        return (oh, ow, s[2])

    def _windows(self, x, fill: int = 0):
        """``(N, OH, OW, ph*pw, C)``: every window, the input padded with *fill*."""
        n, h, w, c = x.shape
        oh, ow, _ = self.out_shape([x.shape[1:]])
        ph, pw = self.pool
        sh, sw = self.stride
        pt, pb, pl, pr = self.padding
        if any(self.padding):
            x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=np.int64(fill))
        win = np.empty((n, oh, ow, ph * pw, c), dtype=np.int64)
        for i in range(ph):
            for j in range(pw):
                win[:, :, :, i * pw + j, :] = x[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
        return win

    def forward(self, xs, in_types, rounding):
        return self._windows(xs[0], in_types[0].lo).max(axis=3)

    def work_tensors(self, in_shapes):
        oh, ow, c = self.out_shape(in_shapes)
        out = [("pooling windows", (oh, ow, self.pool[0] * self.pool[1], c))]
        if any(self.padding):
            (h, w, _), (pt, pb, pl, pr) = in_shapes[0], self.padding
            out.insert(0, ("padded input", (h + pt + pb, w + pl + pr, c)))
        return out

    def params(self):
        p = {"pool": list(self.pool), "stride": list(self.stride)}
        if any(self.padding):               # written only when padded: unpadded files are unchanged
            p["padding"] = list(self.padding)
        return p


@dataclass(frozen=True, eq=False)
class AvgPool2D(MaxPool2D):
    """Average over any window: the window sum divided by the area, rounded once, saturated.

    ``y = sat(round_r(sum * 2**(f_out - f_in) / (ph*pw)))`` to ``out_type`` (default: the input type),
    the exact rational rounded by the network's mode. Padding adds zeros and the divisor stays the whole
    area ``ph*pw`` (PyTorch ``count_include_pad=True``). In integers, with ``area = d * 2**p`` (``d`` odd)
    and ``k = p + f_in - f_out``:

    * ``d = 1`` (power-of-two area): ``round_shift(sum, k)``;
    * otherwise: ``round_div(sum * 2**max(-k, 0), d * 2**max(k, 0))``.

    A global average pool is ``pool = (H, W)``.
    """

    kind: ClassVar[str] = "avgpool2d"
    out_type: QType | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.out_type is not None and not isinstance(self.out_type, QType):
            raise TypeError(f"layer {self.name!r}: out_type must be a QType or None")

    @property
    def odd_area(self) -> int:
        """``d``, the odd factor of the area ``d * 2**p`` (1 for a power-of-two area)."""
        a = self.area
        return a // (a & -a)

    @property
    def log2_area(self) -> int:
        """``p``, the exponent of the power-of-two factor of the area ``d * 2**p`` (``log2(area)`` if ``d = 1``)."""
        a = self.area
        return (a & -a).bit_length() - 1

    def out_qtype(self, in_types):
        return self.out_type if self.out_type is not None else in_types[0]

    def shift(self, in_type: QType) -> int:
        """``k = p + f_in - f_out``: the power-of-two part of the division (all of it for a power-of-two area)."""
        return self.log2_area + in_type.frac_bits - self.out_qtype([in_type]).frac_bits

    def divide(self, s, in_type: QType, rounding: str) -> np.ndarray:
        """``round_r(s * 2**(f_out - f_in) / area)`` exactly, not saturated."""
        k, d = self.shift(in_type), self.odd_area
        if d == 1:
            return round_shift(s, k, rounding)
        return round_div(round_shift(s, min(k, 0)), d << max(k, 0), rounding)

    def forward(self, xs, in_types, rounding):
        s = self._windows(xs[0]).sum(axis=3)
        ot = self.out_qtype(in_types)
        return saturate(self.divide(s, in_types[0], rounding), ot.bits, ot.signed)

    def acc_bounds(self, in_types):
        area = self.area        # padding zeros lie inside [lo, hi]: the bound holds with padding too
        return in_types[0].lo * area, in_types[0].hi * area

    def check_arithmetic(self, in_types):
        k, d = self.shift(in_types[0]), self.odd_area
        what = "log2(area)" if d == 1 else f"log2(area / {d})"
        _check_shift(self.name, k, f"average-pool shift {what} + f_in - f_out =")
        _check_int64(self.name, self.area * _amax(in_types[0]), k, f"the window sum (inputs in {in_types[0]})")
        if d > 1 and k > 0 and d << k > INT64_MAX:
            raise ValueError(f"layer {self.name!r}: the average-pool divisor {d} * 2**{k} (area * 2**(f_in - f_out)) "
                             "is beyond 2**63 - 1 (the golden model's int64)")

    def params(self):
        p = super().params()
        if self.out_type is not None:
            p["out_type"] = self.out_type.to_json()
        return p


@dataclass(frozen=True, eq=False)
class Add(Layer):
    """Residual add with scale alignment.

    Both operands are aligned to ``F = max(f_a, f_b)`` by exact left shifts,
    added, then ``y = sat(min(relu?(round_shift(sum, F - f_out)), out_max))``.
    """

    kind: ClassVar[str] = "add"
    n_inputs: ClassVar[int] = 2
    out_type: QType = None
    relu: bool = False
    #: Upper clamp in ``out_type`` integer units; needs ``relu`` (see :class:`Dense`).
    out_max: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.out_type, QType):
            raise TypeError(f"layer {self.name!r}: out_type must be a QType")
        object.__setattr__(self, "relu", _check_bool(self.name, "relu", self.relu))
        object.__setattr__(self, "out_max", _check_out_max(self.name, self.out_max, self.relu))

    def out_qtype(self, in_types):
        return self.out_type

    def out_shape(self, in_shapes):
        a, b = in_shapes
        if tuple(a) != tuple(b):
            raise ValueError(f"layer {self.name!r}: add needs equal shapes, got {a} and {b}")
        return a

    def align(self, in_types) -> tuple[int, int, int]:
        """Left shifts of each operand and the final right shift: ``(sa, sb, k)``."""
        fa, fb = in_types[0].frac_bits, in_types[1].frac_bits
        f = max(fa, fb)
        return f - fa, f - fb, f - self.out_type.frac_bits

    def forward(self, xs, in_types, rounding):
        sa, sb, k = self.align(in_types)
        # Exact left shifts and sum (OverflowError, never a wrap; check_arithmetic proves they fit).
        s = add_exact(round_shift(xs[0], -sa), round_shift(xs[1], -sb), f"layer {self.name!r}: aligned sum")
        return clamp_saturate(round_shift(s, k, rounding), self.out_type, self.relu, self.out_max)

    def acc_bounds(self, in_types):
        sa, sb, _ = self.align(in_types)
        a, b = in_types
        return (a.lo << sa) + (b.lo << sb), (a.hi << sa) + (b.hi << sb)

    def check_arithmetic(self, in_types):
        sa, sb, k = self.align(in_types)
        _check_shift(self.name, k, "shift max(f_a, f_b) - f_out =")
        a, b = in_types
        for which, t, sh in (("first", a, sa), ("second", b, sb)):
            _check_int64(self.name, _amax(t) << sh, 0,
                         f"the {which} operand aligned by a left shift of {sh} (inputs in {t})")
        _check_int64(self.name, (_amax(a) << sa) + (_amax(b) << sb), k, "the aligned sum")

    def params(self):
        p = {"out_type": self.out_type.to_json(), "relu": self.relu}
        if self.out_max is not None:
            p["out_max"] = self.out_max
        return p


@dataclass(frozen=True, eq=False)
class Concat(Layer):
    """Concatenation of ``n >= 2`` inputs along the channels (the last axis: C of NHWC, features of 2-D).

    Every operand is first aligned to ``out_type``: ``y_i = sat(round_shift(x_i, f_i - f_out))``, an exact
    left shift when ``f_out > f_i``, a rounding right shift when ``f_out < f_i``, then saturation to
    ``out_type`` (which also moves between signed and unsigned). Inputs must agree on every axis but the last.
    """

    kind: ClassVar[str] = "concat"
    n_inputs: ClassVar[int | None] = None
    min_inputs: ClassVar[int] = 2
    out_type: QType = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.out_type, QType):
            raise TypeError(f"layer {self.name!r}: out_type must be a QType")

    def out_qtype(self, in_types):
        return self.out_type

    def out_shape(self, in_shapes):
        shapes = [tuple(s) for s in in_shapes]
        if len({s[:-1] for s in shapes}) != 1 or any(len(s) not in (1, 3) for s in shapes):
            raise ValueError(f"layer {self.name!r}: concat needs inputs that are all (features,) or all (H, W, C) "
                             f"with equal H and W, got {', '.join(map(str, shapes))}")
        return (*shapes[0][:-1], sum(s[-1] for s in shapes))

    def shifts(self, in_types) -> list[int]:
        """Right shift of each operand to ``out_type``: ``f_i - f_out`` (negative: an exact left shift)."""
        return [t.frac_bits - self.out_type.frac_bits for t in in_types]

    def forward(self, xs, in_types, rounding):
        t = self.out_type
        parts = [saturate(round_shift(x, k, rounding), t.bits, t.signed) for x, k in zip(xs, self.shifts(in_types))]
        return np.concatenate(parts, axis=-1)

    def check_arithmetic(self, in_types):
        for i, (t, k) in enumerate(zip(in_types, self.shifts(in_types))):
            _check_shift(self.name, k, f"alignment shift f_in - f_out of operand {i} ({self.inputs[i]!r}) =")
            _check_int64(self.name, _amax(t), k, f"operand {i} ({self.inputs[i]!r}, inputs in {t})")

    def params(self):
        return {"out_type": self.out_type.to_json()}


#: Limits of :class:`BlockFloat`: channels per block, mantissa bits.
MAX_BFP_BLOCK = 65536
BFP_MANTISSA_BITS = (2, 16)


@dataclass(frozen=True, eq=False)
class BlockFloat(Layer):
    """Block floating point on the integer grid of the input type ``T`` (docs/numerics.md, "Block floating
    point"): the channels (the last axis) are cut into blocks of ``block`` consecutive channels (the last
    block may be shorter); per block, sample and position one exponent is shared.

    ``amax = max |x|`` over the block; ``e`` = the smallest ``e >= 0`` with ``amax >> e <= mmax``, where
    ``mmax = 2**(m-1) - 1`` for a signed ``T`` and ``2**m - 1`` for an unsigned one (``m = mantissa_bits``);
    ``mant = sat_m(round_shift(x, e))`` with the network's rounding, saturated to ``m`` bits signed or
    unsigned like ``T``; ``y = sat_T(mant << e)``. The output type is ``T``: the values are exactly the block
    floating-point values, on ``T``'s grid.
    """

    kind: ClassVar[str] = "bfp"
    block: int = None
    mantissa_bits: int = None

    def __post_init__(self):
        super().__post_init__()
        lo_m, hi_m = BFP_MANTISSA_BITS
        for field, v, lo, hi in (("block", self.block, 1, MAX_BFP_BLOCK),
                                 ("mantissa_bits", self.mantissa_bits, lo_m, hi_m)):
            if not _is_int(v):
                raise TypeError(f"layer {self.name!r}: {field} must be an int, not {short_repr(v)}")
            if not lo <= int(v) <= hi:
                raise ValueError(f"layer {self.name!r}: {field} must be between {lo} and {hi}, not {int(v)}")
            object.__setattr__(self, field, int(v))

    def mantissa_max(self, in_type: QType) -> int:
        """``mmax``: the largest mantissa, ``2**(m-1) - 1`` (signed ``T``) or ``2**m - 1`` (unsigned)."""
        return QType.range_of(self.mantissa_bits, in_type.signed)[1]

    def exponents(self, x: np.ndarray, in_type: QType) -> np.ndarray:
        """The shared exponent ``e`` of every block: shape ``x.shape[:-1] + (blocks,)``."""
        x = as_int_array(x, "x")
        c = x.shape[-1]
        starts = np.arange(0, c, self.block)
        if x.size == 0:
            return np.zeros(x.shape[:-1] + (starts.size,), dtype=np.int64)
        amax = np.maximum.reduceat(np.abs(x), starts, axis=-1)   # |x| <= 2**32: exact in int64
        mmax = self.mantissa_max(in_type)
        # e counts the j >= 0 with (amax >> j) > mmax: they are 0 .. e-1 (amax >> j falls as j grows).
        return sum(((amax >> j) > mmax).astype(np.int64) for j in range(in_type.bits + 1))

    def forward(self, xs, in_types, rounding):
        x, t = xs[0], in_types[0]
        c = x.shape[-1]
        sizes = np.diff(np.append(np.arange(0, c, self.block), c))
        e = np.repeat(self.exponents(x, t), sizes, axis=-1)
        mant = saturate(round_shift(x, e, rounding), self.mantissa_bits, t.signed)
        return saturate(round_shift(mant, -e), t.bits, t.signed)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) < 1:
            raise ValueError(f"layer {self.name!r}: a bfp layer needs a channel axis, got per-sample shape {s}")
        return s

    def work_tensors(self, in_shapes):
        (s,) = in_shapes
        return [("exponents and mantissas", tuple(s)), ("output", tuple(s))]

    def check_arithmetic(self, in_types):
        """Nothing to refuse: ``|x| <= 2**32``, ``e <= bits <= 32`` and ``|mant << e| < 2**49`` fit int64."""

    def params(self):
        return {"block": self.block, "mantissa_bits": self.mantissa_bits}


@dataclass(frozen=True, eq=False)
class Flatten(Layer):
    """``(N, H, W, C)`` -> ``(N, H*W*C)`` in HWC order."""

    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shapes):
        return (math.prod(in_shapes[0]),)   # Python ints: never wraps

    def forward(self, xs, in_types, rounding):
        return xs[0].reshape(xs[0].shape[0], math.prod(xs[0].shape[1:]))     # also for a batch of 0


LAYER_KINDS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Add, Flatten, Concat, BlockFloat)
}
