"""Layers whose weight points are sparse by tiles, and checks of their programs counted from the weights alone.

Shared by tests/compiler/test_zero_tiles.py (NumPy executor) and tests/sim/test_zero_tiles_rtl.py (RTL). The
expected MATMULs are derived here with Python loops over the layer's weights (docs/isa.md, "Zero weight
tiles"), never from the compiler: per N chunk ``j``, the ``(point, K chunk)`` tiles with a non-zero element in
point-then-K order, the first overwriting, or ``(0, 0)`` alone when every tile of the chunk is zero.
"""

import numpy as np

from systolic.compiler import Opcode, Target
from systolic.golden import Conv2D, Dense, QType, QuantizedNetwork

IN_T = QType(8, True, 4)
W_T = QType(8, True, 5)


def dsconv_points(w2: np.ndarray, block: int, shifts: list):
    """DSConv as points: *w2* ``(K, N)`` with one shift per block of *block* consecutive K elements (block ``b``
    has ``shifts[b]``). One point per distinct shift, each zero outside its blocks; the shift-0 point (maybe all
    zero) is ``weight``. Returns ``(weight, extra_weights, extra_shifts)`` as ``(K, N)`` arrays."""
    K = w2.shape[0]
    per_k = np.repeat(np.asarray(shifts), block)[:K]
    assert per_k.size == K
    pts = {s: np.where((per_k == s)[:, None], w2, 0) for s in sorted(set(shifts) | {0})}
    extra = [s for s in pts if s != 0]
    return pts[0], np.stack([pts[s] for s in extra]) if extra else None, extra or None


def dsconv_conv(rng, hw, cin, cout, k, block, shift_choices, first_shift, zero_channels=()):
    """A Conv2D with DSConv points (blocks of *block* K elements of the im2col K axis, (kh, kw, c_in) order);
    block 0 gets *first_shift*, the others a random choice; output channels *zero_channels* are zero in every
    point."""
    K = k * k * cin
    w2 = rng.integers(-8, 8, (K, cout))
    w2[w2 == 0] = 1                      # no tile is zero by chance: only the ones the case makes zero
    w2[:, list(zero_channels)] = 0
    nb = -(-K // block)
    shifts = [first_shift] + [int(s) for s in rng.choice(shift_choices, nb - 1)]
    w, e, s = dsconv_points(w2, block, shifts)
    extra = {} if e is None else dict(extra_weights=e.reshape(-1, k, k, cin, cout), extra_shifts=s)
    layer = Conv2D(name="conv", inputs=("input",), weight=w.reshape(k, k, cin, cout), w_type=W_T,
                   out_type=QType(8, True, 0), bias=rng.integers(-300, 300, cout), relu=False,
                   stride=1, padding=1, **extra)
    return QuantizedNetwork(IN_T, (hw, hw, cin), [layer])


def dsconv_dense(rng, K, N, block, shift_choices, first_shift):
    """A Dense layer with DSConv points (see :func:`dsconv_conv`)."""
    w2 = rng.integers(-8, 8, (K, N))
    w2[w2 == 0] = 1
    nb = -(-K // block)
    shifts = [first_shift] + [int(s) for s in rng.choice(shift_choices, nb - 1)]
    w, e, s = dsconv_points(w2, block, shifts)
    extra = {} if e is None else dict(extra_weights=e, extra_shifts=s)
    layer = Dense(name="fc", inputs=("input",), weight=w, w_type=W_T, out_type=QType(8, True, 0),
                  bias=rng.integers(-300, 300, N), relu=True, **extra)
    return QuantizedNetwork(IN_T, (K,), [layer])


def multipoint_dense(rng, K, N, second_channels, third_zero_rows=0, zero_channels=(), zero_rows=()):
    """Multipoint Dense: a dense ``weight``; a second point (shift 4) only on output channels *second_channels*;
    a third point (shift 7) on every channel but zero in its first *third_zero_rows* K rows; output channels
    *zero_channels* and K rows *zero_rows* zero in every point."""
    def dense_values(shape):
        v = rng.integers(-8, 8, shape)
        v[v == 0] = -1
        return v

    w = dense_values((K, N))
    e1 = np.zeros((K, N), dtype=np.int64)
    e1[:, list(second_channels)] = dense_values((K, len(second_channels)))
    e2 = dense_values((K, N))
    e2[:third_zero_rows] = 0
    for a in (w, e1, e2):
        a[:, list(zero_channels)] = 0
        a[list(zero_rows)] = 0
    layer = Dense(name="fc", inputs=("input",), weight=w, w_type=W_T, out_type=QType(8, True, 0),
                  bias=rng.integers(-300, 300, N), relu=False, extra_weights=np.stack([e1, e2]),
                  extra_shifts=[4, 7])
    return QuantizedNetwork(IN_T, (K,), [layer])


def one_point_like(net: QuantizedNetwork, rng) -> QuantizedNetwork:
    """The network with its layer replaced by a one-point layer of the same shape and no zero weight."""
    (layer,) = net.layers
    w = rng.integers(1, 8, layer.weight.shape)
    kw = {} if isinstance(layer, Dense) else dict(stride=layer.stride, padding=layer.padding)
    one = type(layer)(name=layer.name, inputs=layer.inputs, weight=w, w_type=layer.w_type,
                      out_type=layer.out_type, bias=layer.bias, relu=layer.relu, **kw)
    return QuantizedNetwork(net.input_type, net.input_shape, [one])


def expected_sequences(layer, rows: int, cols: int) -> list:
    """Per N chunk: the ``(accumulate, shift)`` of its MATMULs, from the weights."""
    ws = [(np.asarray(e).reshape(-1, layer.out_channels), s) for e, s in layer.points]
    K, N = ws[0][0].shape
    out = []
    for j0 in range(0, N, cols):
        run = [s for w, s in ws for i0 in range(0, K, rows) if np.any(w[i0:i0 + rows, j0:j0 + cols])]
        run = run or [0]
        out.append([(int(n > 0), s) for n, s in enumerate(run)])
    return out


def nonzero_tiles(layer, rows: int, cols: int) -> int:
    """Tiles ``(point, N chunk, K chunk)`` with a non-zero element."""
    ws = [np.asarray(e).reshape(-1, layer.out_channels) for e, _ in layer.points]
    K, N = ws[0].shape
    return sum(bool(np.any(w[i:i + rows, j:j + cols])) for w in ws for i in range(0, K, rows)
               for j in range(0, N, cols))


def useful_macs(layer, rows: int, cols: int, M: int) -> int:
    """M times the unpadded size of every non-zero tile."""
    ws = [np.asarray(e).reshape(-1, layer.out_channels) for e, _ in layer.points]
    K, N = ws[0].shape
    return M * sum(w[i:i + rows, j:j + cols].size for w in ws for i in range(0, K, rows)
                   for j in range(0, N, cols) if np.any(w[i:i + rows, j:j + cols]))


def check_program(step, layer, dst, spec):
    """The MATMULs of every STORE's accumulator region are the expected sequence of its N chunk; returns the
    number of M tiles (STOREs per N chunk)."""
    R, C = spec.rows, spec.cols
    want = expected_sequences(layer, R, C)
    N = layer.out_channels
    regions, stores = {}, [0] * len(want)
    for ins in step.program:
        if ins.op == Opcode.MATMUL:
            regions.setdefault(ins.acc, []).append((ins.accumulate, ins.shift))
        elif ins.op == Opcode.STORE:
            j = (ins.dram - dst.addr) % N // C
            assert regions.pop(ins.acc) == want[j], f"N chunk {j}"
            stores[j] += 1
    assert not regions
    assert len(set(stores)) == 1
    return stores[0]


def used_k_chunks(layer, rows: int) -> set:
    """K chunks with a non-zero weight in some point."""
    ws = [np.asarray(e).reshape(-1, layer.out_channels) for e, _ in layer.points]
    return {i0 // rows for i0 in range(0, ws[0].shape[0], rows) if any(np.any(w[i0:i0 + rows]) for w in ws)}


def w_load_bytes(program) -> int:
    return sum(i.lines * i.elems for i in program if i.op == Opcode.LOAD and i.target == Target.W)


def matmuls(program) -> list:
    return [i for i in program if i.op == Opcode.MATMUL]
