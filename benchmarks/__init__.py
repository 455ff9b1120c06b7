"""Benchmarks: they print figures (record them in BENCHMARKS.md); they are not tests."""
