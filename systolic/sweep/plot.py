"""Pareto fronts of a sweep's results: the non-dominated points, and PNG plots of them (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["pareto_front", "PLOTS", "plot_pareto"]

#: The plots :func:`plot_pareto` draws: (file stem, x column, x sense, y column, y sense, axis labels,
#: grouping). Each group (a bit width, or a model and a bit width where the values are per image of a model
#: and comparing models would say nothing) gets its own colour and front.
PLOTS = (
    ("pareto_cycles_luts", "luts", "min", "cycles_per_image", "min", ("LUTs", "cycles per image"),
     ("model", "bits")),
    ("pareto_energy_accuracy", "energy_pj_per_image", "min", "accuracy", "max",
     ("dynamic energy per image (pJ)", "golden accuracy"), ("bits",)),
    ("pareto_cycles_energy", "cycles_per_image", "min", "energy_pj_per_image", "min",
     ("cycles per image", "dynamic energy per image (pJ)"), ("model", "bits")),
)


def pareto_front(points, senses=("min", "min")) -> list[int]:
    """Indices (ascending) of the non-dominated points of *points*, a sequence of equal-length tuples.

    A point dominates another when it is at least as good in every coordinate (smaller for ``"min"``,
    larger for ``"max"``) and better in one; equal points do not dominate each other.
    """
    sign = [1 if s == "min" else -1 for s in senses]
    if any(s not in ("min", "max") for s in senses):
        raise ValueError(f"senses must be 'min' or 'max', not {senses!r}")
    keyed = [tuple(g * v for g, v in zip(sign, p)) for p in points]

    def dominated(a):
        return any(all(b_i <= a_i for a_i, b_i in zip(a, b)) and b != a for b in keyed)

    return [i for i, a in enumerate(keyed) if not dominated(a)]


def _bits(row) -> str:
    return f"i{row['in_bits']}w{row['w_bits']}o{row['out_bits']}"


def _group(row, by, models) -> str:
    """The row's group label: its bit width, prefixed by its model when grouping by model among several."""
    bits = _bits(row)
    if "model" in by and len(models) > 1:
        return f"{row.get('model')} {bits}"
    return bits


def _draw(rows, x, xs, y, ys, labels, path, by=("bits",)) -> bool:
    """One scatter plot with each group's front drawn and marked; False if no row has both values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = [r for r in rows if r["status"] == "ok" and r.get(x) is not None and r.get(y) is not None]
    if not have:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    models = {r.get("model") for r in have}
    for bits in sorted({_group(r, by, models) for r in have}):
        group = [r for r in have if _group(r, by, models) == bits]
        pts = [(float(r[x]), float(r[y])) for r in group]
        front = sorted((pts[i] for i in pareto_front(pts, (xs, ys))))
        dots = ax.scatter(*zip(*pts), s=14, alpha=0.5, label=f"{bits} ({len(pts)} points)")
        ax.plot(*zip(*front), marker="o", markersize=7, markerfacecolor="none", color=dots.get_facecolor()[0],
                label=f"{bits} Pareto front ({len(front)})")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_pareto(rows, out) -> list[Path]:
    """The PNGs of :data:`PLOTS` whose two columns the rows have (others are skipped); their paths."""
    files = []
    for stem, x, xs, y, ys, labels, by in PLOTS:
        path = Path(out) / f"{stem}.png"
        if _draw(rows, x, xs, y, ys, labels, path, by):
            files.append(path)
    return files
