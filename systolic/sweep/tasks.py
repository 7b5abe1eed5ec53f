"""One sweep point: a pure function of the point, and the key its result is cached under.

:func:`run_point` takes a point of :func:`systolic.sweep.spec.expand` (the
whole config as a dict, the model, the method, the metrics) and returns a
JSON-able result; it reads nothing but the model file and writes nothing
(synthesis works in a temporary folder), so a Dask worker can run it
anywhere the model file is readable, and run it again after a crash.
"""

from __future__ import annotations

import hashlib
import tempfile
import time

from .spec import canonical_json, model_fingerprint

__all__ = ["METRIC_COLUMNS", "PointError", "point_key", "run_point"]

#: The result columns each metric adds, in order.
METRIC_COLUMNS = {
    "cycles": ("cycles_per_image", "utilization"),
    "energy": ("energy_pj_per_image",),
    "accuracy": ("accuracy",),
    "rtl": ("rtl_bit_exact", "rtl_cycles_per_image", "rtl_equals_model"),
    "synth": ("luts", "ffs", "dsps", "brams", "fmax_mhz"),
}

#: The errors a point's own input can cause (a config out of range, a model that does not fit, a failed
#: tool run): they make an error row; anything else is a bug and propagates.
_POINT_ERRORS = (ValueError, TypeError, OverflowError)


class PointError(Exception):
    """A point that cannot be measured, for a reason of its own (its message is the row's error)."""


def point_key(point: dict) -> str:
    """The cache key of *point*: sha256 of its canonical JSON, the package version and its model's hash."""
    from .. import __version__

    text = canonical_json({"point": point, "systolic": __version__, "model_sha256": model_fingerprint(point["model"])})
    return hashlib.sha256(text.encode()).hexdigest()


def run_point(point: dict) -> dict:
    """Measure one point: ``{"status": "ok" | "error", "error", "seconds", <metric columns>}``."""
    t0 = time.perf_counter()
    try:
        values = _measure(point)
        status, error = "ok", None
    except (PointError, *_POINT_ERRORS) as exc:
        values, status, error = {}, "error", str(exc)
    cols = [c for m in point["metrics"] for c in METRIC_COLUMNS[m]]
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - t0, 3),
            **{c: values.get(c) for c in cols}}


def _measure(point: dict) -> dict:
    from ..arch.config import AcceleratorConfig
    from ..flows import load_inputs, resolve_model

    cfg = AcceleratorConfig.from_dict(point["config"])
    cfg.check_system()
    metrics = set(point["metrics"])
    out = {}
    if metrics & {"cycles", "energy", "accuracy", "rtl"}:
        net, kind = resolve_model(point["model"], seed=point["seed"])
        x, _ = load_inputs(net, point["images"], seed=point["seed"], kind=kind)
        if metrics & {"cycles", "energy"}:
            out.update(_model_metrics(net, cfg, x, metrics))
        if "accuracy" in metrics:
            out["accuracy"] = _accuracy(net, kind)
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
    if "energy" in metrics:
        out["energy_pj_per_image"] = totals["dynamic_energy_pj"] / run.images
    return out


def _accuracy(net, kind) -> float | None:
    """Top-1 accuracy of the golden model on the whole digits test split; None for a model without it."""
    from ..flows import load_inputs

    try:
        x, labels = load_inputs(net, "all", kind=kind)
    except ValueError:          # not a digits model: random inputs have no labels
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
                      freq_mhz=opts["freq_mhz"])
        except ToolError as exc:
            raise PointError(f"synthesis failed: {str(exc).splitlines()[0]}") from None
    # Without place and route, these are Yosys's counts before packing and there is no Fmax.
    return {"luts": r.luts, "ffs": r.ffs, "dsps": r.dsps, "brams": r.brams, "fmax_mhz": r.fmax_mhz}
