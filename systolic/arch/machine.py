"""What the compiler and the executors need to know about an accelerator."""

from __future__ import annotations

from dataclasses import dataclass

from ..golden.pe_weights import PE_KINDS
from ..golden.qtypes import check_rounding
from .isa import loadq_bytes
from .latency import Latencies

__all__ = ["DATAFLOWS", "MachineSpec", "SizeDerived"]

#: The array dataflows: weight-stationary, output-stationary (docs/architecture.md).
DATAFLOWS = ("ws", "os")


class SizeDerived:
    """What follows from ``rows`` and ``cols`` alone: one definition for :class:`MachineSpec` and
    :class:`~systolic.arch.config.AcceleratorConfig`."""

    @property
    def latencies(self) -> Latencies:
        """The units' latencies of this array size (:class:`~systolic.arch.latency.Latencies`)."""
        return Latencies(self.rows, self.cols)

    @property
    def loadq_bytes(self) -> int:
        """Bytes of one LOADQ parameter block: an int32 bias and an int8 shift per requantizer lane
        (:func:`systolic.arch.isa.loadq_bytes`)."""
        return loadq_bytes(self.cols)


@dataclass(frozen=True)
class MachineSpec(SizeDerived):
    """Sizes and widths of one accelerator instance, derived from its config.

    Scratchpad A holds ``a_lines`` lines of ``rows`` activations (one K-chunk
    of one GEMM row each); scratchpad W holds ``w_lines`` lines of ``cols``
    weights (one K row of an N-chunk); the accumulator buffer holds
    ``acc_lines`` lines of ``cols`` signed ``acc_bits`` values. Activations,
    weights and outputs travel as one byte per element; with ``pe="shift"``
    a weight byte holds the shift weight word (:mod:`systolic.golden.pe_weights`).
    ``dataflow`` only guides the compiler's tiling (a program runs on either
    dataflow with the same results).
    """

    rows: int
    cols: int
    a_lines: int
    w_lines: int
    acc_lines: int
    in_bits: int = 8
    w_bits: int = 8
    out_bits: int = 8
    acc_bits: int = 32
    rounding: str = "half_even"
    dram_bytes: int = 1 << 24
    pe: str = "multiplier"
    dataflow: str = "ws"

    def __post_init__(self):
        check_rounding(self.rounding)
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not {self.dataflow!r}")
        if self.pe not in PE_KINDS:
            raise ValueError(f"pe must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        for name in ("rows", "cols", "a_lines", "w_lines", "acc_lines", "dram_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, not {v!r}")
        if self.w_lines < self.rows:
            raise ValueError(f"w_lines ({self.w_lines}) must hold at least one {self.rows}-line weight tile")
        for name in ("in_bits", "w_bits", "out_bits"):
            v = getattr(self, name)
            if not 2 <= v <= 8:
                raise ValueError(f"{name} must be between 2 and 8 (one-byte containers), not {v}")

    @classmethod
    def from_config(cls, cfg, dram_bytes: int = 1 << 24) -> "MachineSpec":
        """From an :class:`~systolic.arch.config.AcceleratorConfig`."""
        return cls(
            rows=cfg.rows, cols=cfg.cols,
            a_lines=cfg.a_lines, w_lines=cfg.w_lines, acc_lines=cfg.acc_lines,
            in_bits=cfg.in_bits, w_bits=cfg.w_bits, out_bits=cfg.out_bits, acc_bits=cfg.acc_bits,
            rounding=cfg.rounding, dram_bytes=dram_bytes, pe=cfg.pe, dataflow=cfg.dataflow,
        )
