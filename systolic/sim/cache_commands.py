"""Simulator cache commands: ``cache info`` and ``cache clean [--all | --superseded]`` (the work is
:func:`systolic.sim.build.scan` and :func:`systolic.sim.build.clean`)."""

from __future__ import annotations

import time


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= length:
            return f"{s / length:.0f} {unit}"
    return f"{s:.0f} s"


def _state(e) -> str:
    if e.kind == "broken":
        return f"broken: {e.why}"
    if e.kind == "temp":
        return "temporary (a build in progress or one that died)"
    if e.kind == "other":
        return "not a build"
    parts = ["superseded" if e.superseded else "current"]
    if e.in_use:
        parts.append("in use")
    if e.runs:
        parts.append(f"{e.runs} kept run folder{'s' * (e.runs > 1)}")
    return ", ".join(parts)


def _info(args) -> int:
    from .build import cache_root, keep_count, scan

    root = cache_root()
    entries = scan(root)
    print(f"simulator cache: {root} (set by $SYSTOLIC_SIM_CACHE; builds kept per name: {keep_count()}, "
          f"$SYSTOLIC_SIM_CACHE_KEEP)")
    if not entries:
        print("empty")
        return 0
    now = time.time()
    w = max(len(e.name or e.path.name) for e in entries)
    print(f"{'name':<{w}}  {'key':<16}  {'size':>10}  {'age':>7}  state")
    for e in entries:
        print(f"{e.name or e.path.name:<{w}}  {e.key or '-':<16}  {_mb(e.size):>10}  {_age(now - e.created):>7}  "
              f"{_state(e)}")
    builds = [e for e in entries if e.kind == "build"]
    removable = [e for e in entries if e.kind in ("broken", "temp") or e.superseded]
    print(f"total: {_mb(sum(e.size for e in entries))} in {len(entries)} folders ({len(builds)} builds); "
          f"'systolic cache clean' frees {_mb(sum(e.size for e in removable))}")
    return 0


def _clean(args) -> int:
    from .build import cache_root, clean

    root = cache_root()
    removed, busy = clean(root, everything=args.all)
    for e in removed:
        print(f"removed {e.path.name} ({_mb(e.size)}, {_state(e)})")
    for e in busy:
        print(f"kept {e.path.name}: in use or being built")
    print(f"freed {_mb(sum(e.size for e in removed))} in {root}")
    return 0


def _usage(args) -> int:
    args.cache_parser.print_help()
    return 2


def register(sub) -> None:
    p = sub.add_parser("cache", help="show or clean the simulator build cache",
                       description="The folder every simulator build is cached in ($SYSTOLIC_SIM_CACHE, default "
                                   "~/.cache/systolic/sim): 'info' lists its builds, 'clean' removes them.")
    p.set_defaults(func=_usage, cache_parser=p)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    info = actions.add_parser("info", help="the cache folder, each build's name, key, size, age and state; the total",
                              description="List the simulator cache: per build its name (top and kind), key, size, "
                                          "age and state (current, superseded, broken, in use), and the total size.")
    info.set_defaults(func=_info)
    clean = actions.add_parser("clean", help="remove superseded and broken builds (--all: every build)",
                               description="Remove builds from the simulator cache. Builds in use and folders that "
                                           "are not builds stay.")
    what = clean.add_mutually_exclusive_group()
    what.add_argument("--superseded", action="store_true",
                      help="superseded builds (beyond the newest $SYSTOLIC_SIM_CACHE_KEEP of a name), broken builds "
                           "and leftovers of interrupted builds (the default)")
    what.add_argument("--all", action="store_true", help="every build, with the run folders kept inside them")
    clean.set_defaults(func=_clean)
