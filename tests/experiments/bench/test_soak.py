"""The soak: the memory verdict (level after warm-up against the level at the end), and a short real soak
on a head and a worker node under mixed kills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench import soak

MB = 2**20


def samples(levels: list[float], *, tasks: int = 1000, every: float = 10.0) -> list[dict[str, float]]:
    n = len(levels)
    return [{"t": i * every, "done": tasks * (i + 1) / n, "rss_bytes": lv * MB} for i, lv in enumerate(levels)]


def test_flat_memory_passes_and_growth_fails() -> None:
    flat = soak.memory_verdict(
        samples([500, 900, 1000, 1010, 990, 1000, 1005, 1020, 1030, 1040]),
        tasks=1000, warmup_fraction=0.2, window_seconds=25.0, tolerance=0.10,
    )  # fmt: skip
    # warm-up ends at the 2nd sample (t=10): after it 900, 1000, 1010; the last 25 s: 1020, 1030, 1040
    assert flat["warmup_end_seconds"] == 10.0
    assert flat["level_after_warmup_bytes"] == pytest.approx(970 * MB)
    assert flat["level_at_end_bytes"] == pytest.approx(1030 * MB)
    assert flat["flat"] is True and flat["change_percent"] == pytest.approx(6.19, abs=0.01)
    assert "why_not" not in flat
    grows = soak.memory_verdict(
        samples([500, 1000, 1000, 1000, 1100, 1200, 1300, 1400, 1500, 1600]),
        tasks=1000, warmup_fraction=0.2, window_seconds=25.0, tolerance=0.10,
    )  # fmt: skip
    assert grows["flat"] is False and grows["change_percent"] > 10


def test_a_run_that_never_warms_up_has_no_verdict() -> None:
    v = soak.memory_verdict(samples([100, 100]), tasks=10_000, warmup_fraction=0.9, window_seconds=5.0, tolerance=0.1)
    v2 = soak.memory_verdict([], tasks=10, warmup_fraction=0.1, window_seconds=5.0, tolerance=0.1)
    assert v["flat"] is None and v2["flat"] is None and "warm-up" in v["why_not"]


@pytest.mark.slow
def test_a_short_soak_under_mixed_kills_loses_nothing_and_samples_memory(no_ray: None, tmp_path: Path) -> None:
    doc = soak.run_soak(
        tasks=500, interval=2.5, targets=("agent", "sink", "node", "model", "admission"), nodes=1, concurrency=60,
        max_turns=8, seed=2, sample_seconds=1.0, window_seconds=5.0, run_root=tmp_path, run_id="soak-test",
        progress=False, stall_seconds=120.0, log=lambda s: None,
    )  # fmt: skip
    run = doc["run"]
    assert (run["lost"], run["duplicate_rows"], run["failed_rows"], run["unexpected_rows"]) == (0, 0, 0, 0), run
    assert run["rows"] == 500
    fi = doc["fault_injection"]
    assert fi["kills"] >= 3 and fi["not_restarted"] == 0, {k: v for k, v in fi.items() if k != "log"}
    mem = doc["memory"]
    assert len(mem["samples"]) >= 5 and all(s["rss_bytes"] > 100 * MB for s in mem["samples"])
    assert mem["level_after_warmup_bytes"] and mem["level_at_end_bytes"]
    assert doc["cluster"]["nodes"] == 2
    metrics = json.loads((tmp_path / "coral" / "matrix" / "soak-test" / "metrics.json").read_text())
    assert metrics["soak"]["lost"] == 0 and metrics["soak"]["kills"] == fi["kills"]
    assert "memory (Ray processes + driver)" in soak.format_soak(doc)
