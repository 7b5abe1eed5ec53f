"""The use cases the commands share: a model and its inputs, run on the RTL or the model, checked, profiled.

``systolic demo``, ``simulate`` and ``report`` (and the scripts) are thin
commands over these functions:

- :func:`resolve_model`: a shipped model name, a golden ``.npz`` file, or
  ``random:<kind>``;
- :func:`load_inputs`: the digits test images (with labels) for a digits
  model, seeded random inputs otherwise;
- :func:`run_images`: compile for a config and run the images in batches,
  on an RTL backend (``source="rtl"``: the hardware's counters) or on the
  NumPy executor with the analytic cycle model (``source="model"``), with a
  progress bar; every layer compared with the golden model on the way;
  the result (:class:`ImagesRun`) also gives the report's layer records;
- :func:`simulate` (``systolic simulate``) and :func:`demo` (``systolic
  demo``): those, summarized; ``systolic report`` builds its report from
  :func:`run_images` (``systolic.report.commands``).

Plain Python: the RTL backends import amaranth / cocotb only when they run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "resolve_model", "load_inputs", "select_layers", "largest_batch", "ImagesRun", "run_images",
           "compile_checked", "split_cycles", "simulate", "demo"]

#: Where counts and cycles come from.
SOURCES = ("rtl", "model")


def resolve_model(spec: str, seed: int = 0):
    """``(network, kind)`` for *spec*: a shipped model name (``"shipped"``), a ``.npz`` file or an
    already-quantized ``.onnx`` file (QONNX or QDQ; ``"file"``) or ``random:<mlp|cnn|resnet>``
    (``"random"``, an 8-bit random network from *seed*) or an ImageNet-shaped zoo name such as
    ``resnet50-imagenet`` (``"random"``: random weights from *seed*, :mod:`systolic.models.imagenet`)."""
    from .golden import load

    if not isinstance(spec, str):
        raise TypeError(f"model must be a name or a path, not {spec!r}")
    if spec.startswith("random:"):
        from .golden.random import random_network

        return random_network(seed, spec.split(":", 1)[1], 8), "random"
    if spec.endswith(".onnx"):              # already quantized (QONNX, QDQ); a float one is refused, named
        from .golden.onnx_import import import_quantized_onnx

        return import_quantized_onnx(spec), "file"
    if ".py:" in spec and not spec.endswith(".npz"):
        raise ValueError(f"{spec} is a float model; integers are needed here: quantize it first, e.g. "
                         f"systolic quantize {spec} tqt --data DATA --out model.npz")
    path = Path(spec)
    if path.suffix == ".npz" or path.exists():
        return load(path), "file"
    from .models import SHIPPED, load_shipped
    from .models.imagenet import IMAGENET, imagenet_network

    if spec in IMAGENET:
        return imagenet_network(spec, seed), "random"
    if spec not in SHIPPED:
        raise ValueError(f"unknown model {spec!r}: give a .npz file, random:<mlp|cnn|resnet> or one of "
                         f"{', '.join(SHIPPED + tuple(IMAGENET))}")
    return load_shipped(spec), "shipped"


def load_inputs(net, images, seed: int = 0, kind: str = "file", data=None):
    """``(x, labels)``: the first *images* test images (``"all"``: the whole split) of *data* (``"digits"``,
    ``"mnist"``, a ``.npz`` data file; default: the built-in data set of the network's input shape) and
    their labels; seeded random inputs and ``None`` for a random model or a shape no data set has."""
    from .golden.random import random_input

    if images != "all" and (not isinstance(images, int) or isinstance(images, bool) or images < 1):
        raise ValueError(f"images must be a positive int or 'all', not {images!r}")
    from .quantize.data import dataset_for_network, load_dataset

    ds = None
    if data is not None:
        ds = load_dataset(data)
    elif kind != "random":
        try:
            ds = dataset_for_network(net)
        except ValueError:
            ds = None
    if ds is not None:
        xf, labels = ds.split("test", net.input_shape, what="the model")
        n = len(xf) if images == "all" else images
        if n > len(xf):
            raise ValueError(f"the {ds.name} test split has {len(xf)} images, not {n}")
        return net.quantize_input(xf[:n]), np.asarray(labels[:n])
    if images == "all":
        raise ValueError("images='all' needs a model with a data set (digits, mnist or --data), not random inputs")
    return random_input(net, images, seed), None


def select_layers(net, patterns) -> list[str]:
    """The layers of *net* that *patterns* name (layer names or shell patterns such as ``layer3.*``; a string
    is split at commas), in network order; a ``ValueError`` names a pattern that matches no layer."""
    from fnmatch import fnmatchcase

    if isinstance(patterns, str):
        patterns = patterns.split(",")
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise ValueError("no layer named: give layer names or patterns, separated by commas")
    names = [l.name for l in net.layers]
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} layers; systolic inspect lists them)"
                                         if len(names) > 12 else "")
        raise ValueError(f"no layer matches {', '.join(map(repr, unmatched))}; the layers are {shown}")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def largest_batch(net, upto: int) -> int:
    """The largest batch, at most *upto*, whose golden run fits the golden model's size limits
    (:meth:`~systolic.golden.network.QuantizedNetwork.check_batch`); at least 1. Nothing is allocated."""
    lo, hi = 1, max(1, int(upto))
    while lo < hi:                     # the largest b in [lo, hi] that fits; 1 is taken to fit
        mid = (lo + hi + 1) // 2
        try:
            net.check_batch(mid)
            lo = mid
        except ValueError:
            hi = mid - 1
    return lo


def split_cycles(busy: dict) -> dict:
    """A run's ``cycles`` split into compute (array unit busy), stall (array idle while the controller waits
    on the memory port) and other (array idle otherwise: DMA transfers, fetch/decode, STORE, start-up)."""
    total = busy["cycles"]
    compute, stall = busy.get("matmul_busy", 0), busy.get("idle_mem_stall", 0)
    return {"total": total, "compute": compute, "stall": stall, "other": total - compute - stall}


@dataclass
class ImagesRun:
    """Result of :func:`run_images`: every tensor of every image, per-layer counters and cycles."""

    source: str                    #: ``"rtl"`` or ``"model"``
    backend: str | None            #: the RTL backend (``source="rtl"``)
    outputs: dict                  #: every tensor of the whole batch, by name
    counters: dict                 #: per accelerated layer, summed over batches
    cycles: dict                   #: per accelerated layer: total, compute, stall, other, predicted
    compiled: object               #: the CompiledNetwork of the first batch (placement, GEMM shapes)
    images: int
    batch: int
    seconds: float                 #: wall time of the simulator's start-up and the network loops (host layers
                                   #: included; build, compile, prediction and golden check excluded)
    sim_seconds: float = 0.0       #: of which inside the runner (simulator or executor)
    mismatches: dict = field(default_factory=dict)   #: per tensor: elements that differ from the golden model
    compared: int = 0              #: elements compared
    first_mismatch: dict | None = None   #: the first differing element (:func:`_first_mismatch`), if any

    @property
    def total_cycles(self) -> int:
        return sum(c["total"] for c in self.cycles.values())

    @property
    def predicted_cycles(self) -> int:
        return sum(c["predicted"] for c in self.cycles.values())

    @property
    def bit_exact(self) -> bool:
        return sum(self.mismatches.values()) == 0

    def accuracy(self, labels, name: str | None = None) -> float:
        """Top-1 accuracy of tensor *name* (default: the network's output) against *labels*."""
        name = name or self.compiled.net.output_name
        pred = self.outputs[name].reshape(self.images, -1).argmax(axis=1)
        return float(np.mean(pred == np.asarray(labels)))

    def records(self):
        """Per-layer :class:`~systolic.report.report.LayerRecord` of the whole run."""
        from .report.report import records_from_run

        recs = records_from_run(self.compiled, self.counters, self.cycles)
        scale = self.images / self.compiled.batch
        for r in recs:
            if r.gemm:
                r.gemm = (int(round(r.gemm[0] * scale)), *r.gemm[1:])
                r.useful_macs = int(round(r.useful_macs * scale))
            if r.cost:      # per program run, like the MACs: scaled from the compiled batch to the images
                r.cost = {k: int(round(v * scale)) for k, v in r.cost.items()}
        return recs


def run_images(net, config, x_int, *, source: str = "rtl", backend: str | None = None, memory=None,
               batch: int = 32, dram_bytes: int | None = None, progress: bool = True, check: bool = True,
               cache_dir=None, waves=None, compiled=None, layers=None) -> ImagesRun:
    """Run *net* on the images *x_int* on accelerator *config*, *batch* images per compiled program.

    ``source="rtl"``: every program on an RTL backend (:data:`systolic.sim.system.BACKENDS`), the
    counters are the hardware's; ``"model"``: the NumPy executor counts the events and the analytic
    cycle model gives the cycles (equal to the RTL's without random stalls). With *check*, every
    tensor of every batch is compared with the golden model (:attr:`ImagesRun.mismatches`). *waves*: a
    :class:`systolic.sim.backend.Waves` for the RTL backend (a waveform file). *compiled*: the
    :func:`compile_checked` result for the first batch, when the caller made it already. *layers*: run only
    these layers (names), each on its golden inputs (:func:`systolic.compiler.run.run_network`); only they
    are compared and counted.
    """
    from tqdm import tqdm

    from .arch.config import load_config
    from .arch.machine import MachineSpec
    from .arch.memory import MemoryModel
    from .compiler.run import ExecutorRunner, run_network
    from .report.cycles import predict_network

    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, not {batch!r}")
    config = load_config(config)
    memory = memory or MemoryModel()
    if not isinstance(memory, MemoryModel):
        raise TypeError(f"memory must be a MemoryModel, not {memory!r}")
    if source == "model" and memory.stall:
        raise ValueError("the cycle model is exact only without random stalls; use source='rtl' for stall > 0")
    x = net.check_input(x_int)
    if layers is not None:
        layers = select_layers(net, layers)
        check = True
    n = x.shape[0]
    nb0 = min(batch, n)         # checked before the runner opens; *compiled*: done already by the caller
    if check:
        try:
            net.check_batch(nb0)       # before compiling: a batch the golden check cannot hold fails at once
        except ValueError as exc:
            raise ValueError(f"{exc}; the largest batch of this network the golden check holds is "
                             f"{largest_batch(net, nb0)} (run the images in batches of that size)") from None
    compiled = {nb0: compiled if compiled is not None else compile_checked(net, config, nb0, dram_bytes, layers)}
    dram_bytes = compiled[nb0].spec.dram_bytes      # (every batch gets the first one's DRAM size)
    spec = MachineSpec.from_config(config, dram_bytes=dram_bytes)
    if source == "rtl":
        from .sim.system import backend_name, open_backend

        backend = backend_name(backend)
        desc = f"RTL simulation ({backend})"

        def open_runner():
            return open_backend(backend, config, memory, cache_dir, waves)
    else:
        backend = None
        desc = "executor + cycle model"

        def open_runner():
            return _Closing(ExecutorRunner(spec))
    outs, counters, cycles, mismatches = {}, {}, {}, {}
    run_s, sim_s, compared, first_mismatch = 0.0, 0.0, 0, None
    bar = tqdm(total=n, desc=desc, unit="image", disable=not progress)
    t0 = time.perf_counter()
    with open_runner() as runner:
        run_s += time.perf_counter() - t0          # start-up of the simulator (a cached build)
        for lo in range(0, n, batch):
            xb = x[lo:lo + batch]
            nb = int(xb.shape[0])
            if nb not in compiled:
                compiled[nb] = compile_checked(net, config, nb, dram_bytes)
            cn = compiled[nb]
            gold = net.run(xb) if check else None
            steps = [st.layer for st in cn.steps if layers is None or st.layer in layers]

            def show(layer, _counters, steps=steps):
                bar.set_postfix_str(f"{steps.index(layer) + 1}/{len(steps)} layers done ({layer})")

            run = run_network(cn, xb, runner, progress=show if progress else None, only=layers, golden=gold)
            run_s += run.seconds
            sim_s += sum(run.sim_seconds.values())
            predicted = {k: p.counters for k, p in predict_network(cn, config, memory).items()}
            for name, v in run.outputs.items():
                outs.setdefault(name, []).append(v)
            for name, c in run.counters.items():
                if name in counters:
                    counters[name] += c
                else:
                    counters[name] = c
                split = split_cycles(c.rtl if source == "rtl" else predicted[name])
                split["predicted"] = predicted[name]["cycles"]
                if name in cycles:
                    for k in split:
                        cycles[name][k] += split[k]
                else:
                    cycles[name] = split
            if check:
                for name in run.outputs:
                    want = gold[name]
                    differ = run.outputs[name] != want
                    bad = int(np.count_nonzero(differ))
                    mismatches[name] = mismatches.get(name, 0) + bad
                    compared += int(want.size)
                    if bad and first_mismatch is None:
                        first_mismatch = _first_mismatch(name, differ, run, want, lo, nb, lo // batch)
                    if bad and hasattr(runner, "fail"):      # an RTL backend keeps what helps to inspect it
                        runner.fail(f"layer {name!r}: {bad} elements differ from the golden model")
                bar.set_postfix(mismatches=sum(mismatches.values()))
            bar.update(nb)
    bar.close()
    first = compiled[nb0]
    return ImagesRun(source, backend, {k: np.concatenate(v) for k, v in outs.items()}, counters, cycles, first,
                     n, min(batch, n), run_s, sim_s, mismatches, compared, first_mismatch)


def _first_mismatch(name, differ, run, want, lo: int, nb: int, batch_index: int) -> dict:
    """Where tensor *name* of a batch (images *lo*.. *lo+nb*) first differs from the golden model *want*."""
    at = tuple(int(i) for i in np.argwhere(differ)[0])
    counters = run.counters.get(name)
    return {"layer": name, "batch": batch_index, "batch_images": [lo, lo + nb], "image": lo + at[0],
            "element": list(at[1:]), "index": int(np.ravel_multi_index(at[1:], want.shape[1:])) if at[1:] else 0,
            "rtl": int(run.outputs[name][at]), "golden": int(want[at]),
            "program_cycles": counters.cycles if counters is not None else None}


#: The smallest DRAM a run gets when its size is left to the network (``dram_bytes=None``).
MIN_DRAM_BYTES = 1 << 18


def compile_checked(net, config, batch: int, dram_bytes: int | None = None, layers=None):
    """*net* compiled for *config* at *batch*: the cheap checks of a run, made before any simulator build.

    ``dram_bytes=None``: the DRAM is sized to the network (at least :data:`MIN_DRAM_BYTES`, a power of
    two; ``cn.spec.dram_bytes`` says how much), else exactly *dram_bytes*.

    Raises the compiler's errors (an accumulator that could overflow, a layer too large for the
    scratchpads, a rounding mismatch) and a ``ValueError`` when no layer (of *layers*, names, if given) would
    run on the accelerator (every one on the host: the run would measure nothing).
    """
    from .arch.machine import MachineSpec
    from .compiler import compile_network

    cn = compile_network(net, MachineSpec.from_config(config, dram_bytes=dram_bytes or MIN_DRAM_BYTES),
                         batch=batch, fit_dram=dram_bytes is None)
    chosen = {k: v for k, v in cn.placement.items() if layers is None or k in layers}
    if all(p != "accelerator" for p in chosen.values()):
        why = "; ".join(f"{layer}: {p.removeprefix('host: ')}" for layer, p in chosen.items())
        which = "of the network" if layers is None else "of those chosen"
        raise ValueError(f"no layer {which} runs on the accelerator {config.name} ({why})")
    return cn


class _Closing:
    """A runner without a ``close`` as a context manager."""

    def __init__(self, runner):
        self.runner = runner

    def __enter__(self):
        return self.runner

    def __exit__(self, *exc):
        return False


def simulate(config, model: str = "digits-cnn", images=32, memory=None, seed: int = 0,
             dram_bytes: int | None = None, batch: int | None = None, backend: str | None = None,
             progress: bool = False, cache_dir=None, waves=None, data=None, layers=None) -> dict:
    """Run *images* inputs of *model* on the RTL of *config*; a JSON-ready summary (``systolic simulate``).

    Inputs from :func:`load_inputs` (``images="all"``: the whole test split of *data*). With *batch*, the
    images run in batches of that size (one compiled program per batch; the counters add up); accuracy on
    the RTL and on the golden model is reported when labels exist. *layers* (names or shell patterns, see
    :func:`select_layers`): run only those layers on the RTL, each on its golden inputs.
    """
    from .arch.config import load_config
    from .arch.memory import MemoryModel
    from .sim.system import backend_name, build_backend, check_waves

    config = load_config(config)
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch must be a positive int, not {batch!r}")       # before any build
    memory = memory or MemoryModel()
    backend = backend_name(backend)
    net, kind = resolve_model(model, seed)
    if layers is not None:
        layers = select_layers(net, layers)
    x, labels = load_inputs(net, images, seed, kind, data)
    total = int(x.shape[0])
    cn = compile_checked(net, config, min(batch or total, total), dram_bytes, layers)   # cheap checks, before the build
    dram_bytes = cn.spec.dram_bytes
    check_waves(waves, backend, net, config, dram_bytes)
    t0 = time.perf_counter()
    build_backend(backend, config, cache_dir, waves)
    build_s = time.perf_counter() - t0
    run = run_images(net, config, x, source="rtl", backend=backend, memory=memory,
                     batch=total if batch is None else batch, dram_bytes=dram_bytes, progress=progress,
                     cache_dir=cache_dir, waves=waves, compiled=cn, layers=layers)
    peak = config.rows * config.cols
    records = []
    for name, c in run.counters.items():
        records.append({"layer": name, "cycles": c.cycles, "macs": c.macs,
                        "utilization": c.macs / (peak * c.cycles) if c.cycles else 0.0,
                        "dram_bytes_read": c.dram_bytes_read, "dram_bytes_written": c.dram_bytes_written,
                        "instructions": c.instructions, "mismatches": run.mismatches[name],
                        **{k: v for k, v in c.rtl.items() if k.endswith(("_busy", "_stall"))}})
    out = {
        "config": config.to_dict(), "model": model, "images": total, "batch": run.batch, "backend": backend,
        "memory": memory.to_dict(), "placement": run.compiled.placement, "host_layers": run.compiled.host_layers,
        "mismatches": sum(run.mismatches.values()), "compared_elements": run.compared,
        "cycles": run.total_cycles, "cycles_per_image": run.total_cycles / total,
        "cycles_predicted": run.predicted_cycles, "process_seconds": run.seconds, "rtl_seconds": run.sim_seconds,
        "build_seconds": build_s,
        "images_per_second": total / run.seconds if run.seconds else 0.0,
        "cycles_per_second": run.total_cycles / run.sim_seconds if run.sim_seconds else 0.0,
        "layers_run": layers, "layers": records, "first_mismatch": run.first_mismatch,
        "waves": str(waves.path) if waves else None,
    }
    if labels is not None and layers is None:
        gold = net(x)
        out["accuracy_rtl"] = run.accuracy(labels)
        out["accuracy_golden"] = float(np.mean(gold.reshape(total, -1).argmax(axis=1) == labels))
        pred_rtl = run.outputs[net.output_name].reshape(total, -1).argmax(axis=1)
        out["prediction_mismatches"] = int(np.count_nonzero(pred_rtl != gold.reshape(total, -1).argmax(axis=1)))
    return out


def demo(model: str = "digits-cnn", config: str = "default", images=None, out="demo-report",
         progress: bool = True, memory=None, backend: str = "direct", batch: int = 32, waves=None) -> dict:
    """The main job: *model* on *config*'s RTL over the digits test images (``None``: all), checked against
    the golden model on every layer; writes a report directory (report.json / .md, plots, the Verilog,
    demo.json) and returns the JSON summary."""
    import json

    from tqdm import tqdm

    from .arch.config import load_config
    from .arch.memory import MemoryModel
    from .hw.generate import generate_verilog
    from .report.report import build_report, write_report
    from .sim.system import backend_name, build_backend, check_waves

    if images is not None and (not isinstance(images, int) or isinstance(images, bool) or images < 1):
        raise ValueError(f"images must be a positive int, not {images!r}")
    t_start = time.perf_counter()
    cfg = load_config(config)
    cfg.check_system()
    memory = memory or MemoryModel()
    backend = backend_name(backend)
    net, kind = resolve_model(model)
    net.check_accumulators(cfg.acc_bits)
    x, labels = load_inputs(net, "all" if images is None else images, kind=kind)
    cn = compile_checked(net, cfg, min(batch, int(x.shape[0])))      # the cheap checks, before Verilog and build
    check_waves(waves, backend, net, cfg)
    out = Path(out)
    steps = tqdm(total=2, desc="prepare", unit="step", disable=not progress, leave=False)
    steps.set_postfix_str("Verilog")
    verilog = generate_verilog(cfg, out / "verilog", top="system")
    steps.update()
    steps.set_postfix_str(f"{backend} build (cached after the first run)")
    t0 = time.perf_counter()
    build_backend(backend, cfg, waves=waves)
    build_s = time.perf_counter() - t0
    steps.update()
    steps.close()
    run = run_images(net, cfg, x, source="rtl", backend=backend, memory=memory, batch=batch, progress=progress,
                     waves=waves, compiled=cn)
    gold = net(x)
    result = {
        "model": model, "config": cfg.name, "images": run.images, "backend": backend,
        "bit_exact": run.bit_exact, "mismatches": sum(run.mismatches.values()), "compared_elements": run.compared,
        "accuracy_rtl": run.accuracy(labels) if labels is not None else None,
        "accuracy_golden": (float(np.mean(gold.reshape(run.images, -1).argmax(axis=1) == labels))
                            if labels is not None else None),
        "cycles": run.total_cycles, "cycles_per_image": run.total_cycles / run.images,
        "cycles_predicted": run.predicted_cycles,
        "placement": run.compiled.placement, "host_layers": run.compiled.host_layers,
        "memory": memory.to_dict(), "verilog": str(verilog),
        "build_seconds": round(build_s, 2), "simulation_seconds": round(run.sim_seconds, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "report_dir": str(out), "first_mismatch": run.first_mismatch, "waves": str(waves.path) if waves else None,
    }
    rep = build_report(run.records(), cfg, counts_source="rtl", cycles_source="rtl", extra={
        k: result[k] for k in ("model", "images", "bit_exact", "mismatches", "accuracy_rtl", "accuracy_golden",
                               "cycles_per_image", "cycles_predicted")})
    write_report(rep, out)
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
