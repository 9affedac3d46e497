"""Benchmarks that print numbers and write JSON under results/bench/ (`matrix bench ...`), and the demo."""
