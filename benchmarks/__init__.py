"""Benchmarks, run as modules: ``python -m benchmarks.<name>`` (see README.md here)."""
