"""``GemmCore``: systolic array + shift-requantize units behind valid/ready streams."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import SystolicArray, array_layouts
from ..arch.config import AcceleratorConfig
from .params import require_config
from .requantizer import Requantizer, requant_layouts

__all__ = ["GemmCore"]


class GemmCore(wiring.Component):
    """Top of the datapath: a testbench streams operands in and results out.

    ``i`` (and ``w`` for the weight-stationary dataflow) feed a
    :class:`~systolic.hw.array.SystolicArray`; its aligned accumulator vectors
    go through a :class:`~systolic.hw.requantizer.Requantizer` to ``o``. The
    payload bit layouts are :func:`systolic.arch.ports.payload_fields` (one
    packed vector per stream in the generated Verilog: ``i__payload``,
    ``w__payload``, ``o__payload``).

    Latency (cycles from the transfer that completes a result to its ``o``
    vector, no back-pressure): ``rows + cols - 1 + PRODUCT_STAGES + REQUANT_STAGES`` (:attr:`latency`).
    Throughput: ``rows * cols`` MACs per cycle; one ``o`` vector per cycle
    (weight-stationary: one per ``i`` vector; output-stationary: ``rows`` per
    tile of ``K >= rows`` steps).

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    i : In(stream.Signature(...))
        WS: ``{a[rows], psum[cols], swap}``; OS: ``{a[rows], w[cols], first, last}``.
    w : In(stream.Signature({w[cols]}))
        WS only: weight rows, ``rows`` transfers per weight tile.
    o : Out(stream.Signature({acc[cols], y[cols]}))
        Raw accumulators and requantized outputs.
    bias : In(data.ArrayLayout(signed(acc_bits), cols))
    shift : In(data.ArrayLayout(signed(shift_bits), shift_lanes))
    relu : In(1)
        Requantization parameters; hold them while results are in flight.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        alay = array_layouts(config)
        rlay = requant_layouts(config)
        sig = {
            "i": In(stream.Signature(alay["i"])),
            "o": Out(stream.Signature(rlay["o"])),
            "bias": In(data.ArrayLayout(signed(config.acc_bits), config.cols)),
            "shift": In(data.ArrayLayout(signed(config.shift_bits), config.shift_lanes)),
            "relu": In(1),
        }
        if "w" in alay:          # weight-stationary: weight rows on their own stream
            sig["w"] = In(stream.Signature(alay["w"]))
        super().__init__(sig)

    @property
    def latency(self) -> int:
        return self.config.latencies.array + Requantizer.LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = SystolicArray(config=self.config)
        m.submodules.requant = rq = Requantizer(config=self.config)
        wiring.connect(m, wiring.flipped(self.i), array.i)
        if "w" in array.signature.members:
            wiring.connect(m, wiring.flipped(self.w), array.w)
        wiring.connect(m, array.o, rq.i)
        wiring.connect(m, rq.o, wiring.flipped(self.o))
        m.d.comb += [rq.bias.eq(self.bias), rq.shift.eq(self.shift), rq.relu.eq(self.relu)]
        return m
