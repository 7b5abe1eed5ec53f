"""Run a sweep: every point once, on Dask (or in this process), cached by content, written as a table.

Each point's result is one JSON file ``DIR/cache/<key>.json`` (key:
:func:`systolic.sweep.tasks.point_key`), written atomically by the client as
soon as the point finishes; a rerun reads the finished points from there and
submits only the others, so a killed sweep resumes where it stopped.
Workers write nothing: the sweep folder need not be shared with them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..arch.config import AcceleratorConfig
from ..golden.limits import loads_json
from .spec import expand
from .tasks import METRIC_COLUMNS, point_key, run_point

__all__ = ["SweepRun", "run_sweep", "read_cache", "write_results", "tool_versions", "CACHE_VERSION",
           "TASK_RETRIES"]

#: Version of the cache files' layout.
CACHE_VERSION = 1
#: Times Dask reruns a point whose worker died or raised.
TASK_RETRIES = 2
_CONFIG_COLUMNS = [f.name for f in dataclasses.fields(AcceleratorConfig)]


@dataclass
class SweepRun:
    """What :func:`run_sweep` did: one row per point (spec order) and counts."""

    rows: list
    computed: int = 0            #: points run by this call
    cached: int = 0              #: points read from the cache
    seconds: float = 0.0
    files: list = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)


def tool_versions() -> dict:
    """Installed versions of the tools a sweep's numbers depend on (``None``: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("systolic", "numpy", "dask", "distributed", "amaranth"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def read_cache(cache_dir: Path, key: str) -> dict | None:
    """The cached result of point *key*, or None (absent, unreadable or not this key's: run it again)."""
    path = cache_dir / f"{key}.json"
    try:
        obj = loads_json(path.read_bytes(), str(path), 1 << 20)
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("key") != key or obj.get("version") != CACHE_VERSION:
        return None
    return obj.get("result") if isinstance(obj.get("result"), dict) else None


def _write_cache(cache_dir: Path, key: str, point: dict, result: dict) -> None:
    """Write one result atomically (a temporary file renamed over the final name)."""
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "key": key, "point": point, "result": result}))
    os.replace(tmp, cache_dir / f"{key}.json")


def _local_client(workers: int):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _open_client(workers, scheduler):
    """``(client, cluster)``: to the scheduler at *scheduler*, or an embedded LocalCluster of *workers*
    single-threaded worker processes (default: this machine's cores)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("systolic sweep needs dask.distributed: pip install -e '.[sweep]' "
                         "(or run with --workers 0, in this process)") from None
    if scheduler is not None:
        return Client(scheduler, timeout="20s"), None
    return _local_client(workers or os.cpu_count() or 1)


def _run_serial(todo, task, done, progress):
    from tqdm import tqdm

    for key, point in tqdm(todo, desc="sweep (serial)", unit="point", disable=not progress):
        done(key, point, task(point))


def _run_dask(todo, task, done, progress, client):
    """Submit every point (its key is its content hash, retried on a lost worker), collect as they finish."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    futures = {client.submit(task, point, key=f"sweep-point-{key}", retries=TASK_RETRIES, pure=False): (key, point)
               for key, point in todo}
    with tqdm(total=len(futures), desc="sweep", unit="point", disable=not progress) as bar:
        for fut in as_completed(futures):
            key, point = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:        # the point failed on every retry (a bug, a lost worker): no cache
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            done(key, point, result)
            fut.release()
            bar.update(1)


def run_sweep(spec: dict, out, *, workers: int | None = None, scheduler: str | None = None, client=None,
              progress: bool = True, task=run_point) -> SweepRun:
    """Run the checked *spec* (:func:`systolic.sweep.spec.parse_spec`) into folder *out*.

    *workers* = 0 runs every point in this process (no Dask); otherwise the points go to *client*, or a
    client of the scheduler at *scheduler*, or an embedded LocalCluster of *workers* processes. *task*:
    the function of a point (tests replace it). Writes ``results.csv`` and ``sweep.json``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    points = expand(spec)
    keys = [point_key(p) for p in points]
    results, todo = {}, []
    for key, point in zip(keys, points):
        hit = read_cache(cache_dir, key)
        if hit is not None:
            results[key] = hit
        elif key not in dict(todo):
            todo.append((key, point))
    cached, computed = len(results), 0

    def done(key, point, result):
        nonlocal computed
        computed += 1
        results[key] = result
        if result["status"] in ("ok", "error"):        # deterministic outcomes only
            _write_cache(cache_dir, key, point, result)

    if todo and workers == 0 and client is None and scheduler is None:
        _run_serial(todo, task, done, progress)
    elif todo:
        own = None
        if client is None:
            client, own = _open_client(workers, scheduler)
        try:
            _run_dask(todo, task, done, progress, client)
        finally:
            if own is not None or scheduler is not None:
                client.close()
            if own is not None:
                own.close()
    rows = [_row(i, k, p, results[k], spec["metrics"]) for i, (k, p) in enumerate(zip(keys, points))]
    run = SweepRun(rows, computed, cached, time.perf_counter() - t0)
    run.files = write_results(out, spec, run, workers=workers, scheduler=scheduler)
    return run


def _config_name(config: dict) -> str | None:
    try:
        return AcceleratorConfig.from_dict(config).name
    except (TypeError, ValueError):
        return None


def _row(index, key, point, result, metrics) -> dict:
    cols = [c for m in metrics for c in METRIC_COLUMNS[m]]
    return {"index": index, "key": key, "status": result.get("status"), "error": result.get("error"),
            "model": point["model"], "method": point["method"], "config_name": _config_name(point["config"]),
            **{c: point["config"].get(c) for c in _CONFIG_COLUMNS},
            **{c: result.get(c) for c in cols}, "seconds": result.get("seconds")}


def write_results(out: Path, spec: dict, run: SweepRun, *, workers=None, scheduler=None) -> list:
    """``results.csv`` (one row per point) and ``sweep.json`` (spec, tool versions, counts, timing)."""
    csv_path, meta_path = out / "results.csv", out / "sweep.json"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(run.rows[0]) if run.rows else ["index"])
        w.writeheader()
        w.writerows(run.rows)
    meta = {"schema": "systolic-sweep", "version": 1, "spec": spec, "versions": tool_versions(),
            "points": len(run.rows), "computed": run.computed, "cached": run.cached, "errors": run.errors,
            "seconds": round(run.seconds, 3), "workers": workers, "scheduler": scheduler}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return [csv_path, meta_path]
