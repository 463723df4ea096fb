"""Benchmarks: each prints one JSON object (last line) with figures, ratios and provenance."""
