"""Benchmarks: step time, sharded steps, and the one-shot accelerator check.

Each module is a script, run from the repository root as
`python -m benchmarks.<name>`; speed goals are printed as ratios against a
baseline measured in the same process, never asserted in unit tests.
"""
