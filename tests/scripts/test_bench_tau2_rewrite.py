"""The tau2 results-rewrite benchmark: its arithmetic, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_tau2_rewrite.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tau2_rewrite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_and_sum_are_the_arithmetic_series() -> None:
    bench = load()
    a, b = bench.fit([{"simulations": n, "save_seconds": 0.5 + 0.002 * n} for n in (10, 100, 1000)])
    assert a == pytest.approx(0.5) and b == pytest.approx(0.002)
    assert bench.total(a, b, 3) == pytest.approx(3 * 0.5 + 0.002 * (0 + 1 + 2))


def test_a_small_run_writes_its_json(tmp_path: Path) -> None:
    bench = load()
    results = tmp_path / "tau2_results.json"
    sims = [{"id": str(i), "messages": [{"role": "user", "content": "x" * 500}]} for i in range(3)]
    results.write_text(json.dumps({"info": {}, "tasks": [], "simulations": sims}))
    out = tmp_path / "rewrite.json"
    assert bench.main(["--results", str(results), "--points", "2,8", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [p["simulations"] for p in data["points"]] == [2, 8]
    assert data["points"][1]["file_bytes"] > data["points"][0]["file_bytes"]
    # Timings of such tiny files are noise (the slope can come out negative under load): check the
    # arithmetic from the fit the script wrote, not the sign of a measurement.
    fit = data["fit_save_seconds"]
    k = bench.PAPER_BASELINE["trajectories"]
    want = bench.total(fit["a"], fit["b_per_simulation"], k)
    assert data["total_save_seconds_for_paper_baseline"] == pytest.approx(want)
    assert all(p["save_seconds"] > 0 for p in data["points"])
    assert bench.main(["--results", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
