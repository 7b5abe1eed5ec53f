"""The performance counters: one wide counter per event, cleared at the start of a run."""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.sysmap import COUNTER_BITS
from .params import refuse

__all__ = ["PerfCounters"]


class PerfCounters(wiring.Component):
    """``len(names)`` counters of :data:`~systolic.arch.sysmap.COUNTER_BITS` bits; counter ``i`` adds
    ``events[i]`` every cycle.

    Latency: an event shows in its counter one cycle later; ``clear`` zeroes
    every counter one cycle later (the events of that cycle are dropped).
    Throughput: any event, every cycle.

    Parameters
    ----------
    names : tuple of str
        The counters, in the order of the ``counters`` port
        (:data:`systolic.arch.sysmap.COUNTERS`).
    event_max : int
        The largest value one event adds in one cycle.

    Members
    -------
    events : In(ArrayLayout(range(event_max + 1), len(names)))
    clear : In(1)
    counters : Out(ArrayLayout(unsigned(COUNTER_BITS), len(names)))
    """

    def __init__(self, *, names, event_max: int):
        names = tuple(names)
        if not names or len(set(names)) != len(names):
            refuse(self, ValueError(f"names must be distinct counter names, not {names!r}"))
        self.names = names
        super().__init__({
            "events": In(data.ArrayLayout(range(event_max + 1), len(names))),
            "clear": In(1),
            "counters": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(names))),
        })

    def index(self, name: str) -> int:
        return self.names.index(name)

    def elaborate(self, platform):
        m = Module()
        for i in range(len(self.names)):
            with m.If(self.clear):
                m.d.sync += self.counters[i].eq(0)
            with m.Else():
                m.d.sync += self.counters[i].eq(self.counters[i] + self.events[i])
        return m
