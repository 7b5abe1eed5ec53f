"""Simulator-independent GEMM driver for ``GemmCore``.

Two pieces, both plain Python (no amaranth, no cocotb), shared by the fast
``amaranth.sim`` tests and the cocotb testbench:

- :func:`gemm_schedule`: tiles ``A @ W`` over the array and turns it into
  *passes* (weight rows, operand vectors, number of result vectors). It is a
  generator: it yields a :class:`Pass`, receives the pass's result vectors,
  and finally returns the requantized matrix (``StopIteration.value``).
- :class:`PassDriver`: the cycle-level valid/ready behaviour of a testbench
  for one pass, with random idle cycles on the inputs and random
  back-pressure on the output. A backend calls :meth:`PassDriver.drive`
  before a clock edge, applies the values, then :meth:`PassDriver.observe`
  with the settled handshake signals.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ...golden import MAX_SHIFT, QType, check_acc_range
from ...golden.pe_weights import weight_words
from ...golden.primitives import as_int_array
from ...arch.config import AcceleratorConfig
from ...arch.ports import pack, unpack

__all__ = ["Pass", "PASSES", "gemm_schedule", "PassDriver", "check_gemm_args", "golden_gemm", "GemmStats"]


@dataclass
class Pass:
    """One sequence of transfers whose results the next pass may depend on."""

    w_words: list[int]
    i_words: list[int]
    n_out: int
    bias: np.ndarray
    shift: np.ndarray
    relu: bool

    def bias_word(self, cfg: AcceleratorConfig) -> int:
        return _pack_lanes(self.bias, cfg.acc_bits)

    def shift_word(self, cfg: AcceleratorConfig) -> int:
        return _pack_lanes(self.shift, cfg.shift_bits)


@dataclass
class GemmStats:
    """Counts collected while running a GEMM (filled by the backends)."""

    cycles: int = 0
    passes: int = 0
    outputs: int = 0
    extra: dict = field(default_factory=dict)


def _pack_lanes(values, bits) -> int:
    word, mask = 0, (1 << bits) - 1
    for lane, v in enumerate(np.asarray(values).ravel()):
        word |= (int(v) & mask) << (lane * bits)
    return word


def check_gemm_args(cfg: AcceleratorConfig, a, w, bias=None, shift=0):
    """Validate and normalize GEMM operands; returns ``(a, w, bias, shift)`` as int64 arrays.

    ``bias`` becomes an ``(N,)`` array, ``shift`` an ``(N,)`` array (a scalar
    is broadcast; a per-tensor config refuses differing shifts).
    """
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {cfg!r}")
    a = as_int_array(a, "a")
    w = as_int_array(w, "w")
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0] or 0 in a.shape + w.shape:
        raise ValueError(f"a and w must be non-empty (M, K) and (K, N) matrices, not {a.shape} and {w.shape}")
    n = w.shape[1]
    QType(cfg.in_bits, cfg.in_signed, 0).check(a, "a")
    QType(cfg.w_bits, cfg.w_signed, 0).check(w, "w")
    bias = np.zeros(n, np.int64) if bias is None else as_int_array(bias, "bias")
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), not {bias.shape}")
    lo, hi = cfg.acc_range
    if bias.size and (int(bias.min()) < lo or int(bias.max()) > hi):
        raise ValueError(f"bias must lie in the accumulator range [{lo}, {hi}]")
    shift = as_int_array(shift, "shift")
    if shift.ndim == 0:
        shift = np.full(n, int(shift), np.int64)
    if shift.shape != (n,):
        raise ValueError(f"shift must be a scalar or have shape ({n},), not {shift.shape}")
    slo, shi = cfg.shift_range
    slo, shi = max(slo, -MAX_SHIFT), min(shi, MAX_SHIFT)  # also the golden model's range
    if int(shift.min()) < slo or int(shift.max()) > shi:
        raise ValueError(f"shift must be between {slo} and {shi} (shift_bits={cfg.shift_bits}), "
                         f"not {int(shift.min()) if int(shift.min()) < slo else int(shift.max())}")
    if not cfg.per_channel_shift and np.any(shift != shift[0]):
        raise ValueError("shift must be one value for a per-tensor config (per_channel_shift=False)")
    acc = a @ w
    # The array wraps at acc_bits; the result is still exact when the final sums fit.
    check_acc_range(int(acc.min()), int(acc.max()), cfg.acc_bits, "gemm")
    return a, w, bias, shift


def golden_gemm(cfg: AcceleratorConfig, a, w, bias=None, shift=0, relu=False) -> np.ndarray:
    """The specification: ``golden.requantize(golden.matmul(a, w), ...)`` for *cfg*."""
    from ...golden import matmul, requantize

    a, w, bias, shift = check_gemm_args(cfg, a, w, bias, shift)
    return requantize(matmul(a, w), bias, shift, QType(cfg.out_bits, cfg.out_signed, 0),
                      relu=relu, rounding=cfg.rounding)


def _blocks(total, size):
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def _ws_passes(cfg, a, w, n0, n1, b, s, relu, out):
    """Weight-stationary passes of one block of ``cols`` channels: per block of ``rows`` reduction steps,
    the weight tile and all M rows of ``a``; partial sums of the previous block enter through ``psum``."""
    M, K = a.shape
    R, C = cfg.rows, cfg.cols
    nb = n1 - n0
    psum = np.zeros((M, C), np.int64)
    kblocks = _blocks(K, R)
    for j, (k0, k1) in enumerate(kblocks):
        wt = np.zeros((R, C), np.int64)
        wt[: k1 - k0, :nb] = w[k0:k1, n0:n1]
        w_words = [pack(cfg, "w", w=wt[r]) for r in range(R)]
        i_words = []
        for mm in range(M):
            av = np.zeros(R, np.int64)
            av[: k1 - k0] = a[mm, k0:k1]
            i_words.append(pack(cfg, "i", a=av, psum=psum[mm], swap=int(mm == 0)))
        outs = yield Pass(w_words, i_words, M, b, s, relu)
        res = [unpack(cfg, "o", o) for o in outs]
        psum = np.array([r["acc"] for r in res], np.int64)
        if j == len(kblocks) - 1:
            out[:, n0:n1] = np.array([r["y"] for r in res], np.int64)[:, :nb]


def _os_passes(cfg, a, w, n0, n1, b, s, relu, out):
    """Output-stationary passes of one block of ``cols`` channels: per block of ``rows`` output rows, the K
    reduction steps; the tile drains bottom row first."""
    M, K = a.shape
    R, C = cfg.rows, cfg.cols
    nb = n1 - n0
    for m0, m1 in _blocks(M, R):
        i_words = []
        for k in range(K):
            av = np.zeros(R, np.int64)
            av[: m1 - m0] = a[m0:m1, k]
            wv = np.zeros(C, np.int64)
            wv[:nb] = w[k, n0:n1]
            i_words.append(pack(cfg, "i", a=av, w=wv, last=int(k == K - 1)))
        outs = yield Pass([], i_words, R, b, s, relu)
        ys = np.array([unpack(cfg, "o", o)["y"] for o in outs], np.int64)[::-1]
        out[m0:m1, n0:n1] = ys[: m1 - m0, :nb]


#: Dataflow -> the passes of one block of output channels.
PASSES = {"ws": _ws_passes, "os": _os_passes}


def gemm_schedule(cfg: AcceleratorConfig, a, w, bias=None, shift=0, relu=False):
    """Generator of :class:`Pass` es computing ``requantize(a @ w)`` on ``GemmCore``.

    For each block of ``cols`` output channels, the dataflow's passes
    (:data:`PASSES`): weight-stationary, per block of ``rows`` reduction
    steps the weight tile and all M rows of ``a``, partial sums through the
    ``psum`` lanes, only the last block's ``y`` kept; output-stationary, per
    block of ``rows`` output rows the K reduction steps, drained bottom row
    first. The weights go in as the words the PE stores (``config.pe``:
    :func:`systolic.golden.pe_weights.weight_words`; a shift PE refuses a
    weight that is not 0 or +-2**e).
    """
    a, w, bias, shift = check_gemm_args(cfg, a, w, bias, shift)
    words = weight_words(w, cfg.w_bits, cfg.pe)
    M = a.shape[0]
    N = w.shape[1]
    C = cfg.cols
    out = np.zeros((M, N), np.int64)
    for n0, n1 in _blocks(N, C):
        nb = n1 - n0
        b = np.zeros(C, np.int64)
        b[:nb] = bias[n0:n1]
        if cfg.per_channel_shift:
            s = np.zeros(C, np.int64)
            s[:nb] = shift[n0:n1]
        else:
            s = np.array([shift[0]], np.int64)
        yield from PASSES[cfg.dataflow](cfg, a, words, n0, n1, b, s, bool(relu), out)
    return out


class PassDriver:
    """Cycle-level stream behaviour of a testbench for one :class:`Pass`.

    Parameters
    ----------
    p : Pass
    rng : random.Random
    idle : float
        Probability that an input stream with data left stays idle a cycle.
    stall : float
        Probability that the output is not ready in a cycle.
    max_cycles : int
        A pass that takes longer raises ``TimeoutError`` (a hung design).
    """

    def __init__(self, p: Pass, rng: random.Random, idle: float = 0.0, stall: float = 0.0,
                 max_cycles: int = 100_000):
        self.i_q = deque(p.i_words)
        self.w_q = deque(p.w_words)
        self.n_out = p.n_out
        self.outputs: list[int] = []
        self.rng, self.idle, self.stall = rng, idle, stall
        self.i_valid = self.w_valid = False
        self.o_ready = True
        self.cycles = 0
        self.max_cycles = max_cycles

    @property
    def done(self) -> bool:
        return len(self.outputs) >= self.n_out and not self.i_q and not self.w_q

    def drive(self) -> dict:
        """Values to apply for the coming cycle (valid stays high until its transfer)."""
        if not self.i_valid and self.i_q and (self.idle == 0 or self.rng.random() >= self.idle):
            self.i_valid = True
        if not self.w_valid and self.w_q and (self.idle == 0 or self.rng.random() >= self.idle):
            self.w_valid = True
        self.o_ready = self.stall == 0 or self.rng.random() >= self.stall
        return {
            "i_valid": int(self.i_valid), "i_payload": self.i_q[0] if self.i_valid else None,
            "w_valid": int(self.w_valid), "w_payload": self.w_q[0] if self.w_valid else None,
            "o_ready": int(self.o_ready),
        }

    def observe(self, i_ready, w_ready, o_valid, o_payload) -> None:
        """Handshake signals sampled just before the clock edge."""
        if self.i_valid and i_ready:
            self.i_q.popleft()
            self.i_valid = False
        if self.w_valid and w_ready:
            self.w_q.popleft()
            self.w_valid = False
        if o_valid and self.o_ready:
            if len(self.outputs) >= self.n_out:
                raise AssertionError("the core produced more result vectors than expected")
            self.outputs.append(int(o_payload))
        self.cycles += 1
        if self.cycles > self.max_cycles:
            raise TimeoutError(
                f"pass not finished after {self.max_cycles} cycles: {len(self.i_q)} operand and "
                f"{len(self.w_q)} weight transfers left, {len(self.outputs)}/{self.n_out} results")
