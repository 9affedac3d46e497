"""Benchmarks that print numbers and write JSON under results/bench/."""
