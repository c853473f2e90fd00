"""Benchmarks: raw engine, the service end to end, a naive baseline, similarity search."""
