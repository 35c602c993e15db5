"""Benchmarks: scripts that print figures and write markdown; never asserted in tests."""
