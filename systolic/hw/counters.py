"""The performance counters: one counter per event, each as wide as it needs, cleared at the start of a run."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.latency import EVENT_REGISTER
from ..arch.sysmap import COUNTER_BITS, CYCLE_COUNTER_BITS, counter_width
from .params import refuse

__all__ = ["PerfCounters"]


class PerfCounters(wiring.Component):
    """One counter per entry of *event_max*; counter ``i`` adds ``events[i]`` every cycle.

    The first counter is the clock (it counts cycles: its event is 0 or 1) and is
    :data:`~systolic.arch.sysmap.CYCLE_COUNTER_BITS` wide. Once it reaches its largest value every counter
    stops, so the clock reads ``2**CYCLE_COUNTER_BITS - 1`` when the counters saturated. Every other counter
    is :func:`~systolic.arch.sysmap.counter_width` of its event's largest value wide, so none wraps around
    before that; its bits above that width in the ``counters`` port read 0.

    Latency: an event shows in its counter 1 + :data:`~systolic.arch.latency.EVENT_REGISTER` (2) cycles
    later (the events are registered before the adds); ``clear`` zeroes every counter two cycles later, and
    the events of its cycle and of the cycles before it that are not counted yet are dropped: from then on
    the counters are as if they had been zeroed one cycle after the clear. ``clear`` is registered first, so
    the hundreds of flip-flops it resets are driven by a register, not by the logic that starts a run.
    Throughput: any event, every cycle.

    Parameters
    ----------
    event_max : dict of str to int
        Counter name -> the largest value its event adds in one cycle, in the order of the ``counters`` port
        (:data:`systolic.arch.sysmap.COUNTERS`); the first is the clock, with 1.

    Members
    -------
    events : In(ArrayLayout(range(max(event_max.values()) + 1), len(event_max)))
    clear : In(1)
    counters : Out(ArrayLayout(unsigned(COUNTER_BITS), len(event_max)))
    """

    def __init__(self, *, event_max: dict):
        names = tuple(event_max)
        if not names:
            refuse(self, ValueError("event_max names no counter"))
        if event_max[names[0]] != 1:
            refuse(self, ValueError(f"the first counter, {names[0]!r}, is the clock: its event_max must be 1, "
                                    f"not {event_max[names[0]]!r}"))
        try:
            self.widths = {name: counter_width(v) for name, v in event_max.items()}
        except ValueError as e:
            refuse(self, e)
        self.names = names
        #: The counters themselves (the ``counters`` port zero-extends them).
        self.regs = [Signal(self.widths[name], name=f"count_{name}") for name in names]
        super().__init__({
            "events": In(data.ArrayLayout(range(max(event_max.values()) + 1), len(names))),
            "clear": In(1),
            "counters": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(names))),
        })

    def index(self, name: str) -> int:
        return self.names.index(name)

    def elaborate(self, platform):
        m = Module()
        regs = self.regs
        assert len(regs[0]) == CYCLE_COUNTER_BITS
        saturated = regs[0] == (1 << CYCLE_COUNTER_BITS) - 1
        # EVENT_REGISTER stages of registered events. The registered clear (a cycle after the clear) empties
        # every stage but the first, which then holds the events of the cycle after the clear, the first counted,
        # and zeroes the counters (their add would take the clear cycle's events, in the last stage).
        clear = Signal(name="clear_r")
        m.d.sync += clear.eq(self.clear)
        events = self.events
        for k in range(EVENT_REGISTER):
            staged = Signal.like(events, name=f"events_r{k}")
            m.d.sync += staged.eq(events)
            if k > 0:
                with m.If(clear):
                    m.d.sync += staged.eq(0)
            events = staged
        for i, reg in enumerate(regs):
            m.d.comb += self.counters[i].eq(reg)
            with m.If(clear):
                m.d.sync += reg.eq(0)
            with m.Elif(~saturated):
                m.d.sync += reg.eq(reg + events[i])
        return m
