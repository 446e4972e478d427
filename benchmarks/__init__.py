"""Benchmark harness: perf_analyzer on Triton, HTTP load through the gateway, seed-style baselines, WER/CER.

Entry point: ``python -m benchmarks.run`` (``make bench``). See ``benchmarks/run.py``.
"""
