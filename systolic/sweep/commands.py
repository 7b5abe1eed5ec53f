"""``systolic sweep SPEC --out DIR``: a design-space sweep on Dask, cached per point, with Pareto plots."""

from __future__ import annotations


def _cmd(args) -> int:
    from .run import run_sweep
    from .spec import load_spec

    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 (this process) or more, not {args.workers}")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("give --workers or --scheduler, not both (the scheduler's cluster has its own workers)")
    spec = load_spec(args.spec, sample=args.sample, seed=args.seed)
    run = run_sweep(spec, args.out, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet)
    files = list(run.files)
    if args.plot:
        from .plot import plot_pareto

        files += plot_pareto(run.rows, args.out)
    print(f"{len(run.rows)} points: {run.computed} computed, {run.cached} from the cache, {run.errors} errors, "
          f"{run.seconds:.1f} s")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="design-space sweep over configs and models on Dask, with Pareto plots",
                       description="Expand a JSON/YAML spec (a grid over config fields, models, quantization "
                                   "methods and metrics; docs/sweep.md) into points and run each once on a "
                                   "Dask cluster; results are cached per point in DIR/cache/ (a rerun "
                                   "resumes), the table is DIR/results.csv and the run's record "
                                   "DIR/sweep.json.")
    p.add_argument("spec", metavar="SPEC", help="sweep spec, .json (or .yaml / .yml with PyYAML)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results, cache, plots)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the embedded LocalCluster (default: the machine's cores; "
                        "0: run in this process without Dask)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="use the existing Dask cluster at ADDRESS (tcp://host:8786) instead")
    p.add_argument("--plot", action="store_true", help="Pareto-front PNGs in DIR")
    p.add_argument("--sample", type=int, metavar="K", default=None, help="a random sample of K points")
    p.add_argument("--seed", type=int, metavar="S", default=None,
                   help="seed of the sample, the random models and inputs (default: the spec's, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd)
