"""The straightforward compiler and cycle model, as they were before the fast paths: the reference that
tests/compiler/test_compile_identity.py compares the fast ones with, instruction by instruction, and that
scripts/bench_compile.py --reference times.

A verbatim copy of ``_lower_gemm`` and its helpers from systolic/compiler/lower.py and of
``program_timeline`` from systolic/arch/timing.py at the commit before the fast paths (one ``Instr`` per
instruction, built and checked one at a time; one pass over ``Instr`` objects for the cycles). Only the imports
differ: the public classes come from the package. Later schedule and timing changes are applied here in the same
plain style (accumulator double-buffering with STOREs beside the next chunk's MATMULs; a grouped conv lowered as
the dense one with block-diagonal weights, the package's public ``ungrouped``, its useful MACs counted from a
block-diagonal mask). Do not optimise this file: it is the definition the fast paths are checked against.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from systolic.arch.isa import INSTR_BYTES, Instr, Opcode, Target
from systolic.arch.latency import (ACC_UPDATE, DECODE_CYCLES, DMA_ISSUE, INTERLOCK_REGISTER, LOADQ_CHECK, MAX_READS,
                                   QUEUE_SLOT, STORE_START, VEC_INPUT, VEC_LINE, div_line)
from systolic.arch.machine import MachineSpec
from systolic.arch.memory import MemoryModel, program_address
from systolic.arch.sysmap import CONTROLLER_UNITS
from systolic.arch.timing import ARRAY_UNIT_TIMING, InstrTiming, Timeline, gather_accepts, words
from systolic.compiler.lower_vector import VECTOR_LAYERS, vector_step
from systolic.compiler.lower import (STORE_LAG, AccelStep, CompiledNetwork, CompileError, HostStep, Region,
                                     block_diagonal_weight, ksplit_plan, plain_tiling, ungrouped, whole_chunks)
from systolic.compiler.steps import loadq_clamp
from systolic.golden.layers import Conv2D, Dense, Flatten, Layer, bound_gemm
from systolic.golden.network import QuantizedNetwork
from systolic.golden.ops import check_acc_range
from systolic.golden.pe_weights import first_non_shift_weight, shift_weight_rule, weight_words
from systolic.golden.qtypes import QType

class _Dram:
    def __init__(self, size):
        self.buf = np.zeros(size, dtype=np.uint8)
        self.top = 0

    def alloc(self, nbytes: int, what: str, align: int = 16) -> int:
        addr = -(-self.top // align) * align
        if addr + nbytes > self.buf.size:
            raise CompileError(f"{what}: DRAM of {self.buf.size} bytes is full ({addr + nbytes} needed)")
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
    in lines ``[n*R, (n+1)*R)``."""

    def __init__(self, tiles: np.ndarray, R: int, C: int):
        self.R, self.C = R, C
        nonzero = tiles.reshape(*tiles.shape[:3], -1).any(axis=-1)
        self.nonzero = nonzero
        self.keep = nonzero.copy()
        self.keep[0, ~nonzero.any(axis=(0, 2)), 0] = True
        self.P, self.nc, self.kc = self.keep.shape
        self.index = np.cumsum(self.keep.ravel()).reshape(self.keep.shape) - 1
        self.count = int(self.keep.sum())
        self.addr = 0

    def order(self, j: int, ks: range | None = None, points: range | None = None) -> list:
        """The ``(p, i)`` of N chunk *j*'s tiles that run, points then K chunks (within *points* / *ks*)."""
        ps = range(self.P) if points is None else points
        ks = range(self.kc) if ks is None else ks
        return [(p, i) for p in ps for i in ks if self.keep[p, j, i]]

    def first(self, j: int) -> tuple:
        """``(p, i)`` of N chunk *j*'s first MATMUL: the one that overwrites its accumulator region."""
        return self.order(j)[0]

    def home(self, p: int, j: int, i: int) -> int:
        """The tile's own first scratchpad W line when every tile that runs fits scratchpad W."""
        return int(self.index[p, j, i]) * self.R

    def load(self, p: int, j: int, i: int, line: int) -> Instr:
        """The LOAD of tile ``(p, j, i)`` into scratchpad W lines ``[line, line + R)``."""
        dram = self.addr + int(self.index[p, j, i]) * self.R * self.C
        return Instr(Opcode.LOAD, dict(target=Target.W, lines=self.R, spad=line, elems=self.C, dram=dram,
                                       stride=self.C))


def _costs(prog: list, spec: MachineSpec, M: int, kc: int, nc: int, mt: int) -> dict:
    """The accounting fields of :class:`AccelStep` for *prog*, and those of a one-point layer of the same shape.

    The one-point layer (a dense ``weight`` only) runs every tile once per M row: ``R*C*kc*nc*M`` array MACs
    in either schedule; its weights are loaded once when its ``nc*kc`` tiles fit scratchpad W, else once per M
    tile of the schedule the compiler would choose for it (plain or K-split)."""
    R, C = spec.rows, spec.cols
    preload = nc * kc * R <= spec.w_lines
    ks = ksplit_plan(spec, M, kc, nc, 1, mt, preload)
    m_tiles = math.ceil(M / (ks[0] if ks is not None else whole_chunks(spec, mt, M)))
    return dict(array_macs=sum(R * C * i.args["m"] for i in prog if i.op == Opcode.MATMUL),
                weight_bytes=sum(i.args["lines"] * i.args["elems"] for i in prog
                                 if i.op == Opcode.LOAD and i.args["target"] == Target.W),
                one_point_array_macs=R * C * kc * nc * M,
                one_point_weight_bytes=R * C * kc * nc * (1 if preload else m_tiles))


def _host_reason(layer: Layer, net: QuantizedNetwork, spec: MachineSpec) -> str | None:
    """Why *layer* cannot run on the accelerator, or None if it can."""
    if not isinstance(layer, (Dense, Conv2D)):
        return f"{layer.kind} layers run on the host"
    out_max = getattr(layer, "out_max", None)
    if out_max is not None and out_max >= 1 << 16:
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
    """A shift PE stores every weight point the layer sends to the array: each must be 0 or +-2**e."""
    if spec.pe != "shift":
        return
    for p, (e, _) in enumerate(layer.points):
        bad = first_non_shift_weight(e, spec.w_bits)
        if bad is not None:
            where = "weight" if p == 0 else f"extra_weights[{p - 1}]"
            raise CompileError(f"layer {layer.name!r}: {where}[{', '.join(map(str, bad[0]))}] is {bad[1]}, which "
                               f"the shift PE cannot take: it takes {shift_weight_rule(spec.w_bits)}")


def compile_network(net: QuantizedNetwork, spec: MachineSpec, batch: int = 1) -> CompiledNetwork:
    """Compile *net* for *spec* at a fixed *batch* size."""
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
    dram = _Dram(spec.dram_bytes)
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
            # Pooling and adds: the vector unit's lowering (no fast path to check against).
            steps.append(vector_step(layer, net, spec, dram, regions, out))
            continue
        reason = _host_reason(layer, net, spec)
        if reason is not None:
            steps.append(HostStep(layer.name, reason))
            continue
        in_t = net.in_types(layer)[0]
        dense = ungrouped(layer)
        _prove(dense, in_t, spec)
        _check_pe_weights(layer, spec)
        steps.append(_lower_gemm(dense, net, spec, dram, regions[layer.inputs[0]], out, in_t, layer))
    return CompiledNetwork(net, spec, batch, steps, regions, dram.buf)


def _lower_gemm(layer, net, spec, dram, src: Region, dst: Region, in_t: QType, given=None) -> AccelStep:
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
    mt, double = plain_tiling(spec, M, kc)     # (the tiling choice is shared; the programs are compared)

    # Weights: tile (p, j, i) is R lines of C bytes, zero padded; the tiles that run (not all zero, see
    # _WeightTiles) are stored contiguously.
    tiles = np.zeros((P, nc, kc, R, C), dtype=np.int64)
    for p, (e, _) in enumerate(points):
        ep = np.zeros((kc * R, nc * C), dtype=np.int64)
        ep[:K, :N] = e.reshape(K, N)
        tiles[p] = ep.reshape(kc, R, nc, C).transpose(2, 0, 1, 3)
    wt = _WeightTiles(tiles, R, C)
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
    out_t = layer.out_type
    preload = wt.count * R <= spec.w_lines
    # Useful MACs: the unpadded part of every non-zero tile (M * K * N * P when no tile is zero); of a grouped
    # conv (*given*, the layer as given) only the (k, n) inside a group: the non-zeros of the block-diagonal ones.
    useful = np.zeros((kc * R, nc * C), dtype=np.int64)
    if getattr(given, "groups", 1) > 1:
        useful[:K, :N] = block_diagonal_weight(np.ones_like(given.weight), given.groups).reshape(K, N)
    else:
        useful[:K, :N] = 1
    per_tile = useful.reshape(kc, R, nc, C).sum(axis=(1, 3)).T
    macs = 0
    for p in range(P):
        for j in range(nc):
            for i in range(kc):
                if wt.nonzero[p, j, i]:
                    macs += M * int(per_tile[j, i])

    def step(prog):
        return AccelStep(layer.name, prog, macs=macs, gemm=(M, K, N), **_costs(prog, spec, M, kc, nc, mt))

    # The schedule's cost estimate counts MATMULs in points: the tiles that run, as a fraction of one point's.
    ks = ksplit_plan(spec, M, kc, nc, wt.count / (nc * kc), mt, preload)
    if ks is not None:
        return step(_ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, wt, conv, unsigned_in, preload,
                                    q_addr, *ks))
    mt = whole_chunks(spec, mt, M)
    T = len(range(0, M, mt))

    def a_base(t):
        return (t % 2) * kc * mt if double else 0

    used = wt.keep.any(axis=(0, 1))  # K chunks some MATMUL reads (a dense layer loads only those)

    def a_chunk(t, i):
        """Dense tile t's K chunk i: one strided LOAD into its A buffer."""
        m0, e = t * mt, min(R, K - i * R)
        return Instr(Opcode.LOAD, dict(target=Target.A, zero=int(e < R), unsigned=int(unsigned_in),
                                       lines=min(mt, M - m0), spad=a_base(t) + i * mt, elems=e, offset=0,
                                       dram=src.addr + m0 * K + i * R, stride=K))

    def a_loads(t):
        """Tile t's activation loads into its A buffer (dense: one strided LOAD per K chunk that runs)."""
        m0, base = t * mt, a_base(t)
        rows = min(mt, M - m0)
        if conv:
            return _gather_conv(layer, src, m0, rows, mt, kc, R, unsigned_in, dst, base)
        return [a_chunk(t, i) for i in range(kc) if used[i]]

    # Weights: if every tile fits scratchpad W, each is loaded once, in tile 0: N chunk 0 just in time, chunk j+1
    # spread over the MATMULs of chunk j. Otherwise each is loaded before its MATMUL, alternating between two
    # halves when two tiles fit, so that a load does not overwrite the tile the previous MATMUL reads.
    w_alt = not preload and spec.w_lines >= 2 * R
    orders = [wt.order(j) for j in range(nc)]   # the MATMULs of each N chunk: the tiles that run
    Q = sum(map(len, orders))                    # the MATMULs of one M tile
    n_w = 0
    prog = []
    acc_double = 2 * mt <= spec.acc_lines   # N chunks alternate between two accumulator regions
    chunk_no = 0
    pending = []                            # the previous chunk's LOADQ and STORE, issued after STORE_LAG MATMULs
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
        nxt = a_loads(t + 1) if double and t + 1 < T else []
        q = sent = 0
        loaded = set()  # dense K chunks of cur loaded so far
        for j, order in enumerate(orders):
            w_next = []
            if preload and t == 0 and j + 1 < nc:
                w_next = [wt.load(p, j + 1, i, wt.home(p, j + 1, i)) for p, i in orders[j + 1]]
            w_sent = 0
            acc = (chunk_no % 2) * mt if acc_double else 0
            chunk_no += 1
            for k, (p, i) in enumerate(order):
                if cur and not conv and i not in loaded:
                    prog.append(a_chunk(t, i))  # K chunk i just before its first MATMUL
                    loaded.add(i)
                if preload:
                    w_line = wt.home(p, j, i)
                    if t == 0 and j == 0:
                        prog.append(wt.load(p, j, i, w_line))
                else:
                    w_line = (n_w % 2) * R if w_alt else 0
                    n_w += 1
                    prog.append(wt.load(p, j, i, w_line))
                prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(k > 0), shift=points[p][1], m=rows,
                                                     a=base + i * mt, w=w_line, acc=acc)))
                q += 1
                upto = -(-(k + 1) * len(w_next) // len(order))
                prog += w_next[w_sent:upto]
                w_sent = upto
                if k + 1 == STORE_LAG:
                    prog += pending
                    pending = []
                if not (pending and j == 0):
                    upto = -(-q * len(nxt) // Q)
                    prog += nxt[sent:upto]
                    sent = upto
            prog += pending
            pending = [Instr(Opcode.LOADQ, dict(**loadq_clamp(layer), dram=q_addr + j * spec.loadq_bytes)),
                       Instr(Opcode.STORE, dict(relu=int(layer.relu), unsigned=int(not out_t.signed),
                                                bits=out_t.bits, lines=rows, acc=acc,
                                                elems=min(C, N - j * C), dram=dst.addr + m0 * N + j * C,
                                                stride=N))]
            if not acc_double:
                prog += pending
                pending = []
    prog += pending
    prog.append(Instr(Opcode.FENCE))
    prog.append(Instr(Opcode.HALT))
    return step(prog)


def _gather_conv(layer: Conv2D, src: Region, m0, rows, mt, kc, R, unsigned_in, dst: Region, a0: int = 0,
                 chunks: tuple | None = None):
    """im2col by DMA: zero-fill the A lines (from line *a0*) the gathers leave (in part) unwritten, then one
    strided load per (output row run, kernel tap, chunk piece). With *chunks* ``(i0, i1)`` only K chunks ``i0 <= i < i1`` are gathered, chunk
    ``i`` into lines ``a0 + (i - i0) * mt + ...`` (a K group of the K-split schedule)."""
    i0, i1 = chunks if chunks is not None else (0, kc)
    _, H, W, Cin = src.shape
    _, OH, OW, _ = dst.shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    pt, _, pl, _ = layer.padding
    prog = []
    m = m0
    while m < m0 + rows:
        b, rem = divmod(m, OH * OW)
        oy, ox0 = divmod(rem, OW)
        run = min(OW - ox0, m0 + rows - m)  # output pixels of this output row inside the tile
        for ki in range(kh):
            iy = oy * sh + ki - pt
            if not 0 <= iy < H:
                continue
            for kj in range(kw):
                # ox in [ox0, ox0 + run) with 0 <= ox*sw + kj - pl < W
                lo = max(ox0, -(-(pl - kj) // sw))
                hi = min(ox0 + run, (W - 1 - kj + pl) // sw + 1)
                if hi <= lo:
                    continue
                ix = lo * sw + kj - pl
                base = (ki * kw + kj) * Cin
                k = max(base, i0 * R)
                while k < min(base + Cin, i1 * R):
                    i = k // R
                    k_end = min(base + Cin, (i + 1) * R)
                    prog.append(Instr(Opcode.LOAD, dict(
                        target=Target.A, unsigned=int(unsigned_in), lines=hi - lo,
                        spad=a0 + (i - i0) * mt + (m - m0) + (lo - ox0), elems=k_end - k, offset=k - i * R,
                        dram=src.addr + ((b * H + iy) * W + ix) * Cin + (k - base), stride=sw * Cin)))
                    k = k_end
        m += run
    # Zero-fill first, one LOAD per run of lines that a MATMUL reads (the first rows of each chunk's mt) and
    # the gathers do not write in full; runs fewer than _FETCH lines apart are one LOAD of at most `rows` lines.
    written = [0] * ((i1 - i0) * mt)
    for ins in prog:
        for line in range(ins.spad - a0, ins.spad - a0 + ins.lines):
            written[line] += ins.elems
    runs = []                               # [first, end) of each run of lines to clear
    for line, n in enumerate(written):
        if n < R and line % mt < rows:
            if runs and runs[-1][1] == line:
                runs[-1][1] = line + 1
            else:
                runs.append([line, line + 1])
    merged = []
    for first, end in runs:
        if merged and first - merged[-1][1] < _FETCH and end - merged[-1][0] <= rows:
            merged[-1][1] = end
        else:
            merged.append([first, end])
    zero = [Instr(Opcode.LOAD, dict(target=Target.A, zero=1, lines=end - first, spad=a0 + first, elems=0))
            for first, end in merged]
    return zero + prog


#: One instruction's fetch and decode (cycles), as the compiler's schedule estimate has it.
_FETCH = 8


def _ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, wt, conv, unsigned_in, preload, q_addr,
                    mt2, kg, ng):
    """The K-split schedule (see :func:`ksplit_plan`): for each M tile, N group, point and K group that has a
    weight tile to run (*wt*, a :class:`_WeightTiles`), the group's A loads (the next unit's spread between
    this unit's MATMULs, into the other half of A), then for each N chunk of the group its MATMULs over the
    group's K chunks; after the last unit of an N group each chunk's LOADQ and STORE. Every N chunk sees its
    MATMULs in the plain schedule's order (points, then K chunks; the first overwrites), so its partial sums are
    the ones the accumulator proof covers."""
    R, C = spec.rows, spec.cols
    points = layer.points
    out_t = layer.out_type
    T2, G, H = math.ceil(M / mt2), math.ceil(nc / ng), math.ceil(kc / kg)
    size = mt2 * kg

    def chunks(g):
        return range(g * ng, min(nc, (g + 1) * ng))

    def ks(h):
        return range(h * kg, min(kc, (h + 1) * kg))

    units = [(t, g, p, h) for t in range(T2) for g in range(G) for p in range(wt.P) for h in range(H)
             if wt.keep[p, chunks(g).start:chunks(g).stop, ks(h).start:ks(h).stop].any()]

    def a_loads(u):
        t, g, p, h = units[u]
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        i0, i1 = ks(h).start, ks(h).stop
        if conv:
            return _gather_conv(layer, src, m0, rows, mt2, kc, R, unsigned_in, dst, base, (i0, i1))
        loads = []
        for i in range(i0, i1):
            if not wt.keep[p, chunks(g).start:chunks(g).stop, i].any():
                continue  # no MATMUL of the unit reads K chunk i
            e = min(R, K - i * R)
            loads.append(Instr(Opcode.LOAD, dict(target=Target.A, zero=int(e < R), unsigned=int(unsigned_in),
                                                 lines=rows, spad=base + (i - i0) * mt2, elems=e, offset=0,
                                                 dram=src.addr + m0 * K + i * R, stride=K)))
        return loads

    w_alt = not preload and spec.w_lines >= 2 * R
    firsts = [wt.first(j) for j in range(nc)]
    n_w = 0
    prog = a_loads(0)
    for u, (t, g, p, h) in enumerate(units):
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        js = chunks(g)
        i0 = ks(h).start
        nxt = a_loads(u + 1) if u + 1 < len(units) else []
        run = [(jl, j, i) for jl, j in enumerate(js) for _, i in wt.order(j, ks(h), range(p, p + 1))]
        q = sent = 0
        for jl, j, i in run:
            if preload:
                w_line = wt.home(p, j, i)
                if t == 0:
                    prog.append(wt.load(p, j, i, w_line))
            else:
                w_line = (n_w % 2) * R if w_alt else 0
                n_w += 1
                prog.append(wt.load(p, j, i, w_line))
            prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(firsts[j] != (p, i)), shift=points[p][1],
                                                 m=rows, a=base + (i - i0) * mt2, w=w_line, acc=jl * mt2)))
            q += 1
            upto = -(-q * len(nxt) // len(run))
            prog += nxt[sent:upto]
            sent = upto
        if u + 1 == len(units) or units[u + 1][:2] != (t, g):   # the N group's last unit
            for jl, j in enumerate(js):
                prog.append(Instr(Opcode.LOADQ, dict(**loadq_clamp(layer), dram=q_addr + j * spec.loadq_bytes)))
                prog.append(Instr(Opcode.STORE, dict(relu=int(layer.relu), unsigned=int(not out_t.signed),
                                                    bits=out_t.bits, lines=rows, acc=jl * mt2,
                                                    elems=min(C, N - j * C), dram=dst.addr + m0 * N + j * C,
                                                    stride=N)))
    prog.append(Instr(Opcode.FENCE))
    prog.append(Instr(Opcode.HALT))
    return prog


class _Busy:
    """The array unit's busy cycles as merged, sorted, closed intervals."""

    def __init__(self):
        self.lo, self.hi = [], []

    def add(self, lo: int, hi: int):
        if self.hi and lo <= self.hi[-1] + 1:
            self.hi[-1] = max(self.hi[-1], hi)
        else:
            self.lo.append(lo)
            self.hi.append(hi)

    def count_idle(self, cycles: np.ndarray) -> int:
        """How many of the sorted *cycles* fall outside every interval."""
        if not len(cycles):
            return 0
        if not self.lo or cycles[0] > self.hi[-1]:
            return len(cycles)
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        k = np.searchsorted(lo, cycles, side="right") - 1
        inside = (k >= 0) & (cycles <= hi[np.maximum(k, 0)])
        return int(len(cycles) - inside.sum())

    def cover(self, lo: int, hi: int) -> str:
        """``"all"``, ``"none"`` or ``"some"``: how much of cycles ``[lo, hi]`` the intervals cover."""
        k = bisect.bisect_right(self.lo, hi) - 1      # the last interval starting at or before hi
        if k < 0 or self.hi[k] < lo:
            return "none"                             # (earlier intervals end before this one starts)
        return "all" if self.lo[k] <= lo and self.hi[k] >= hi else "some"

    def total(self, end: int) -> int:
        return sum(min(h, end) - lo + 1 for lo, h in zip(self.lo, self.hi) if lo <= end)


def _gather(start, n, d, lat, busy: _Busy):
    """(last response cycle, stall cycles, stall cycles while the array unit is idle) of a gather."""
    q = 1 + d
    if MAX_READS * q >= lat + q:
        # Never throttled: accepts every q cycles; an answer lands on an accept cycle iff q divides L.
        end = start + DMA_ISSUE + d + (n - 1) * q + lat
        k, r = divmod(lat, q)
        # Cycles with work: every word's accept cycle and its answer's, but for the answers that land on
        # an accept cycle (all but the last k when q divides L).
        work = n + n - (max(0, n - k) if r == 0 else 0)
        stall = end - start - work
        cover = busy.cover(start + 1, end)
        if stall == 0 or cover == "all":
            return end, stall, 0
        if cover == "none":
            return end, stall, stall
    acc = gather_accepts(start, n, d, lat)
    end = int(acc[-1]) + lat
    work = np.union1d(acc, acc + lat)
    span = end - start
    stall = span - len(work)
    idle = 0
    if stall:
        cyc = np.setdiff1d(np.arange(start + 1, end + 1, dtype=np.int64), work, assume_unique=True)
        idle = busy.count_idle(cyc)
    return end, stall, idle


def program_timeline(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> Timeline:
    """The cycle-exact :class:`Timeline` of *program* (Instrs, ending with HALT) on *cfg*.

    One pass over the program that follows the controller (fetch, decode,
    interlock, execute) and the array unit (queue slot, then per dataflow)
    at once; it is one piece because each instruction's start depends on the
    array unit's state left by the MATMULs before it, and vice versa.
    """
    R, bb = cfg.rows, cfg.bus_bytes
    unit = ARRAY_UNIT_TIMING[cfg.dataflow](cfg.latencies)
    lat = latency
    busy = _Busy()
    idle_mem = 0
    out = []
    q_free = 0              # first cycle the queue slot is free again
    unit_end = -1           # last busy cycle of the array unit so far
    readers = []            # (a, m, w, last cycle it may read A, last cycle it may read W)
    writers = []            # (acc, m, last accumulator write)
    f = first = 0           # the fetch's start (FETCH, then the instruction before's last cycle); ctrl's first
    total = None
    for j, ins in enumerate(program):
        a = ins.args
        op = ins.op
        pa = prog_addr + INSTR_BYTES * j
        wf = words(pa, INSTR_BYTES, bb)
        e, st_f, idle_f = _gather(f, wf, d, lat, busy)
        idle_mem += idle_f
        c = e + DECODE_CYCLES                       # CHECK
        b = {"ctrl": c - first + 1}
        s = {"ctrl": st_f}
        reads, writes = wf, 0
        # Interlocks.
        x = c
        if op == Opcode.MATMUL:
            x = max(c, q_free)
        elif op == Opcode.LOAD:
            lines, spad = a["lines"], a["spad"]
            for ra, rm, rw, a_end, w_end in readers:
                rend = w_end if a["target"] == 1 else a_end
                if rend + INTERLOCK_REGISTER < c or lines == 0:
                    continue
                lo, n = (rw, R) if a["target"] == 1 else (ra, rm)
                if n and spad < lo + n and lo < spad + lines:
                    x = max(x, rend + 1 + INTERLOCK_REGISTER)      # the overlap test is registered
        elif op == Opcode.STORE:
            for wa, wm, wend in writers:
                if a["lines"] and wm and a["acc"] < wa + wm and wa < a["acc"] + a["lines"]:
                    x = max(x, wend + 1 + INTERLOCK_REGISTER)
        elif op in (Opcode.FENCE, Opcode.HALT, Opcode.VEC, Opcode.DIV):
            x = max(c, unit_end + 1)
        if x > c:
            b["wait"] = x - c
        arr = None
        end = x
        if op == Opcode.HALT:
            total = x + 1
        elif op == Opcode.MATMUL:
            m = a["m"]
            t = max(x + QUEUE_SLOT, unit.free)      # queue slot -> the array unit
            q_free = t + 1
            last, a_end, w_end = unit.issue(t, m)
            busy.add(x + 1, last)
            unit_end = max(unit_end, last)
            readers.append((a["a"], m, a["w"], a_end, w_end))
            writers.append((a["acc"], m, last))
            arr = (x + 1, last)
        elif op == Opcode.LOAD:
            s0 = x + 1
            lines, elems = a["lines"], a["elems"]
            if lines == 0:
                end = s0
            elif elems == 0:
                end = s0 + lines
            else:
                nw = sum(words(a["dram"] + i * a["stride"], elems, bb) for i in range(lines))
                end, st_l, idle_l = _gather(s0, nw, d, lat, busy)
                s["load"] = st_l
                idle_mem += idle_l
                reads += nw
            b["load"] = end - x
        elif op == Opcode.VEC:
            # A gather like LOAD's, each line into the accumulator's update pipeline; the last one is written
            # VEC_LINE + VEC_INPUT + ACC_UPDATE after its last word (the controller presents it from the DMA's
            # registered buffer, the accumulator registers it, then updates).
            s0 = x + 1
            end = s0
            if a["lines"] and a["elems"]:
                nw = sum(words(a["dram"] + i * a["stride"], a["elems"], bb) for i in range(a["lines"]))
                end, st_v, idle_v = _gather(s0, nw, d, lat, busy)
                end += VEC_LINE + VEC_INPUT + ACC_UPDATE
                s["vec"] = st_v
                idle_mem += idle_v
                reads += nw
            b["vec"] = end - x
        elif op == Opcode.DIV:
            end = x + 1
            if a["lines"] and a["elems"]:
                end += a["lines"] * div_line(cfg.acc_bits) + VEC_INPUT + ACC_UPDATE
            b["vec"] = end - x
        elif op == Opcode.LOADQ:
            nw = words(a["dram"], cfg.loadq_bytes, bb)
            end, st_q, idle_q = _gather(x + 1, nw, d, lat, busy)    # from LOADQ's state
            end += LOADQ_CHECK
            s["loadq"] = st_q
            idle_mem += idle_q
            reads += nw
            b["loadq"] = end - x
        elif op == Opcode.STORE:
            s0 = x + STORE_START + 1
            end = s0
            if a["lines"]:
                ws_ = [words(a["dram"] + i * a["stride"], a["elems"], bb) for i in range(a["lines"])]
                c_i = x + STORE_START + cfg.latencies.store_pipeline     # line 0 is read in the start cycle
                stall = []                            # a word requested in cycle r is accepted in r + d
                for w in ws_:
                    for g in range(w):
                        r = c_i + 1 + g * (1 + d)
                        stall += range(r, r + d)
                    c_i += max(1, w * (1 + d))
                end = c_i
                writes = sum(ws_)
                s["store"] = writes * d
                idle_mem += busy.count_idle(np.array(stall, dtype=np.int64))
            b["store"] = end - x
        out.append(InstrTiming(j, op.name, f, x, end, b, s, reads, writes, arr))
        if total is not None:
            break
        f, first = end, end + 1
        readers = [r for r in readers if max(r[3], r[4]) >= f]
        writers = [(wa, wm, wend) for wa, wm, wend in writers if wend >= f]
    if total is None:
        total = first
    cnt = {"cycles": total, "bus_reads": 0, "bus_writes": 0, "idle_mem_stall": idle_mem}
    for u in CONTROLLER_UNITS + ("matmul",):
        cnt[f"{u}_busy"] = cnt[f"{u}_stall"] = 0
    for it in out:
        for u, v in it.busy.items():
            cnt[f"{u}_busy"] += v
        for u, v in it.stall.items():
            cnt[f"{u}_stall"] += v
        cnt["bus_reads"] += it.reads
        cnt["bus_writes"] += it.writes
    cnt["matmul_busy"] = busy.total(total - 1)
    return Timeline(out, cnt)



def predict_network(cn, config, memory=None) -> dict:
    """``{layer: counters}`` of every accelerated layer of *cn* by the reference timeline (placed as systolic.sim
    does)."""
    memory = memory or MemoryModel()
    d, lat = memory.base_delay(config.bus_bytes), memory.latency
    prog_addr = program_address(cn.spec.dram_bytes)
    return {s.layer: program_timeline(config, s.program, prog_addr, d, lat).counters
            for s in cn.steps if isinstance(s, AccelStep)}


def same_compiled(a, b) -> bool:
    """Whether compiled networks *a* and *b* are the same: steps, programs (opcode and every field of every
    instruction), accounting, regions and DRAM image."""
    if len(a.steps) != len(b.steps) or a.regions != b.regions or not np.array_equal(a.image, b.image):
        return False
    for s, t in zip(a.steps, b.steps):
        if type(s) is not type(t) or s.layer != t.layer:
            return False
        if isinstance(s, HostStep):
            if s.reason != t.reason:
                return False
            continue
        if (s.macs, s.gemm, s.array_macs, s.weight_bytes, s.one_point_array_macs, s.one_point_weight_bytes) != (
                t.macs, t.gemm, t.array_macs, t.weight_bytes, t.one_point_array_macs, t.one_point_weight_bytes):
            return False
        if len(s.program) != len(t.program):
            return False
        if any(i.op != j.op or i.args != j.args for i, j in zip(s.program, t.program)):
            return False
    return True
