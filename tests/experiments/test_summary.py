"""The end-of-multirun summary: best point per system, the ratio, and the spread over repeats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.summary import launch_runs, summarize


def m(system: str, tps: float, concurrency: int = 8, **extra: Any) -> dict[str, Any]:
    return {"system": system, "concurrency": concurrency, "tokens_per_second": tps, **extra}


def test_a_ratio_inside_the_spread_is_reported_as_equal() -> None:
    lines = summarize([m("matrix", 100.0), m("matrix", 140.0), m("coral-controller", 110.0),
                       m("coral-controller", 120.0)])  # fmt: skip
    assert "matrix at concurrency 8: 120.0 tokens/s (range 100.0-140.0 over 2 runs)" in lines[1]
    assert lines[-1].startswith("  matrix / coral-controller: 1.04x (range 0.83x-1.27x): equal within")


def test_a_ratio_outside_the_spread_is_not_called_equal_and_stopped_runs_are_left_out() -> None:
    runs = [m("matrix", 300.0), m("matrix", 320.0), m("coral-controller", 100.0), m("coral-controller", 105.0),
            m("matrix", 5.0, run_dir="x", stopped={"reason": "SIGTERM"})]  # fmt: skip
    lines = summarize(runs)
    assert lines[0] == "  left out: x stopped early (SIGTERM)"
    assert lines[-1] == "  matrix / coral-controller: 3.02x (range 2.86x-3.20x)"
    assert summarize([m("matrix", 1.0, stopped=True)])[-1] == "summary: no finished runs"


def test_the_best_point_of_a_sweep_is_compared_and_simulated_runs_say_so() -> None:
    lines = summarize([m("matrix", 50.0, 50, simulated=True), m("matrix", 90.0, 100, simulated=True),
                       m("coral-controller", 45.0, 50, simulated=True)])  # fmt: skip
    assert "tokens per simulated s (SIMULATED)" in lines[0] and lines[-1] == "  matrix / coral-controller: 2.00x"


def test_launch_runs_reads_this_launchs_directories_only(tmp_path: Path) -> None:
    for name in ("demo-c8", "demo-c8-r1", "demo-c8.prev-20260101-000000", "other-c8"):
        d = tmp_path / "coral" / "matrix" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m("matrix", 1.0)))
    (tmp_path / "coral" / "matrix" / "demo-w8").mkdir()
    (tmp_path / "coral" / "matrix" / "demo-w8" / "metrics.json").write_text("{torn")
    names = sorted(Path(r["run_dir"]).name for r in launch_runs(tmp_path, "demo", "coral"))
    assert names == ["demo-c8", "demo-c8-r1"]
