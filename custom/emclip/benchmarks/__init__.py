"""Benchmarks: scripts that measure and report (speed, memory, domain generalization)."""
