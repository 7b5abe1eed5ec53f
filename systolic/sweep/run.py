"""Run a sweep: every point once, on Dask (or in this process), cached by content, written as a table.

Each point's result is one JSON file ``DIR/cache/<key>.json`` (key:
:func:`systolic.sweep.tasks.point_key`), written atomically by the client as
soon as the point finishes; a rerun reads the finished points from there and
submits only the others, so a killed sweep resumes where it stopped.
Workers write nothing: the sweep folder need not be shared with them.

A quantizing point's model is made once per recipe (the zoo model, the
method, the config's widths and rounding, the seed: every point with that
recipe shares it) by a task of its own; the client keeps its file as
``DIR/models/<recipe key>.npz``, so a rerun that still has points to measure
does not train again.
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
from .spec import expand, quant_recipe
from .tasks import METRIC_COLUMNS, point_key, quantize_recipe, recipe_key, run_point

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
    for name in ("systolic", "numpy", "dask", "distributed", "amaranth", "torch"):
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


class _Models:
    """The quantized models of a run: read from ``DIR/models`` or made by :func:`quantize_recipe`, kept."""

    def __init__(self, folder: Path, todo):
        self.folder = folder
        self.recipes = {}           # recipe key -> recipe, of the points still to run
        self.of = {}                # point key -> recipe key
        for key, point in todo:
            recipe = quant_recipe(point)
            if recipe is not None:
                rkey = recipe_key(recipe)
                self.recipes[rkey] = recipe
                self.of[key] = rkey

    def cached(self, rkey) -> dict | None:
        try:
            return {"npz": (self.folder / f"{rkey}.npz").read_bytes()}
        except OSError:
            return None

    def keep(self, rkey, blob) -> None:
        if "npz" in blob:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{rkey}.{os.getpid()}.tmp"
            tmp.write_bytes(blob["npz"])
            os.replace(tmp, self.folder / f"{rkey}.npz")


def _run_serial(todo, task, done, progress, models):
    from tqdm import tqdm

    blobs = {}
    for rkey, recipe in tqdm(models.recipes.items(), desc="quantize", unit="model",
                             disable=not progress or not models.recipes):
        blobs[rkey] = models.cached(rkey)
        if blobs[rkey] is None:
            blobs[rkey] = quantize_recipe(recipe)
            models.keep(rkey, blobs[rkey])
    for key, point in tqdm(todo, desc="sweep (serial)", unit="point", disable=not progress):
        done(key, point, task(point) if key not in models.of else task(point, blobs[models.of[key]]))


def _failed(exc) -> dict:
    # A task that failed on every retry (a bug, a lost worker): not cached.
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _run_dask(todo, task, done, progress, client, models):
    """Submit every model recipe and point (keys are content hashes, retried on a lost worker), collect as
    they finish; a point of a quantizing method takes its recipe's model future as its argument."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    made, fresh = {}, {}
    for rkey, recipe in models.recipes.items():
        # A kept model goes to its points as a value (small; not scattered: a scattered value dies with its
        # worker and cannot be recomputed); a new one is a task whose future the points depend on.
        made[rkey] = models.cached(rkey)
        if made[rkey] is None:
            made[rkey] = client.submit(quantize_recipe, recipe, key=f"sweep-model-{rkey}", retries=TASK_RETRIES,
                                       pure=False)
            fresh[made[rkey]] = rkey
    futures = {client.submit(task, point, *([made[models.of[key]]] if key in models.of else []),
                             key=f"sweep-point-{key}", retries=TASK_RETRIES, pure=False): (key, point)
               for key, point in todo}
    with tqdm(total=len(futures), desc="sweep", unit="point", disable=not progress) as bar:
        for fut in as_completed([*fresh, *futures]):
            if fut in fresh:            # a model: keep its file for the next run
                try:
                    models.keep(fresh[fut], fut.result())
                except Exception:       # its points report the failure
                    pass
                continue
            key, point = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:
                result = _failed(exc)
            done(key, point, result)
            fut.release()
            bar.update(1)
    for fut in fresh:
        fut.release()


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

    models = _Models(out / "models", todo)
    if todo and workers == 0 and client is None and scheduler is None:
        _run_serial(todo, task, done, progress, models)
    elif todo:
        own = None
        if client is None:
            client, own = _open_client(workers, scheduler)
        try:
            _run_dask(todo, task, done, progress, client, models)
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
