"""Simulator builds: one cache, one lock, one key per design; the errors every simulator raises.

Every RTL build (the GEMM core under cocotb, the accelerator under cocotb,
the direct Verilator driver, their tracing variants) goes into a folder under
:func:`cache_root` (``$SYSTOLIC_SIM_CACHE``, default ``~/.cache/systolic/sim``)
named ``<name>-<key>``: the name says what (the top and the kind of build),
the key is a hash of :func:`systolic.hw.generate.design_fingerprint` (the
config and the text of every source the top's Verilog depends on), the build
flags and the tool versions.

- A file lock per name makes parallel callers (pytest workers, two CLI runs)
  wait for one build.
- A build is made in a temporary folder in the same root and renamed into
  place when it is complete, so a folder ``<name>-<key>`` is always a whole
  build; its marker (``systolic_build.json``) is written through a temporary
  file and :func:`os.replace`.
- Only what a run needs is kept (*keep* of :func:`cached_build`: the shared
  library or the executable, the Verilog, the log); Verilator's object files
  and precompiled headers (over 100 MB per build) are deleted. The marker
  records the size and SHA-256 of every kept file, and every load checks
  them: a build whose marker is empty or corrupt, or whose files are missing,
  truncated or changed, is rebuilt with a one-line note on stderr
  (``systolic: note: rebuilding <folder> (<why>)``) instead of failing (a
  truncated shared library would crash the process on ``dlopen``).
- Making a build removes the *superseded* builds of the same name (the
  same top and kind, another key: older sources, flags or tools), keeping
  the newest ``$SYSTOLIC_SIM_CACHE_KEEP`` (default 1) of them, except those
  in use: a simulator holds a shared lock on its build's marker
  (:func:`hold`) while it runs.

``systolic cache info`` / ``systolic cache clean`` (:mod:`systolic.sim.cache_commands`)
show and empty the cache with :func:`scan` and :func:`clean`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SimulationError", "cache_root", "cached_build", "tool_versions", "build_key", "keep_count", "hold",
           "CacheEntry", "scan", "clean", "MARKER"]

#: The marker file of a finished build.
MARKER = "systolic_build.json"
#: Version of the marker's layout; a marker of another version is rebuilt.
_FORMAT = 2
#: A build folder: ``<name>-<key>`` with a 16-digit hex key (:func:`build_key`).
_FOLDER = re.compile(r"^(?P<name>.+)-(?P<key>[0-9a-f]{16})$")
#: Prefix of the temporary folders builds are made in.
_TMP = ".tmp-"
#: A temporary build folder: ``.tmp-<name>-<key>-<mkdtemp suffix>`` (the suffix has no ``-``).
_TMP_FOLDER = re.compile(r"^\.tmp-(?P<name>.+)-(?P<key>[0-9a-f]{16})-[A-Za-z0-9_]+$")
_KEEP_ENV = "SYSTOLIC_SIM_CACHE_KEEP"


class SimulationError(RuntimeError):
    """The RTL simulation failed (build error, testbench error or hang)."""


def cache_root() -> Path:
    env = os.environ.get("SYSTOLIC_SIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "systolic" / "sim"


def keep_count() -> int:
    """Builds kept per name: ``$SYSTOLIC_SIM_CACHE_KEEP`` (default 1), a positive integer."""
    text = os.environ.get(_KEEP_ENV, "1")
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"${_KEEP_ENV} must be a positive integer (builds kept per name), not {text!r}")
    return n


def tool_versions(*packages: str) -> str:
    """``name=version;...`` of the installed *packages* (part of build keys)."""
    from importlib.metadata import version

    return ";".join(f"{p}={version(p)}" for p in packages)


def build_key(config, top: str, *parts: str) -> str:
    """The cache key of a build of *top* for *config* with the extra *parts* (flags, versions, sources)."""
    from ..hw.generate import design_fingerprint

    return hashlib.sha256("\n".join([design_fingerprint(config, top), *parts]).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- markers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_json(path: Path, data: dict) -> None:
    """Write *data* to *path* through a temporary file in the same folder and :func:`os.replace`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes it private
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_marker(build_dir: Path) -> tuple[dict | None, str]:
    """``(marker, "")`` for a sound build, ``(None, why)`` otherwise (files checked: size, then SHA-256)."""
    marker = build_dir / MARKER
    if not marker.exists():
        return None, f"no {MARKER}"
    try:
        text = marker.read_text()
    except OSError as exc:
        return None, f"{MARKER} is unreadable: {exc.strerror}"
    if not text.strip():
        return None, f"{MARKER} is empty"
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"{MARKER} is not valid JSON"
    if not isinstance(data, dict):
        return None, f"{MARKER} is not a build marker"
    if data.get("format") != _FORMAT:
        return None, f"{MARKER} is from another systolic (format {data.get('format', 1)}, not {_FORMAT})"
    if not isinstance(data.get("files"), dict) or not isinstance(data.get("info"), dict) \
            or not isinstance(data.get("seconds"), (int, float)):
        return None, f"{MARKER} is not a build marker"
    for rel, rec in data["files"].items():
        path = build_dir / rel
        if not path.is_file():
            return None, f"{rel} is missing"
        try:
            size, digest = int(rec["size"]), str(rec["sha256"])
        except (TypeError, KeyError, ValueError):
            return None, f"{MARKER} has no size and checksum of {rel}"
        actual = path.stat().st_size
        if actual != size:
            return None, f"{rel} is {actual} bytes, the build made {size}"
        if _sha256(path) != digest:
            return None, f"{rel} differs from the file the build made (SHA-256)"
    return data, ""


def _note(text: str) -> None:
    print(f"systolic: note: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ builds
def _prune_files(build_dir: Path, keep) -> None:
    """Delete every file and folder under *build_dir* but the relative paths *keep* (and their parents)."""
    keep = {Path(k) for k in keep}
    parents = {p for k in keep for p in k.parents}
    for dirpath, dirnames, filenames in os.walk(build_dir, topdown=True):
        rel_dir = Path(dirpath).relative_to(build_dir)
        for d in list(dirnames):
            if rel_dir / d not in parents and rel_dir / d not in keep:
                shutil.rmtree(Path(dirpath) / d)
                dirnames.remove(d)
        for f in filenames:
            if rel_dir / f not in keep:
                (Path(dirpath) / f).unlink()


def _rewrite_paths(value, old: str, new: str):
    """*value* with every string path under folder *old* moved under *new* (the build's info)."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    if isinstance(value, dict):
        return {k: _rewrite_paths(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_paths(v, old, new) for v in value]
    return value


def _in_use(build_dir: Path) -> bool:
    """Whether a simulator holds *build_dir* (a shared lock on its marker, :func:`hold`)."""
    try:
        f = open(build_dir / MARKER, "rb")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def hold(build_dir: Path):
    """A shared lock on *build_dir* while it is in use (pruning and ``cache clean`` skip it); close it to release."""
    f = open(Path(build_dir) / MARKER, "rb")
    fcntl.flock(f, fcntl.LOCK_SH)
    return f


def _created(build_dir: Path) -> float:
    try:
        data = json.loads((build_dir / MARKER).read_text())
        return float(data["created"])
    except (OSError, ValueError, TypeError, KeyError):
        try:
            return build_dir.stat().st_mtime
        except OSError:
            return 0.0


def _group(root: Path, name: str) -> list[Path]:
    """The build folders of *name* in *root*, newest first."""
    out = []
    for p in root.iterdir() if root.is_dir() else ():
        m = _FOLDER.match(p.name)
        if m and m["name"] == name and p.is_dir():
            out.append(p)
    return sorted(out, key=_created, reverse=True)


def _prune_superseded(root: Path, name: str, keep: int, spare: Path | None = None) -> list[Path]:
    """Remove the builds of *name* beyond the newest *keep* (never *spare*, never one in use); returns them."""
    removed = []
    builds = _group(root, name)
    if spare is not None and spare in builds:
        builds.remove(spare)
        keep -= 1
    for p in builds[max(keep, 0):]:
        if not _in_use(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def cached_build(root: Path, name: str, key: str, build, keep=None) -> tuple[Path, dict, bool]:
    """The build folder ``root/name-key``, made once by ``build(build_dir) -> info dict``.

    *keep*: the paths (relative to the build folder) a run needs; after the
    build everything else is deleted, and the marker records their sizes and
    checksums, which every later call checks (a broken build is rebuilt with
    a note on stderr). ``None`` keeps everything and checks only the marker.
    The build runs in a temporary folder of *root* (paths in *info* that point
    into it are moved to the final folder). Returns ``(build_dir, info,
    cached)``; *info* has the build's ``seconds``.
    """
    n_keep = keep_count()
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{name}-{key}"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if build_dir.exists():
            data, why = _read_marker(build_dir)
            if data is not None:
                return build_dir, {**data["info"], "seconds": data["seconds"]}, True
            _note(f"rebuilding {build_dir.name} ({why})")
        for stale in root.glob(f"{_TMP}{name}-*"):     # left by a build of *name* that died (the lock is ours)
            m = _TMP_FOLDER.match(stale.name)
            if m and m["name"] == name:                 # not a build of a longer name ("<name>-vcd") under way
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{name}-{key}-", dir=root))
        try:
            os.chmod(tmp, 0o777 & ~_umask())    # mkdtemp makes it private
            t0 = time.perf_counter()
            info = dict(build(tmp))
            seconds = time.perf_counter() - t0
            files = {}
            if keep is not None:
                missing = [k for k in keep if not (tmp / k).is_file()]
                if missing:
                    raise SimulationError(f"the build of {name} made no {', '.join(missing)} (in {tmp})")
                _prune_files(tmp, [*keep, MARKER])
                files = {str(k): {"size": (tmp / k).stat().st_size, "sha256": _sha256(tmp / k)} for k in keep}
            info = _rewrite_paths(info, str(tmp), str(build_dir))
            _write_json(tmp / MARKER, {"format": _FORMAT, "name": name, "key": key, "created": time.time(),
                                       "seconds": seconds, "info": info, "files": files})
            if build_dir.exists():
                shutil.rmtree(build_dir)
            os.rename(tmp, build_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for p in _prune_superseded(root, name, n_keep, spare=build_dir):
            _note(f"removed the superseded build {p.name} (keeping the newest {n_keep} of {name}; "
                  f"${_KEEP_ENV})")
        return build_dir, {**info, "seconds": seconds}, False


# ------------------------------------------------------------------------------ inspection, cleaning
@dataclass
class CacheEntry:
    """One folder of the cache root, as :func:`scan` sees it."""

    path: Path
    kind: str                 #: ``"build"``, ``"broken"`` (a build folder that fails its check), ``"temp"``, ``"other"``
    name: str = ""
    key: str = ""
    size: int = 0             #: bytes on disk (all files under the folder)
    created: float = 0.0      #: build time (epoch seconds), or the folder's mtime
    why: str = ""             #: for ``"broken"``: what is wrong
    superseded: bool = False  #: a build beyond the newest ``$SYSTOLIC_SIM_CACHE_KEEP`` of its name
    in_use: bool = False      #: a simulator holds it
    runs: int = 0             #: kept run folders (``run-*``) inside it


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _holds_builds(folder: Path) -> bool:
    """Whether *folder* has no marker of its own but build folders inside (a nested cache root)."""
    if (folder / MARKER).exists():
        return False
    return any(c.is_dir() and (c / MARKER).exists() for c in folder.iterdir())


def scan(root: Path | None = None) -> list[CacheEntry]:
    """Every folder of the cache *root* (default :func:`cache_root`), builds grouped by name, newest first."""
    root = cache_root() if root is None else Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"the simulator cache {root} is a file, not a folder")
    if not root.exists():
        return []
    n_keep = keep_count()
    entries, seen = [], {}
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        if p.name.startswith(_TMP):
            entries.append(CacheEntry(p, "temp", size=_size(p), created=p.stat().st_mtime))
            continue
        m = _FOLDER.match(p.name)
        if not m or _holds_builds(p):      # a cache of its own inside this one (a test's) is not a build
            entries.append(CacheEntry(p, "other", size=_size(p), created=p.stat().st_mtime))
            continue
        data, why = _read_marker(p)
        e = CacheEntry(p, "build" if data else "broken", m["name"], m["key"], _size(p), _created(p), why,
                       in_use=_in_use(p), runs=sum(1 for r in p.glob("run-*") if r.is_dir()))
        entries.append(e)
        if data:
            seen.setdefault(e.name, []).append(e)
    for group in seen.values():
        group.sort(key=lambda e: e.created, reverse=True)
        for e in group[n_keep:]:
            e.superseded = True
    order = {"build": 0, "broken": 1, "temp": 2, "other": 3}
    entries.sort(key=lambda e: (order[e.kind], e.name, -e.created))
    return entries


def clean(root: Path | None = None, everything: bool = False) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """Remove superseded and broken builds and leftover temporary folders (*everything*: every build too).

    Folders that are not builds (``"other"``) stay; so do builds in use and
    every folder of a name whose build is in progress (its lock is taken).
    Returns ``(removed, kept because in use or building)``.
    """
    root = cache_root() if root is None else Path(root)
    removed, busy = [], []
    for e in scan(root):
        if e.kind == "other" or (e.kind == "build" and not e.superseded and not everything):
            continue
        name = e.name
        if e.kind == "temp":
            m = re.match(rf"^{re.escape(_TMP)}(?P<name>.+)-[0-9a-f]{{16}}-", e.path.name)
            name = m["name"] if m else ""
        with open(root / f"{name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                busy.append(e)              # a build of this name is in progress
                continue
            if e.in_use or (e.kind != "temp" and _in_use(e.path)):
                busy.append(e)
                continue
            shutil.rmtree(e.path, ignore_errors=True)
        removed.append(e)
    return removed, busy
