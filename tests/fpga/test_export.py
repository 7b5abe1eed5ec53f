"""FuseSoC export and the narrow-bus wrappers (no synthesis tools needed)."""

import re

import pytest

from systolic.fpga.export import export_fusesoc, fusesoc_core_text
from systolic.arch.sysmap import CSR_ADDR_BITS, csr_map
from systolic.fpga.wrappers import RegisterBankTop, top_module_name
from systolic.arch.config import AcceleratorConfig

TINY = AcceleratorConfig.preset("tiny")
TOP_NAME = top_module_name(TINY, "system")


def test_core_file_content():
    text = fusesoc_core_text(TINY)
    lines = text.splitlines()
    assert lines[0] == "CAPI=2:"
    assert f"name: systolic:accel:{TINY.name}:0.1.0" in lines
    assert f"    toplevel: {TOP_NAME}" in lines
    assert f"      - {TOP_NAME}.v" in lines
    assert "    file_type: verilogSource" in lines
    for target in ("  default: &default", "  lint:", "  synth:"):
        assert target in lines
    assert "--85k, --package, CABGA381" in text
    assert "\t" not in text  # YAML: spaces only


def test_core_file_custom_vlnv_and_errors():
    assert "name: acme:npu:gemm:2.0" in fusesoc_core_text(TINY, vlnv="acme:npu:gemm:2.0").splitlines()
    with pytest.raises(ValueError, match=r"^vlnv must look like vendor:library:name:version, not 'bad name'$"):
        fusesoc_core_text(TINY, vlnv="bad name")
    with pytest.raises(ValueError, match=r"^top must be one of system, axi, core, array, not 'soc'$"):
        fusesoc_core_text(TINY, top="soc")


def test_export_writes_verilog_config_and_core(tmp_path):
    paths = export_fusesoc(TINY, tmp_path)
    assert [p.name for p in paths] == [f"{TOP_NAME}.v", f"{TINY.name}.json", f"{TINY.name}.core",
                                       f"{TINY.name}_csr.h"]
    v = paths[0].read_text()
    header = re.search(rf"^module {TOP_NAME}\((.*?)\);", v, re.M).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert {"clk", "rst", "csr_addr", "csr_we", "csr_wdata", "csr_rdata", "irq", "bus__req_valid",
            "bus__req_ready", "bus__req_addr", "bus__req_write", "bus__req_wdata", "bus__req_wstrb",
            "bus__resp_valid", "bus__resp_data"} == ports
    assert AcceleratorConfig.load(paths[1]) == TINY


def test_export_of_the_axi_top(tmp_path):
    paths = export_fusesoc(TINY, tmp_path, top="axi")
    name = f"{TINY.name}_axi"
    assert top_module_name(TINY, "axi") == name
    assert [p.name for p in paths] == [f"{name}.v", f"{TINY.name}.json", f"{TINY.name}.core", f"{TINY.name}_csr.h"]
    ports = {p.strip() for p in re.search(rf"^module {name}\((.*?)\);", paths[0].read_text(), re.M | re.S)
             .group(1).split(",")}
    axi4 = {f"m_axi_{c}{s}" for c in ("aw", "ar") for s in ("valid", "ready", "id", "addr", "len", "size", "burst",
                                                            "lock", "cache", "prot")}
    axi4 |= {f"m_axi_{s}" for s in ("wvalid", "wready", "wdata", "wstrb", "wlast", "bvalid", "bready", "bid", "bresp",
                                    "rvalid", "rready", "rid", "rdata", "rresp", "rlast")}
    lite = {f"s_axil_{c}{s}" for c in ("aw", "ar") for s in ("valid", "ready", "addr", "prot")}
    lite |= {f"s_axil_{s}" for s in ("wvalid", "wready", "wdata", "wstrb", "bvalid", "bready", "bresp", "rvalid",
                                     "rready", "rdata", "rresp")}
    assert ports == axi4 | lite | {"clk", "rst", "irq"}
    core = paths[2].read_text().splitlines()
    assert f"    toplevel: {name}" in core
    assert f"      - {TINY.name}_csr.h: {{file_type: cSource, is_include_file: true}}" in core
    assert "AXI top (`systolic export-fpga --top axi`)" in paths[3].read_text()


def test_csr_map_fits_the_csr_address_space():
    regs = sorted(csr_map().values())
    for (a, n, _), (b, _, _) in zip(regs, regs[1:]):
        assert a + n <= b, "registers overlap"
    last_addr, last_n, _ = regs[-1]
    assert last_addr + last_n <= 1 << CSR_ADDR_BITS
    assert csr_map()["counter_cycles"][:2] == (0x20, 8)


def test_register_bank_top_sizes():
    from systolic.hw.array import SystolicArray

    cfg = AcceleratorConfig(rows=1, cols=1)
    top = RegisterBankTop(SystolicArray(config=cfg))
    # WS 1x1: i = {a 8, psum 32, swap 1} + valid, w = {w 8} + valid, o.ready; out: i/w ready, o payload 32 + valid
    assert top.in_bits == 8 + 32 + 1 + 1 + 8 + 1 + 1
    assert top.out_bits == 1 + 1 + 32 + 1
    assert top.addr_bits == 3
    # Never elaborated here: tell Amaranth that is on purpose.
    top._MustUse__silence = top.inner._MustUse__silence = True
