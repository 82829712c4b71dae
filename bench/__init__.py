"""Benchmarks: ``python -m bench`` (speed against baselines), ``python -m bench.memory``, ``python -m bench.gpu``."""
