"""Pooling and residual adds on the vector unit: VEC into accumulator lines, then STORE (docs/isa.md, VEC).

A max-pool, an average pool over a power-of-two window area (a global average pool included) and a residual
add run as VEC instructions that combine DRAM bytes into accumulator lines, one line per output pixel and one
lane per channel (``cols`` channels per chunk), then a LOADQ of a zero-bias block and a STORE through the
requantizer lanes:

* max-pool: per window tap, one VEC per output-row run of the pixels whose tap lies in the input (a strided
  gather like a convolution's, stride ``stride_w * channels``): the first tap to reach a line sets it, the
  others take the maximum (padding is never read: each window holds an input element, and the maximum over
  the elements is the golden model's, whose padding is the type's minimum). STORE shift 0: the line is the
  value.
* average pool, area ``d * 2**p`` (``d`` odd): the same runs, the first sets, the others add (padding adds
  zero). With ``k = p + f_in - f_out`` the golden result is ``round(sum * 2**-k / d)``. For ``d = 1`` the
  STORE's shift ``k`` rounds the sum (rounding of the config). Otherwise the operands are shifted left by
  ``max(-k, 0)``, a DIV by ``d`` leaves ``4 * floor(a / d)`` plus two rounding bits in each line (``2 * [2r >=
  d] + [r != 0]``, exact: ``round_shift`` of it by ``j + 2`` is the rounded ``a / (d * 2**j)`` in every
  rounding mode, as ``d`` is odd) and the STORE shifts by ``max(k, 0) + 2``.
* add: VEC SET of the first operand shifted left by its alignment, VEC ADD of the second; STORE with the
  shift ``max(f_a, f_b) - f_out``, the layer's ReLU and upper clamp (LOADQ ``clamp``).
* concat: per operand, VEC SET of its channels, then a STORE with its alignment shift ``f_i - f_out`` into
  its channels of the output (one LOADQ per operand).

Every value (the DIV results included) is proved to fit the accumulator before the layer is lowered;
a layer that does not fit stays on the host, with the reason.
"""

from __future__ import annotations

import numpy as np

from ..arch.isa import FIELDS, Instr, Opcode, VecOp
from ..arch.machine import MachineSpec
from ..golden.layers import Add, AvgPool2D, Concat, Layer, MaxPool2D
from ..golden.ops import check_acc_range
from ..golden.primitives import MAX_SHIFT
from ..golden.qtypes import QType
from .steps import AccelStep, HostStep, Region, loadq_clamp

__all__ = ["VECTOR_LAYERS", "vector_reason", "lower_vector", "vector_step"]

#: The layer types the vector unit runs.
VECTOR_LAYERS = (MaxPool2D, AvgPool2D, Add, Concat)
#: The largest left shift of a VEC operand.
MAX_VEC_SHIFT = (1 << FIELDS[Opcode.VEC]["shift"][1]) - 1


def _divisor(layer: Layer) -> int:
    """The DIV's odd divisor (1: no DIV)."""
    return layer.odd_area if isinstance(layer, AvgPool2D) else 1


def _shifts(layer: Layer, in_types: list[QType]) -> tuple[list[int], int]:
    """``(left shifts of the operands, the STORE's requantize shift)`` (a concat: the STORE shift of largest
    magnitude of its operands', ``Concat.shifts``, for the range check)."""
    if isinstance(layer, Concat):
        return [0] * len(in_types), max(layer.shifts(in_types), key=abs)
    if isinstance(layer, Add):
        sa, sb, k = layer.align(in_types)
        return [sa, sb], k
    if isinstance(layer, AvgPool2D):
        k = layer.shift(in_types[0])
        return ([0], k) if _divisor(layer) == 1 else ([max(-k, 0)], max(k, 0) + 2)
    return [0], 0


def _bounds(layer: Layer, in_types: list[QType]) -> tuple[int, int]:
    """The exact range of every accumulator value the layer forms (partial sums and DIV results included)."""
    if not isinstance(layer, (Add, AvgPool2D)):          # max-pool, concat: the operands themselves
        return min(t.lo for t in in_types), max(t.hi for t in in_types)
    lo, hi = layer.acc_bounds(in_types)
    d = _divisor(layer)
    if d == 1:
        return lo, hi
    sh = _shifts(layer, in_types)[0][0]
    lo, hi = lo << sh, hi << sh
    return min(lo, 4 * (lo // d)), max(hi, 4 * (hi // d) + 3)


def vector_reason(layer: Layer, in_types: list[QType], spec: MachineSpec) -> str | None:
    """Why the vector unit cannot run *layer* (a :data:`VECTOR_LAYERS` one), or None if it can."""
    if _divisor(layer) >= 1 << FIELDS[Opcode.DIV]["divisor"][1]:
        return f"the average pool's divisor {_divisor(layer)} (the odd part of its area) does not fit DIV's field"
    out_t = layer.out_qtype(in_types)
    if out_t.bits > spec.out_bits:
        return f"output is {out_t.bits}-bit, the requantizers give {spec.out_bits}"
    shifts, k = _shifts(layer, in_types)
    if max(shifts) > MAX_VEC_SHIFT:
        return f"an operand's alignment shift {max(shifts)} is above the VEC shift's {MAX_VEC_SHIFT}"
    if abs(k) > MAX_SHIFT:
        return f"the output shift {k} is outside the requantizer's [-{MAX_SHIFT}, {MAX_SHIFT}]"
    lo, hi = _bounds(layer, in_types)
    amin, amax = QType.range_of(spec.acc_bits, True)
    if lo < amin or hi > amax:
        return f"its values [{lo}, {hi}] do not fit the {spec.acc_bits}-bit accumulator"
    out_max = getattr(layer, "out_max", None)
    if out_max is not None and out_max >= 1 << FIELDS[Opcode.LOADQ]["out_max"][1]:
        return f"the upper clamp out_max={out_max} does not fit the LOADQ's clamp field"
    return None


def vector_step(layer: Layer, net, spec: MachineSpec, dram, regions: dict, dst: Region) -> AccelStep | HostStep:
    """*layer* (a :data:`VECTOR_LAYERS` one of *net*) on the vector unit, or on the host with the reason."""
    in_types = net.in_types(layer)
    reason = vector_reason(layer, in_types, spec)
    if reason is not None:
        return HostStep(layer.name, reason)
    return lower_vector(layer, in_types, spec, dram, [regions[i] for i in layer.inputs], dst)


def _runs(touched: np.ndarray, lo: int, hi: int):
    """``(first line, lines, already touched)`` of the maximal runs of equal *touched* in lines ``[lo, hi)``."""
    t = touched[lo:hi]
    cuts = np.flatnonzero(np.diff(t.astype(np.int8))) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(t)]])
    return [(lo + int(s), int(e - s), bool(t[s])) for s, e in zip(starts, ends)]


def lower_vector(layer: Layer, in_types: list[QType], spec: MachineSpec, dram, srcs: list[Region],
                 dst: Region) -> AccelStep:
    """The program of *layer* (a :data:`VECTOR_LAYERS` layer that :func:`vector_reason` accepts) reading
    *srcs* and writing *dst*; *dram* is the compiler's DRAM image (for its parameter block)."""
    C = spec.cols
    out_t = layer.out_qtype(in_types)
    shifts, k = _shifts(layer, in_types)
    lo, hi = _bounds(layer, in_types)
    check_acc_range(lo, hi, spec.acc_bits, f"layer {layer.name!r}")        # (vector_reason said it fits)
    relu = int(getattr(layer, "relu", False))
    ch = dst.shape[-1]
    store = dict(relu=relu, unsigned=int(not out_t.signed), bits=out_t.bits, stride=ch)
    uns = [int(not t.signed) for t in in_types]
    shift_blocks = {}

    def loadq(shift: int) -> Instr:
        """The LOADQ of a zero-bias block of output shift *shift* (one block per shift in DRAM)."""
        if shift not in shift_blocks:
            shift_blocks[shift] = dram.alloc(spec.loadq_bytes, f"layer {layer.name!r} parameters")
            dram.put(shift_blocks[shift],
                     np.zeros(C, dtype="<i4").tobytes() + np.full(C, shift, dtype=np.int8).tobytes())
        return Instr(Opcode.LOADQ, {**loadq_clamp(layer), "dram": shift_blocks[shift]})

    if isinstance(layer, Concat):
        prog = _concat(layer, in_types, spec, srcs, dst, store, uns, loadq)
        return AccelStep(layer.name, prog + [Instr(Opcode.FENCE), Instr(Opcode.HALT)], macs=0, gemm=None)
    prog = [loadq(k)]
    for m0, lines, c0, e in _tiles(spec, dst, ch):
        if isinstance(layer, Add):
            for src, op, sh, u in zip(srcs, (VecOp.SET, VecOp.ADD), shifts, uns):
                prog.append(Instr(Opcode.VEC, dict(op=op, unsigned=u, lines=lines, acc=0, elems=e, shift=sh,
                                                   dram=src.addr + m0 * ch + c0, stride=ch)))
        else:
            prog += _pool_vecs(layer, srcs[0], dst, m0, lines, c0, e, uns[0], shifts[0])
            if _divisor(layer) > 1:
                prog.append(Instr(Opcode.DIV, dict(lines=lines, acc=0, elems=e, divisor=_divisor(layer))))
        prog.append(Instr(Opcode.STORE, dict(store, lines=lines, acc=0, elems=e, dram=dst.addr + m0 * ch + c0)))
    prog += [Instr(Opcode.FENCE), Instr(Opcode.HALT)]
    return AccelStep(layer.name, prog, macs=0, gemm=None)


def _concat(layer: Concat, in_types, spec: MachineSpec, srcs: list[Region], dst: Region, store: dict, uns: list,
            loadq) -> list:
    """Per operand: its LOADQ, then per tile and lane chunk of its channels a VEC SET and a STORE into its
    channels of the output."""
    ch = dst.shape[-1]
    prog, off = [], 0
    for src, k, u in zip(srcs, layer.shifts(in_types), uns):
        ci = src.shape[-1]
        prog.append(loadq(k))
        for m0, lines, c0, e in _tiles(spec, dst, ci):
            prog += [Instr(Opcode.VEC, dict(op=VecOp.SET, unsigned=u, lines=lines, acc=0, elems=e, shift=0,
                                            dram=src.addr + m0 * ci + c0, stride=ci)),
                     Instr(Opcode.STORE, dict(store, lines=lines, acc=0, elems=e, dram=dst.addr + m0 * ch + off + c0))]
        off += ci
    return prog


def _tiles(spec: MachineSpec, dst: Region, channels: int):
    """``(first pixel, pixels, first channel, channels)`` of each tile: the output's pixels in tiles of at most
    ``acc_lines`` accumulator lines, *channels* in chunks of ``cols`` lanes."""
    M = int(np.prod(dst.shape[:-1]))
    mt = min(spec.acc_lines, M)
    for m0 in range(0, M, mt):
        for c0 in range(0, channels, spec.cols):
            yield m0, min(mt, M - m0), c0, min(spec.cols, channels - c0)


def _pool_vecs(layer: MaxPool2D, src: Region, dst: Region, m0: int, lines: int, c0: int, elems: int,
               unsigned: int, shift: int) -> list:
    """The VECs of one tile (output pixels ``[m0, m0 + lines)``, channels ``[c0, c0 + elems)``) of a pooling
    layer: per output-row run and window tap, the pixels whose tap is inside the input."""
    _, h, w, ch = src.shape
    _, oh, ow, _ = dst.shape
    ph, pw = layer.pool
    sh, sw = layer.stride
    pt, _, pl, _ = layer.padding
    combine = VecOp.ADD if isinstance(layer, AvgPool2D) else VecOp.MAX
    touched = np.zeros(lines, dtype=bool)
    out = []
    m = m0
    while m < m0 + lines:
        b, r = divmod(m, oh * ow)
        oy, ox_a = divmod(r, ow)
        ox_b = min(ow, ox_a + m0 + lines - m)          # this output row's pixels in the tile
        for i in range(ph):
            iy = oy * sh + i - pt
            if not 0 <= iy < h:
                continue
            for jj in range(pw):
                # ox with 0 <= ox * sw + jj - pl < w
                lo_x = max(ox_a, -(-(pl - jj) // sw))
                hi_x = min(ox_b, (w - 1 + pl - jj) // sw + 1)
                if lo_x >= hi_x:
                    continue
                base = m - ox_a - m0
                for line, n, was in _runs(touched, base + lo_x, base + hi_x):
                    ix = (line - base) * sw + jj - pl
                    out.append(Instr(Opcode.VEC, dict(
                        op=combine if was else VecOp.SET, unsigned=unsigned, lines=n, acc=line, elems=elems,
                        shift=shift, dram=src.addr + ((b * h + iy) * w + ix) * ch + c0, stride=sw * ch)))
                touched[base + lo_x:base + hi_x] = True
        m += ox_b - ox_a
    return out
