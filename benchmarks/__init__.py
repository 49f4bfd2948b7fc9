"""Benchmarks of optax_clr; run them with ``python benchmarks/run.py``."""
