"""Reports: cycle model, energy model, per-layer reports and plots."""
