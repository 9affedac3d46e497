"""The overhead benchmark's code paths at a tiny scale (numbers are not asserted: they belong to the bench)."""

from __future__ import annotations

import pytest

from experiments.bench.overhead import REFERENCE, format_point, ping_pong, run_dummy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def test_dummy_run_and_ping_pong_report_what_the_bench_prints() -> None:
    p = run_dummy(120, 60, 512)
    assert p["tasks_finished"] == 120 and p["tasks_lost"] == 0
    assert 6 <= p["hops_per_trajectory"] <= 12
    assert p["payload"]["puts"] > 0 and p["peak_ray_memory_mb"] > 0
    # More chains than an async actor's default 1,000 slots can hold at depth 10: must not deadlock.
    pp = ping_pong(int(p["bytes_per_hop_mean"]), 10, 300, 150)
    assert pp["trajectories_per_second"] > 0
    p["ping_pong"] = pp
    p["fraction_of_ping_pong"] = p["trajectories_per_second"] / pp["trajectories_per_second"]
    p["speedup_vs_reference"] = p["trajectories_per_second"] / REFERENCE["trajectories_per_second"]
    assert "bare ping-pong" in format_point(p)
