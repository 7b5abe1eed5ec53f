"""Shift-requantize lanes against golden.requantize, exact integer equality."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.golden import MAX_SHIFT, QType, requantize
from systolic.arch.config import AcceleratorConfig
from systolic.arch.ports import pack, unpack
from systolic.hw.requantizer import Requantizer, RequantLane


def _golden(cfg, acc, bias, shift, relu):
    return requantize(np.asarray(acc), np.asarray(bias), np.asarray(shift),
                      QType(cfg.out_bits, cfg.out_signed, 0), relu=relu, rounding=cfg.rounding)


def _in_golden_domain(acc, bias, k):
    # golden.round_shift refuses |k| > 62 and left shifts that leave int64;
    # those inputs are outside the specification, so they are not compared.
    return abs(k) <= MAX_SHIFT and (k >= 0 or abs(acc + bias) <= (2**63 - 1) >> -k)


def _cases(cfg, rng):
    """(acc, bias, shift) triples: ties of both parities, off-by-one around ties,
    saturation edges, extreme acc + bias, every shift of the field."""
    lo, hi = cfg.acc_range
    slo, shi = cfg.shift_range
    olo, ohi = cfg.out_range
    out = []
    for k in range(slo, shi + 1):
        if k > 0:
            half = 1 << (k - 1)
            for q in (-3, -2, -1, 0, 1, 2, 3, ohi, ohi + 1, olo, olo - 1):
                for d in (-1, 0, 1):
                    x = q * (1 << k) + half + d  # tie at d == 0, q even and odd
                    if lo <= x <= hi:
                        out.append((x, 0, k))
        # Results far past the output range: 2**(out_bits + 1) and its neighbours, scaled by the shift (where a
        # datapath kept a few bits wider than the output would wrap instead of saturating).
        big = 1 << (cfg.out_bits + 1)
        for q in (big - 1, big, big + 1, -big - 1, -big, -big + 1, 2 * big, -2 * big):
            for d in (-1, 0, 1):
                x = q * (1 << k) + d if k >= 0 else q >> -k
                if lo <= x <= hi:
                    out.append((x, 0, k))
        for x in (0, 1, -1, ohi, ohi + 1, olo, olo - 1, hi, lo, ohi >> 1, -(ohi >> 1)):
            if lo <= x <= hi:
                out.append((x, 0, k))
        for _ in range(4):
            out.append((int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)), k))
    # acc + bias beyond the accumulator range: the adder is one bit wider.
    out += [(hi, hi, 1), (lo, lo, 1), (hi, hi, 0), (lo, lo, slo), (hi, 1, shi)]
    # Around the lane's clamp of right shifts at W = acc_bits + 1 (the most negative x = lo + lo has rounding
    # bit 0 at k = W - 1, the sign at k >= W).
    W = cfg.acc_bits + 1
    out += [(a, b, k) for k in (W - 1, W, W + 1) if 0 < k <= shi for a, b in ((lo, lo), (lo, 0), (-1, 0), (lo, -1))]
    return [c for c in out if _in_golden_domain(*c)]


CONFIGS = [
    AcceleratorConfig(),
    AcceleratorConfig(rounding="half_up"),
    AcceleratorConfig(out_signed=False, rounding="half_up"),
    AcceleratorConfig(out_signed=False),
    AcceleratorConfig(in_bits=4, w_bits=4, acc_bits=16, out_bits=12, shift_bits=4),
    AcceleratorConfig(acc_bits=40, out_bits=16, shift_bits=7, rounding="half_up"),
    AcceleratorConfig(out_bits=2, shift_bits=3),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_lane_matches_golden(cfg):
    # A stable seed per config (str hash() is salted per process): the config's index in CONFIGS.
    rng = np.random.default_rng(CONFIGS.index(cfg))
    cases = _cases(cfg, rng)
    dut = RequantLane(config=cfg)
    got = {False: [], True: []}

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for relu in (False, True):
            ctx.set(dut.relu, relu)
            for n, (acc, bias, k) in enumerate(cases + [(0, 0, 0)] * 3):
                ctx.set(dut.acc, acc)
                ctx.set(dut.bias, bias)
                ctx.set(dut.shift, k)
                if n >= 3:
                    got[relu].append(ctx.get(dut.y))
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    acc, bias, shift = (np.array(v) for v in zip(*cases))
    x = acc + bias
    for relu in (False, True):
        want = _golden(cfg, acc, bias, shift, relu)
        assert np.array_equal(np.array(got[relu]), want), relu
    # The cases really exercise the interesting paths.
    pos = shift > 0
    assert np.any(pos & ((x & ((1 << np.maximum(shift, 1)) - 1)) == (1 << np.maximum(shift - 1, 0))))
    olo, ohi = cfg.out_range
    plain = _golden(cfg, acc, bias, shift, False)
    assert np.any(plain == ohi) and np.any(plain == olo) and np.any(shift < 0)


def test_half_even_and_half_up_differ_on_ties():
    """The two modes on exact ties (x = (2q+1) * 2**(k-1))."""
    ties = [(5, 1), (7, 1), (-5, 1), (-7, 1), (6, 2), (10, 2), (-6, 2), (-10, 2)]
    want = {"half_even": [2, 4, -2, -4, 2, 2, -2, -2], "half_up": [3, 4, -2, -3, 2, 3, -1, -2]}
    for rounding in ("half_even", "half_up"):
        cfg = AcceleratorConfig(rounding=rounding)
        dut = RequantLane(config=cfg)
        got = []

        async def bench(ctx):
            ctx.set(dut.en, 1)
            for n, (x, k) in enumerate(ties + [(0, 0)] * 3):
                ctx.set(dut.acc, x)
                ctx.set(dut.shift, k)
                if n >= 3:
                    got.append(ctx.get(dut.y))
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert got == want[rounding]
        assert got == _golden(cfg, [x for x, _ in ties], 0, [k for _, k in ties], False).tolist()


@pytest.mark.parametrize("per_channel", [True, False])
def test_requantizer_stream_per_channel_and_backpressure(per_channel):
    cfg = AcceleratorConfig(cols=5, per_channel_shift=per_channel, rounding="half_even")
    dut = Requantizer(config=cfg)
    rng = np.random.default_rng(3)
    n_vec = 60
    accs = rng.integers(-(1 << 20), 1 << 20, (n_vec, cfg.cols))
    accs[0] = [2, 6, -2, -6, 3 << 14]  # ties
    bias = rng.integers(-5000, 5000, cfg.cols)
    shift = np.array([1, 2, 3, -2, 14]) if per_channel else np.full(cfg.cols, 5)
    relu = True
    prng = random.Random(1)
    got = []

    async def bench(ctx):
        ctx.set(dut.bias.as_value(), pack(cfg, "o", acc=bias) & ((1 << (32 * cfg.cols)) - 1))
        word = 0
        for lane, s in enumerate(shift[: cfg.shift_lanes]):
            word |= (int(s) & ((1 << cfg.shift_bits) - 1)) << (lane * cfg.shift_bits)
        ctx.set(dut.shift.as_value(), word)
        ctx.set(dut.relu, relu)
        sent, valid = 0, False
        while len(got) < n_vec:
            if not valid and sent < n_vec and prng.random() < 0.7:
                valid = True
                ctx.set(dut.i.payload.as_value(), pack(cfg, "o", acc=accs[sent]) & ((1 << (32 * cfg.cols)) - 1))
            ctx.set(dut.i.valid, valid)
            ready = prng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            if valid and ctx.get(dut.i.ready):
                sent += 1
                valid = False
            if ready and ctx.get(dut.o.valid):
                got.append(unpack(cfg, "o", ctx.get(dut.o.payload.as_value())))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(np.array([g["acc"] for g in got]), accs)
    want = _golden(cfg, accs, bias, shift, relu)
    assert np.array_equal(np.array([g["y"] for g in got]), want)
