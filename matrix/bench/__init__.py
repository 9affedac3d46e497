"""Dummy agents with no LLM (`matrix.bench.dummy`): fixtures for the runtime's tests and the workload of
the harness's overhead and offload benchmarks. The benchmarks themselves live in `experiments/bench/`."""
