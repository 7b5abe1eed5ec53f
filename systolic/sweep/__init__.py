"""Design-space sweeps: a spec of configs x models x metrics run point by point on Dask
(:mod:`.spec`, :mod:`.tasks`, :mod:`.run`), with Pareto plots (:mod:`.plot`). docs/sweep.md."""
