"""Lower a golden :class:`QuantizedNetwork` to accelerator programs.

Dense and Conv2D layers (conv as im2col GEMM, gathered by the DMA straight
from the NHWC tensor in DRAM) run on the accelerator; every other layer runs
on the host golden model between programs. ``CompiledNetwork.placement`` and
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
before its STORE. No activation load, and no weight load when all weights fit,
writes lines that a MATMUL issued since the last STORE reads (the hardware's
interlocks would make it wait); results are those of sequential execution
either way.

K-split (weight reuse): when a large K leaves tiles of fewer rows than a weight-stationary MATMUL needs to
stream (``2R + C + 1``), tiles get more rows, K is cut into groups (double-buffered in A across groups, so A
loads then overwrite lines that MATMULs since the last STORE read, after the interlock lets them) and N into
groups with one accumulator region per chunk; A is re-read per N group (``_ksplit_plan``, ``_ksplit_program``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..golden.layers import Conv2D, Dense, Flatten, Layer, bound_gemm
from ..golden.network import QuantizedNetwork
from ..golden.ops import check_acc_range
from ..golden.qtypes import QType
from ..arch.isa import Instr, Opcode, Target
from ..arch.machine import MachineSpec

__all__ = ["compile_network", "CompiledNetwork", "Region", "AccelStep", "HostStep", "CompileError"]


class CompileError(ValueError):
    """The network cannot be compiled for this accelerator; the message says which layer and why."""


@dataclass(frozen=True)
class Region:
    """A tensor in DRAM: ``shape`` one byte per element (two's complement when signed)."""

    name: str
    addr: int
    shape: tuple
    qtype: QType | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class AccelStep:
    layer: str
    program: list
    macs: int       #: useful multiply-accumulates (all points), without tile padding
    gemm: tuple     #: (M, K, N)


@dataclass
class HostStep:
    layer: str
    reason: str


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
    def instructions(self) -> int:
        return sum(len(s.program) for s in self.steps if isinstance(s, AccelStep))

    def check_input(self, x_int) -> np.ndarray:
        """*x_int* as the network's checked input, refused unless it is a batch of :attr:`batch`."""
        x = self.net.check_input(x_int)
        if x.shape[0] != self.batch:
            raise ValueError(f"this program was compiled for batch {self.batch}, not {x.shape[0]}")
        return x


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


def _host_reason(layer: Layer, net: QuantizedNetwork, spec: MachineSpec) -> str | None:
    """Why *layer* cannot run on the accelerator, or None if it can."""
    if not isinstance(layer, (Dense, Conv2D)):
        return f"{layer.kind} layers run on the host"
    if getattr(layer, "groups", 1) != 1:
        # The lowering runs one GEMM over all input channels; a grouped weight would be read as dense.
        return f"grouped convolution (groups={layer.groups}) runs on the host"
    out_max = getattr(layer, "out_max", None)
    if out_max is not None and out_max < layer.out_type.hi:
        # The requantizers have ReLU and saturation but no upper clamp (a clamp at or above the type's
        # maximum is one that saturation already applies).
        return f"the upper clamp out_max={out_max} (ReLU6 / Clip) runs on the host: the requantizers have none"
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


def compile_network(net: QuantizedNetwork, spec: MachineSpec, batch: int = 1) -> CompiledNetwork:
    """Compile *net* for *spec* at a fixed *batch* size."""
    if not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be a positive int, not {batch!r}")
    if net.rounding != spec.rounding:
        raise CompileError(f"the network uses {net.rounding} rounding but the accelerator implements {spec.rounding}")
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
        reason = _host_reason(layer, net, spec)
        if reason is not None:
            steps.append(HostStep(layer.name, reason))
            continue
        in_t = net.in_types(layer)[0]
        _prove(layer, in_t, spec)
        steps.append(_lower_gemm(layer, net, spec, dram, regions[layer.inputs[0]], out, in_t))
    return CompiledNetwork(net, spec, batch, steps, regions, dram.buf)


def _lower_gemm(layer, net, spec, dram, src: Region, dst: Region, in_t: QType) -> AccelStep:
    R, C = spec.rows, spec.cols
    wk = layer.gemm_weight()
    K, N = wk.shape
    kc, nc = math.ceil(K / R), math.ceil(N / C)
    points = layer.points
    P = len(points)
    conv = isinstance(layer, Conv2D)
    M = int(np.prod(dst.shape[:-1]))
    if kc > spec.a_lines:
        raise CompileError(f"layer {layer.name!r}: K={K} needs {kc} scratchpad A lines per row, only {spec.a_lines} exist")
    mt = min(spec.a_lines // kc, spec.acc_lines, M)
    # Double-buffer A when M takes more than one tile: tile t reads lines [(t%2)*kc*mt, (t%2+1)*kc*mt) and
    # tile t+1 is loaded into the other half while tile t's MATMULs run.
    double = mt < M and spec.a_lines // (2 * kc) >= 1
    if double:
        mt = min(spec.a_lines // (2 * kc), spec.acc_lines, M)

    # Weights: tile (p, j, i) is R lines of C bytes, zero padded, contiguous.
    tiles = np.zeros((P, nc, kc, R, C), dtype=np.int64)
    for p, (e, _) in enumerate(points):
        ep = np.zeros((kc * R, nc * C), dtype=np.int64)
        ep[:K, :N] = e.reshape(K, N)
        tiles[p] = ep.reshape(kc, R, nc, C).transpose(2, 0, 1, 3)
    w_addr = dram.alloc(tiles.size, f"layer {layer.name!r} weights")
    dram.put(w_addr, _bytes(tiles.ravel()))
    tile_bytes = R * C

    def tile_addr(p, j, i):
        return w_addr + ((p * nc + j) * kc + i) * tile_bytes

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
    preload = P * nc * kc * R <= spec.w_lines
    ks = _ksplit_plan(spec, M, kc, nc, P, mt, preload)
    if ks is not None:
        prog = _ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, P, conv, unsigned_in, preload,
                               tile_addr, q_addr, *ks)
        return AccelStep(layer.name, prog, macs=M * K * N * P, gemm=(M, K, N))
    T = len(range(0, M, mt))

    def a_base(t):
        return (t % 2) * kc * mt if double else 0

    def a_loads(t):
        """Tile t's activation loads into its A buffer (dense: one strided LOAD per K chunk)."""
        m0, base = t * mt, a_base(t)
        rows = min(mt, M - m0)
        if conv:
            return _gather_conv(layer, src, m0, rows, mt, kc, R, unsigned_in, dst, base)
        loads = []
        for i in range(kc):
            e = min(R, K - i * R)
            loads.append(Instr(Opcode.LOAD, dict(target=Target.A, zero=int(e < R), unsigned=int(unsigned_in),
                                                 lines=rows, spad=base + i * mt, elems=e, offset=0,
                                                 dram=src.addr + m0 * K + i * R, stride=K)))
        return loads

    def w_load(p, j, i, line):
        return Instr(Opcode.LOAD, dict(target=Target.W, lines=R, spad=line, elems=C, dram=tile_addr(p, j, i),
                                       stride=C))

    def w_home(p, j, i):  # the tile's own lines when every tile fits scratchpad W
        return ((p * nc + j) * kc + i) * R

    # Weights: if every tile fits scratchpad W, each is loaded once, in tile 0: N chunk 0 just in time, chunk j+1
    # spread over the MATMULs of chunk j. Otherwise each is loaded before its MATMUL, alternating between two
    # halves when two tiles fit, so that a load does not overwrite the tile the previous MATMUL reads.
    w_alt = not preload and spec.w_lines >= 2 * R
    order = [(p, i) for p in range(P) for i in range(kc)]  # the MATMULs of one N chunk
    Q = nc * len(order)                                     # the MATMULs of one M tile
    n_w = 0
    prog = []
    for t in range(T):
        m0, base = t * mt, a_base(t)
        rows = min(mt, M - m0)
        # Double-buffered, tile t+1 is loaded while tile t runs; a single buffer is loaded when its tile starts.
        cur = a_loads(t) if t == 0 or not double else []
        if conv:
            prog += cur  # zero-fill, then the gathers
        nxt = a_loads(t + 1) if double and t + 1 < T else []
        q = sent = 0
        for j in range(nc):
            w_next = []
            if preload and t == 0 and j + 1 < nc:
                w_next = [w_load(p, j + 1, i, w_home(p, j + 1, i)) for p, i in order]
            w_sent = 0
            for k, (p, i) in enumerate(order):
                if cur and not conv and j == 0 and p == 0:
                    prog.append(cur[i])  # K chunk i just before its first MATMUL
                if preload:
                    w_line = w_home(p, j, i)
                    if t == 0 and j == 0:
                        prog.append(w_load(p, j, i, w_line))
                else:
                    w_line = (n_w % 2) * R if w_alt else 0
                    n_w += 1
                    prog.append(w_load(p, j, i, w_line))
                prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(k > 0), shift=points[p][1], m=rows,
                                                     a=base + i * mt, w=w_line, acc=0)))
                q += 1
                upto = -(-(k + 1) * len(w_next) // len(order))
                prog += w_next[w_sent:upto]
                w_sent = upto
                upto = -(-q * len(nxt) // Q)
                prog += nxt[sent:upto]
                sent = upto
            prog.append(Instr(Opcode.LOADQ, dict(dram=q_addr + j * spec.loadq_bytes)))
            prog.append(Instr(Opcode.STORE, dict(relu=int(layer.relu), unsigned=int(not out_t.signed),
                                                bits=out_t.bits, lines=rows, acc=0,
                                                elems=min(C, N - j * C), dram=dst.addr + m0 * N + j * C,
                                                stride=N)))
    prog.append(Instr(Opcode.FENCE))
    prog.append(Instr(Opcode.HALT))
    return AccelStep(layer.name, prog, macs=M * K * N * P, gemm=(M, K, N))


def _gather_conv(layer: Conv2D, src: Region, m0, rows, mt, kc, R, unsigned_in, dst: Region, a0: int = 0,
                 chunks: tuple | None = None):
    """im2col by DMA: zero-fill the tile's A buffer (from line *a0*), then one strided load per (output row
    run, kernel tap, chunk piece). With *chunks* ``(i0, i1)`` only K chunks ``i0 <= i < i1`` are gathered, chunk
    ``i`` into lines ``a0 + (i - i0) * mt + ...`` (a K group of the K-split schedule)."""
    i0, i1 = chunks if chunks is not None else (0, kc)
    _, H, W, Cin = src.shape
    _, OH, OW, _ = dst.shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    pt, _, pl, _ = layer.padding
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, zero=1, lines=(i1 - i0) * mt, spad=a0, elems=0))]
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
    return prog


#: Rough controller costs (cycles) for choosing a schedule: one instruction's fetch and decode, one A line.
_FETCH, _A_LINE = 8, 2


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


def _ksplit_plan(spec, M, kc, nc, P, mt, preload):
    """``(mt2, kg, ng)`` for the K-split schedule, or None to keep the plain one.

    The plain tiling gives a tile's K chunks all of (half of) scratchpad A, so a large K leaves few rows per
    tile: MATMULs of ``m < 2R + C + 1`` rows, and the weight-stationary array mostly swaps weight tiles. The
    K-split schedule takes ``mt2`` rows per tile, K in groups of ``kg`` chunks (double-buffered in A across
    groups) and N in groups of ``ng`` chunks, each with its own accumulator region of ``mt2`` lines; A is
    re-read once per N group. Chosen when the rough estimate is clearly lower."""
    R, C = spec.rows, spec.cols
    thr = spec.latencies.ws_matmul_period
    half = spec.a_lines // 2
    if min(R, C) < 4 or mt >= thr or mt >= M or half < 1 or kc < 2:
        return None  # (on arrays under 4x4 a weight swap is a few cycles: the plain schedule stays)
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
        if mt2 < max(2 * mt, thr):
            continue  # MATMULs that still cannot stream do not pay for re-reading A
        H = math.ceil(kc / (half // mt2))
        kg = math.ceil(kc / H)
        cost = _schedule_cost(spec, mt2, M - (T2 - 1) * mt2, T2, G, ng, kg, H, P, preload, False)
        if best is None or cost < best[0]:
            best = (cost, mt2, kg, ng)
    if best is None or best[0] >= 0.9 * old:
        return None
    return best[1:]


def _ksplit_program(layer, spec, src, dst, M, K, N, kc, nc, P, conv, unsigned_in, preload, tile_addr, q_addr,
                    mt2, kg, ng):
    """The K-split schedule (see :func:`_ksplit_plan`): for each M tile, N group, point and K group, the
    group's A loads (the next unit's spread between this unit's MATMULs, into the other half of A), then for
    each N chunk of the group its MATMULs over the group's K chunks; after the last unit of an N group each
    chunk's LOADQ and STORE. Every N chunk sees its MATMULs in the plain schedule's order (points, then K
    chunks), so its partial sums are the ones the accumulator proof covers."""
    R, C = spec.rows, spec.cols
    points = layer.points
    out_t = layer.out_type
    T2, G, H = math.ceil(M / mt2), math.ceil(nc / ng), math.ceil(kc / kg)
    size = mt2 * kg
    units = [(t, g, p, h) for t in range(T2) for g in range(G) for p in range(P) for h in range(H)]

    def a_loads(u):
        t, _, _, h = units[u]
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        i0, i1 = h * kg, min(kc, (h + 1) * kg)
        if conv:
            return _gather_conv(layer, src, m0, rows, mt2, kc, R, unsigned_in, dst, base, (i0, i1))
        loads = []
        for i in range(i0, i1):
            e = min(R, K - i * R)
            loads.append(Instr(Opcode.LOAD, dict(target=Target.A, zero=int(e < R), unsigned=int(unsigned_in),
                                                 lines=rows, spad=base + (i - i0) * mt2, elems=e, offset=0,
                                                 dram=src.addr + m0 * K + i * R, stride=K)))
        return loads

    w_alt = not preload and spec.w_lines >= 2 * R
    n_w = 0
    prog = a_loads(0)
    for u, (t, g, p, h) in enumerate(units):
        m0, base = t * mt2, (u % 2) * size
        rows = min(mt2, M - m0)
        js = range(g * ng, min(nc, (g + 1) * ng))
        i0, i1 = h * kg, min(kc, (h + 1) * kg)
        nxt = a_loads(u + 1) if u + 1 < len(units) else []
        Q = len(js) * (i1 - i0)
        q = sent = 0
        for jl, j in enumerate(js):
            for i in range(i0, i1):
                if preload:
                    w_line = ((p * nc + j) * kc + i) * R
                    if t == 0:
                        prog.append(Instr(Opcode.LOAD, dict(target=Target.W, lines=R, spad=w_line, elems=C,
                                                            dram=tile_addr(p, j, i), stride=C)))
                else:
                    w_line = (n_w % 2) * R if w_alt else 0
                    n_w += 1
                    prog.append(Instr(Opcode.LOAD, dict(target=Target.W, lines=R, spad=w_line, elems=C,
                                                        dram=tile_addr(p, j, i), stride=C)))
                prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(p > 0 or i > 0), shift=points[p][1], m=rows,
                                                     a=base + (i - i0) * mt2, w=w_line, acc=jl * mt2)))
                q += 1
                upto = -(-q * len(nxt) // Q)
                prog += nxt[sent:upto]
                sent = upto
        if p == P - 1 and h == H - 1:
            for jl, j in enumerate(js):
                prog.append(Instr(Opcode.LOADQ, dict(dram=q_addr + j * spec.loadq_bytes)))
                prog.append(Instr(Opcode.STORE, dict(relu=int(layer.relu), unsigned=int(not out_t.signed),
                                                    bits=out_t.bits, lines=rows, acc=jl * mt2,
                                                    elems=min(C, N - j * C), dram=dst.addr + m0 * N + j * C,
                                                    stride=N)))
    prog.append(Instr(Opcode.FENCE))
    prog.append(Instr(Opcode.HALT))
    return prog
