"""Processing elements: one integer multiply-accumulate per cycle, the product registered before the add.

The product ``a * w`` is formed by :func:`pe_product`, per ``config.pe``: with a multiplier, or for the
shift PE with a shifter that decodes the stored weight word (sign, nonzero flag, exponent:
:mod:`systolic.golden.pe_weights`) into ``+-(a << e)`` or 0. Both PE kinds form the product from their own
operand registers and register it (:data:`~systolic.arch.latency.PRODUCT_STAGES` registers in all), and add
it to the partial sum in the next cycle, so the multiplier reads flip-flops and the route into and out of it
and the add are in different cycles; both have the same latency and the same registers.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.latency import PRODUCT_STAGES
from ..golden.pe_weights import shift_exponent_bits
from .params import require_config

__all__ = ["ProcessingElement", "WSProcessingElement", "OSProcessingElement", "PES", "PRODUCTS", "operand_shapes",
           "pe_product", "delay"]


def operand_shapes(cfg: AcceleratorConfig):
    """Amaranth shapes of (activation, weight, accumulator)."""
    a = signed(cfg.in_bits) if cfg.in_signed else unsigned(cfg.in_bits)
    w = signed(cfg.w_bits) if cfg.w_signed else unsigned(cfg.w_bits)
    return a, w, signed(cfg.acc_bits)


def delay(m: Module, en: Value, value: Value, depth: int, name: str) -> Value:
    """*value* delayed by *depth* ``en``-gated registers (depth 0: the value itself)."""
    for d in range(depth):
        reg = Signal.like(value, name=f"{name}_d{d}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value


def _product_multiply(a: Value, w: Value, cfg: AcceleratorConfig) -> tuple[Value, Value]:
    return a * w, Const(0, 1)


def _product_shift(a: Value, w: Value, cfg: AcceleratorConfig) -> tuple[Value, Value]:
    """``a * decode(w)`` without a multiplier: the word's bits are sign ``w[W-1]``, nonzero ``w[W-2]``
    and exponent ``w[:eb]`` (``W = w_bits``). A negative weight gives ``~(a << e)`` and a carry of 1, which
    the partial-sum adder takes as its carry-in (Yosys merges it), so no negation of its own; a zero weight
    gives 0."""
    W, bits = cfg.w_bits, w.as_unsigned()
    sign, nonzero, e = bits[W - 1], bits[W - 2], bits[:shift_exponent_bits(W)]
    mag = a << e        # signed, len(a) + 2**eb - 1 bits: exact for every exponent field
    flip = mag ^ sign.replicate(len(mag)).as_signed()
    return Mux(nonzero, flip, 0), nonzero & sign


#: PE kind -> ``(a, w, config) -> (p, c)`` with ``a * w == p + c``: the one place where the two PE kinds differ.
PRODUCTS = {"multiplier": _product_multiply, "shift": _product_shift}


def pe_product(a: Value, w: Value, cfg: AcceleratorConfig) -> tuple[Value, Value]:
    """``(p, c)`` with ``p + c == a * w`` exactly, for an activation and a stored weight word, formed as
    ``cfg.pe`` does (``c`` is one bit, the adder's carry-in)."""
    return PRODUCTS[cfg.pe](a, w, cfg)


#: Of the :data:`PRODUCT_STAGES` registers, the first is the PE's own operand register (the ones that pass the
#: operands on to the neighbours, and the active weight): the multiplier reads flip-flops of its own PE, with
#: no select before it. The others follow the product.
#: In the WS PE the activation, which also goes on to the right neighbour, has a second, reset-less copy
#: (:func:`operand_copy`) that only the multiplier reads, so the placer can put it by the multiplier (the
#: neighbour's copy pulls the other away). A WS result only sums products of activations taken after the reset.
OPERAND_REGISTER = 1
assert PRODUCT_STAGES > OPERAND_REGISTER


def operand_copy(m: Module, en: Value, value: Value, name: str) -> Value:
    """A reset-less register of *value* (``en``-gated) for the multiplier alone: the same value as the operand
    register loaded beside it, a distinct flip-flop (Yosys merges identical registers; this one has no reset)."""
    reg = Signal.like(value, name=name, reset_less=True)
    with m.If(en):
        m.d.sync += reg.eq(value)
    return reg


def _mac(m: Module, en: Value, acc: Value, a: Value, w: Value, cfg: AcceleratorConfig) -> Value:
    """``acc + a * w`` for the operand registers *a*, *w* (:data:`OPERAND_REGISTER`), the product
    (:func:`pe_product`) through the other ``PRODUCT_STAGES - OPERAND_REGISTER`` ``en``-gated registers:
    ``acc + p + c``, written so that the adder takes ``c`` as its carry-in."""
    p, c = pe_product(a, w, cfg)
    p = delay(m, en, Value.cast(p), PRODUCT_STAGES - OPERAND_REGISTER, "prod")
    c = delay(m, en, Value.cast(c), PRODUCT_STAGES - OPERAND_REGISTER, "carry")
    return acc + p + c


class WSProcessingElement(wiring.Component):
    """Weight-stationary PE with a double-buffered weight register.

    The activation enters from the left and leaves to the right one cycle
    later. Its product with ``w`` (:func:`pe_product`: a multiply, or a shift
    of the weight word's exponent for ``config.pe == "shift"``) is registered
    (:data:`~systolic.arch.latency.PRODUCT_STAGES`); the partial sum enters
    from above one cycle after the activation and leaves below one cycle later
    as ``psum_in + a * w``. ``w`` is the *active* weight register. A
    *shadow* register is written through ``load``/``load_data`` at any time
    (also while computing); the ``swap_in`` flag travelling with an activation
    makes that activation, and all later ones, use the shadow value (it is
    copied into the active register with the activation into its operand
    register; the product is formed from the two). ``swap_out`` passes
    the flag on to the right neighbour together with the activation.

    Latency (``en`` cycles): 1 from ``a_in`` to ``a_out``, ``1 + PRODUCT_STAGES``
    from ``a_in`` to the ``psum_out`` that includes its product, 1 from
    ``psum_in`` to ``psum_out``. Throughput: 1 MAC per cycle while ``en`` is
    high.

    Parameters
    ----------
    config : AcceleratorConfig
        Operand widths and ``acc_bits`` (the partial sum wraps at ``acc_bits``).

    Members
    -------
    en : In(1)
        Clock enable of the whole datapath (the array stalls as one).
    a_in, swap_in, psum_in : In
        Activation, swap flag and partial sum from the neighbours.
    load, load_data : In
        Shadow weight write (not gated by ``en``).
    a_out, swap_out, psum_out : Out
        Registered outputs to the right and lower neighbours.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        a, w, acc = operand_shapes(config)
        super().__init__({
            "en": In(1),
            "a_in": In(a), "swap_in": In(1), "psum_in": In(acc),
            "load": In(1), "load_data": In(w),
            "a_out": Out(a), "swap_out": Out(1), "psum_out": Out(acc),
        })

    def elaborate(self, platform):
        m = Module()
        _, w_shape, _ = operand_shapes(self.config)
        active = Signal(w_shape)
        shadow = Signal(w_shape)
        # The operand registers: the activation's (a_out) and the active weight, which takes the shadow with the
        # flagged activation, so the product of that activation, formed a cycle later from the two, already uses
        # the new weight, and the multiplier's inputs are flip-flops, no select.
        a_mul = operand_copy(m, self.en, self.a_in, "a_mul")
        psum = _mac(m, self.en, self.psum_in, a_mul, active, self.config)
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.swap_out.eq(self.swap_in),
                self.psum_out.eq(psum),
            ]
            with m.If(self.swap_in):
                m.d.sync += active.eq(shadow)
        with m.If(self.load):
            m.d.sync += shadow.eq(self.load_data)
        return m


class OSProcessingElement(wiring.Component):
    """Output-stationary PE with a local accumulator and a drain register.

    Activations (with the ``last`` flag) flow right, weights flow down, both
    with 1 cycle latency. The product of the registered operands ``a_out *
    w_out`` (:func:`pe_product`; the shift PE passes the weight word down and
    decodes it) is registered (:data:`~systolic.arch.latency.PRODUCT_STAGES`
    registers from ``a_in``, ``w_in`` in all), and so is ``last`` beside it; each ``en`` cycle the PE computes ``total = acc + product``. When the
    registered ``last`` comes, ``total`` is captured in the drain register
    ``d`` and the accumulator is zeroed (its flip-flops' synchronous reset),
    so the next tile starts from 0 in the very next cycle; a tile is the steps
    from one ``last`` (or the start) to the next. ``shift`` moves ``d_in`` (the drain register of the PE above) into
    ``d``, forming a per-column drain chain.

    Latency: 1 cycle per hop; a tile's result is in ``d`` ``1 + PRODUCT_STAGES``
    cycles after its ``last`` operand pair arrived. Throughput: 1 MAC per cycle.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    en : In(1)
        Clock enable.
    a_in, w_in, last_in : In
        Operands and the tile's end flag from the left (a, flag) and from above (w).
    shift : In(1)
        Drain-chain shift (``d <= d_in``), only with ``en``.
    d_in : In(signed(acc_bits))
        Drain register of the PE above (0 for the top row).
    a_out, w_out, last_out, d_out : Out
        Registered operands / flag to the neighbours, and ``d``.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        a, w, acc = operand_shapes(config)
        super().__init__({
            "en": In(1),
            "a_in": In(a), "w_in": In(w), "last_in": In(1),
            "shift": In(1), "d_in": In(acc),
            "a_out": Out(a), "w_out": Out(w), "last_out": Out(1),
            "d_out": Out(acc),
        })

    def elaborate(self, platform):
        m = Module()
        _, _, acc_shape = operand_shapes(self.config)
        acc = Signal(acc_shape)
        total = Signal(acc_shape)
        # (No reset-less copies here: the accumulator adds every product since the reset, so the multiplier must
        # read operand registers that the reset clears.)
        m.d.comb += total.eq(_mac(m, self.en, acc, self.a_out, self.w_out, self.config))
        # beside its product: last_out is the operand register
        last = delay(m, self.en, self.last_out, PRODUCT_STAGES - OPERAND_REGISTER, "last")
        # Reset over enable (the reset is en & last), which the flip-flops' own synchronous reset implements;
        # an enable over the reset would cost a multiplexer per bit.
        with m.If(self.en & last):
            m.d.sync += acc.eq(0)
        with m.Elif(self.en):
            m.d.sync += acc.eq(total)
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.w_out.eq(self.w_in),
                self.last_out.eq(self.last_in),
            ]
            # Capture wins over shift; the array's input control spaces tiles so
            # that a capture never hits a drain register that still holds data.
            with m.If(last):
                m.d.sync += self.d_out.eq(total)
            with m.Elif(self.shift):
                m.d.sync += self.d_out.eq(self.d_in)
        return m


def ProcessingElement(*, config: AcceleratorConfig) -> wiring.Component:
    """The PE of ``config.dataflow``: :class:`WSProcessingElement` or :class:`OSProcessingElement` (each
    with the product of ``config.pe``)."""
    return PES[require_config(config).dataflow](config=config)


#: Dataflow -> its processing element.
PES = {"ws": WSProcessingElement, "os": OSProcessingElement}
