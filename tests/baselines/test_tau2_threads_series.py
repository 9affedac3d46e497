"""tau2's threaded runner keeps no live counters: its per-second series is rebuilt from the rows afterwards."""

from __future__ import annotations

from datetime import datetime

from baselines.tau2_threads import timeseries


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat()


def test_series_counts_tokens_at_their_turns_and_tasks_while_they_run() -> None:
    t0 = 1_000_000.0
    rows = [
        {"created": t0 + 0.2, "finished": t0 + 2.5, "turns": [
            {"content": {"timestamp": _stamp(t0 + 0.9)}, "usage": {"completion_tokens": 10}},
            {"content": {"timestamp": _stamp(t0 + 2.4)}, "usage": {"completion_tokens": 5}}]},
        {"created": t0 + 1.5, "finished": t0 + 3.2, "turns": [
            {"content": {"timestamp": "not a time"}, "usage": {"completion_tokens": 7}},  # counted at the row's end
            {"content": "plain", "usage": {}}]},
    ]  # fmt: skip
    series = timeseries(rows, t0)
    assert [s["t"] for s in series] == [1.0, 2.0, 3.0, 4.0]
    assert [s["completion_tokens"] for s in series] == [10, 10, 15, 22]
    assert [s["tasks_done"] for s in series] == [0, 0, 1, 2]
    assert [s["tasks_in_flight"] for s in series] == [1, 2, 1, 0]
    assert timeseries([], t0) == []
