#!/usr/bin/env python
"""Accuracy of every quantization method on the MNIST zoo models (and the digits models as a smoke test).

FP32 against every method of ``systolic quantize`` at w8a8, w4a8, w4a4, w2a8 and, with the first and
last layers at 8 bits (the TQT paper's convention), w4a4 and w2a8; several seeds (each seed trains its
own float model and quantizes / retrains with that seed). Accuracies are those of the integer golden
model on the test split; FAT and LSQ also report the torch fake-quant accuracy with their trained,
non-power-of-two scales. Exact McNemar tests (two-sided binomial test on the discordant test images,
pooled over the seeds) compare each method with TQT and with max calibration at each width.

Writes docs/results/accuracy.md, accuracy.json, accuracy.png (MNIST) and accuracy_digits.md / .json / .png
(digits, the smoke test). Each (model, seed) is cached under build/accuracy/ as it finishes, so an
interrupted run resumes (the cache is keyed by the quantization and golden sources); --fresh ignores it.
The json files keep that key and each task's time, so a table written by the same code seeds the cache of a
fresh checkout: a long table can be completed a few (model, seed) tasks at a time.

    python scripts/accuracy_table.py                       # MNIST, 5 seeds, then digits, 3 seeds; 2 workers
    python scripts/accuracy_table.py --data digits --seeds 1 --models digits-mlp --out /tmp/acc
    python scripts/accuracy_table.py --render              # re-render md/png from the json files
    python scripts/accuracy_table.py --data mnist --cached-only   # the table of the cached tasks, none run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (column label, w_bits, a_bits, first_last_bits)
COLUMNS = [("w8a8", 8, 8, None), ("w4a8", 4, 8, None), ("w4a4", 4, 4, None), ("w2a8", 2, 8, None),
           ("w4a4 fl8", 4, 4, 8), ("w2a8 fl8", 2, 8, 8)]
METHOD_ORDER = ["max", "percentile", "mse", "klj", "fat", "lsq", "tqt", "sq", "inq", "multipoint", "dsconv"]
#: Per data set: models, seeds, float epochs, retraining epochs (None: the method defaults) and columns.
#: MNIST's 3,000 training images are ~3x the digits' 1,077: a third of the digits epochs gives the same
#: number of retraining steps (TQT / LSQ 2, FAT 2, SQ / INQ 1 per stage).
SETTINGS = {
    "mnist": {"models": ["mnist-lenet5", "mnist-resnet8", "mnist-mobilenet"], "seeds": 5, "float_epochs": 15,
              "epochs": {"tqt": 2, "lsq": 2, "fat": 2, "sq": 1, "inq": 1}, "columns": [c[0] for c in COLUMNS]},
    "digits": {"models": ["digits-mlp", "digits-cnn", "digits-resnet"], "seeds": 3, "float_epochs": 40,
               "epochs": {}, "columns": ["w8a8", "w4a8", "w4a4", "w2a8"]},
}
CACHE = ROOT / "build" / "accuracy"


#: The modules an accuracy run imports; the cache key hashes their quantization and golden-model sources.
TASK_MODULES = ("systolic.quantize.data", "systolic.quantize.methods", "systolic.quantize.zoo")


def task_sources() -> list[Path]:
    """The source files under systolic/quantize and systolic/golden that an accuracy run imports (found in a
    fresh interpreter, so what this script itself imports does not count)."""
    import subprocess

    code = ("import importlib, json, sys\n"
            f"for m in {TASK_MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()\n"
            "                        if n.startswith(('systolic.quantize', 'systolic.golden')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return [Path(f) for f in json.loads(out.stdout) if f]


def code_key(data: str) -> str:
    """A hash of what a cached (model, seed) depends on: the quantization and golden-model sources an accuracy
    run imports (:func:`task_sources`) and the settings, so a cached result of older code is never reused
    (and a change to a module the runs do not import, such as the random-network generator, keeps it)."""
    h = hashlib.sha256(json.dumps([SETTINGS[data], COLUMNS, METHOD_ORDER]).encode())
    for f in sorted(task_sources(), key=lambda f: f.relative_to(ROOT).as_posix()):
        h.update(f.relative_to(ROOT).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def fmt(vals):
    if not vals:
        return "–"
    v = 100 * np.asarray(vals)
    return f"{v.mean():.2f} ± {v.std():.2f}"


def run_task(data: str, model: str, seed: int, columns: list[str]) -> dict:
    """Every method at every column for one (model, seed): one float model, quantized many ways.
    Returns ``{"seconds": wall time, "rows": [one summary per run]}``."""
    import torch

    from systolic.quantize.data import load_dataset
    from systolic.quantize.methods import quantize_model
    from systolic.quantize.zoo import train_float

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    st = SETTINGS[data]
    ds = load_dataset(data)
    _, y = ds.split("test", None)
    fnet = train_float(model, seed=seed, epochs=st["float_epochs"], data=ds)
    out = []
    for label, wb, ab, fl in COLUMNS:
        if label not in columns:
            continue
        for method in METHOD_ORDER:
            r = quantize_model(model, method, wb, ab, seed=seed, float_net=fnet, data=ds, first_last_bits=fl,
                               epochs=st["epochs"].get(method))
            s = r.summary()
            pred = r.predictions
            s["column"] = label
            s["correct"] = "".join("1" if ok else "0" for ok in (pred == y))
            s.pop("point_cost", None)
            if "point_cost" in r.extra:
                s["macs_ratio"] = r.extra["point_cost"]["macs_ratio"]
            out.append(s)
    return {"seconds": time.perf_counter() - t0, "rows": out}


def mcnemar(a: str, b: str) -> tuple[int, int, float]:
    """Discordant counts (a right and b wrong, a wrong and b right) and the exact two-sided p-value."""
    from scipy.stats import binomtest

    x = np.frombuffer(a.encode(), dtype=np.uint8) == ord("1")
    y = np.frombuffer(b.encode(), dtype=np.uint8) == ord("1")
    n10, n01 = int(np.sum(x & ~y)), int(np.sum(~x & y))
    p = 1.0 if n10 + n01 == 0 else float(binomtest(min(n10, n01), n10 + n01, 0.5).pvalue)
    return n10, n01, p


def pooled(results, model, method, other, column):
    """McNemar pooled over the seeds both runs have: concatenated per-image correctness."""
    pick = {(r["method"], r["seed"]): r["correct"] for r in results
            if r["model"] == model and r["column"] == column}
    seeds = sorted({s for (m, s) in pick if m == method} & {s for (m, s) in pick if m == other})
    if not seeds:
        return None
    return mcnemar("".join(pick[(method, s)] for s in seeds), "".join(pick[(other, s)] for s in seeds))


def p_cell(res) -> str:
    if res is None:
        return "–"
    n10, n01, p = res
    mark = "▲" if n10 > n01 else "▼" if n01 > n10 else "="
    return f"{'<0.001' if p < 1e-3 else f'{p:.3f}'} {mark}"


def results_file(data: str, out: Path) -> Path:
    return out / ("accuracy.json" if data == "mnist" else "accuracy_digits.json")


def seed_cache(data: str, out: Path, key: str, cache: Path) -> list[tuple[str, int]]:
    """Write the (model, seed) tasks of a results file written by the same code (its ``code_key`` is *key*)
    into *cache*, where they are missing; returns the tasks written."""
    f = results_file(data, out)
    if not f.exists():
        return []
    d = json.loads(f.read_text())
    if d.get("code_key") != key:
        return []
    seeded = []
    for task, seconds in d.get("task_seconds", {}).items():
        model, seed = task.rsplit("_s", 1)
        dst = cache / f"{task}.json"
        rows = [r for r in d["results"] if r["model"] == model and r["seed"] == int(seed)]
        if not dst.exists() and rows:
            dst.write_text(json.dumps({"seconds": seconds, "rows": rows}))
            seeded.append((model, int(seed)))
    return seeded


def write_outputs(data: str, results: list[dict], seeds: list[int], out: Path, seconds: float,
                  key: str | None = None, task_seconds: dict | None = None, notes: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = SETTINGS[data]
    models = [m for m in st["models"] if any(r["model"] == m for r in results)]
    cols = [c for c in st["columns"] if any(r["column"] == c for r in results)]
    stem = "accuracy" if data == "mnist" else "accuracy_digits"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"data": data, "seeds": seeds, "seconds": round(seconds, 1),
                                                  "code_key": key, "task_seconds": task_seconds or {},
                                                  "notes": notes or [],
                                                  "results": results}, indent=1) + "\n")

    def sel(model, method=None, col=None, key="golden_acc"):
        return [r[key] for r in results if r["model"] == model and (method is None or r["method"] == method)
                and (col is None or r["column"] == col)]

    n_test = len(results[0]["correct"])
    if data == "mnist":
        title = "# Quantization accuracy on the MNIST models"
        what = (f"Test split of the shipped MNIST sample ({n_test} images; one image is {100 / n_test:.2f} "
                "points)")
    else:
        title = "# Quantization accuracy on the digits models (smoke test)"
        what = (f"A smoke test, not a benchmark: the test split of scikit-learn `load_digits` ({n_test} images, "
                f"one image is {100 / n_test:.2f} points; the float model alone varies by more than a point "
                "across seeds). The MNIST table (accuracy.md) is the one to read")
    ep = st["epochs"]
    lines = [
        title, "",
        f"Generated by `scripts/accuracy_table.py --data {data}` (do not edit by hand). {what}. Seeds "
        f"{', '.join(map(str, seeds))}: each seed trains its own float model ({st['float_epochs']} epochs) and "
        "runs every method from it. Cells: mean ± standard deviation (population, ddof 0) over the seeds of "
        "the test accuracy (%) of the **integer golden model** (power-of-two scales, `half_even`). FAT / LSQ "
        "rows in *italics*: the torch fake-quant accuracy with their trained, not yet power-of-two scales. "
        f"Compute time {seconds / 60:.1f} min (the sum over the (model, seed) tasks, each on one CPU thread of a "
        "shared, loaded machine).", "",
        f"![accuracy per method and bit width]({stem}.png)", "",
        "Settings: the input keeps its data set's 8-bit type; `aN` applies to every other activation "
        "(unsigned after ReLU); `fl8`: the first layer's weights and the last layer's weights, input and "
        "output at 8 bits (the TQT paper's convention). Weights per tensor except multipoint and DSConv "
        "(per-channel power-of-two scales). Retraining epochs: "
        + (", ".join(f"{k} {v}" for k, v in ep.items()) if ep else "the method defaults (TQT / LSQ 6, FAT 4, "
           "SQ and INQ 2 per stage)")
        + "; SQ / INQ stages 50 / 75 / 87.5 / 100 %; multipoint: per-channel scales, a second point for at "
        "most half the output channels (by output error); DSConv: post-training (no distillation), blocks "
        "of 8 x 8 GEMM weights. INQ's weights (0, ±2^e) run unchanged on the shift PE (`pe: \"shift\"`), "
        "bit-exactly, so its accuracy there is the INQ row.", "",
    ]
    for note in notes or []:
        lines += [f"Note: {note}", ""]
    missing = [m for m in st["models"] if m not in models]
    partial = {m: sorted({r["seed"] for r in results if r["model"] == m}) for m in models}
    partial = {m: have for m, have in partial.items() if len(have) < len(seeds)}
    if missing or partial:
        todo = [m for m in st["models"] if m in missing or m in partial]
        lines += ["**Incomplete.** " + "; ".join([f"not in this table: {', '.join(missing)}"] * bool(missing)
                                                 + [f"{m}: {len(have)} of {len(seeds)} seeds ({', '.join(map(str, have))})"
                                                    for m, have in partial.items()])
                  + f" (`python scripts/accuracy_table.py --data {data} --models {' '.join(todo)}` adds the rest; "
                  "each (model, seed) is cached under build/accuracy/ as it finishes, and a results file written "
                  "by the same code seeds that cache).", ""]
    for model in models:
        fp = sel(model, "tqt", "w8a8", "float_acc")
        ms = sorted({r["seed"] for r in results if r["model"] == model})
        lines += [f"## {model}", "", f"FP32: **{fmt(fp)}** (seeds {', '.join(map(str, ms))})", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for method in METHOD_ORDER:
            lines.append(f"| {method} | " + " | ".join(fmt(sel(model, method, c)) for c in cols) + " |")
            if method in ("fat", "lsq"):
                cells = [fmt(sel(model, method, c, "fakequant_acc")) for c in cols]
                lines.append(f"| *{method} before pow2* | " + " | ".join(f"*{c}*" for c in cells) + " |")
        lines += ["", f"Exact McNemar p-values, {model} (pooled over the seeds; ▲: the row method is right on "
                  "more of the discordant test images, ▼: on fewer): against TQT / against max calibration.", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for method in METHOD_ORDER:
            cells = [f"{p_cell(pooled(results, model, method, 'tqt', c)) if method != 'tqt' else '·'} / "
                     f"{p_cell(pooled(results, model, method, 'max', c)) if method != 'max' else '·'}" for c in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        costs = {c: sel(model, "multipoint", c, "macs_ratio") for c in cols}
        ds_costs = {c: sel(model, "dsconv", c, "macs_ratio") for c in cols}
        lines += ["", "Equal cost: multipoint's MACs and weight bytes relative to a one-point network (mean over "
                  "seeds): " + ", ".join(f"{c} {np.mean(v):.2f}x" for c, v in costs.items() if v)
                  + "; DSConv: " + ", ".join(f"{c} {np.mean(v):.2f}x" for c, v in ds_costs.items() if v)
                  + " (every other method 1.00x).", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models) + 1.3, 4.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        width = 0.84 / len(METHOD_ORDER)
        for j, method in enumerate(METHOD_ORDER):
            xs, ms, ss = [], [], []
            for i, c in enumerate(cols):
                v = sel(model, method, c)
                if v:
                    xs.append(i + (j - len(METHOD_ORDER) / 2 + 0.5) * width)
                    ms.append(100 * np.mean(v))
                    ss.append(100 * np.std(v))
            ax.bar(xs, ms, width, yerr=ss, label=method, capsize=1.2, color=plt.cm.tab20(j / 20))
        ax.axhline(100 * np.mean(sel(model, "tqt", "w8a8", "float_acc")), color="k", ls="--", lw=1, label="FP32")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        lows = [100 * r["golden_acc"] for r in results if r["model"] == model]
        ax.set_ylim(min(50, 5 * np.floor(min(lows) / 5)), 100)
        ax.set_title(model)
        ax.set_ylabel("test accuracy on golden model (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)


def run(data: str, models: list[str], seeds: list[int], workers: int, fresh: bool,
        out: Path, cached_only: bool = False) -> tuple[list[dict], float, str, dict]:
    """Run the (model, seed) tasks of *models* not in the cache (all with *fresh*); the table gets them and
    every other model of the data set cached for *seeds* by the same code (the cache first takes the tasks of
    *out*'s results file when the same code wrote it). Returns the rows, their compute time, the code key and
    each task's time."""
    from tqdm import tqdm

    cols = SETTINGS[data]["columns"]
    key = code_key(data)
    cache = CACHE / data / key
    cache.mkdir(parents=True, exist_ok=True)
    seeded = seed_cache(data, out, key, cache)
    if seeded:
        print(f"{results_file(data, out)} was written by this code: {len(seeded)} (model, seed) tasks reused")
    tasks = {}
    for model in SETTINGS[data]["models"]:
        for seed in seeds:
            f = cache / f"{model}_s{seed}.json"
            if f.exists() and not (fresh and model in models):
                tasks[(model, seed)] = json.loads(f.read_text())
    todo = [] if cached_only else [(m, s) for m in models for s in seeds if (m, s) not in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futs = {pool.submit(run_task, data, m, s, cols): (m, s) for m, s in todo}
        for fut in tqdm(as_completed(futs), total=len(futs), desc=f"accuracy ({data})", unit="model-seed"):
            m, s = futs[fut]
            task = tasks[(m, s)] = fut.result()
            (cache / f"{m}_s{s}.json").write_text(json.dumps(task))
            tqt = [r["golden_acc"] for r in task["rows"] if r["method"] == "tqt" and r["column"] == "w4a4"]
            tqdm.write(f"{m} seed {s}: {len(task['rows'])} runs, tqt w4a4 {100 * np.mean(tqt):.2f}")
    order = [(m, s) for m in SETTINGS[data]["models"] for s in seeds if (m, s) in tasks]
    results = [r for k in order for r in sorted(tasks[k]["rows"], key=lambda r: (r["column"], r["method"]))]
    task_seconds = {f"{m}_s{s}": round(tasks[(m, s)]["seconds"], 1) for m, s in order}
    return results, sum(tasks[k]["seconds"] for k in order), key, task_seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("mnist", "digits", "both"), default="both")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5 for MNIST, 3 for digits)")
    p.add_argument("--models", nargs="*", default=None, help="a subset of the data set's models")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--fresh", action="store_true", help="ignore the per-(model, seed) cache in build/accuracy")
    p.add_argument("--render", action="store_true", help="only re-render md/png from OUT/accuracy*.json")
    p.add_argument("--note", action="append",
                   help="a note printed under the table's header (kept while the same code writes the table)")
    p.add_argument("--cached-only", action="store_true",
                   help="run no task: write the tables of the (model, seed) tasks cached by the current code")
    args = p.parse_args(argv)
    for data in (("mnist", "digits") if args.data == "both" else (args.data,)):
        st = SETTINGS[data]
        if args.render:
            d = json.loads(results_file(data, Path(args.out)).read_text())
            write_outputs(data, d["results"], d["seeds"], Path(args.out), d.get("seconds", 0.0),
                          d.get("code_key"), d.get("task_seconds"), d.get("notes"))
            continue
        models = args.models or st["models"]
        bad = [m for m in models if m not in st["models"]]
        if bad:
            p.error(f"--models {' '.join(bad)}: not a {data} model ({', '.join(st['models'])})")
        seeds = list(range(args.seeds if args.seeds is not None else st["seeds"]))
        results, seconds, key, task_seconds = run(data, models, seeds, args.workers, args.fresh, Path(args.out),
                                                  args.cached_only)
        if not results:
            p.error(f"no {data} results: nothing cached by this code" if args.cached_only else f"no {data} results")
        f = results_file(data, Path(args.out))
        old = json.loads(f.read_text()) if f.exists() else {}
        notes = (old.get("notes", []) if old.get("code_key") == key else []) + (args.note or [])
        write_outputs(data, results, seeds, Path(args.out), seconds, key, task_seconds, notes)
        print(f"wrote {data} tables to {args.out} ({len(results)} runs, {seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
