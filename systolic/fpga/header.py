"""A C99 header of the FPGA top's host interface, for a driver on the SoC's processor.

Everything in it comes from :mod:`systolic.arch.sysmap` (the register map, the
``ctrl`` fields as its access text states them, the counters, the error codes
and their ``ERR_*`` names) and from the config (rows, cols, bus bytes, name).
Plain Python: no amaranth.
"""

from __future__ import annotations

import re
import textwrap

from ..arch import sysmap
from ..arch.config import load_config

__all__ = ["csr_header_text", "ctrl_fields"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: One field of the ``ctrl`` access text: ``bit 0 = start``, ``bit 1 done``, ``bits 7:4 error``.
_FIELD = re.compile(r"\bbits? (\d+)(?::(\d+))?(?: =)? ([a-z_]+)")
#: The fields the helpers use, with the access (``W`` / ``R``) they must have.
_NEEDED = {"start": "W", "busy": "R", "done": "R", "error": "R"}


def ctrl_fields() -> dict[str, tuple[str, int, int]]:
    """The ``ctrl`` register's fields, read from its access text in :func:`~systolic.arch.sysmap.csr_map`:
    name -> (access ``"W"`` or ``"R"``, lowest bit, width).

    Raises ``RuntimeError`` if the text no longer names ``start`` (W), ``busy``, ``done`` and ``error`` (R),
    if a field repeats or leaves the register, or if ``error`` is not ``ERROR_CODE_BITS`` wide.
    """
    _, nbytes, text = sysmap.csr_map()["ctrl"]
    fields = {}
    for part in text.split(";"):
        access, _, spec = part.strip().partition(":")
        for m in _FIELD.finditer(spec):
            hi = int(m[1])
            lo = int(m[2]) if m[2] is not None else hi
            name = m[3]
            if name in fields or lo > hi or hi >= 8 * nbytes or access not in ("W", "R"):
                raise RuntimeError(f"cannot read the ctrl fields from {text!r}")
            fields[name] = (access, lo, hi - lo + 1)
    if any(fields.get(name, ("",))[0] != access for name, access in _NEEDED.items()) \
            or fields["error"][2] != sysmap.ERROR_CODE_BITS:
        raise RuntimeError(f"the ctrl access text {text!r} does not give W start, R busy, done and a "
                           f"{sysmap.ERROR_CODE_BITS}-bit R error")
    return fields


def _error_names() -> dict[int, str]:
    """Code -> short name (``BAD_OPCODE``) from sysmap's ``ERR_*`` constants; every code of ERRORS has one."""
    names = {}
    for key, value in vars(sysmap).items():
        if key.startswith("ERR_") and isinstance(value, int) and not isinstance(value, bool):
            if value in names:
                raise RuntimeError(f"error code {value} has two names in systolic.arch.sysmap")
            names[value] = key[len("ERR_"):]
    missing = sorted(set(sysmap.ERRORS) - set(names))
    if missing or set(names) - set(sysmap.ERRORS):
        raise RuntimeError(f"systolic.arch.sysmap: ERR_* constants and ERRORS differ (codes {missing} unnamed)")
    return dict(sorted(names.items()))


def _c_string(s: str) -> str:
    """*s* as a C string literal (escapes, octal for anything not printable ASCII, no trigraphs)."""
    out = []
    for ch in s:
        if ch in '\\"?':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def _c_comment(s: str) -> str:
    """*s* made safe inside ``/* ... */`` (no comment end, no trigraph, no line splice)."""
    return s.replace("*/", "* /").replace("??", "? ?").replace("\\", "/")


#: Top -> (what it is, the header comment's lines on how its CSR space is reached).
_TOP_NOTES = {
    "system": ("FPGA top", (
        " * The top's CSR port is byte-wide (docs/fpga.md). The helpers below take the base of the CSR space",
        " * as seen through a bridge that maps the 32-bit word at byte offset A (A a multiple of 4) to CSR",
        " * bytes A..A+3, byte A in bits 7:0.")),
    "axi": ("AXI top", (
        " * The top's AXI4-Lite slave serves the CSR space as 32-bit words (docs/fpga.md): the helpers below",
        " * take its base address as mapped on the processor's bus (the word at byte offset A holds CSR",
        " * bytes A..A+3, byte A in bits 7:0).")),
}


def csr_header_text(config, *, prefix: str = "systolic", top: str = "system") -> str:
    """The C99 header ``<config name>_csr.h`` of the FPGA top (*top* ``system``, the byte-wide CSR port, or
    ``axi``, the AXI4-Lite slave; both serve the same map) for *config*.

    Macros (``SYSTOLIC_`` for the default *prefix*; every number is unsigned):

    - config: ``_CONFIG_NAME``, ``_VERSION`` (strings), ``_ROWS``, ``_COLS``, ``_BUS_BYTES``;
    - CSR map: ``_CSR_ADDR_BITS``, ``_CSR_READ_LATENCY``; ``_CSR_<REGISTER>`` (byte address) and
      ``_CSR_<REGISTER>_BYTES`` of every register of :func:`~systolic.arch.sysmap.csr_map` but the counters;
    - ``ctrl``: ``_CTRL_<FIELD>_SHIFT`` / ``_MASK`` for ``START`` (written), ``BUSY``, ``DONE``, ``ERROR``;
    - counters: ``_COUNTER_BITS``, ``_CYCLE_COUNTER_BITS``, ``_COUNTER_BYTES``, ``_NUM_COUNTERS``,
      ``_COUNTERS_BASE`` and ``_COUNTER_<NAME>``, the byte address of register ``counter_<name>``;
    - errors: ``_ERROR_CODE_BITS``, ``_NUM_ERROR_CODES``, ``_ERR_<NAME>`` (the code of sysmap's ``ERR_<NAME>``).

    Tables: ``<prefix>_counter_name[]`` (the :data:`~systolic.arch.sysmap.COUNTERS` order) and
    ``<prefix>_error_text[]`` (reason template by code, NULL for 0 and unused codes). ``static inline``
    helpers on a ``volatile uint32_t *`` base (the CSR space seen through a 32-bit little-endian bridge):
    ``_read32``, ``_write32``, ``_read64`` (low word, then high), ``_counter``, ``_start``, ``_status``,
    ``_error_code``, ``_wait``. *prefix* (a C identifier) renames all of them, e.g. to use the headers of
    two configs in one program.
    """
    from .. import __version__

    config = load_config(config)
    if top not in _TOP_NOTES:
        raise ValueError(f"top must be one of {', '.join(_TOP_NOTES)}, not {top!r}")
    if not isinstance(prefix, str) or not _IDENT.fullmatch(prefix):
        raise ValueError(f"prefix must be a C identifier, not {prefix!r}")
    p, f = prefix.upper(), prefix.lower()
    regs = sysmap.csr_map()
    counters = {name[len("counter_"):]: addr for name, (addr, _, _) in regs.items() if name.startswith("counter_")}
    counter_bytes = sysmap.COUNTER_BITS // 8
    if list(counters) != list(sysmap.COUNTERS) or any(regs[f"counter_{n}"][1] != counter_bytes for n in counters):
        raise RuntimeError("systolic.arch.sysmap: the counter_* registers of csr_map() are not COUNTERS")
    errors = _error_names()
    n_codes = 1 << sysmap.ERROR_CODE_BITS
    guard = f"{config.name.upper()}_CSR_H" + ("" if p == "SYSTOLIC" else f"_{p}")
    defined = []

    def define(name, value):
        if not _IDENT.fullmatch(name):
            raise RuntimeError(f"{name!r} (from systolic.arch.sysmap) is not a C identifier")
        defined.append(name)
        return f"#define {name} {value}"

    lines = [
        f"/* {config.name}_csr.h: host interface of the systolic accelerator",
        f" * {config.name}, {_TOP_NOTES[top][0]} (`systolic export-fpga --top {top}`).",
        f" * Generated by systolic {__version__} from systolic.arch.sysmap; regenerate instead of editing.",
        " *",
        *_TOP_NOTES[top][1],
        " * Addresses not in the map read 0 and ignore writes. 64-bit registers are two words, low word",
        " * first: read them after the run (counters change while it runs).",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        "/* Config */",
        define(f"{p}_CONFIG_NAME", _c_string(config.name)),
        define(f"{p}_VERSION", _c_string(__version__)),
        define(f"{p}_ROWS", f"{config.rows}u"),
        define(f"{p}_COLS", f"{config.cols}u"),
        define(f"{p}_BUS_BYTES", f"{config.bus_bytes}u"),
        "",
        "/* CSR map: byte address and size of each register (multi-byte registers are little-endian) */",
        define(f"{p}_CSR_ADDR_BITS", f"{sysmap.CSR_ADDR_BITS}u"),
        "/* Cycles from csr_addr to its byte on csr_rdata (the system top's byte-wide CSR port) */",
        define(f"{p}_CSR_READ_LATENCY", f"{sysmap.CSR_READ_LATENCY}u"),
    ]
    for name, (addr, nbytes, access) in regs.items():
        if not name.startswith("counter_"):
            lines += textwrap.wrap(_c_comment(f"{name}: {access}"), 100, initial_indent="/* ",
                                   subsequent_indent=" * ")
            lines[-1] += " */"
            lines += [define(f"{p}_CSR_{name.upper()}", f"0x{addr:02X}u"),
                      define(f"{p}_CSR_{name.upper()}_BYTES", f"{nbytes}u")]

    lines += ["", "/* ctrl fields (W: written, R: read) */"]
    for name, (access, lo, width) in ctrl_fields().items():
        lines += [define(f"{p}_CTRL_{name.upper()}_SHIFT", f"{lo}u") + f"  /* {access} */",
                  define(f"{p}_CTRL_{name.upper()}_MASK", f"0x{((1 << width) - 1) << lo:02X}u")]

    lines += ["", "/* Performance counters (registers counter_<name>): byte address */",
              define(f"{p}_COUNTER_BITS", f"{sysmap.COUNTER_BITS}u"),
              "/* Every counter stops when cycles reaches 2^CYCLE_COUNTER_BITS - 1 (none wraps around) */",
              define(f"{p}_CYCLE_COUNTER_BITS", f"{sysmap.CYCLE_COUNTER_BITS}u"),
              define(f"{p}_COUNTER_BYTES", f"{counter_bytes}u"),
              define(f"{p}_NUM_COUNTERS", f"{len(counters)}u"),
              define(f"{p}_COUNTERS_BASE", f"0x{sysmap.CSR_COUNTERS:02X}u")]
    lines += [define(f"{p}_COUNTER_{name.upper()}", f"0x{addr:02X}u") for name, addr in counters.items()]
    lines += ["", f"static const char *const {f}_counter_name[{p}_NUM_COUNTERS] = {{"]
    lines += [f"    {_c_string(name)}," for name in counters]
    lines += ["};"]

    lines += ["", "/* Error codes of the ctrl error field (0: no error); {arg} in a text is err_arg */",
              define(f"{p}_ERROR_CODE_BITS", f"{sysmap.ERROR_CODE_BITS}u"),
              define(f"{p}_NUM_ERROR_CODES", f"{n_codes}u")]
    lines += [define(f"{p}_ERR_{name}", f"{code}u") for code, name in errors.items()]
    lines += ["", f"static const char *const {f}_error_text[{p}_NUM_ERROR_CODES] = {{"]
    lines += [f"    {_c_string(sysmap.ERRORS[code]) if code in sysmap.ERRORS else 'NULL'},  /* {code} */"
              for code in range(n_codes)]
    lines += ["};", ""]
    lines += _helpers(p, f)
    lines += [f"#endif /* {guard} */", ""]
    twice = sorted({name for name in defined if defined.count(name) > 1})
    if twice:
        raise RuntimeError(f"systolic.arch.sysmap gives two macros the same name: {', '.join(twice)}")
    return "\n".join(lines)


def _helpers(p: str, f: str) -> list[str]:
    """The ``static inline`` access helpers (``p``: macro prefix, ``f``: function prefix)."""
    return f"""\
/* Helpers. base: the CSR space as 32-bit words; addr: a byte address above (a multiple of 4). */
static inline uint32_t {f}_read32(volatile uint32_t *base, uint32_t addr)
{{
    return base[addr / 4u];
}}

static inline void {f}_write32(volatile uint32_t *base, uint32_t addr, uint32_t value)
{{
    base[addr / 4u] = value;
}}

/* A 64-bit register (err_arg, counters): the low word, then the high word. */
static inline uint64_t {f}_read64(volatile uint32_t *base, uint32_t addr)
{{
    uint64_t lo = base[addr / 4u];
    uint64_t hi = base[addr / 4u + 1u];
    return hi << 32 | lo;
}}

/* Counter i in {f}_counter_name order. */
static inline uint64_t {f}_counter(volatile uint32_t *base, uint32_t i)
{{
    return {f}_read64(base, {p}_COUNTERS_BASE + i * {p}_COUNTER_BYTES);
}}

/* Start the program at prog_addr (write prog_addr, prog_len and dram_bytes first); ignored while busy.
 * ctrl shows the new run (busy, done and error cleared) from the second clock cycle after this write. */
static inline void {f}_start(volatile uint32_t *base)
{{
    {f}_write32(base, {p}_CSR_CTRL, {p}_CTRL_START_MASK);
}}

/* The ctrl status: test {p}_CTRL_BUSY_MASK, {p}_CTRL_DONE_MASK, {f}_error_code(). */
static inline uint32_t {f}_status(volatile uint32_t *base)
{{
    return {f}_read32(base, {p}_CSR_CTRL) & 0xFFu;
}}

static inline uint32_t {f}_error_code(uint32_t status)
{{
    return (status & {p}_CTRL_ERROR_MASK) >> {p}_CTRL_ERROR_SHIFT;
}}

/* Poll ctrl until the run is done or stopped with an error, at most max_polls reads (0: no limit).
 * Returns the last status: neither done nor an error code means it timed out. */
static inline uint32_t {f}_wait(volatile uint32_t *base, uint32_t max_polls)
{{
    uint32_t status;
    uint32_t n = 0u;
    do {{
        status = {f}_status(base);
        n++;
    }} while (!(status & {p}_CTRL_DONE_MASK) && {f}_error_code(status) == 0u
             && (max_polls == 0u || n < max_polls));
    return status;
}}
""".splitlines() + [""]
