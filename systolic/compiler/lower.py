"""Lower a golden :class:`QuantizedNetwork` to accelerator programs.

Dense and Conv2D layers (conv as im2col GEMM, gathered by the DMA straight
from the NHWC tensor in DRAM) run on the accelerator; every other layer runs
on the host golden model between programs. A grouped (or depthwise) Conv2D runs
as the dense convolution over all its input channels with the block-diagonal
weight (``block_diagonal_weight``, ``ungrouped``; docs/isa.md, "Grouped and
depthwise convolution"): its zeros add nothing, and its all-zero tiles are
skipped like any other. ``CompiledNetwork.placement`` and
every report say which layer ran where, and why a layer stayed on the host.

Tiling (docs/isa.md): K in chunks of ``rows`` (scratchpad A lines), N in
chunks of ``cols`` (requantizer lanes), M in tiles of ``mt`` rows such that a
tile's K chunks fit scratchpad A and its rows fit the accumulator buffer.

The schedule lets MATMULs run in the background while the controller goes on
loading: with more than one M tile (and room for two), scratchpad A is
double-buffered and tile t+1's loads are spread between tile t's MATMULs
(dense tile 0: each K chunk just before its first MATMUL); weights that all fit
scratchpad W are loaded once, N chunk j+1's spread between chunk j's MATMULs
(otherwise alternately into two halves); each N chunk's LOADQ goes right
before its STORE. When two regions of ``mt`` lines fit the accumulator buffer,
N chunks alternate between them and a chunk's LOADQ and STORE are issued after
the next chunk's first ``STORE_LAG`` MATMULs, so the STORE (which waits only for
the MATMULs that write its lines) overlaps the next chunk's computation. No
activation load, and no weight load when all weights fit, writes lines that a
MATMUL still in flight reads (the hardware's interlocks would make it wait);
results are those of sequential execution either way.

K-split (weight reuse): when a large K leaves tiles of fewer rows than a weight-stationary MATMUL needs to
stream (``2R + C + 1``), tiles get more rows, K is cut into groups (double-buffered in A across groups, so A
loads then overwrite lines that MATMULs since the last STORE read, after the interlock lets them) and N into
groups with one accumulator region per chunk; A is re-read per N group (``ksplit_plan``, ``_ksplit_program``).

Zero weight tiles (docs/isa.md): in every schedule a weight tile whose values are all zero is neither stored,
loaded nor run (``_WeightTiles``); the first MATMUL that runs for an N chunk overwrites its accumulator region,
and an N chunk with no non-zero tile runs one zero tile. ``AccelStep`` reports the array MACs and weight bytes
this costs against a one-point layer of the same shape. A block floating-point (bfp) layer is refused.

Speed (a ResNet-50 at 224x224 is millions of instructions, docs/results/compile_speed.md): the fields of a
layer's instructions are proved to fit once per layer (``_instr_maker``) instead of checked one by one, the
conv gathers are built with NumPy (``_ConvGather``), instructions that repeat per M tile are one shared
(immutable) ``Instr``, and the garbage collector is paused while the objects are made. The programs are
those of the straightforward code, instruction by instruction (tests/compiler/test_compile_identity.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
from dataclasses import dataclass

import numpy as np

from ..golden.layers import Conv2D, Dense, Flatten, Layer, bound_gemm
from ..golden.network import QuantizedNetwork
from ..golden.ops import check_acc_range
from ..golden.pe_weights import first_non_shift_weight, shift_weight_rule, weight_words
from ..golden.qtypes import QType
from ..arch.isa import FIELDS, Instr, Opcode, Target
from ..arch.machine import MachineSpec
from .lower_vector import VECTOR_LAYERS, vector_step
from .steps import AccelStep, CompileError, HostStep, Region, loadq_clamp

__all__ = ["compile_network", "CompiledNetwork", "Region", "AccelStep", "HostStep", "CompileError"]


@dataclass
class CompiledNetwork:
    net: QuantizedNetwork
    spec: MachineSpec
    batch: int
    steps: list
    regions: dict
    image: np.ndarray  # initial DRAM contents (weights, parameters)

    @property
    def placement(self) -> dict:
        """Layer name -> ``"accelerator"`` or ``"host: <reason>"``."""
        return {s.layer: "accelerator" if isinstance(s, AccelStep) else f"host: {s.reason}" for s in self.steps}

    @property
    def host_layers(self) -> list:
        """``[{"layer": name, "reason": why}]`` of the layers that run on the host golden model between programs
        (empty when the accelerator runs every layer; a flatten, a no-op on NHWC memory, is not one)."""
        return [{"layer": s.layer, "reason": s.reason} for s in self.steps
                if isinstance(s, HostStep) and not isinstance(self.net.layer(s.layer), Flatten)]

    @property
    def instructions(self) -> int:
        return sum(len(s.program) for s in self.steps if isinstance(s, AccelStep))

    def check_input(self, x_int) -> np.ndarray:
        """*x_int* as the network's checked input, refused unless it is a batch of :attr:`batch`."""
        x = self.net.check_input(x_int)
        if x.shape[0] != self.batch:
            raise ValueError(f"this program was compiled for batch {self.batch}, not {x.shape[0]}")
        return x


class _Dram:
    """The DRAM image being laid out: *size* bytes, or with *fit* as many as the network needs (the buffer
    grows with the allocations, up to the 32-bit address space)."""

    def __init__(self, size: int, fit: bool = False):
        self.size = (1 << 32) if fit else size
        self.buf = np.zeros(size if not fit else min(size, 1 << 20), dtype=np.uint8)
        self.top = 0

    def alloc(self, nbytes: int, what: str, align: int = 16) -> int:
        addr = -(-self.top // align) * align
        if addr + nbytes > self.size:
            raise CompileError(f"{what}: DRAM of {self.size} bytes is full ({addr + nbytes} needed)")
        if addr + nbytes > self.buf.size:
            grown = np.zeros(max(2 * self.buf.size, addr + nbytes), dtype=np.uint8)
            grown[:self.buf.size] = self.buf
            self.buf = grown
        self.top = addr + nbytes
        return addr

    def put(self, addr: int, data: bytes | np.ndarray):
        b = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        self.buf[addr:addr + b.size] = b


def _bytes(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v, dtype=np.int64) & 0xFF).astype(np.uint8)


class _WeightTiles:
    """Which weight tiles of a layer run (docs/isa.md, "Zero weight tiles"), where they are and where they go.

    Tile ``(p, j, i)`` (point, N chunk, K chunk; *tiles* is ``(P, nc, kc, R, C)``) runs, and is stored in DRAM
    and loaded, only if it has a non-zero element: an all-zero tile adds nothing to the accumulator. An N chunk
    whose tiles are all zero still runs tile ``(0, j, 0)`` (stored like the others), so that its accumulator
    region holds defined values (zeros) before its STORE. The tiles that run are stored contiguously from
    :attr:`addr` in ``(p, j, i)`` order; with every tile in scratchpad W, tile number ``n`` of that order lives
    in lines ``[n*R, (n+1)*R)``.

    *make* builds an instruction from an opcode and a full argument dict (``Instr`` or ``Instr.trusted``, see
    :func:`_instr_maker`)."""

    def __init__(self, tiles: np.ndarray, R: int, C: int, make=Instr):
        self.R, self.C = R, C
        nonzero = tiles.reshape(*tiles.shape[:3], -1).any(axis=-1)
        self.nonzero = nonzero
        self.keep = nonzero.copy()
        self.keep[0, ~nonzero.any(axis=(0, 2)), 0] = True
        self.P, self.nc, self.kc = self.keep.shape
        self.index = np.cumsum(self.keep.ravel()).reshape(self.keep.shape) - 1
        self.count = int(self.keep.sum())
        self.addr = 0
        self.make = make
        self._keep = self.keep.tolist()      # plain lists: the schedule loops test single tiles
        self._index = self.index.tolist()
        self._loads = {}

    def order(self, j: int, ks: range | None = None, points: range | None = None) -> list:
        """The ``(p, i)`` of N chunk *j*'s tiles that run, points then K chunks (within *points* / *ks*)."""
        ps = range(self.P) if points is None else points
        ks = range(self.kc) if ks is None else ks
        keep = self._keep
        return [(p, i) for p in ps for i in ks if keep[p][j][i]]

    def first(self, j: int) -> tuple:
        """``(p, i)`` of N chunk *j*'s first MATMUL: the one that overwrites its accumulator region."""
        return self.order(j)[0]

    def home(self, p: int, j: int, i: int) -> int:
        """The tile's own first scratchpad W line when every tile that runs fits scratchpad W."""
        return self._index[p][j][i] * self.R

    def load(self, p: int, j: int, i: int, line: int) -> Instr:
        """The LOAD of tile ``(p, j, i)`` into scratchpad W lines ``[line, line + R)`` (one shared, immutable
        ``Instr`` per tile and line: a tile reloaded per M tile is the same instruction)."""
        key = (p, j, i, line)
        ins = self._loads.get(key)
        if ins is None:
            R, C = self.R, self.C
            ins = self._loads[key] = self.make(_LOAD, {
                "target": _W, "zero": 0, "unsigned": 0, "lines": R, "spad": line, "elems": C, "offset": 0,
                "dram": self.addr + self._index[p][j][i] * R * C, "stride": C})
        return ins


_LOAD, _LOADQ, _MATMUL, _STORE = Opcode.LOAD, Opcode.LOADQ, Opcode.MATMUL, Opcode.STORE
_A, _W = int(Target.A), int(Target.W)


def _instr_maker(spec: MachineSpec, *values: int):
    """``Instr.trusted`` when every field the lowering of a layer on *spec* emits provably fits its width, else
    ``Instr`` (which checks each one and raises ``IsaError``, as it always did).

    The fields are bounded by the spec: lines, scratchpad and accumulator lines by ``a_lines``, ``w_lines``,
    ``acc_lines`` (16-bit fields), element counts and offsets by ``rows`` / ``cols`` (12 bits), DRAM addresses
    by ``dram_bytes`` (32 bits), the multipoint shift by 31 (checked by ``_host_reason``), flags are 0 or 1;
    *values* are the layer's strides and other 32-bit values (K, N, the conv gather stride)."""
    fits = (max(spec.a_lines, spec.w_lines, spec.acc_lines) < 1 << 16 and max(spec.rows, spec.cols) < 1 << 12
            and spec.dram_bytes <= 1 << 32 and all(0 <= v < 1 << 32 for v in values))
    return Instr.trusted if fits else Instr


def _costs(spec: MachineSpec, M: int, kc: int, nc: int, mt: int, sum_m: int, w_loads: int) -> dict:
    """The accounting fields of :class:`AccelStep` for a program whose MATMULs' ``m`` add up to *sum_m* and that
    has *w_loads* weight tile LOADs (``rows`` lines of ``cols`` bytes each), and those of a one-point layer of
    the same shape.

    The one-point layer (a dense ``weight`` only) runs every tile once per M row: ``R*C*kc*nc*M`` array MACs
    in either schedule; its weights are loaded once when its ``nc*kc`` tiles fit scratchpad W, else once per M
    tile of the schedule the compiler would choose for it (plain or K-split)."""
    R, C = spec.rows, spec.cols
    preload = nc * kc * R <= spec.w_lines
    ks = ksplit_plan(spec, M, kc, nc, 1, mt, preload)
    m_tiles = math.ceil(M / (ks[0] if ks is not None else whole_chunks(spec, mt, M)))
    return dict(array_macs=R * C * sum_m, weight_bytes=w_loads * R * C,
                one_point_array_macs=R * C * kc * nc * M,
                one_point_weight_bytes=R * C * kc * nc * (1 if preload else m_tiles))


def _host_reason(layer: Layer, net: QuantizedNetwork, spec: MachineSpec) -> str | None:
    """Why *layer* cannot run on the accelerator, or None if it can."""
    if not isinstance(layer, (Dense, Conv2D)):
        return f"{layer.kind} layers run on the host"
    out_max = getattr(layer, "out_max", None)
    if out_max is not None and out_max >= 1 << FIELDS[Opcode.LOADQ]["out_max"][1]:
        # The STORE's upper clamp (ReLU6 / Clip) is the LOADQ's 16-bit out_max field.
        return f"the upper clamp out_max={out_max} does not fit the LOADQ's clamp field"
    in_t = net.in_types(layer)[0]
    if in_t.bits > spec.in_bits:
        return f"input is {in_t.bits}-bit, the array takes {spec.in_bits}"
    if layer.w_type.bits > spec.w_bits:
        return f"weights are {layer.w_type.bits}-bit, the array takes {spec.w_bits}"
    if layer.out_type.bits > spec.out_bits:
        return f"output is {layer.out_type.bits}-bit, the requantizers give {spec.out_bits}"
    k = layer.shift(in_t)
    if k.min() < -128 or k.max() > 127:
        return f"requantize shift {int(k.min())}..{int(k.max())} does not fit the int8 shift field"
    if any(s > 31 for _, s in layer.points):
        return "a multipoint shift above 31"
    return None


def block_diagonal_weight(e: np.ndarray, groups: int) -> np.ndarray:
    """The dense ``(kh, kw, c_in, c_out)`` int64 weight of a Conv2D weight point *e* ``(kh, kw, c_in/G, c_out)``
    of *groups* ``= G`` (golden ``Conv2D``): zero where input channel and output channel are in different groups,
    so the dense convolution over all ``c_in`` channels gives the grouped one's accumulator exactly."""
    kh, kw, cig, cout = e.shape
    cog = cout // groups
    dense = np.zeros((kh, kw, groups, cig, groups, cog), dtype=np.int64)
    g = np.arange(groups)
    # (advanced indices split by slices: the group axis comes first) group g's block <- its output channels
    dense[:, :, g, :, g, :] = np.asarray(e, dtype=np.int64).reshape(kh, kw, cig, groups, cog).transpose(3, 0, 1, 2, 4)
    return dense.reshape(kh, kw, groups * cig, cout)


def ungrouped(layer: Layer) -> Layer:
    """*layer* itself, or for a grouped Conv2D the ungrouped one with every weight point (``weight`` and
    ``extra_weights``) made block diagonal (:func:`block_diagonal_weight`): the layer the lowering runs."""
    G = getattr(layer, "groups", 1)
    if G == 1:
        return layer
    extra = layer.extra_weights
    if extra is not None:
        extra = np.stack([block_diagonal_weight(e, G) for e in extra])
    return dataclasses.replace(layer, weight=block_diagonal_weight(layer.weight, G), extra_weights=extra, groups=1)


def _prove(layer, in_t: QType, spec: MachineSpec):
    """Every partial sum the hardware forms fits the accumulator: prefixes of the passes, with and without bias."""
    w = np.zeros_like(layer.gemm_weight())
    for p, (e, s) in enumerate(layer.points):
        w = w + np.left_shift(e.reshape(w.shape), s)
        lo, hi = bound_gemm(w, None, in_t)
        check_acc_range(lo, hi, spec.acc_bits, f"layer {layer.name!r} (pass {p})")
    lo, hi = bound_gemm(w, layer.bias, in_t)
    check_acc_range(lo, hi, spec.acc_bits, f"layer {layer.name!r} (with bias)")


def _check_pe_weights(layer, spec: MachineSpec):
    """A shift PE stores every weight point the layer sends to the array: each must be 0 or +-2**e. (Of a
    grouped conv, the points as given: the block-diagonal ones add only zeros, which the PE takes, and the
    message's index is then the one of the layer's own weight.)"""
    if spec.pe != "shift":
        return
    for p, (e, _) in enumerate(layer.points):
        bad = first_non_shift_weight(e, spec.w_bits)
        if bad is not None:
            where = "weight" if p == 0 else f"extra_weights[{p - 1}]"
            raise CompileError(f"layer {layer.name!r}: {where}[{', '.join(map(str, bad[0]))}] is {bad[1]}, which "
                               f"the shift PE cannot take: it takes {shift_weight_rule(spec.w_bits)}")


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector: a big layer's program is millions of small objects without
    cycles, and each collection would walk them all again (more than half of the compile time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compile_network(net: QuantizedNetwork, spec: MachineSpec, batch: int = 1, *,
                    fit_dram: bool = False) -> CompiledNetwork:
    """Compile *net* for *spec* at a fixed *batch* size.

    With *fit_dram*, ``spec.dram_bytes`` is a lower bound: the DRAM is sized to what the network needs at
    this batch (weights, parameters and every tensor), rounded up to a power of two, and the result's
    ``spec`` has that size (a simulator or executor then gets a memory of it)."""
    with _gc_paused():
        return _compile_network(net, spec, batch, fit_dram)


def _compile_network(net: QuantizedNetwork, spec: MachineSpec, batch: int, fit_dram: bool = False) -> CompiledNetwork:
    if not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be a positive int, not {batch!r}")
    if net.rounding != spec.rounding:
        raise CompileError(f"the network uses {net.rounding} rounding but the accelerator implements {spec.rounding}")
    for layer in net.layers:      # before the DRAM image is allocated
        if layer.kind == "bfp":
            raise CompileError(
                f"layer {layer.name!r}: block floating-point (bfp) activations cannot be compiled: the exponent "
                "varies per pixel and block of channels while a MATMUL has one shift per instruction, and the "
                "array's input type is fixed-point")
    dram = _Dram(spec.dram_bytes, fit=fit_dram)
    regions = {}

    def region(name):
        shape = (batch, *net.shape(name))
        r = Region(name, dram.alloc(int(np.prod(shape)), f"tensor {name!r}"), shape, net.qtype(name))
        regions[name] = r
        return r

    region("input")
    steps = []
    for layer in net.layers:
        if isinstance(layer, Flatten):
            # NHWC bytes are already in flatten (HWC) order: the output aliases the input.
            src = regions[layer.inputs[0]]
            regions[layer.name] = Region(layer.name, src.addr, (batch, *net.shape(layer.name)), net.qtype(layer.name))
            steps.append(HostStep(layer.name, "flatten is a no-op on NHWC memory"))
            continue
        out = region(layer.name)
        if isinstance(layer, VECTOR_LAYERS):
            steps.append(vector_step(layer, net, spec, dram, regions, out))
            continue
        reason = _host_reason(layer, net, spec)
        if reason is not None:
            steps.append(HostStep(layer.name, reason))
            continue
        in_t = net.in_types(layer)[0]
        dense = ungrouped(layer)        # a grouped conv runs as the dense one with block-diagonal weights
        _prove(dense, in_t, spec)
        _check_pe_weights(layer, spec)
        steps.append(_lower_gemm(dense, net, spec, dram, regions[layer.inputs[0]], out, in_t,
                                 getattr(layer, "groups", 1)))
    if fit_dram:        # (nothing in the programs depends on the DRAM size: only the memory it gets)
        size = max(spec.dram_bytes, 1 << max(0, dram.top - 1).bit_length())
        spec = dataclasses.replace(spec, dram_bytes=size)
        dram.buf = np.concatenate([dram.buf[:size], np.zeros(max(0, size - dram.buf.size), dtype=np.uint8)])
    return CompiledNetwork(net, spec, batch, steps, regions, dram.buf)


def _lower_gemm(layer, net, spec, dram, src: Region, dst: Region, in_t: QType, groups: int = 1) -> AccelStep:
    """The step of an ungrouped *layer* (a grouped conv's :func:`ungrouped` one, of *groups* for the MACs)."""
    R, C = spec.rows, spec.cols
    wk = layer.gemm_weight()
    K, N = wk.shape
    kc, nc = math.ceil(K / R), math.ceil(N / C)
    points = layer.points
    P = len(points)
    conv = isinstance(layer, Conv2D)
    M = int(np.prod(dst.shape[:-1]))
    if kc > spec.a_lines and ksplit_plan(spec, M, kc, nc, 1, 0, False) is None:
        raise CompileError(f"layer {layer.name!r}: K={K} needs {kc} scratchpad A lines per row, "
                           f"only {spec.a_lines} exist, too few to split K")
    mt, double = plain_tiling(spec, M, kc)

    # Weights: tile (p, j, i) is R lines of C bytes, zero padded; the tiles that run (not all zero, see
    # _WeightTiles) are stored contiguously.
    tiles = np.zeros((P, nc, kc, R, C), dtype=np.int64)
    for p, (e, _) in enumerate(points):
        ep = np.zeros((kc * R, nc * C), dtype=np.int64)
        ep[:K, :N] = e.reshape(K, N)
        tiles[p] = ep.reshape(kc, R, nc, C).transpose(2, 0, 1, 3)
    make = _instr_maker(spec, K, N, layer.stride[1] * src.shape[-1] if conv else 0)
    wt = _WeightTiles(tiles, R, C, make)
    tiles = tiles[wt.keep]
    wt.addr = w_addr = dram.alloc(tiles.size, f"layer {layer.name!r} weights")
    dram.put(w_addr, _bytes(weight_words(tiles.ravel(), spec.w_bits, spec.pe)))  # the PE's words

    # Requantizer parameters per N chunk: C int32 biases, then C int8 shifts.
    shift = layer.shift(in_t)
    bias = layer.bias if layer.bias is not None else np.zeros(N, dtype=np.int64)
    q_addr = dram.alloc(nc * spec.loadq_bytes, f"layer {layer.name!r} parameters")
    for j in range(nc):
        b = np.zeros(C, dtype="<i4")
        s = np.zeros(C, dtype=np.int8)
        n1 = min(C, N - j * C)
        b[:n1] = bias[j * C:j * C + n1]
        s[:n1] = shift[j * C:j * C + n1]
        dram.put(q_addr + j * spec.loadq_bytes, b.tobytes() + s.tobytes())

    unsigned_in = not in_t.signed
    preload = wt.count * R <= spec.w_lines
    # Useful MACs: per non-zero tile, its unpadded (k, n) whose input and output channels share a group (all of
    # them when ungrouped): M * K * N * P when no tile is zero, M * kh*kw*(c_in/G) * c_out * P when grouped.
    macs = M * int((wt.nonzero * _group_taps(K, N, R, C, groups, src.shape[-1] if conv else K)[None]).sum())
    gather = _ConvGather(layer, src, dst, R, unsigned_in, make) if conv else None

    def step(built):
        prog, sum_m, w_loads = built
        return AccelStep(layer.name, prog, macs=macs, gemm=(M, K, N),
                         **_costs(spec, M, kc, nc, mt, sum_m, w_loads))

    # The schedule's cost estimate counts MATMULs in points: the tiles that run, as a fraction of one point's.
    ks = ksplit_plan(spec, M, kc, nc, wt.count / (nc * kc), mt, preload)
    if ks is not None:
        return step(_ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, wt, gather, unsigned_in, preload,
                                    q_addr, make, *ks))
    return step(_plain_program(layer, spec, src, dst, M, K, N, kc, nc, wt, gather, unsigned_in, preload, q_addr,
                               make, whole_chunks(spec, mt, M), double))


def _group_taps(K: int, N: int, R: int, C: int, groups: int, cin: int) -> np.ndarray:
    """``(nc, kc)``: per weight tile, how many of its ``(k, n)`` inside ``K x N`` join an input channel
    (``k % cin``, K in ``(kh, kw, c_in)`` order) and an output channel of the same group of *groups*."""
    kg = (np.arange(K) % cin) // (cin // groups)
    ng = np.arange(N) // (N // groups)
    hk = np.bincount(np.arange(K) // R * groups + kg, minlength=-(-K // R) * groups).reshape(-1, groups)
    hn = np.bincount(np.arange(N) // C * groups + ng, minlength=-(-N // C) * groups).reshape(-1, groups)
    return hn @ hk.T


#: The plain schedule queues this many MATMULs of the next N chunk before the previous chunk's LOADQ and STORE.
STORE_LAG = 2


def _plain_program(layer, spec, src, dst, M, K, N, kc, nc, wt, gather, unsigned_in, preload, q_addr, make, mt,
                   double):
    """The plain schedule (module docstring, docs/isa.md): ``(program, sum of the MATMULs' m, weight LOADs)``.

    M tiles of *mt* rows (scratchpad A double-buffered when *double*), per tile and N chunk the MATMULs of the
    tiles that run, then LOADQ and STORE. *gather* is the layer's :class:`_ConvGather` (None: a dense layer)."""
    R, C = spec.rows, spec.cols
    conv = gather is not None
    out_t = layer.out_type
    relu, uns_out, bits = int(layer.relu), int(not out_t.signed), int(out_t.bits)
    clamp = loadq_clamp(layer)
    ua = int(unsigned_in)
    src_addr, dst_addr, qb = src.addr, dst.addr, spec.loadq_bytes
    shifts = [s for _, s in layer.points]
    T = len(range(0, M, mt))

    def a_base(t):
        return (t % 2) * kc * mt if double else 0

    used = wt.keep.any(axis=(0, 1)).tolist()  # K chunks some MATMUL reads (a dense layer loads only those)

    def a_chunk(t, i):
        """Dense tile t's K chunk i: one strided LOAD into its A buffer."""
        m0, e = t * mt, min(R, K - i * R)
        return make(_LOAD, {"target": _A, "zero": int(e < R), "unsigned": ua, "lines": min(mt, M - m0),
                            "spad": a_base(t) + i * mt, "elems": e, "offset": 0, "dram": src_addr + m0 * K + i * R,
                            "stride": K})

    def a_loads(t):
        """Tile t's activation loads into its A buffer (dense: one strided LOAD per K chunk that runs)."""
        m0, base = t * mt, a_base(t)
        rows = min(mt, M - m0)
        if conv:
            return gather.loads(m0, rows, mt, base, 0, kc)
        return [a_chunk(t, i) for i in range(kc) if used[i]]

    # Weights: if every tile fits scratchpad W, each is loaded once, in tile 0: N chunk 0 just in time, chunk j+1
    # spread over the MATMULs of chunk j. Otherwise each is loaded before its MATMUL, alternating between two
    # halves when two tiles fit, so that a load does not overwrite the tile the previous MATMUL reads.
    w_alt = not preload and spec.w_lines >= 2 * R
    orders = [wt.order(j) for j in range(nc)]   # the MATMULs of each N chunk: the tiles that run
    Q = sum(map(len, orders))                    # the MATMULs of one M tile
    wload, home = wt.load, wt.home
    matmuls = {}  # (MATMULs repeat per M tile: one shared, immutable Instr per distinct instruction)
    n_w = 0
    prog = []
    append = prog.append
    # Accumulator double-buffering: N chunks (counted over all tiles) alternate between two regions of mt lines,
    # and each chunk's LOADQ and STORE wait until the next chunk's first STORE_LAG MATMULs are queued, so the
    # STORE (which waits only for the MATMULs writing its lines) runs while the array computes the next chunk.
    acc_double = 2 * mt <= spec.acc_lines
    pending = []
    n_chunk = 0
    for t in range(T):
        m0, base = t * mt, a_base(t)
        rows = min(mt, M - m0)
        # Double-buffered, tile t+1 is loaded while tile t runs; a single buffer is loaded when its tile starts.
        cur = a_loads(t) if t == 0 or not double else []
        if cur:             # a single A buffer: its loads wait for the array to drain, the last STORE goes first
            prog += pending
            pending = []
        if conv:
            prog += cur  # zero-fill, then the gathers
        dense_cur = bool(cur) and not conv
        nxt = a_loads(t + 1) if double and t + 1 < T else []
        n_nxt = len(nxt)
        q = sent = 0
        loaded = set()  # dense K chunks of cur loaded so far
        for j, order in enumerate(orders):
            w_next = []
            if preload and t == 0 and j + 1 < nc:
                w_next = [wload(p, j + 1, i, home(p, j + 1, i)) for p, i in orders[j + 1]]
            n_next, n_ord = len(w_next), len(order)
            w_sent = 0
            acc = (n_chunk % 2) * mt if acc_double else 0
            n_chunk += 1
            for k, (p, i) in enumerate(order):
                if dense_cur and i not in loaded:
                    append(a_chunk(t, i))  # K chunk i just before its first MATMUL
                    loaded.add(i)
                if preload:
                    w_line = home(p, j, i)
                    if t == 0 and j == 0:
                        append(wload(p, j, i, w_line))
                else:
                    w_line = (n_w % 2) * R if w_alt else 0
                    n_w += 1
                    append(wload(p, j, i, w_line))
                key = (k > 0, p, rows, base + i * mt, w_line, acc)
                ins = matmuls.get(key)
                if ins is None:
                    ins = matmuls[key] = make(_MATMUL, {"accumulate": int(k > 0), "shift": shifts[p], "m": rows,
                                                        "a": base + i * mt, "w": w_line, "acc": acc})
                append(ins)
                q += 1
                if n_next:
                    upto = -(-(k + 1) * n_next // n_ord)
                    prog += w_next[w_sent:upto]
                    w_sent = upto
                if pending and k + 1 == STORE_LAG:
                    prog += pending
                    pending = []
                if n_nxt and not (pending and j == 0):  # (after the previous tile's last STORE, which
                    # lets its MATMULs, readers of the lines these loads overwrite, finish first)
                    upto = -(-q * n_nxt // Q)
                    prog += nxt[sent:upto]
                    sent = upto
            prog += pending     # (the previous chunk's, when this one has fewer than STORE_LAG MATMULs)
            pending = [make(_LOADQ, {**clamp, "dram": q_addr + j * qb}),
                       make(_STORE, {"relu": relu, "unsigned": uns_out, "lines": rows, "acc": acc,
                                     "elems": min(C, N - j * C), "bits": bits, "dram": dst_addr + m0 * N + j * C,
                                     "stride": N})]
            if not acc_double:
                prog += pending
                pending = []
    prog += pending
    append(make(Opcode.FENCE, {}))
    append(make(Opcode.HALT, {}))
    return prog, Q * M, (wt.count if preload else n_w)


class _ConvGather:
    """im2col by DMA for one Conv2D layer: per M tile, zero-fill the A lines the gathers leave (in part) unwritten
    (padding), then one strided load per (output row run, kernel tap, chunk piece), built with NumPy over all
    runs and pieces of the tile at once.

    The pieces of each kernel tap (its ``c_in`` K elements cut at K chunk boundaries) depend only on the K
    chunks gathered, so they are tabled once per chunk range."""

    def __init__(self, layer: Conv2D, src: Region, dst: Region, R: int, unsigned_in: bool, make=Instr):
        _, self.H, self.W, self.Cin = src.shape
        _, self.OH, self.OW, _ = dst.shape
        self.kh, self.kw = layer.kernel
        self.sh, self.sw = layer.stride
        self.pt, _, self.pl, _ = layer.padding
        self.R, self.ua, self.src_addr, self.make = R, int(unsigned_in), src.addr, make
        self._pieces = {}

    def pieces(self, i0: int, i1: int) -> tuple:
        """Per piece of K chunks ``[i0, i1)`` in (ki, kj, K) order: ki, kj, chunk i, first k, end k, tap base,
        and the tap's output column bounds ``(lo0, hi0)`` (the ox with ``0 <= ox*sw + kj - pl < W``)."""
        key = (i0, i1)
        if key not in self._pieces:
            R, Cin, kw, sw, pl, W = self.R, self.Cin, self.kw, self.sw, self.pl, self.W
            rows = []
            for ki in range(self.kh):
                for kj in range(kw):
                    base = (ki * kw + kj) * Cin
                    k = max(base, i0 * R)
                    while k < min(base + Cin, i1 * R):
                        i = k // R
                        k_end = min(base + Cin, (i + 1) * R)
                        rows.append((ki, kj, i, k, k_end, base, -(-(pl - kj) // sw), (W - 1 - kj + pl) // sw + 1))
                        k = k_end
            self._pieces[key] = np.array(rows, dtype=np.int64).reshape(-1, 8).T
        return self._pieces[key]

    def loads(self, m0, rows, mt, a0, i0, i1) -> list:
        """The loads of output rows ``[m0, m0 + rows)`` into A lines from *a0*, K chunks ``i0 <= i < i1`` (chunk
        ``i`` into lines ``a0 + (i - i0) * mt + ...``)."""
        make = self.make
        H, W, Cin, OH, OW = self.H, self.W, self.Cin, self.OH, self.OW
        sh, sw, pt, pl = self.sh, self.sw, self.pt, self.pl
        runs = []
        m = m0
        while m < m0 + rows:
            b, rem = divmod(m, OH * OW)
            oy, ox0 = divmod(rem, OW)
            run = min(OW - ox0, m0 + rows - m)  # output pixels of this output row inside the tile
            runs.append((m, b, oy, ox0, run))
            m += run
        ki, kj, i, k, k_end, base, lo0, hi0 = self.pieces(i0, i1)
        if not ki.size:
            return self._zero_fill(np.zeros((0, 5), dtype=np.int64), rows, mt, a0, i0, i1)
        rm, rb, roy, rox0, rrun = (np.array(v, dtype=np.int64) for v in zip(*runs))
        # Which (run, piece) pairs have in-bounds pixels (run-major, as the loads go), then their fields.
        iy = roy[:, None] * sh + ki - pt
        ok = (iy >= 0) & (iy < H) & (np.minimum((rox0 + rrun)[:, None], hi0) > np.maximum(rox0[:, None], lo0))
        r, q = np.nonzero(ok)
        ox0 = rox0[r]
        lo = np.maximum(ox0, lo0[q])
        hi = np.minimum(ox0 + rrun[r], hi0[q])
        iq, kq = i[q], k[q]
        cols = np.empty((r.size, 5), dtype=np.int64)
        cols[:, 0] = hi - lo
        cols[:, 1] = a0 + (iq - i0) * mt + (rm[r] - m0) + (lo - ox0)
        cols[:, 2] = k_end[q] - kq
        cols[:, 3] = kq - iq * self.R
        cols[:, 4] = self.src_addr + ((rb[r] * H + iy[r, q]) * W + lo * sw + kj[q] - pl) * Cin + (kq - base[q])
        ua, st = self.ua, sw * Cin
        prog = self._zero_fill(cols, rows, mt, a0, i0, i1)
        prog += [make(_LOAD, {"target": _A, "zero": 0, "unsigned": ua, "lines": n, "spad": sp, "elems": e,
                              "offset": o, "dram": d, "stride": st}) for n, sp, e, o, d in cols.tolist()]
        return prog

    def _zero_fill(self, cols, rows, mt, a0, i0, i1) -> list:
        """Zero-fill LOADs (one per run of consecutive lines) for the A lines the MATMULs read (the first *rows*
        of each chunk's *mt*) that the gathers *cols* (lines, spad, elems, ...) do not write in full: padding
        taps, the elements of a chunk past K; runs fewer than ``_FETCH`` lines apart are one LOAD of at most *rows*
        lines. They go before the gathers, which then overwrite their parts."""
        L = (i1 - i0) * mt
        delta = np.zeros(L + 1, dtype=np.int64)     # elements written per line, as a difference array
        np.add.at(delta, cols[:, 1] - a0, cols[:, 2])
        np.add.at(delta, cols[:, 1] - a0 + cols[:, 0], -cols[:, 2])
        need = (np.cumsum(delta[:L]) < self.R) & (np.arange(L) % mt < rows)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], need.view(np.int8), [0]))))
        # Runs closer than one instruction's fetch are one LOAD (zeroing a line costs a cycle, a LOAD ~_FETCH),
        # up to *rows* lines (about one MATMUL's work: a longer LOAD holds the controller while the array drains).
        runs = []
        for b, e in zip(edges[0::2].tolist(), edges[1::2].tolist()):
            if runs and b - runs[-1][1] < _FETCH and e - runs[-1][0] <= rows:
                runs[-1][1] = e
            else:
                runs.append([b, e])
        make = self.make
        return [make(_LOAD, {"target": _A, "zero": 1, "unsigned": 0, "lines": e - b, "spad": a0 + b, "elems": 0,
                             "offset": 0, "dram": 0, "stride": 0}) for b, e in runs]


#: Rough controller costs (cycles) for choosing a schedule: one instruction's fetch and decode, one A line.
_FETCH, _A_LINE = 8, 2


def plain_tiling(spec: MachineSpec, M: int, kc: int) -> tuple[int, bool]:
    """``(mt, double)`` of the plain schedule: M tiles of ``mt`` rows, each with all *kc* K chunks in
    scratchpad A (``mt == 0``: one row's K chunks do not fit; the K-split schedule runs the layer).

    A is double-buffered when M takes more than one tile: tile t reads lines ``[(t%2)*kc*mt,
    (t%2+1)*kc*mt)`` and tile t+1 is loaded into the other half while tile t's MATMULs run. The schedule
    is chosen (:func:`ksplit_plan`) on this ``mt``; the plain program then runs tiles of
    :func:`whole_chunks` rows."""
    mt = min(spec.a_lines // kc, spec.acc_lines, M)
    double = mt < M and spec.a_lines // (2 * kc) >= 1
    if double:
        mt = min(spec.a_lines // (2 * kc), spec.acc_lines, M)
    return mt, double


def whole_chunks(spec: MachineSpec, mt: int, M: int) -> int:
    """The rows per M tile of the plain schedule: *mt*, or on an output-stationary array, which runs a
    MATMUL in chunks of ``rows`` rows (a partial one as a whole one), *mt* cut to whole chunks when that
    leaves at least two."""
    R = spec.rows
    if spec.dataflow == "os" and 2 * R <= mt < M:
        return mt - mt % R
    return mt


def _schedule_cost(spec, mt, m_last, tiles, groups, ng, kg, units_per_group, P, preload, conv):
    """A rough cycle estimate of a tiling: per unit of MATMULs, the array's time (a weight-stationary MATMUL
    streams ``max(m, 2R + C + 1)`` cycles) against the controller's (fetches, weight and A loads), plus the
    STOREs, which wait for the array."""
    R = spec.rows
    thr = spec.latencies.ws_matmul_period
    w_cost = 0 if preload else R + _FETCH + 3
    total = 0
    for m, n_tiles in ((mt, tiles - 1), (m_last, 1)):
        arr = ng * kg * max(m, thr)
        ctrl = ng * kg * (_FETCH + w_cost) + m * kg * _A_LINE + _FETCH * (kg * (3 if conv else 1) + 1)
        per_tile = groups * (units_per_group * P * max(arr, ctrl) + ng * (m + 3 * _FETCH))
        total += n_tiles * per_tile
    return total


def ksplit_plan(spec, M, kc, nc, P, mt, preload):
    """``(mt2, kg, ng)`` for the K-split schedule, or None to keep the plain one.

    The plain tiling gives a tile's K chunks all of (half of) scratchpad A, so a large K leaves few rows per
    tile: MATMULs of ``m < 2R + C + 1`` rows, and the weight-stationary array mostly swaps weight tiles. The
    K-split schedule takes ``mt2`` rows per tile, K in groups of ``kg`` chunks (double-buffered in A across
    groups) and N in groups of ``ng`` chunks, each with its own accumulator region of ``mt2`` lines; A is
    re-read once per N group. Chosen when the rough estimate is clearly lower, and always when one row's K
    chunks do not fit scratchpad A (``mt == 0``: the plain tiling has no schedule)."""
    R, C = spec.rows, spec.cols
    thr = spec.latencies.ws_matmul_period
    half = spec.a_lines // 2
    force = mt == 0
    if half < 1 or (not force and (min(R, C) < 4 or mt >= thr or mt >= M or kc < 2)):
        return None  # (on arrays under 4x4 a weight swap is a few cycles: the plain schedule stays)
    if not force:
        T = math.ceil(M / mt)
        old = _schedule_cost(spec, mt, M - (T - 1) * mt, T, nc, 1, kc, 1, P, preload, False)
    best = None
    for G in sorted({math.ceil(nc / ng) for ng in range(1, nc + 1)}):
        ng = math.ceil(nc / G)
        cap = min(M, spec.acc_lines // ng, half)
        if cap < 1:
            continue
        T2 = math.ceil(M / cap)
        mt2 = math.ceil(M / T2)
        if mt2 < max(2 * mt, thr) and not force:
            continue  # MATMULs that still cannot stream do not pay for re-reading A
        if spec.dataflow == "os" and R * math.ceil(mt2 / R) <= cap:     # whole chunks (see whole_chunks)
            mt2 = R * math.ceil(mt2 / R)
            T2 = math.ceil(M / mt2)
        H = math.ceil(kc / (half // mt2))
        kg = math.ceil(kc / H)
        cost = _schedule_cost(spec, mt2, M - (T2 - 1) * mt2, T2, G, ng, kg, H, P, preload, False)
        if best is None or cost < best[0]:
            best = (cost, mt2, kg, ng)
    if best is None or (not force and best[0] >= 0.9 * old):
        return None
    return best[1:]


def _ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, wt, gather, unsigned_in, preload, q_addr, make,
                    mt2, kg, ng):
    """The K-split schedule (see :func:`ksplit_plan`): for each M tile, N group, point and K group that has a
    weight tile to run (*wt*, a :class:`_WeightTiles`), the group's A loads (the next unit's spread between
    this unit's MATMULs, into the other half of A), then for each N chunk of the group its MATMULs over the
    group's K chunks; after the last unit of an N group each chunk's LOADQ and STORE. Every N chunk sees its
    MATMULs in the plain schedule's order (points, then K chunks; the first overwrites), so its partial sums are
    the ones the accumulator proof covers. Returns ``(program, sum of the MATMULs' m, weight LOADs)``."""
    R, C = spec.rows, spec.cols
    shifts = [s for _, s in layer.points]
    out_t = layer.out_type
    relu, uns_out, bits = int(layer.relu), int(not out_t.signed), int(out_t.bits)
    clamp = loadq_clamp(layer)
    ua = int(unsigned_in)
    src_addr, dst_addr, qb = src.addr, dst.addr, spec.loadq_bytes
    T2, G, H = math.ceil(M / mt2), math.ceil(nc / ng), math.ceil(kc / kg)
    size = mt2 * kg
    keep = wt.keep

    def chunks(g):
        return range(g * ng, min(nc, (g + 1) * ng))

    def ks(h):
        return range(h * kg, min(kc, (h + 1) * kg))

    # Per (N group, point, K group), which do not depend on the M tile: whether it has a tile to run, its
    # MATMULs (local chunk, chunk, K chunk), and the K chunks a dense layer loads (those some MATMUL reads).
    runs, dense_ks = {}, {}
    for g in range(G):
        js = chunks(g)
        for p in range(wt.P):
            for h in range(H):
                if keep[p, js.start:js.stop, ks(h).start:ks(h).stop].any():
                    runs[g, p, h] = [(jl, j, i) for jl, j in enumerate(js)
                                     for _, i in wt.order(j, ks(h), range(p, p + 1))]
                    dense_ks[g, p, h] = [i for i in ks(h) if keep[p, js.start:js.stop, i].any()]
    units = [(t, g, p, h) for t in range(T2) for g in range(G) for p in range(wt.P) for h in range(H)
             if (g, p, h) in runs]

    def a_loads(u):
        t, g, p, h = units[u]
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        i0, i1 = ks(h).start, ks(h).stop
        if gather is not None:
            return gather.loads(m0, rows, mt2, base, i0, i1)
        loads = []
        for i in dense_ks[g, p, h]:  # (the K chunks no MATMUL of the unit reads are not loaded)
            e = min(R, K - i * R)
            loads.append(make(_LOAD, {"target": _A, "zero": int(e < R), "unsigned": ua, "lines": rows,
                                      "spad": base + (i - i0) * mt2, "elems": e, "offset": 0,
                                      "dram": src_addr + m0 * K + i * R, "stride": K}))
        return loads

    w_alt = not preload and spec.w_lines >= 2 * R
    firsts = [wt.first(j) for j in range(nc)]
    wload, home = wt.load, wt.home
    matmuls = {}  # (one shared, immutable Instr per distinct MATMUL, as in the plain schedule)
    n_w = sum_m = 0
    prog = a_loads(0)
    append = prog.append
    n_units = len(units)
    for u, (t, g, p, h) in enumerate(units):
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        i0 = ks(h).start
        nxt = a_loads(u + 1) if u + 1 < n_units else []
        n_nxt = len(nxt)
        run = runs[g, p, h]
        n_run = len(run)
        sum_m += rows * n_run
        s_p = shifts[p]
        q = sent = 0
        for jl, j, i in run:
            if preload:
                w_line = home(p, j, i)
                if t == 0:
                    append(wload(p, j, i, w_line))
            else:
                w_line = (n_w % 2) * R if w_alt else 0
                n_w += 1
                append(wload(p, j, i, w_line))
            key = (j, p, i, rows, base, w_line)
            ins = matmuls.get(key)
            if ins is None:
                ins = matmuls[key] = make(_MATMUL, {"accumulate": int(firsts[j] != (p, i)), "shift": s_p, "m": rows,
                                                    "a": base + (i - i0) * mt2, "w": w_line, "acc": jl * mt2})
            append(ins)
            q += 1
            if n_nxt:
                upto = -(-q * n_nxt // n_run)
                prog += nxt[sent:upto]
                sent = upto
        if u + 1 == n_units or units[u + 1][:2] != (t, g):   # the N group's last unit
            for jl, j in enumerate(chunks(g)):
                append(make(_LOADQ, {**clamp, "dram": q_addr + j * qb}))
                append(make(_STORE, {"relu": relu, "unsigned": uns_out, "lines": rows, "acc": jl * mt2,
                                     "elems": min(C, N - j * C), "bits": bits, "dram": dst_addr + m0 * N + j * C,
                                     "stride": N}))
    append(make(Opcode.FENCE, {}))
    append(make(Opcode.HALT, {}))
    return prog, sum_m, (wt.count if preload else n_w)
