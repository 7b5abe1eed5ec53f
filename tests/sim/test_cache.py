"""The simulator build cache (systolic.sim.build): atomic builds, a self-check on every load, only run-time
files kept, superseded builds pruned, ``systolic cache info`` / ``clean``, and the cocotb run folders.

The cache's logic is tested on builds made by a stand-in build function (no Verilator; the files and
their sizes are the test's own); the real builds (the direct driver's and the cocotb testbench's, of
the smallest config) are made once per module in a temporary ``$SYSTOLIC_SIM_CACHE``.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from systolic.arch.config import AcceleratorConfig
from systolic.arch.isa import Instr, Opcode
from systolic.cli import main
from systolic.sim.build import MARKER, cached_build, clean, hold, scan

KEY1, KEY2, KEY3 = "1" * 16, "2" * 16, "3" * 16


class FakeBuild:
    """A build function that writes a library, the Verilog, a log and large object files; counts its calls."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def __call__(self, d: Path) -> dict:
        self.calls += 1
        (d / "obj").mkdir()
        (d / "obj" / "model.o").write_bytes(b"o" * 5000)
        (d / "obj" / "model.gch").write_bytes(b"g" * 7000)
        (d / "lib.so").write_bytes(b"L" * 1000)
        (d / "top.v").write_text("module top; endmodule\n")
        (d / "build.log").write_text("ok\n")
        if self.fail:
            raise RuntimeError("the compiler failed")
        return {"verilog": str(d / "top.v")}


KEEP = ["lib.so", "top.v"]


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = tmp_path / "cache"
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(r))
    monkeypatch.delenv("SYSTOLIC_SIM_CACHE_KEEP", raising=False)
    return r


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_build_keeps_only_what_a_run_needs_and_records_it(root, capsys):
    fake = FakeBuild()
    d, info, cached = cached_build(root, "top-direct", KEY1, fake, keep=KEEP)
    assert (d, cached, fake.calls) == (root / f"top-direct-{KEY1}", False, 1)
    assert sorted(p.name for p in d.iterdir()) == sorted(["lib.so", "top.v", MARKER])   # objects and log gone
    marker = json.loads((d / MARKER).read_text())
    assert marker["files"] == {"lib.so": {"size": 1000, "sha256": _sha(b"L" * 1000)},
                               "top.v": {"size": 22, "sha256": _sha(b"module top; endmodule\n")}}
    assert (marker["name"], marker["key"]) == ("top-direct", KEY1)
    # The info's paths point into the final folder, not the temporary one the build ran in.
    assert info["verilog"] == str(d / "top.v") and info["seconds"] >= 0
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []
    # The second call finds it: no build, the same info.
    d2, info2, cached2 = cached_build(root, "top-direct", KEY1, fake, keep=KEEP)
    assert (d2, info2, cached2, fake.calls) == (d, info, True, 1)
    assert capsys.readouterr().err == ""


def test_stale_temporary_folders_of_the_name_only_are_removed(root):
    """A build of ``sys-direct`` removes what a dead build of ``sys-direct`` left, never the temporary folder
    of a ``sys-direct-vcd`` build running under its own lock (a race seen with two test workers)."""
    root.mkdir(parents=True)
    dead = root / f".tmp-sys-direct-{KEY2}-ab_c1"
    other = root / f".tmp-sys-direct-vcd-{KEY1}-xyz9"
    for d in (dead, other):
        d.mkdir()
    cached_build(root, "sys-direct", KEY1, FakeBuild(), keep=KEEP)
    assert not dead.exists() and other.is_dir()


def test_a_failed_build_leaves_nothing_behind(root):
    with pytest.raises(RuntimeError, match="the compiler failed"):
        cached_build(root, "top-direct", KEY1, FakeBuild(fail=True), keep=KEEP)
    assert sorted(p.name for p in root.iterdir()) == ["top-direct.lock"]
    fake = FakeBuild()
    assert cached_build(root, "top-direct", KEY1, fake, keep=KEEP)[2] is False and fake.calls == 1


@pytest.mark.parametrize("content, why", [
    ("", "systolic_build.json is empty"),
    ("{\"format\": 2, \"fil", "systolic_build.json is not valid JSON"),
    ("[1, 2]", "systolic_build.json is not a build marker"),
    ('{"seconds": 1.0, "verilog": "x"}', "systolic_build.json is from another systolic (format 1, not 2)"),
    ('{"format": 2, "files": {}}', "systolic_build.json is not a build marker"),
])
def test_an_empty_or_corrupt_marker_is_rebuilt_with_a_note(root, capsys, content, why):
    fake = FakeBuild()
    d = cached_build(root, "top-direct", KEY1, fake, keep=KEEP)[0]
    (d / MARKER).write_text(content)
    d2, info, cached = cached_build(root, "top-direct", KEY1, fake, keep=KEEP)
    assert (d2, cached, fake.calls) == (d, False, 2)
    assert capsys.readouterr().err == f"systolic: note: rebuilding top-direct-{KEY1} ({why})\n"
    assert json.loads((d / MARKER).read_text())["files"]["lib.so"]["size"] == 1000
    assert cached_build(root, "top-direct", KEY1, fake, keep=KEEP)[2] is True     # sound again


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(b"L" * 300), "lib.so is 300 bytes, the build made 1000"),
    (lambda p: p.write_bytes(b"X" * 1000), "lib.so differs from the file the build made (SHA-256)"),
    (lambda p: p.unlink(), "lib.so is missing"),
])
def test_a_damaged_library_is_rebuilt_with_a_note(root, capsys, damage, why):
    fake = FakeBuild()
    d = cached_build(root, "top-direct", KEY1, fake, keep=KEEP)[0]
    damage(d / "lib.so")
    assert cached_build(root, "top-direct", KEY1, fake, keep=KEEP)[2] is False and fake.calls == 2
    assert capsys.readouterr().err == f"systolic: note: rebuilding top-direct-{KEY1} ({why})\n"
    assert (d / "lib.so").read_bytes() == b"L" * 1000


def test_a_new_build_prunes_the_superseded_ones(root, monkeypatch, capsys):
    fake = FakeBuild()
    for key in (KEY1, KEY2):
        cached_build(root, "top-direct", key, fake, keep=KEEP)
        time.sleep(0.01)
    other = cached_build(root, "top-direct-fst", KEY1, fake, keep=KEEP)[0]    # another name: never pruned
    err = capsys.readouterr().err
    assert err == (f"systolic: note: removed the superseded build top-direct-{KEY1} (keeping the newest 1 of "
                   f"top-direct; $SYSTOLIC_SIM_CACHE_KEEP)\n")
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted([f"top-direct-fst-{KEY1}",
                                                                          f"top-direct-{KEY2}"])
    # Keep 2: the newest two of the name stay; one in use is never removed.
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE_KEEP", "2")
    cached_build(root, "top-direct", KEY3, fake, keep=KEEP)
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("top-direct-")
                  and "fst" not in p.name) == [f"top-direct-{KEY2}", f"top-direct-{KEY3}"]
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE_KEEP", "1")
    with hold(root / f"top-direct-{KEY2}"):
        cached_build(root, "top-direct", KEY1, fake, keep=KEEP)
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and "fst" not in p.name) == [
        f"top-direct-{KEY1}", f"top-direct-{KEY2}"]          # KEY3 pruned, KEY2 held
    assert other.exists()


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_keep_count_is_a_one_line_error(root, monkeypatch, capsys, value):
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE_KEEP", value)
    assert main(["cache", "info"]) == 1
    out = capsys.readouterr()
    assert out.err == (f"systolic: error: $SYSTOLIC_SIM_CACHE_KEEP must be a positive integer (builds kept per "
                       f"name), not {value!r}\n") and out.out == ""


def _dir_size(d: Path) -> int:
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)


def test_cache_info_and_clean(root, monkeypatch, capsys):
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "empty"
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE_KEEP", "3")
    fake = FakeBuild()
    for key in (KEY1, KEY2, KEY3):
        cached_build(root, "top-direct", key, fake, keep=KEEP)
        time.sleep(0.01)
    broken = cached_build(root, "top-cocotb", KEY1, fake, keep=KEEP)[0]
    (broken / MARKER).write_text("")
    (root / "notes").mkdir()                       # not a build: listed, never removed
    (root / "notes" / "a.txt").write_bytes(b"n" * 100)
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE_KEEP", "1")
    sizes = {p.name: _dir_size(p) for p in root.iterdir() if p.is_dir()}
    assert main(["cache", "info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"simulator cache: {root} (set by $SYSTOLIC_SIM_CACHE; builds kept per name: 1, "
                        f"$SYSTOLIC_SIM_CACHE_KEEP)")
    rows = {(l.split()[0], l.split()[1]): l for l in lines[2:-1]}
    assert set(rows) == {("top-direct", KEY1), ("top-direct", KEY2), ("top-direct", KEY3), ("top-cocotb", KEY1),
                         ("notes", "-")}
    assert rows[("top-direct", KEY3)].endswith("current") and rows[("top-direct", KEY1)].endswith("superseded")
    assert rows[("top-cocotb", KEY1)].endswith("broken: systolic_build.json is empty")
    assert f"{sizes[f'top-direct-{KEY3}'] / 1e6:.1f} MB" in rows[("top-direct", KEY3)]
    removable = sizes[f"top-direct-{KEY1}"] + sizes[f"top-direct-{KEY2}"] + sizes[f"top-cocotb-{KEY1}"]
    assert lines[-1] == (f"total: {sum(sizes.values()) / 1e6:.1f} MB in 5 folders (3 builds); 'systolic cache "
                         f"clean' frees {removable / 1e6:.1f} MB")
    # clean (= --superseded): the superseded and the broken builds go, the current one and "notes" stay.
    assert main(["cache", "clean"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(l.split()[1] for l in out[:-1]) == sorted([f"top-cocotb-{KEY1}", f"top-direct-{KEY1}",
                                                             f"top-direct-{KEY2}"])
    assert out[-1] == f"freed {removable / 1e6:.1f} MB in {root}"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["notes", f"top-direct-{KEY3}"]
    # --all: every build, except one in use.
    with hold(root / f"top-direct-{KEY3}"):
        assert main(["cache", "clean", "--all"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == f"kept top-direct-{KEY3}: in use or being built"
    assert main(["cache", "clean", "--all"]) == 0
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["notes"]
    with pytest.raises(SystemExit) as info:
        main(["cache", "clean", "--all", "--superseded"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cache_root_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(f))
    assert main(["cache", "info"]) == 1
    assert capsys.readouterr().err == f"systolic: error: the simulator cache {f} is a file, not a folder\n"


def test_scan_sees_a_leftover_temporary_folder_and_clean_removes_it(root):
    cached_build(root, "top-direct", KEY1, FakeBuild(), keep=KEEP)
    left = root / f".tmp-top-direct-{KEY2}-abc123"
    left.mkdir()
    (left / "x.o").write_bytes(b"x" * 10)
    assert [(e.kind, e.path) for e in scan(root) if e.kind == "temp"] == [("temp", left)]
    removed, busy = clean(root)
    assert [e.path for e in removed] == [left] and busy == [] and not left.exists()


def test_a_cache_inside_the_cache_is_not_a_build(root):
    """A test's own cache root under the cache (named like a build) is listed as "other" and never cleaned."""
    nested = root / f"test-reader-direct-{KEY2}"
    cached_build(nested, "top-direct", KEY1, FakeBuild(), keep=KEEP)
    [e] = scan(root)
    assert (e.kind, e.path) == ("other", nested)
    assert clean(root, everything=True) == ([], []) and (nested / f"top-direct-{KEY1}" / "lib.so").exists()


# ------------------------------------------------------------------------------------------------ real builds
TINY = AcceleratorConfig.preset("tiny")


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """A temporary $SYSTOLIC_SIM_CACHE with the direct build of the tiny config (made once per module)."""
    from systolic.sim.direct import build_direct

    r = tmp_path_factory.mktemp("simcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSTOLIC_SIM_CACHE", str(r))
        t0 = time.perf_counter()
        d = build_direct(TINY)
        print(f"direct build of tiny: {time.perf_counter() - t0:.1f} s, {_dir_size(d)} bytes")
        yield r


@pytest.mark.slow
def test_the_direct_build_keeps_only_the_library_and_its_sources(real_cache, monkeypatch):
    from systolic.hw.generate import module_name
    from systolic.sim.direct import DirectSim

    monkeypatch.setenv("SYSTOLIC_SIM_CACHE", str(real_cache))
    top = module_name(TINY, "system")
    [d] = [p for p in real_cache.iterdir() if p.is_dir() and p.name.startswith(f"{top}-direct-")]
    assert sorted(p.name for p in d.iterdir()) == sorted(["libdirect.so", f"{top}.v", "shim.cpp", "direct_core.h",
                                                          MARKER])
    assert not any(d.rglob("*.o")) and not any(d.rglob("*.gch")) and not any(d.rglob("*.a"))
    with DirectSim(TINY, mem_bytes=64) as sim:        # and it runs
        sim.step(7)
        assert sim.cycles == 7


_TRUNCATED_RUN = textwrap.dedent("""
    from systolic.sim.direct import DirectSim
    with DirectSim("tiny", mem_bytes=64) as sim:
        sim.step(5)
        print(sim.cycles)
""")


@pytest.mark.slow
def test_a_truncated_library_is_rebuilt_not_a_crash(real_cache):
    """``libdirect.so`` cut short used to kill the process with a bus error (exit 135) in dlopen."""
    from systolic.hw.generate import module_name

    top = module_name(TINY, "system")
    [d] = [p for p in real_cache.iterdir() if p.is_dir() and p.name.startswith(f"{top}-direct-")]
    lib = d / "libdirect.so"
    size = lib.stat().st_size
    # A truncated copy in its place (a new file: this process may have the old one mapped, and cutting
    # a mapped file short would crash this process, not the one under test).
    cut = d / "cut.tmp"
    cut.write_bytes(lib.read_bytes()[:size // 2])
    os.replace(cut, lib)
    env = {**os.environ, "SYSTOLIC_SIM_CACHE": str(real_cache)}
    proc = subprocess.run([sys.executable, "-c", _TRUNCATED_RUN], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "5\n"
    assert proc.stderr == (f"systolic: note: rebuilding {d.name} (libdirect.so is {size // 2} bytes, the build "
                           f"made {size})\n")
    assert lib.stat().st_size == size and not any(d.rglob("*.o"))


# --------------------------------------------------------------------------------------- cocotb run folders
@pytest.fixture(scope="module")
def cocotb_cache(tmp_path_factory):
    from tests.requirements import require

    require("cocotb", "dev")
    from systolic.sim.cocotb_backend import build_cocotb

    r = tmp_path_factory.mktemp("cocotbcache")
    d = build_cocotb(TINY, r)
    return r, d


def _runs(d: Path) -> list[Path]:
    return sorted(d.glob("run-*"))


def _program_on(be, program):
    from systolic.arch.isa import encode_program

    blob = encode_program(program)
    be.memory(64, len(blob))
    return be.run(program, blob, layer="fc0")


@pytest.mark.slow
def test_cocotb_run_folders_go_after_success_and_ctrl_c_and_stay_after_a_failure(cocotb_cache, capsys):
    from systolic.sim import RTLProgramError
    from systolic.sim.system import open_backend

    root, d = cocotb_cache
    good = [Instr(Opcode.HALT)]
    with open_backend("cocotb", TINY, cache_dir=root) as be:      # success: removed
        run_dir = be.run_dir
        assert _program_on(be, good).instructions == 1
        assert run_dir.is_dir()
    assert _runs(d) == [] and capsys.readouterr().err == ""

    with pytest.raises(KeyboardInterrupt):                        # Ctrl-C: removed, the simulator stopped
        with open_backend("cocotb", TINY, cache_dir=root) as be:
            pid = be.sim_pid
            _program_on(be, good)
            raise KeyboardInterrupt
    assert _runs(d) == [] and capsys.readouterr().err == ""
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    with pytest.raises(RTLProgramError) as info:                  # an accelerator error: kept, path printed
        with open_backend("cocotb", TINY, cache_dir=root) as be:
            _program_on(be, [Instr(Opcode.FENCE)])                # no HALT: the controller's error
    [kept] = _runs(d)
    assert capsys.readouterr().err == (f"systolic: note: kept the cocotb run folder {kept} (RTLProgramError: "
                                       f"{str(info.value).splitlines()[0]})\n")
    assert (kept / "sim.log").is_file() and (kept / "job.json").is_file()

    with open_backend("cocotb", TINY, cache_dir=root) as be:      # a mismatch the caller reports: kept
        _program_on(be, good)
        be.fail("layer 'fc0': 3 elements differ from the golden model")
        second = be.run_dir
    assert _runs(d) == sorted([kept, second])
    assert capsys.readouterr().err == (f"systolic: note: kept the cocotb run folder {second} (layer 'fc0': 3 "
                                       f"elements differ from the golden model)\n")
    # `cache clean --all` takes them with the build.
    removed, busy = clean(root, everything=True)
    assert busy == [] and not d.exists()
