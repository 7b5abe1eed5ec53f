"""``RegisterBankTop`` around the tiny preset's systolic array, driven only through its byte-wide CSR port.

The bit positions below are written out by hand from the harness docstring
(inputs concatenated in signature order, LSB first, are write bytes
``0 .. n_in-1``; outputs likewise are read bytes ``0 .. n_out-1``) and the
array's ports (docs: ``SystolicArray``, weight-stationary 2x2, 8-bit operands,
32-bit partial sums). The expected results are NumPy's ``P + A @ W``.
"""

import numpy as np
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.fpga.wrappers import RegisterBankTop, make_top

TINY = AcceleratorConfig.preset("tiny")
R = C = 2

# Write space (100 bits, 13 bytes): stream i = payload {a[2] x 8, psum[2] x 32, swap}, valid;
# stream w = payload {w[2] x 8}, valid; then o.ready.
A_LSB = [0, 8]
PSUM_LSB = [16, 48]
SWAP, I_VALID = 80, 81
W_LSB = [82, 90]
W_VALID, O_READY = 98, 99
IN_BYTES = 13
# Read space (67 bits, 9 bytes): i.ready, w.ready, o.payload[2] x 32, o.valid.
I_READY, W_READY = 0, 1
O_LSB = [2, 34]
O_VALID = 66
OUT_BYTES = 9


def _signed(v, bits):
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def test_register_bank_array_matmul_through_csr():
    rng = np.random.default_rng(77)
    w_tiles = [rng.integers(-128, 128, (R, C)) for _ in range(2)]
    a_rows = rng.integers(-128, 128, (5, R))
    psums = rng.integers(-(1 << 20), 1 << 20, (5, C))
    tile_of_row = [0, 0, 0, 1, 1]          # rows 3, 4 run with the second weight tile (swapped in at row 3)
    want = np.stack([psums[j] + a_rows[j] @ w_tiles[tile_of_row[j]] for j in range(5)])

    top = make_top(TINY, "array")
    assert isinstance(top, RegisterBankTop)
    assert (top.in_bits, top.out_bits, top.addr_bits) == (100, 67, 4)     # 13 write bytes -> 4 address bits
    got, flags = [], {}

    async def bench(ctx):
        state = [0]           # what the write registers hold (an int of IN_BYTES bytes)

        async def put(fields):
            """Set fields ``{lsb: (width, value)}`` in the write registers (changed bytes only)."""
            new = state[0]
            for lsb, (width, value) in fields.items():
                mask = (1 << width) - 1
                new = new & ~(mask << lsb) | (int(value) & mask) << lsb
            for b in range(IN_BYTES):
                byte = new >> (8 * b) & 0xFF
                if byte != state[0] >> (8 * b) & 0xFF:
                    ctx.set(top.csr_addr, b)
                    ctx.set(top.csr_wdata, byte)
                    ctx.set(top.csr_we, 1)
                    await ctx.tick()
            ctx.set(top.csr_we, 0)
            state[0] = new

        async def pulse(bit):
            """Raise a one-bit input for exactly one cycle (write it 1, then 0 in the next cycle)."""
            await put({bit: (1, 1)})
            await put({bit: (1, 0)})

        async def read_byte(addr):
            ctx.set(top.csr_addr, addr)
            await ctx.tick()                          # registered: the byte of the previous cycle's address
            return ctx.get(top.csr_rdata)

        async def read_out():
            value = 0
            for b in range(OUT_BYTES):
                value |= await read_byte(b) << (8 * b)
            return value

        async def load_weights(w):
            for k in range(R):
                await put({W_LSB[n]: (8, w[k, n]) for n in range(C)})
                await pulse(W_VALID)

        flags["w_ready_empty"] = (await read_out()) >> W_READY & 1
        flags["unmapped"] = [await read_byte(a) for a in range(OUT_BYTES, 16)]    # past the outputs: 0
        await load_weights(w_tiles[0])
        flags["w_ready_full"] = (await read_out()) >> W_READY & 1
        for j in range(5):
            if j == 3:
                await load_weights(w_tiles[1])        # into the shadow registers, while tile 0 is active
            await put({**{A_LSB[k]: (8, a_rows[j, k]) for k in range(R)},
                       **{PSUM_LSB[n]: (32, psums[j, n]) for n in range(C)},
                       SWAP: (1, int(j in (0, 3)))})
            await pulse(I_VALID)
            for _ in range(20):                       # poll the byte holding o.valid
                if await read_byte(O_VALID // 8) >> (O_VALID % 8) & 1:
                    break
            else:
                raise AssertionError(f"no o.valid for row {j}")
            out = await read_out()                    # the result waits in the output register (o.ready = 0)
            again = await read_out()                  # and is held while o.ready stays low
            got.append([_signed(out >> O_LSB[n] & 0xFFFF_FFFF, 32) for n in range(C)])
            flags.setdefault("held", []).append(again == out)
            flags.setdefault("i_ready_stalled", []).append(out >> I_READY & 1)
            await pulse(O_READY)                      # take it
            flags.setdefault("o_valid_after", []).append((await read_out()) >> O_VALID & 1)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert (flags["w_ready_empty"], flags["w_ready_full"]) == (1, 0)
    assert flags["unmapped"] == [0] * (16 - OUT_BYTES)
    assert np.array_equal(np.array(got), want)
    assert flags["held"] == [True] * 5
    assert flags["i_ready_stalled"] == [0] * 5        # o.valid & ~o.ready stalls the array
    assert flags["o_valid_after"] == [0] * 5
