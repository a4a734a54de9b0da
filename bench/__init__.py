"""Benchmarks of the operator against the local cluster (`python bench/run.py --help`)."""
