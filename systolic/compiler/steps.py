"""What the compiler produces per layer (shared by the GEMM lowering and the vector unit's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..golden.qtypes import QType

__all__ = ["CompileError", "Region", "AccelStep", "HostStep", "loadq_clamp"]


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
    """One accelerated layer: its program and what it costs (docs/isa.md, "Zero weight tiles").

    The ``one_point_*`` figures are those of a plain one-point layer of the same GEMM shape (only a dense
    ``weight``, no zero tile): against them a multipoint or DSConv layer shows its extra cost."""

    layer: str
    program: list
    #: useful multiply-accumulates (all points), without tile padding; zero weight tiles skipped; of a grouped
    #: conv only the taps inside a group (``M*kh*kw*(c_in/G)*c_out`` per point), not the block-diagonal zeros
    macs: int
    gemm: tuple | None     #: (M, K, N); None for a vector-unit layer (pooling, add)
    array_macs: int = 0             #: MACs the array issues: rows x cols x m per MATMUL (the ``macs`` counter)
    weight_bytes: int = 0           #: weight bytes the program loads from DRAM into scratchpad W
    one_point_array_macs: int = 0   #: ``array_macs`` of a one-point layer of this shape
    one_point_weight_bytes: int = 0  #: ``weight_bytes`` of a one-point layer of this shape


@dataclass
class HostStep:
    layer: str
    reason: str


def loadq_clamp(layer) -> dict:
    """The LOADQ fields of *layer*'s upper clamp (``out_max``, e.g. ReLU6), applied by the STOREs after it."""
    out_max = getattr(layer, "out_max", None)
    return {"clamp": int(out_max is not None), "out_max": 0 if out_max is None else int(out_max)}
