"""AXI for the accelerator: an AXI4 master for its memory port, an AXI4-Lite slave for its CSRs, and the top
that joins them to :class:`~systolic.hw.system.Accelerator` (:class:`AxiTop`, module ``<config name>_axi``).

Ports are flat and named as AXI tools expect (``m_axi_awvalid``, ``s_axil_rdata``, ...), so cocotbext-axi's
``AxiBus.from_prefix(dut, "m_axi")`` and vendor interface inference find them. Both buses follow the AXI
rules a master or slave must keep: a ``VALID`` once raised stays high with its payload unchanged until its
``READY``; no ``VALID`` waits for a ``READY``.

**Memory (AXI4 master, :class:`AxiMemBridge`).** Runs of requests of the accelerator's memory port to
consecutive words become INCR bursts (``AxSIZE = log2(bus_bytes)``, up to :data:`MAX_BURST` beats, never
across a 4 KiB page, ID 0): data width ``8 * bus_bytes`` bits, 32-bit addresses, read beats answered in order
(one ID), ``RREADY`` and ``BREADY`` always high (the accelerator takes every answer). The memory port's order
is kept across AXI's independent read and write channels: a read burst waits until every earlier write has
its ``B`` response, a write burst until every earlier read beat has come back, so a read always sees the
writes before it. An ``RRESP`` / ``BRESP`` of SLVERR or DECERR sets a sticky bit of
``bus_status`` (cleared by ``start``) and raises ``irq``; the data of such a read is used as it came.

**CSRs (AXI4-Lite slave, :class:`AxiLiteCsr`).** The register map of :func:`systolic.arch.sysmap.csr_map`
as 32-bit words: a register of up to 4 bytes is the word at its address, a 64-bit one (``err_arg``, the
counters) two words, the low one first. Writes honour ``WSTRB``; writing 1 to bit 0 of ``ctrl`` starts a
run. Reads of an address outside the map return 0; every response is OKAY. A read takes 2 cycles from the
address handshake (registered data); a write answers on ``B`` the cycle after both its address and data are
in. Read 64-bit counters after the run (they do not change then): during a run the two halves come from
different cycles.

``irq`` is a level: high from ``done``, an accelerator error or a bus error until the next ``start``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.latency import MAX_READS
from ..arch.sysmap import COUNTER_BITS, COUNTERS, CSR_ADDR_BITS, ERROR_ARG_BITS, PC_BITS, csr_map
from .dma import MemPortSignature
from .params import require_system_config
from .system import Accelerator

__all__ = ["axi4_members", "axi_lite_members", "AxiMemBridge", "AxiLiteCsr", "AxiTop", "AXI_ADDR_BITS",
           "AXIL_DATA_BITS", "BUS_STATUS_BITS"]

#: Address width of the AXI4 memory master (the memory port's byte addresses).
AXI_ADDR_BITS = 32
#: Data width of the AXI4-Lite CSR slave.
AXIL_DATA_BITS = 32
#: ``bus_status`` bits: a read answered with an error, a write answered with an error.
BUS_STATUS_BITS = {"read_error": 0, "write_error": 1}
#: Write bursts the bridge lets wait for their ``B`` response at once (it starts no write burst past this).
MAX_WRITES = 15
#: Beats per burst at most (AXI4 INCR allows 256; read bursts are also bounded by the accelerator's
#: :data:`~systolic.arch.latency.MAX_READS` reads in flight).
MAX_BURST = 16


def _flat(prefix: str, master_side: dict, flip: bool) -> dict:
    """``{prefix_name: In/Out(width)}`` from ``{name: (width, driven_by_master)}``; *flip* for the slave."""
    return {f"{prefix}_{n}": (Out if by_master != flip else In)(w) for n, (w, by_master) in master_side.items()}


def axi4_members(prefix: str, data_bits: int, addr_bits: int = AXI_ADDR_BITS, id_bits: int = 1, *,
                 master: bool = True) -> dict:
    """The five channels of an AXI4 port as flat component members ``<prefix>_<signal>`` (a master's
    directions, or a slave's with ``master=False``)."""
    m = {}
    for ch in ("aw", "ar"):
        m.update({f"{ch}valid": (1, True), f"{ch}ready": (1, False), f"{ch}id": (id_bits, True),
                  f"{ch}addr": (addr_bits, True), f"{ch}len": (8, True), f"{ch}size": (3, True),
                  f"{ch}burst": (2, True), f"{ch}lock": (1, True), f"{ch}cache": (4, True), f"{ch}prot": (3, True)})
        if ch == "aw":
            m.update({"wvalid": (1, True), "wready": (1, False), "wdata": (data_bits, True),
                      "wstrb": (data_bits // 8, True), "wlast": (1, True),
                      "bvalid": (1, False), "bready": (1, True), "bid": (id_bits, False), "bresp": (2, False)})
    m.update({"rvalid": (1, False), "rready": (1, True), "rid": (id_bits, False), "rdata": (data_bits, False),
              "rresp": (2, False), "rlast": (1, False)})
    return _flat(prefix, m, not master)


def axi_lite_members(prefix: str, addr_bits: int, data_bits: int = AXIL_DATA_BITS, *, master: bool = False) -> dict:
    """An AXI4-Lite port as flat component members ``<prefix>_<signal>`` (a slave's directions, or a
    master's with ``master=True``)."""
    m = {"awvalid": (1, True), "awready": (1, False), "awaddr": (addr_bits, True), "awprot": (3, True),
         "wvalid": (1, True), "wready": (1, False), "wdata": (data_bits, True), "wstrb": (data_bits // 8, True),
         "bvalid": (1, False), "bready": (1, True), "bresp": (2, False),
         "arvalid": (1, True), "arready": (1, False), "araddr": (addr_bits, True), "arprot": (3, True),
         "rvalid": (1, False), "rready": (1, True), "rdata": (data_bits, False), "rresp": (2, False)}
    return _flat(prefix, m, not master)


class AxiMemBridge(wiring.Component):
    """The accelerator's memory port (``mem``, the target side) as an AXI4 master (``m_axi_*``) with bursts.

    Consecutive requests of one kind to consecutive words are gathered into one INCR burst: the bridge takes
    them one per cycle (``mem.req_ready``) while each continues the burst (same kind, the next word, the same
    4 KiB page, at most :data:`MAX_BURST` beats) and closes the burst in the first cycle that brings no
    request or one that does not continue it. A read burst then goes out on AR (its beats answer on R, in
    order, one ``mem.resp_valid`` each); a write burst's data, held in a FIFO as it came, goes out on W
    beside its AW. Until the burst is out no new request is taken. A read burst starts only when every
    earlier write has its ``B``, a write burst only when every earlier read beat has come back, so the
    port's order holds across AXI's independent channels. ``read_error`` / ``write_error`` pulse for one
    cycle with a SLVERR or DECERR answer.
    """

    def __init__(self, bus_bytes: int):
        self.bus_bytes = bus_bytes
        super().__init__({"mem": In(MemPortSignature(bus_bytes)), **axi4_members("m_axi", 8 * bus_bytes),
                          "read_error": Out(1), "write_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        mem, B = self.mem, self.bus_bytes
        g = {n.removeprefix("m_axi_"): getattr(self, n) for n in dir(self) if n.startswith("m_axi_")}
        m.submodules.wq = wq = SyncFIFOBuffered(width=9 * B, depth=MAX_BURST)

        collecting, sending, write = Signal(), Signal(), Signal()
        base, nxt = Signal(AXI_ADDR_BITS), Signal(AXI_ADDR_BITS)
        beats = Signal(range(MAX_BURST + 1))
        aw_done, w_done, w_sent = Signal(), Signal(), Signal(range(MAX_BURST + 1))
        reads = Signal(range(MAX_READS + MAX_BURST + 1))   # read beats asked for on AR, not yet back on R
        writes = Signal(range(MAX_WRITES + 1))     # write bursts out on AW, not yet answered on B

        req = mem.req_valid
        starts = ~collecting & ~sending & req & Mux(mem.req_write, (reads == 0) & (writes < MAX_WRITES),
                                                    writes == 0)
        continues = (collecting & req & (mem.req_write == write) & (mem.req_addr == nxt) & (beats < MAX_BURST)
                     & (mem.req_addr[12:] == base[12:]))
        take = (starts | continues) & (~mem.req_write | wq.w_rdy)
        size = B.bit_length() - 1
        ar_hs = g["arvalid"] & g["arready"]
        aw_hs = g["awvalid"] & g["awready"]
        w_hs = g["wvalid"] & g["wready"]
        w_last = w_sent == beats - 1
        write_out = sending & write & (aw_done | aw_hs) & (w_done | (w_hs & w_last))
        m.d.comb += [
            mem.req_ready.eq(take),
            wq.w_en.eq(take & mem.req_write), wq.w_data.eq(Cat(mem.req_wdata, mem.req_wstrb)),
            g["arvalid"].eq(sending & ~write), g["awvalid"].eq(sending & write & ~aw_done),
            g["wvalid"].eq(sending & write & wq.r_rdy),
            g["araddr"].eq(base), g["awaddr"].eq(base), g["arlen"].eq(beats - 1), g["awlen"].eq(beats - 1),
            g["wdata"].eq(wq.r_data[:8 * B]), g["wstrb"].eq(wq.r_data[8 * B:]), g["wlast"].eq(w_last),
            wq.r_en.eq(w_hs),
            g["arsize"].eq(size), g["awsize"].eq(size), g["arburst"].eq(1), g["awburst"].eq(1),
            g["arid"].eq(0), g["awid"].eq(0),
            g["arcache"].eq(0b0011), g["awcache"].eq(0b0011),      # normal non-cacheable bufferable
            g["rready"].eq(1), g["bready"].eq(1),
            mem.resp_valid.eq(g["rvalid"]), mem.resp_data.eq(g["rdata"]),
            self.read_error.eq(g["rvalid"] & g["rresp"][1]),          # SLVERR or DECERR
            self.write_error.eq(g["bvalid"] & g["bresp"][1]),
        ]
        with m.If(take):
            m.d.sync += [collecting.eq(1), nxt.eq(mem.req_addr + B), beats.eq(beats + 1)]
            with m.If(starts):
                m.d.sync += [base.eq(mem.req_addr), write.eq(mem.req_write), beats.eq(1)]
        with m.Elif(collecting):                        # no request continues the burst: send it
            m.d.sync += [collecting.eq(0), sending.eq(1), aw_done.eq(0), w_done.eq(0), w_sent.eq(0)]
        with m.If(w_hs):
            m.d.sync += [w_sent.eq(w_sent + 1), w_done.eq(w_last)]
        with m.If(aw_hs):
            m.d.sync += aw_done.eq(1)
        with m.If(ar_hs | write_out):
            m.d.sync += [sending.eq(0), beats.eq(0)]
        m.d.sync += [reads.eq(reads + Mux(ar_hs, beats, 0) - g["rvalid"]),
                     writes.eq(writes + write_out - g["bvalid"])]
        return m


def _csr_words() -> dict[int, tuple[str, int]]:
    """32-bit word index -> (register name, word of the register) of the CSR map."""
    words = {}
    for name, (base, nbytes, _) in csr_map().items():
        assert base % 4 == 0, name
        for w in range((nbytes + 3) // 4):
            words[base // 4 + w] = (name, w)
    return words


class AxiLiteCsr(wiring.Component):
    """The CSR map (:func:`systolic.arch.sysmap.csr_map`) behind an AXI4-Lite slave ``s_axil_*``.

    Members besides the bus: ``values`` in, one signal per readable register (``sources``: name -> width,
    given at construction); ``rw`` out: the host-written registers (``prog_addr``, ``prog_len``,
    ``dram_bytes``); ``start`` out: one-cycle pulse on a write of bit 0 of ``ctrl``.
    """

    #: The host-written registers: those the CSR map gives read-write access.
    RW = tuple(n for n, (_, _, access) in csr_map().items() if access.startswith("RW"))

    def __init__(self, sources: dict[str, int], addr_bits: int = CSR_ADDR_BITS):
        self.sources = dict(sources)
        missing = sorted(set(csr_map()) - set(self.sources) - set(self.RW))
        if missing:
            raise ValueError(f"no source for the CSR registers {', '.join(missing)}")
        super().__init__({**axi_lite_members("s_axil", addr_bits), "start": Out(1),
                          **{f"rw_{n}": Out(32) for n in self.RW},
                          **{f"src_{n}": In(w) for n, w in self.sources.items()}})

    def elaborate(self, platform):
        m = Module()
        s = {n.removeprefix("s_axil_"): getattr(self, n) for n in dir(self) if n.startswith("s_axil_")}
        regs = csr_map()
        # Write: address and data taken independently, the write made and answered once both are in.
        aw_ok, w_ok = Signal(), Signal()
        awaddr, wdata, wstrb = Signal.like(s["awaddr"]), Signal(32), Signal(4)
        m.d.comb += [s["awready"].eq(~aw_ok & ~s["bvalid"]), s["wready"].eq(~w_ok & ~s["bvalid"]),
                     s["bresp"].eq(0), s["rresp"].eq(0)]
        with m.If(s["awvalid"] & s["awready"]):
            m.d.sync += [aw_ok.eq(1), awaddr.eq(s["awaddr"])]
        with m.If(s["wvalid"] & s["wready"]):
            m.d.sync += [w_ok.eq(1), wdata.eq(s["wdata"]), wstrb.eq(s["wstrb"])]
        m.d.sync += self.start.eq(0)
        with m.If(aw_ok & w_ok):
            m.d.sync += [aw_ok.eq(0), w_ok.eq(0), s["bvalid"].eq(1)]
            word = awaddr[2:]
            with m.If(word == regs["ctrl"][0] // 4):
                m.d.sync += self.start.eq(wstrb[0] & wdata[0])
            for n in self.RW:
                reg = getattr(self, f"rw_{n}")
                with m.If(word == regs[n][0] // 4):
                    for b in range(4):
                        with m.If(wstrb[b]):
                            m.d.sync += reg[8 * b:8 * b + 8].eq(wdata[8 * b:8 * b + 8])
        with m.If(s["bvalid"] & s["bready"]):
            m.d.sync += s["bvalid"].eq(0)
        # Read: the addressed word registered; rvalid until taken.
        m.d.comb += s["arready"].eq(~s["rvalid"])
        with m.If(s["arvalid"] & s["arready"]):
            m.d.sync += s["rvalid"].eq(1)
            with m.Switch(s["araddr"][2:]):
                for index, (name, w) in _csr_words().items():
                    value = getattr(self, f"rw_{name}") if name in self.RW else getattr(self, f"src_{name}")
                    with m.Case(index):
                        m.d.sync += s["rdata"].eq(Value.cast(value)[32 * w:32 * w + 32])
                with m.Default():
                    m.d.sync += s["rdata"].eq(0)
        with m.Elif(s["rvalid"] & s["rready"]):
            m.d.sync += s["rvalid"].eq(0)
        return m


class AxiTop(wiring.Component):
    """The accelerator with an AXI4 memory master (``m_axi_*``), an AXI4-Lite CSR slave (``s_axil_*``) and
    ``irq`` (see the module docstring). The native-port tops (``system``, ``fpga``) stay for simulation speed.

    Parameters
    ----------
    config : AcceleratorConfig
    """

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        super().__init__({**axi4_members("m_axi", 8 * config.bus_bytes),
                          **axi_lite_members("s_axil", CSR_ADDR_BITS), "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = Accelerator(config=self.config)
        m.submodules.bridge = bridge = AxiMemBridge(self.config.bus_bytes)
        wiring.connect(m, acc.bus, bridge.mem)
        for n in dir(self):
            if n.startswith("m_axi_"):
                ours, theirs = getattr(self, n), getattr(bridge, n)
                m.d.comb += (theirs.eq(ours) if n in _inputs(bridge) else ours.eq(theirs))
        bus_status = Signal(len(BUS_STATUS_BITS))
        sources = {"ctrl": 8, "err_index": PC_BITS, "err_arg": ERROR_ARG_BITS, "bus_status": len(bus_status),
                   **{f"counter_{n}": COUNTER_BITS for n in COUNTERS}}
        m.submodules.csr = csr = AxiLiteCsr(sources)
        for n in dir(self):
            if n.startswith("s_axil_"):
                ours, theirs = getattr(self, n), getattr(csr, n)
                m.d.comb += (theirs.eq(ours) if n in _inputs(csr) else ours.eq(theirs))
        error = acc.error != 0
        m.d.comb += [
            acc.start.eq(csr.start), acc.prog_addr.eq(csr.rw_prog_addr), acc.prog_len.eq(csr.rw_prog_len),
            acc.dram_bytes.eq(csr.rw_dram_bytes),
            csr.src_ctrl.eq(Cat(acc.busy, acc.done, Const(0, 2), acc.error)),
            csr.src_err_index.eq(acc.err_index), csr.src_err_arg.eq(acc.err_arg), csr.src_bus_status.eq(bus_status),
            self.irq.eq(acc.done | error | (bus_status != 0)),
        ]
        for i, n in enumerate(COUNTERS):
            m.d.comb += getattr(csr, f"src_counter_{n}").eq(acc.counters[i])
        with m.If(csr.start):
            m.d.sync += bus_status.eq(0)
        with m.Else():
            m.d.sync += bus_status.eq(bus_status | Cat(bridge.read_error, bridge.write_error))
        return m


def _inputs(component) -> set[str]:
    """Names of *component*'s input members."""
    return {n for n, mem in component.signature.members.items() if mem.flow == In}
