"""The C header of the FPGA top's CSR map (``systolic.fpga.header``), compiled and run with the system C compiler.

Expected values are computed here from ``systolic.arch.sysmap`` and the config (the source of truth); the
``ctrl`` bit layout and a few addresses are written out by hand from docs/fpga.md. No C compiler: skipped,
unless ``CI`` is set (then it fails).
"""

import os
import re
import shutil
import subprocess

import pytest

from systolic import __version__
from systolic.arch import sysmap
from systolic.arch.config import AcceleratorConfig
from systolic.fpga.export import export_fusesoc, fusesoc_core_text
from systolic.fpga.header import csr_header_text

TINY = AcceleratorConfig.preset("tiny")
DEFAULT = AcceleratorConfig.preset("default")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
FILL = 0xA5A5A5A5       # what the fake register words hold before a helper writes


@pytest.fixture(scope="module")
def cc():
    path = shutil.which("cc")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler `cc` on PATH (CI is set, so this is a failure, not a skip)")
        pytest.skip("no C compiler `cc` on PATH")
    return path


def _run_c(cc, tmp_path, headers: dict, body: str) -> str:
    """Write *headers* ({file name: text}), compile a main() with *body* warning-free, run it, return stdout."""
    for name, text in headers.items():
        (tmp_path / name).write_text(text)
    includes = "".join(f'#include "{name}"\n' for name in headers)
    src = tmp_path / "prog.c"
    src.write_text(f"#include <inttypes.h>\n#include <stdio.h>\n{includes}\nint main(void)\n{{\n{body}\n"
                   "    return 0;\n}\n")
    exe = tmp_path / "prog"
    proc = subprocess.run([cc, *CFLAGS, "-o", str(exe), str(src)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=20, check=True).stdout


def _err_constants() -> dict:
    """sysmap's ``ERR_<NAME>`` constants (the names the hardware's checker and controller use)."""
    return {k: v for k, v in vars(sysmap).items() if k.startswith("ERR_") and type(v) is int}


def _expected(config, p="SYSTOLIC"):
    """(numeric macros, string macros) the header must define, from sysmap and the config."""
    ints = {f"{p}_ROWS": config.rows, f"{p}_COLS": config.cols, f"{p}_BUS_BYTES": config.bus_bytes,
            f"{p}_CSR_ADDR_BITS": sysmap.CSR_ADDR_BITS, f"{p}_COUNTER_BITS": sysmap.COUNTER_BITS,
            f"{p}_CSR_READ_LATENCY": sysmap.CSR_READ_LATENCY, f"{p}_CYCLE_COUNTER_BITS": sysmap.CYCLE_COUNTER_BITS,
            f"{p}_NUM_COUNTERS": len(sysmap.COUNTERS), f"{p}_COUNTERS_BASE": sysmap.CSR_COUNTERS,
            f"{p}_ERROR_CODE_BITS": sysmap.ERROR_CODE_BITS, f"{p}_NUM_ERROR_CODES": 2 ** sysmap.ERROR_CODE_BITS}
    counter_bytes = set()
    for name, (addr, nbytes, _) in sysmap.csr_map().items():
        if name.startswith("counter_"):
            ints[f"{p}_COUNTER_{name.removeprefix('counter_').upper()}"] = addr
            counter_bytes.add(nbytes)
        else:
            ints[f"{p}_CSR_{name.upper()}"] = addr
            ints[f"{p}_CSR_{name.upper()}_BYTES"] = nbytes
    assert counter_bytes == {8}
    ints[f"{p}_COUNTER_BYTES"] = 8
    errs = _err_constants()
    assert sorted(errs.values()) == sorted(sysmap.ERRORS)
    ints.update({f"{p}_{k}": v for k, v in errs.items()})
    # docs/fpga.md: ctrl write bit 0 = start; read bit 0 busy, bit 1 done, bits 7:4 error code.
    ints.update({f"{p}_CTRL_START_SHIFT": 0, f"{p}_CTRL_START_MASK": 0x01, f"{p}_CTRL_BUSY_SHIFT": 0,
                 f"{p}_CTRL_BUSY_MASK": 0x01, f"{p}_CTRL_DONE_SHIFT": 1, f"{p}_CTRL_DONE_MASK": 0x02,
                 f"{p}_CTRL_ERROR_SHIFT": 4, f"{p}_CTRL_ERROR_MASK": 0xF0})
    strings = {f"{p}_CONFIG_NAME": config.name, f"{p}_VERSION": __version__}
    return ints, strings


@pytest.mark.parametrize("config", [TINY, DEFAULT], ids=["tiny", "default"])
def test_every_macro_value_matches_sysmap(config, cc, tmp_path):
    text = csr_header_text(config)
    ints, strings = _expected(config)
    guard = re.search(r"^#ifndef (\w+)$", text, re.M).group(1)
    assert f"#define {guard}\n" in text
    assert set(re.findall(r"^#define (\w+)", text, re.M)) - {guard} == set(ints) | set(strings)

    body = [f'    printf("%s=%lu %d\\n", "{m}", (unsigned long)({m}), (int)(0 * ({m}) - 1 > 0));' for m in ints]
    body += [f'    printf("%s=%s\\n", "{m}", {m});' for m in strings]
    out = _run_c(cc, tmp_path, {f"{config.name}_csr.h": text}, "\n".join(body))
    got_ints, got_strings = {}, {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name in ints:
            number, unsigned = value.split()
            assert unsigned == "1", f"{name} is not unsigned"
            got_ints[name] = int(number)
        else:
            got_strings[name] = value
    assert got_ints == ints
    assert got_strings == strings

    # Hand-written from the CSR map table of docs/fpga.md (catches a rule that is wrong in sysmap and here alike).
    assert [got_ints[f"SYSTOLIC_CSR_{r}"] for r in ("CTRL", "PROG_ADDR", "PROG_LEN", "DRAM_BYTES", "ERR_INDEX",
                                                      "ERR_ARG")] == [0x00, 0x04, 0x08, 0x0C, 0x10, 0x18]
    assert got_ints["SYSTOLIC_CSR_ERR_ARG_BYTES"] == 8 and got_ints["SYSTOLIC_CSR_PROG_LEN_BYTES"] == 4
    assert [got_ints[f"SYSTOLIC_COUNTER_{c}"] for c in ("CYCLES", "INSTRUCTIONS", "MACS")] == [0x20, 0x28, 0x30]
    assert (got_ints["SYSTOLIC_ERR_BAD_OPCODE"], got_ints["SYSTOLIC_ERR_NO_HALT"]) == (1, 2)
    # Counter i sits at CSR_COUNTERS + 8 i, in COUNTERS order.
    assert [got_ints[f"SYSTOLIC_COUNTER_{c.upper()}"] for c in sysmap.COUNTERS] == \
        [sysmap.CSR_COUNTERS + 8 * i for i in range(len(sysmap.COUNTERS))]


def test_tables_match_counters_and_errors(cc, tmp_path):
    body = """
    unsigned i;
    printf("sizes %u %u\\n", (unsigned)(sizeof systolic_counter_name / sizeof systolic_counter_name[0]),
           (unsigned)(sizeof systolic_error_text / sizeof systolic_error_text[0]));
    for (i = 0; i < SYSTOLIC_NUM_COUNTERS; i++)
        printf("counter\\t%u\\t%s\\n", i, systolic_counter_name[i]);
    for (i = 0; i < SYSTOLIC_NUM_ERROR_CODES; i++) {
        if (systolic_error_text[i] == NULL)
            printf("error\\t%u\\tNULL\\n", i);
        else
            printf("error\\t%u\\t=%s\\n", i, systolic_error_text[i]);
    }"""
    out = _run_c(cc, tmp_path, {"tiny_csr.h": csr_header_text(TINY)}, body).splitlines()
    n_codes = 2 ** sysmap.ERROR_CODE_BITS
    assert out[0] == f"sizes {len(sysmap.COUNTERS)} {n_codes}"
    counters = [ln.split("\t") for ln in out if ln.startswith("counter\t")]
    assert [(int(i), name) for _, i, name in counters] == list(enumerate(sysmap.COUNTERS))
    errors = {int(i): text for _, i, text in (ln.split("\t", 2) for ln in out if ln.startswith("error\t"))}
    assert errors == {code: "=" + sysmap.ERRORS[code] if code in sysmap.ERRORS else "NULL" for code in range(n_codes)}
    assert errors[0] == "NULL" and errors[2] == "=program ends without HALT"


def test_helpers_on_a_fake_register_array(cc, tmp_path):
    """The helpers on a plain array standing for the CSR space (word i = CSR bytes 4i..4i+3)."""
    regs = sysmap.csr_map()
    words = 2 ** sysmap.CSR_ADDR_BITS // 4
    counter_values = {i: (0x1000_0000 + i) << 32 | (0x8000_0000 + 3 * i) for i in range(len(sysmap.COUNTERS))}
    setup = "".join(f"    regs[{regs[f'counter_{c}'][0] // 4}] = 0x{counter_values[i] & 0xFFFFFFFF:08X}u;\n"
                    f"    regs[{regs[f'counter_{c}'][0] // 4 + 1}] = 0x{counter_values[i] >> 32:08X}u;\n"
                    for i, c in enumerate(sysmap.COUNTERS))
    body = f"""
    static uint32_t regs[{words}];
    volatile uint32_t *base = regs;
    unsigned i;
#define FILL_AND_RUN(label, stmt) \\
    for (i = 0; i < {words}u; i++) regs[i] = 0x{FILL:08X}u; \\
    stmt; \\
    for (i = 0; i < {words}u; i++) if (regs[i] != 0x{FILL:08X}u) printf(label " %u %08" PRIX32 "\\n", i, regs[i]);
    FILL_AND_RUN("write32", systolic_write32(base, SYSTOLIC_CSR_PROG_LEN, 0x12345678u))
    FILL_AND_RUN("start", systolic_start(base))
    printf("read32 %08" PRIX32 "\\n", systolic_read32(base, SYSTOLIC_CSR_DRAM_BYTES));
    regs[{regs['err_arg'][0] // 4}] = 0x89ABCDEFu;
    regs[{regs['err_arg'][0] // 4 + 1}] = 0x01234567u;
    printf("read64 %016" PRIX64 "\\n", systolic_read64(base, SYSTOLIC_CSR_ERR_ARG));
{setup}
    for (i = 0; i < SYSTOLIC_NUM_COUNTERS; i++)
        printf("counter %u %016" PRIX64 "\\n", i, systolic_counter(base, i));
    printf("cycles %016" PRIX64 "\\n", systolic_read64(base, SYSTOLIC_COUNTER_CYCLES));
    regs[0] = 0xFFFFFF72u;          /* error 7 and done, junk above the ctrl byte */
    printf("status %02" PRIX32 " error %" PRIu32 " wait %02" PRIX32 "\\n", systolic_status(base),
           systolic_error_code(systolic_status(base)), systolic_wait(base, 3u));
    regs[0] = 0x01u;                /* busy: wait gives up after max_polls */
    printf("busy wait %02" PRIX32 "\\n", systolic_wait(base, 5u));
    regs[0] = 0x02u;                /* done, no error */
    printf("done wait %02" PRIX32 " error %" PRIu32 "\\n", systolic_wait(base, 0u), systolic_error_code(regs[0]));
    regs[0] = 0xE0u;                /* error 14 without done */
    printf("error wait %02" PRIX32 " error %" PRIu32 "\\n", systolic_wait(base, 0u), systolic_error_code(regs[0]));
"""
    out = _run_c(cc, tmp_path, {"tiny_csr.h": csr_header_text(TINY)}, body).splitlines()
    prog_len, dram_bytes, ctrl = regs["prog_len"][0], regs["dram_bytes"][0], regs["ctrl"][0]
    assert out[0] == f"write32 {prog_len // 4} 12345678"           # that word only, all 32 bits
    assert out[1] == f"start {ctrl // 4} 00000001"                 # ctrl bit 0 only
    assert out[2] == f"read32 {FILL:08X}"
    assert out[3] == "read64 0123456789ABCDEF"                     # low word at addr, high word at addr + 4
    assert out[4:4 + len(counter_values)] == [f"counter {i} {v:016X}" for i, v in counter_values.items()]
    assert out[4 + len(counter_values):] == [
        f"cycles {counter_values[0]:016X}", "status 72 error 7 wait 72", "busy wait 01", "done wait 02 error 0",
        "error wait E0 error 14"]
    assert dram_bytes % 4 == 0 and prog_len != dram_bytes


def test_two_configs_in_one_program_with_prefixes(cc, tmp_path):
    a = csr_header_text(TINY)
    b = csr_header_text(DEFAULT, prefix="npu1")
    assert "SYSTOLIC_" not in b.replace(f"{DEFAULT.name.upper()}_CSR_H", "") and "systolic_read32" not in b
    assert "#define NPU1_CSR_PROG_ADDR 0x04u" in b and "npu1_read64(volatile uint32_t *base" in b
    body = ('    printf("%s %u %s %u\\n", SYSTOLIC_CONFIG_NAME, SYSTOLIC_ROWS, NPU1_CONFIG_NAME, NPU1_ROWS);\n'
            '    printf("%s %s\\n", systolic_error_text[SYSTOLIC_ERR_NO_HALT], npu1_counter_name[1]);')
    # Each header twice: the include guards hold.
    out = _run_c(cc, tmp_path, {"a.h": a, "b.h": b, "a_again.h": a, "b_again.h": b}, body)
    assert out.splitlines() == [f"{TINY.name} {TINY.rows} {DEFAULT.name} {DEFAULT.rows}",
                                f"{sysmap.ERRORS[2]} {sysmap.COUNTERS[1]}"]


@pytest.mark.parametrize("prefix", ["", "9npu", "npu-1", None])
def test_prefix_must_be_a_c_identifier(prefix):
    with pytest.raises(ValueError, match=rf"^prefix must be a C identifier, not {re.escape(repr(prefix))}$"):
        csr_header_text(TINY, prefix=prefix)


def test_header_lines_fit_and_name_the_config():
    text = csr_header_text(DEFAULT)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert text.startswith(f"/* {DEFAULT.name}_csr.h: ")
    assert f"Generated by systolic {__version__}" in text
    assert "#include <stdint.h>" in text and "\t" not in text


def test_export_writes_the_header(tmp_path):
    paths = export_fusesoc(TINY, tmp_path)
    header = tmp_path / f"{TINY.name}_csr.h"
    assert header in paths and header.is_file()
    assert header.read_text() == csr_header_text(TINY)
    core = (tmp_path / f"{TINY.name}.core").read_text().splitlines()
    assert f"      - {TINY.name}_csr.h: {{file_type: cSource, is_include_file: true}}" in core
    assert core[core.index(f"      - {TINY.name}_csr.h: {{file_type: cSource, is_include_file: true}}") - 2] == "  sw:"


def test_core_and_array_tops_get_no_header():
    for top in ("core", "array"):
        assert "_csr.h" not in fusesoc_core_text(TINY, top=top)
    assert f"{TINY.name}_csr.h" in fusesoc_core_text(TINY, top="system")


def test_docs_example_compiles(cc, tmp_path):
    """The C example of docs/fpga.md ("C header") compiles warning-free against the default config's header."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fpga.md").read_text()
    section = doc.split("\n### C header\n", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```c\n(.*?)```", section, re.S).group(1)
    include = re.search(r'^#include "(\w+_csr\.h)"$', example, re.M).group(1)
    assert include == f"{DEFAULT.name}_csr.h"
    (tmp_path / include).write_text(csr_header_text(DEFAULT))
    (tmp_path / "example.c").write_text(example)
    proc = subprocess.run([cc, *CFLAGS, "-c", "-o", str(tmp_path / "example.o"), str(tmp_path / "example.c")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
