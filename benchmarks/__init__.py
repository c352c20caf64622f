"""Benchmarks of mlflow_hpo against the tools users would pick instead.

Run ``python -m benchmarks.run`` for the full suite or ``--quick`` for a
smoke run; see docs/benchmarks.md for the results and how to read them.
"""
