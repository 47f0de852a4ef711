"""Fault-injection run ("chaos"): many reconnecting clients, random faults, one checker.

``python -m bench.chaos --help``. See ``bench/chaos/README.md``.
"""
