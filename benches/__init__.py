"""Benchmarks of podyn-fast, each measured against a baseline in the same run."""
