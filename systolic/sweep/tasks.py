"""One sweep point: a pure function of the point, and the key its result is cached under.

:func:`run_point` takes a point of :func:`systolic.sweep.spec.expand` (the
whole config as a dict, the model, the method, the metrics) and returns a
JSON-able result; it reads nothing but the model file and writes nothing
(synthesis works in a temporary folder), so a Dask worker can run it
anywhere the model file is readable, and run it again after a crash.

A quantizing point (method other than ``golden``) gets its model from
:func:`quantize_recipe`, a task of its own that every point of the same recipe
(:func:`systolic.sweep.spec.quant_recipe`) shares: it returns the golden model
file's bytes, which Dask hands to the points (and the client caches).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from pathlib import Path

from .spec import canonical_json, model_fingerprint, quant_recipe

__all__ = ["METRIC_COLUMNS", "PointError", "point_key", "recipe_key", "code_fingerprint", "run_point",
           "quantize_recipe"]

#: The result columns each metric adds, in order.
METRIC_COLUMNS = {
    "cycles": ("cycles_per_image", "utilization", "host_layers"),
    "energy": ("energy_pj_per_image",),
    "accuracy": ("accuracy", "float_accuracy"),
    "rtl": ("rtl_bit_exact", "rtl_cycles_per_image", "rtl_equals_model"),
    "synth": ("luts", "ffs", "dsps", "brams", "fmax_mhz", "routed", "yosys_luts", "lut_per_pe", "ff_per_pe",
              "dsp_per_pe", "lut_per_lane", "critical_path", "yosys_workaround"),
}

#: The errors a point's own input can cause (a config out of range, a model that does not fit, a failed
#: tool run): they make an error row; anything else is a bug and propagates.
_POINT_ERRORS = (ValueError, TypeError, OverflowError)


class PointError(Exception):
    """A point that cannot be measured, for a reason of its own (its message is the row's error)."""


@functools.lru_cache(maxsize=None)
def code_fingerprint(synth_only: bool = False) -> str:
    """sha256 of the source text a point's numbers are a function of: for a synthesis-only point the
    generator of the FPGA top and the synthesis flow (the design hash), otherwise every source file of
    the package. A change of the code recomputes the points it can change; nothing else does."""
    pkg = Path(__file__).resolve().parent.parent
    if synth_only:
        from ..hw.generate import source_closure

        files = {*source_closure("systolic.hw.fpga_top"), *(pkg / "fpga").glob("*.py")}
    else:
        files = set(pkg.rglob("*.py"))
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(pkg)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def point_key(point: dict) -> str:
    """The cache key of *point*: sha256 of its canonical JSON, the package version, its model's hash and
    the hash of the code its metrics run (:func:`code_fingerprint`)."""
    from .. import __version__

    text = canonical_json({"point": point, "systolic": __version__, "model_sha256": model_fingerprint(point["model"]),
                           "code": code_fingerprint(point["metrics"] == ["synth"])})
    return hashlib.sha256(text.encode()).hexdigest()


def recipe_key(recipe: dict) -> str:
    """The cache key of a quantized model: sha256 of its recipe and the package's code."""
    return hashlib.sha256(canonical_json({"recipe": recipe, "code": code_fingerprint()}).encode()).hexdigest()


def quantize_recipe(recipe: dict) -> dict:
    """Train the zoo model in float and quantize it as *recipe* says: ``{"npz": bytes}`` (a golden model
    file) or ``{"error": message}`` when the recipe cannot be quantized (its points become error rows)."""
    from ..quantize.methods import quantize_model

    try:
        result = quantize_model(recipe["model"], recipe["method"], w_bits=recipe["w_bits"],
                                a_bits=recipe["a_bits"], seed=recipe["seed"], rounding=recipe["rounding"],
                                epochs=recipe["epochs"], float_epochs=recipe["float_epochs"],
                                data=recipe["data"])
    except _POINT_ERRORS as exc:
        return {"error": f"quantizing {recipe['model']} with {recipe['method']} "
                         f"(w{recipe['w_bits']}a{recipe['a_bits']}): {exc}"}
    fd, tmp = tempfile.mkstemp(prefix="systolic-sweep-", suffix=".npz")
    os.close(fd)
    try:
        result.network.save(tmp)
        return {"npz": Path(tmp).read_bytes()}
    finally:
        os.unlink(tmp)


def _load_blob(blob: dict):
    """The golden network of a :func:`quantize_recipe` result (a temporary file: the loader checks it)."""
    from ..golden import load

    if "error" in blob:
        raise PointError(blob["error"])
    fd, tmp = tempfile.mkstemp(prefix="systolic-sweep-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob["npz"])
        return load(tmp)
    finally:
        os.unlink(tmp)


def run_point(point: dict, model: dict | None = None) -> dict:
    """Measure one point: ``{"status": "ok" | "error", "error", "seconds", <metric columns>}``. *model*: the
    :func:`quantize_recipe` result of a quantizing point (it is quantized here when not given)."""
    t0 = time.perf_counter()
    try:
        values = _measure(point, model)
        status, error = "ok", None
    except (PointError, *_POINT_ERRORS) as exc:
        values, status, error = {}, "error", str(exc)
    cols = [c for m in point["metrics"] for c in METRIC_COLUMNS[m]]
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - t0, 3),
            **{c: values.get(c) for c in cols}}


def _network(point: dict, model: dict | None):
    """``(network, kind)`` of the point: its model as given, or quantized by its recipe."""
    from ..flows import resolve_model

    recipe = quant_recipe(point)
    if recipe is None:
        return resolve_model(point["model"], seed=point["seed"])
    return _load_blob(model if model is not None else quantize_recipe(recipe)), "file"


def _measure(point: dict, model: dict | None = None) -> dict:
    from ..arch.config import AcceleratorConfig
    from ..flows import load_inputs

    cfg = AcceleratorConfig.from_dict(point["config"])
    cfg.check_system()
    metrics = set(point["metrics"])
    out = {}
    if metrics & {"cycles", "energy", "accuracy", "rtl"}:
        net, kind = _network(point, model)
        x, _ = load_inputs(net, point["images"], seed=point["seed"], kind=kind)
        if metrics & {"cycles", "energy"}:
            out.update(_model_metrics(net, cfg, x, metrics))
        if "accuracy" in metrics:
            out["accuracy"] = _accuracy(net, kind)
            out["float_accuracy"] = net.meta.get("float_test_accuracy")
        if "rtl" in metrics:
            out.update(_rtl_metrics(net, cfg, x))
    if "synth" in metrics:
        out.update(_synth_metrics(cfg, point["synth"]))
    return out


def _model_metrics(net, cfg, x, metrics) -> dict:
    """Cycles, utilization and dynamic energy per image from the executor and the cycle model (the
    report's totals: :func:`systolic.report.report.build_report`)."""
    from ..flows import run_images
    from ..report.report import build_report

    run = run_images(net, cfg, x, source="model", batch=len(x), progress=False)
    if not run.bit_exact:
        raise PointError(f"the executor differs from the golden model ({run.first_mismatch})")
    totals = build_report(run.records(), cfg, counts_source="executor", cycles_source="cycle-model")["totals"]
    out = {}
    if "cycles" in metrics:
        out["cycles_per_image"] = totals["cycles"] / run.images
        out["utilization"] = totals["utilization"]
        out["host_layers"] = " ".join(n for n, where in run.compiled.placement.items() if where != "accelerator")
    if "energy" in metrics:
        out["energy_pj_per_image"] = totals["dynamic_energy_pj"] / run.images
    return out


def _accuracy(net, kind) -> float | None:
    """Top-1 accuracy of the golden model on the whole test split of its data set (digits or MNIST, by its input
    shape); None for a model without one (random models)."""
    from ..flows import load_inputs

    try:
        x, labels = load_inputs(net, "all", kind=kind)
    except ValueError:          # no data set for its shape: random inputs have no labels
        return None
    return float((net.predict(x) == labels).mean())


def _rtl_metrics(net, cfg, x) -> dict:
    """The RTL (direct Verilator backend) on the point's images: bit-exact, cycles, equal to the model."""
    from ..flows import run_images

    run = run_images(net, cfg, x, source="rtl", backend="direct", batch=len(x), progress=False)
    return {"rtl_bit_exact": run.bit_exact, "rtl_cycles_per_image": run.total_cycles / run.images,
            "rtl_equals_model": run.total_cycles == run.predicted_cycles}


def _synth_metrics(cfg, opts: dict) -> dict:
    """Yosys (and nextpnr with ``pnr``) on the system top, in a temporary folder."""
    from ..fpga.synth import ToolError, synth

    with tempfile.TemporaryDirectory(prefix="systolic-sweep-synth-") as tmp:
        try:
            r = synth(cfg, target=opts["target"], device=opts["device"], out_dir=tmp, pnr=opts["pnr"],
                      freq_mhz=opts["freq_mhz"], seed=opts["seed"])
        except ToolError as exc:
            raise PointError(f"synthesis failed: {str(exc).splitlines()[0]}") from None
    # Without place and route, these are Yosys's counts before packing and there is no Fmax.
    each = {m: (r.per_module.get(m) or {}).get("each") or {} for m in ("pe", "lane")}
    return {"luts": r.luts, "ffs": r.ffs, "dsps": r.dsps, "brams": r.brams, "fmax_mhz": r.fmax_mhz,
            "routed": r.routed, "yosys_luts": (r.yosys_counts or {}).get("luts", r.luts),
            "lut_per_pe": each["pe"].get("luts"), "ff_per_pe": each["pe"].get("ffs"),
            "dsp_per_pe": each["pe"].get("dsps"), "lut_per_lane": each["lane"].get("luts"),
            "critical_path": (r.critical_path or {}).get("summary") if r.routed else None,
            "yosys_workaround": r.yosys_workaround}
