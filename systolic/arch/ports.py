"""Stream payload layouts of the core, described in plain Python.

The Amaranth layouts (:func:`systolic.hw.array.array_layouts`,
:func:`systolic.hw.requantizer.requant_layouts`) and the testbench packers
(:mod:`systolic.sim.core`) are both built from :func:`payload_fields`, so the
bit positions are defined once. Fields are packed LSB first in the listed order;
a field of ``lanes`` lanes puts lane 0 in its lowest bits.

No amaranth import here: the simulator side uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import AcceleratorConfig

__all__ = ["Field", "INPUT_STREAMS", "streams", "payload_fields", "payload_width", "pack", "unpack"]


@dataclass(frozen=True)
class Field:
    name: str
    lanes: int  # 0 for a scalar field
    bits: int
    signed: bool


def _ws_inputs(cfg: AcceleratorConfig, a: Field) -> dict:
    C = cfg.cols
    return {"i": [a, Field("psum", C, cfg.acc_bits, True), Field("swap", 0, 1, False)],
            "w": [Field("w", C, cfg.w_bits, cfg.w_signed)]}


def _os_inputs(cfg: AcceleratorConfig, a: Field) -> dict:
    return {"i": [a, Field("w", cfg.cols, cfg.w_bits, cfg.w_signed), Field("last", 0, 1, False)]}


#: Dataflow -> the core's input streams and their fields (weight-stationary loads weights on their own
#: stream ``w``; output-stationary streams them with the activations).
INPUT_STREAMS = {"ws": _ws_inputs, "os": _os_inputs}


def _streams(cfg: AcceleratorConfig) -> dict:
    a = Field("a", cfg.rows, cfg.in_bits, cfg.in_signed)
    out = dict(INPUT_STREAMS[cfg.dataflow](cfg, a))
    out["o"] = [Field("acc", cfg.cols, cfg.acc_bits, True), Field("y", cfg.cols, cfg.out_bits, cfg.out_signed)]
    return out


def streams(cfg: AcceleratorConfig) -> tuple[str, ...]:
    """The streams of ``GemmCore`` for *cfg*'s dataflow: ``("i", "w", "o")`` or ``("i", "o")``."""
    return tuple(_streams(cfg))


def payload_fields(cfg: AcceleratorConfig, port: str) -> list[Field]:
    """Fields of the payload of stream *port* of ``GemmCore``.

    Ports: ``"i"`` (activations in), ``"w"`` (weight rows in, WS only) and
    ``"o"`` (results out).
    """
    fields = _streams(cfg)
    if port not in fields:
        raise ValueError(f"port must be one of i, w (ws only), o, not {port!r}")
    return fields[port]


def payload_width(cfg: AcceleratorConfig, port: str) -> int:
    return sum(f.bits * max(f.lanes, 1) for f in payload_fields(cfg, port))


def pack(cfg: AcceleratorConfig, port: str, **values) -> int:
    """Pack field values (ints or sequences of ints) into one payload integer."""
    word, pos = 0, 0
    for f in payload_fields(cfg, port):
        v = values.get(f.name, 0)
        mask = (1 << f.bits) - 1
        if f.lanes:
            v = np.broadcast_to(np.asarray(v, dtype=np.int64), (f.lanes,))
            for lane in range(f.lanes):
                word |= (int(v[lane]) & mask) << (pos + lane * f.bits)
            pos += f.lanes * f.bits
        else:
            word |= (int(v) & mask) << pos
            pos += f.bits
    return word


def unpack(cfg: AcceleratorConfig, port: str, word: int) -> dict:
    """Inverse of :func:`pack`: lanes as ``int64`` arrays, scalars as ints."""
    out, pos = {}, 0
    for f in payload_fields(cfg, port):
        mask = (1 << f.bits) - 1

        def conv(x, f=f):
            if f.signed and x >> (f.bits - 1):
                x -= 1 << f.bits
            return x

        if f.lanes:
            out[f.name] = np.array(
                [conv((word >> (pos + lane * f.bits)) & mask) for lane in range(f.lanes)],
                dtype=np.int64)
            pos += f.lanes * f.bits
        else:
            out[f.name] = conv((word >> pos) & mask)
            pos += f.bits
    return out
