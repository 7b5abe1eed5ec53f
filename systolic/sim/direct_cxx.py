"""C++ sources of the direct Verilator driver (:mod:`systolic.sim.direct`), kept as strings
so they ship inside the package."""

CORE_H = r"""// Direct driver core for the Verilated ``Accelerator`` (systolic.sim.direct).
//
// Clocks the model, drives the CSR inputs and serves the memory port from a
// byte array with the timing of systolic.arch.memory.MemoryModel, cycle for
// cycle as the cocotb MemoryServer (systolic/sim/cocotb_system.py) does:
// inputs change at mid-cycle (the falling edge), requests are accepted in
// order, each d cycles after it is first seen, a read answers `latency`
// cycles after its accept cycle through a queue of answers (pipelined reads:
// requests go on while reads wait). Included by the ctypes shim (direct.py)
// and by the raw harness of scripts/bench_sim.py. Port names are Verilator's
// ("__" -> "___05F").
//
// Waveforms (the tracing variant of the direct build, -DSD_TRACE=1 and
// -DSD_TRACE_FST=0/1): every rising and falling clock edge of the cycles in
// the window [trace_lo, trace_hi) is dumped, a cycle being 10 ns (as the
// cocotb clock); without SD_TRACE the hooks compile to nothing.
#include "Vtop.h"
#include "verilated.h"
#include <cstdint>
#include <cstring>
#include <cstdio>
#ifndef SD_TRACE
#define SD_TRACE 0
#endif
#if SD_TRACE
#if SD_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC SdTrace;
#else
#include "verilated_vcd_c.h"
typedef VerilatedVcdC SdTrace;
#endif
#endif

template <class T> static inline void put_bytes(T& s, const uint8_t* p, int n) {
    uint64_t v = 0; memcpy(&v, p, n > 8 ? 8 : n); s = (T)v;
}
template <std::size_t N> static inline void put_bytes(VlWide<N>& s, const uint8_t* p, int n) {
    memset(s.data(), 0, N * 4); memcpy(s.data(), p, n > (int)(N * 4) ? N * 4 : n);
}
template <class T> static inline void get_bytes(const T& s, uint8_t* p, int n) {
    uint64_t v = (uint64_t)s; memcpy(p, &v, n > 8 ? 8 : n);
}
template <std::size_t N> static inline void get_bytes(const VlWide<N>& s, uint8_t* p, int n) {
    memcpy(p, s.data(), n > (int)(N * 4) ? N * 4 : n);
}

enum { M_IDLE = 0, M_WAIT, M_TAKEN };
// Answers in flight: at most `latency` (<= 1000, MemoryModel) reads, one accept per cycle.
enum { RQ = 1024 };
enum { R_DONE = 0, R_HANG = 1, R_MEMERR = 2, R_NEED_DELAYS = 3, R_RUNNING = 4 };

struct Sim {
    VerilatedContext* ctx;
    Vtop* top;
    uint8_t* mem; uint64_t mem_size;
    int bb, latency, base_delay;
    const int32_t* delays; int64_t n_delays, delay_pos;  // random stalls: accept delays (nullptr: base)
    int state; int64_t cnt;     // request side: M_*, cycles left in M_WAIT
    uint64_t addr; int write; uint8_t wdata[64]; uint64_t wstrb;
    uint64_t rq_due[RQ];        // answers of accepted reads (ring, in order): due value of `cycles`
    uint8_t rq_data[RQ][64];
    int rq_head, rq_n;
    uint64_t cycles;            // rising edges since construction
    int phase;                  // program run: 0 none, 1 start pulsed, 2 waiting for busy to fall
    uint64_t waited, limit;
    char err[256];
#if SD_TRACE
    SdTrace* tfp;               // open waveform file, or nullptr
    uint64_t trace_lo, trace_hi, period;   // dumped cycles; a cycle in time units (10 ns)
#endif
};

// Dump the model's values after the rising (half 0) or falling (half 1) edge of cycle c.
static inline void trace_dump(Sim* s, uint64_t c, int half) {
#if SD_TRACE
    if (s->tfp && c >= s->trace_lo && c < s->trace_hi) s->tfp->dump(c * s->period + half * (s->period / 2));
#else
    (void)s; (void)c; (void)half;
#endif
}

static inline int next_delay(Sim* s) {
    if (!s->delays) return s->base_delay;
    return s->delays[s->delay_pos++];
}

static inline void accept(Sim* s) {
    Vtop* t = s->top;
    t->bus___05Freq_ready = 1;
    s->rq_due[(s->rq_head + s->rq_n) & (RQ - 1)] = s->cycles + s->latency;   // if a read
    s->addr = t->bus___05Freq_addr;
    s->write = t->bus___05Freq_write;
    if (s->write) {
        get_bytes(t->bus___05Freq_wdata, s->wdata, s->bb);
        s->wstrb = (uint64_t)t->bus___05Freq_wstrb;
    }
    s->state = M_TAKEN;
}

static inline void idle_check(Sim* s) {
    if (s->top->bus___05Freq_valid) {
        int d = next_delay(s);
        if (d) { s->state = M_WAIT; s->cnt = d; }
        else accept(s);
    }
}

// The memory server's work at one falling edge; returns false on an access past the end.
static inline bool mem_falling(Sim* s) {
    Vtop* t = s->top;
    switch (s->state) {
    case M_IDLE: idle_check(s); break;
    case M_WAIT: if (--s->cnt == 0) accept(s); break;
    case M_TAKEN: {
        t->bus___05Freq_ready = 0;
        const int bb = s->bb;
        if (s->addr + bb > s->mem_size) {
            snprintf(s->err, sizeof s->err, "memory access at byte %llu past the end of the %llu-byte memory",
                     (unsigned long long)s->addr, (unsigned long long)s->mem_size);
            return false;
        }
        if (s->write) {
            uint8_t* m = s->mem + s->addr;
            if (bb == 64 ? s->wstrb == ~0ull : s->wstrb == (1ull << bb) - 1) memcpy(m, s->wdata, bb);
            else for (int j = 0; j < bb; ++j) if (s->wstrb >> j & 1) m[j] = s->wdata[j];
        } else {
            // Queued with its due cycle (set by accept()); the data is the memory's now.
            memcpy(s->rq_data[(s->rq_head + s->rq_n) & (RQ - 1)], s->mem + s->addr, bb);
            s->rq_n++;
        }
        s->state = M_IDLE;
        idle_check(s);
        break;
    }
    }
    // The answer due this cycle, if any (one cycle of resp_valid each; accepts
    // fall in distinct cycles, so answers never collide).
    if (s->rq_n && s->rq_due[s->rq_head] == s->cycles) {
        put_bytes(t->bus___05Fresp_data, s->rq_data[s->rq_head], s->bb);
        t->bus___05Fresp_valid = 1;
        s->rq_head = (s->rq_head + 1) & (RQ - 1); s->rq_n--;
    } else t->bus___05Fresp_valid = 0;
    return true;
}

// One clock cycle: rising edge, then the falling edge with the memory's new inputs.
static inline bool sim_cycle(Sim* s) {
    Vtop* t = s->top;
    t->clk = 1; t->eval(); trace_dump(s, s->cycles, 0); s->cycles++;
    t->clk = 0;
    bool ok = mem_falling(s);
    t->eval(); trace_dump(s, s->cycles - 1, 1);
    return ok;
}

static void sim_init(Sim* s, int bus_bytes, int latency, int base_delay) {
    memset(s, 0, sizeof *s);
    s->ctx = new VerilatedContext;
#if SD_TRACE
    s->ctx->traceEverOn(true);
#endif
    s->top = new Vtop{s->ctx};
#if SD_TRACE
    s->period = 1;                              // 10 ns in the model's time precision (10^prec s)
    for (int e = -8; e > s->ctx->timeprecision(); --e) s->period *= 10;
    s->trace_hi = ~0ull;
#endif
    s->bb = bus_bytes; s->latency = latency; s->base_delay = base_delay;
    Vtop* t = s->top;
    t->clk = 0; t->rst = 1; t->start = 0; t->bus___05Freq_ready = 0; t->bus___05Fresp_valid = 0;
    t->eval();
    for (int i = 0; i < 2; ++i) { t->clk = 1; t->eval(); t->clk = 0; t->eval(); }
    t->rst = 0; t->eval();
}

static void sim_free(Sim* s) {
#if SD_TRACE
    if (s->tfp) { s->tfp->close(); delete s->tfp; s->tfp = nullptr; }
#endif
    if (s->top) { s->top->final(); delete s->top; }
    delete s->ctx;
    s->top = nullptr; s->ctx = nullptr;
}

// Start a program (as the cocotb Host: start high for one cycle at mid-cycle).
static void prog_start(Sim* s, uint32_t prog_addr, uint32_t prog_len, uint32_t dram_bytes, uint64_t limit) {
    Vtop* t = s->top;
    t->prog_addr = prog_addr; t->prog_len = prog_len; t->dram_bytes = dram_bytes;
    t->start = 1; t->eval();
    s->phase = 1; s->waited = 0; s->limit = limit;
}

// Advance a started program by at most max_cycles; R_RUNNING if it still runs.
static int prog_run(Sim* s, uint64_t max_cycles) {
    Vtop* t = s->top;
    const bool stalls = s->delays != nullptr;
    for (uint64_t i = 0; i < max_cycles; ++i) {
        if (stalls && s->delay_pos >= s->n_delays) return R_NEED_DELAYS;
        if (s->phase == 1) {
            t->clk = 1; t->eval(); trace_dump(s, s->cycles, 0); s->cycles++;
            t->clk = 0; t->start = 0;
            if (!mem_falling(s)) return R_MEMERR;
            t->eval(); trace_dump(s, s->cycles - 1, 1);
            if (!t->busy) { s->phase = 0; return R_DONE; }
            s->phase = 2;
            continue;
        }
        if (!sim_cycle(s)) return R_MEMERR;
        s->waited++;
        if (!t->busy) { s->phase = 0; return R_DONE; }
        if (s->waited >= s->limit) return R_HANG;   // the caller may raise the limit and go on
    }
    return R_RUNNING;
}
"""

SHIM_CPP = r"""// ctypes C ABI over direct_core.h (systolic.sim.direct).
#include "direct_core.h"
double sc_time_stamp() { return 0; }

struct Port { const char* name; int bits; };
// Widths from systolic.arch.sysmap, passed as -D by systolic.sim.direct.build_direct.
#define PORTS(X) X(clk,clk,1) X(rst,rst,1) X(start,start,1) X(prog_addr,prog_addr,32) X(prog_len,prog_len,PC_BITS) \
  X(dram_bytes,dram_bytes,32) X(busy,busy,1) X(done,done,1) X(error,error,ERROR_BITS) \
  X(err_index,err_index,PC_BITS) X(err_arg,err_arg,ARG_BITS) X(counters,counters,COUNTERS_BITS) X(bus__req_valid,bus___05Freq_valid,1) \
  X(bus__req_ready,bus___05Freq_ready,1) X(bus__req_addr,bus___05Freq_addr,32) \
  X(bus__req_write,bus___05Freq_write,1) X(bus__req_wdata,bus___05Freq_wdata,BUS_BITS) \
  X(bus__req_wstrb,bus___05Freq_wstrb,BUS_BYTES) X(bus__resp_valid,bus___05Fresp_valid,1) \
  X(bus__resp_data,bus___05Fresp_data,BUS_BITS)
#define ENTRY(n, m, b) {#n, b},
static const Port ports[] = {PORTS(ENTRY)};

extern "C" {
int sd_n_ports() { return sizeof ports / sizeof ports[0]; }
const char* sd_port_name(int i) { return ports[i].name; }
int sd_port_bits(int i) { return ports[i].bits; }
void* sd_new(int bus_bytes, int latency, int base_delay) {
    Sim* s = new Sim; sim_init(s, bus_bytes, latency, base_delay); return s;
}
void sd_free(void* p) { Sim* s = (Sim*)p; sim_free(s); delete s; }
void sd_set_memory(void* p, uint8_t* mem, uint64_t size) { Sim* s = (Sim*)p; s->mem = mem; s->mem_size = size; }
void sd_set_delays(void* p, const int32_t* d, int64_t n) {
    Sim* s = (Sim*)p; s->delays = d; s->n_delays = n; s->delay_pos = 0;
}
int64_t sd_delays_left(void* p) { Sim* s = (Sim*)p; return s->delays ? s->n_delays - s->delay_pos : -1; }
uint64_t sd_cycles(void* p) { return ((Sim*)p)->cycles; }
const char* sd_error(void* p) { return ((Sim*)p)->err; }
void sd_eval(void* p) { ((Sim*)p)->top->eval(); }
#define POKE(n, m, b) case __COUNTER__ - base: put_bytes(t->m, v, (b + 7) / 8); break;
#define PEEK(n, m, b) case __COUNTER__ - base2: get_bytes(t->m, v, (b + 7) / 8); break;
void sd_poke(void* p, int i, const uint8_t* v) {
    Vtop* t = ((Sim*)p)->top;
    enum { base = __COUNTER__ + 1 };
    switch (i) { PORTS(POKE) }
}
void sd_peek(void* p, int i, uint8_t* v) {
    Vtop* t = ((Sim*)p)->top;
    enum { base2 = __COUNTER__ + 1 };
    switch (i) { PORTS(PEEK) }
}
// Plain clock cycles with the memory server (no program bookkeeping).
int sd_step(void* p, uint64_t n) {
    Sim* s = (Sim*)p;
    for (uint64_t i = 0; i < n; ++i) if (!sim_cycle(s)) return R_MEMERR;
    return R_DONE;
}
void sd_start(void* p, uint32_t prog_addr, uint32_t prog_len, uint32_t dram_bytes, uint64_t limit) {
    prog_start((Sim*)p, prog_addr, prog_len, dram_bytes, limit);
}
int sd_run(void* p, uint64_t max_cycles) { return prog_run((Sim*)p, max_cycles); }
void sd_set_limit(void* p, uint64_t limit) { ((Sim*)p)->limit = limit; }
uint64_t sd_waited(void* p) { return ((Sim*)p)->waited; }
// Waveforms (closed by sd_free): 0 on success, -1 if this build has no tracing (the fast build).
int sd_trace_open(void* p, const char* path) {
#if SD_TRACE
    Sim* s = (Sim*)p;
    if (s->tfp) return -1;
    s->tfp = new SdTrace;
    s->top->trace(s->tfp, 99);
    s->tfp->open(path);
    return s->tfp->isOpen() ? 0 : -1;
#else
    (void)p; (void)path; return -1;
#endif
}
void sd_trace_window(void* p, uint64_t lo, uint64_t hi) {
#if SD_TRACE
    Sim* s = (Sim*)p; s->trace_lo = lo; s->trace_hi = hi;
#else
    (void)p; (void)lo; (void)hi;
#endif
}
}
"""
