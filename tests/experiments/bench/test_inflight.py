"""The in-flight benchmark: its bookkeeping (fast) and the whole run at a small scale (slow, local Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench.inflight import fill_profile, problems, run_inflight, summary
from matrix.cli import build_parser


def test_fill_profile_reads_admission_rate_from_the_series() -> None:
    series = [
        {"t": 1.0, "tasks_done": 0, "tasks_in_flight": 40},
        {"t": 2.0, "tasks_done": 5, "tasks_in_flight": 95},
        {"t": 3.0, "tasks_done": 20, "tasks_in_flight": 100},
        {"t": 4.0, "tasks_done": 120, "tasks_in_flight": 0},
    ]
    f = fill_profile(series, 100)
    assert f["seconds_to_bound"] == 3.0 and f["samples_at_bound"] == 1
    assert f["admitted_per_second_until_then"] == pytest.approx(40.0)
    assert f["peak_sampled_in_flight"] == 100
    assert fill_profile(series, 1000)["seconds_to_bound"] is None
    assert fill_profile([], 10) == {}


def test_problems_name_every_shortfall() -> None:
    record = {
        "settings": {"concurrency": 10_000, "tasks": 12_000},
        "tasks_failed": 2,
        "errors_by_reason": {"step error in role 'writer'": 2},
        "tasks_lost": 1,
        "tasks_finished": 11_997,
        "peak_in_flight": 9_000,
        "internal_errors": [],
    }
    text = " | ".join(problems(record))
    assert "2 tasks failed" in text and "1 tasks lost" in text
    assert "11997 of 12000" in text and "peak in flight 9000 < 10000" in text
    ok = {**record, "tasks_failed": 0, "tasks_lost": 0, "tasks_finished": 12_000, "peak_in_flight": 10_000}
    assert problems(ok) == []


def test_cli_parses_inflight_options() -> None:
    argv = ["bench", "inflight", "--tasks", "500", "--concurrency", "400", "--time-scale", "2"]
    args = build_parser().parse_args(argv)
    assert (args.tasks, args.concurrency, args.time_scale, args.replicas) == (500, 400, 2.0, None)
    assert callable(args.func)


def test_fewer_tasks_than_the_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="tasks"):
        run_inflight(tasks=10, concurrency=20)


@pytest.mark.slow
def test_small_run_reaches_the_bound_and_fails_nothing(local_ray: None, tmp_path: Path) -> None:
    # Every reply is exactly 128 simulated tokens at real time, so no task can finish before
    # admission has put all 300 in flight (admission runs at hundreds of tasks per second).
    r = run_inflight(
        tasks=300,
        concurrency=300,
        replicas=2,
        time_scale=1.0,
        mean_tokens=128,
        sigma=0.0,
        max_tokens=128,
        per_replica_concurrency=300,
        stall_seconds=20,
        run_dir=tmp_path,
        progress=False,
    )
    assert r["peak_in_flight"] == 300, summary(r)
    assert (r["tasks_finished"], r["tasks_failed"], r["tasks_lost"]) == (300, 0, 0), summary(r)
    assert r["ok"] and r["problems"] == []
    assert r["tokens_generated"] == 300 * 2 * 128
    assert {c["role"] for c in r["clients"]} == {"writer", "critic"}
    assert r["client_requests"] == 600 and r["client_failures"] == 0
    assert r["peak_ray_memory_mb"] > 0 and r["peak_fds_one_process"] > 0
    assert len(r["servers"]) == 2 and all(s["simulated"] for s in r["servers"])
    assert "OK" in summary(r)
    rows = [json.loads(x) for x in (tmp_path / "run" / "output.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and all([t["role"] for t in row["turns"]] == ["writer", "critic"] for row in rows)
