"""Random requantized-GEMM cases that exercise rounding ties and saturation."""

from __future__ import annotations

import numpy as np

from ...arch.config import AcceleratorConfig

__all__ = ["random_gemm_cases", "tie_and_saturation_counts"]


def random_gemm_cases(cfg: AcceleratorConfig, rng: np.random.Generator, n_cases: int = 4) -> list[dict]:
    """Up to 4 random GEMMs (shapes relative to the array, so tiling happens).

    Bias and shift are chosen so results straddle the output range: row 0 of
    channels 0 and 1 hits an exact rounding tie (``q`` even and odd), channel
    2 saturates, and with a per-channel shift the last channel shifts left.
    Cases alternate ReLU off / on.
    """
    (alo, ahi), (wlo, whi) = cfg.in_range, cfg.w_range
    R, C = cfg.rows, cfg.cols
    shapes = [(R + 1, 2 * R + 1, max(C + 1, 3)), (3, R, max(C, 3)), (1, 1, 3),
              (2 * R, 3, max(C - 1, 3))]
    cases = []
    for n in range(n_cases):
        M, K, N = shapes[n % len(shapes)]
        a = rng.integers(alo, ahi + 1, (M, K))
        w = rng.integers(wlo, whi + 1, (K, N))
        acc = a @ w
        span = max(int(np.abs(acc).max()), 4)
        k = max(span.bit_length() - cfg.out_bits + 1, 2)
        k = min(k, cfg.shift_range[1])
        if cfg.per_channel_shift:
            shift = rng.integers(k - 2, k + 2, N)
            shift[0], shift[1] = k, k
            shift[-1] = -1  # left shift: saturates or stays exact
        else:
            shift = np.full(N, k)
        bias = rng.integers(-span // 2, span // 2 + 1, N)
        for ch, q in ((0, 2), (1, -3)):
            bias[ch] = (2 * q + 1) * (1 << (k - 1)) - acc[0, ch]
        bias[2] = ((cfg.out_range[1] + 3) << max(int(shift[2]), 0)) - acc[0, 2]
        cases.append({"a": a, "w": w, "bias": bias, "shift": shift, "relu": n % 2 == 1})
    return cases


def tie_and_saturation_counts(cfg: AcceleratorConfig, case: dict) -> tuple[int, int]:
    """How many outputs of *case* are exact rounding ties, and how many saturate."""
    olo, ohi = cfg.out_range
    x = np.asarray(case["a"]) @ np.asarray(case["w"]) + np.asarray(case["bias"])
    k = np.broadcast_to(np.asarray(case["shift"]), x.shape)
    ties = int(np.sum((k > 0) & ((x & ((1 << np.maximum(k, 1)) - 1)) == (1 << np.maximum(k - 1, 0)))))
    unsat = np.where(k >= 0, x >> np.maximum(k, 0), x << np.maximum(-k, 0))
    if case.get("relu"):
        unsat = np.maximum(unsat, 0)
    saturated = int(np.sum((unsat > ohi + 1) | (unsat < olo - 1)))
    return ties, saturated
