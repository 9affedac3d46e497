"""The chaos benchmark: the accounting that decides lost and duplicated tasks, and a small real run on
Ray with agents, a sink and a sim replica killed while it goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench import chaos


def row(task: str, status: str = "done", attempt: int = 1, tokens: int = 10) -> dict[str, object]:
    return {"task_id": task, "trial": 0, "status": status, "attempt": attempt, "usage": {"completion_tokens": tokens}}


def test_targets_are_checked_before_anything_starts() -> None:
    assert chaos.parse_targets("agent, sink,agent") == ("agent", "sink")
    assert chaos.parse_targets("agent,admission") == ("agent", "admission")  # restartable since c4e233a
    with pytest.raises(ValueError, match="'tool' is not supported: the Coral workload calls no tool server"):
        chaos.parse_targets("agent,tool")
    with pytest.raises(ValueError, match=r"unknown chaos target 'agnet' \(choose from: agent, sink, model, node"):
        chaos.parse_targets("agnet")
    with pytest.raises(ValueError, match="no chaos targets"):
        chaos.parse_targets(" , ")


def test_the_audit_finds_lost_duplicated_failed_and_unexpected_rows() -> None:
    rows = [row("a"), row("b", attempt=2), row("b"), row("c", status="error"), row("zz")]
    rows[3]["error"] = "role 'x': LLMUnavailableError: gone"
    audit = chaos.audit_rows(rows, [("a", 0), ("b", 0), ("c", 0), ("d", 0)])
    assert (audit.expected, audit.rows, audit.unique) == (4, 5, 4)
    assert audit.lost == 1 and audit.missing_examples == [("d", 0)]
    assert audit.duplicate_rows == 1 and audit.duplicate_examples == [("b", 0)]
    assert audit.failed_rows == 1 and audit.errors_by_reason == {"role 'x'": 1}
    assert audit.unexpected_rows == 1 and audit.rows_from_replay == 1
    assert audit.rows_by_attempt == {1: 3, 2: 1}
    assert audit.completion_tokens == 40  # the duplicate's tokens are not counted twice
    assert audit.not_done == 2
    clean = chaos.audit_rows([row("a"), row("b")], [("a", 0), ("b", 0)])
    assert (clean.lost, clean.duplicate_rows, clean.failed_rows, clean.unexpected_rows) == (0, 0, 0, 0)


def test_restart_summary_and_change() -> None:
    kills = [
        chaos.Kill(1.0, "agent", "teacher-0", held=3, restart_seconds=1.0),
        chaos.Kill(6.0, "sink", "sink-0", restart_seconds=3.0),
        chaos.Kill(11.0, "agent", "teacher-1", held=2, restart_seconds=None, error="no answer"),
    ]
    s = chaos.restart_summary(kills)
    assert s["kills"] == 3 and s["restarts"] == 2 and s["not_restarted"] == 1
    assert s["kills_by_target"] == {"agent": 2, "sink": 1}
    assert s["mean_restart_seconds"] == 2.0 and s["max_restart_seconds"] == 3.0
    assert s["tasks_held_by_victims"] == 5
    assert chaos.change_percent(100.0, 95.0) == pytest.approx(-5.0)
    assert chaos.change_percent(0.0, 95.0) is None


@pytest.mark.slow
def test_a_run_with_agents_a_sink_and_a_replica_killed_loses_and_duplicates_nothing(
    local_ray: None, tmp_path: Path
) -> None:
    doc = chaos.run_chaos(
        tasks=400,
        interval=1.5,
        targets=("agent", "sink", "model"),
        concurrency=60,
        max_turns=8,
        time_scale=10.0,
        seed=3,
        run_root=tmp_path,
        run_id="chaos-test",
        progress=False,
        stall_seconds=120.0,
        log=lambda s: None,
    )
    assert chaos.ok(doc), json.dumps({k: doc[k] for k in ("fault_free", "faulty")}, indent=1)[:4000]
    inj = doc["fault_injection"]
    assert inj["kills"] >= 3, inj  # the run lasted long enough for several kills (400 tasks: ~6 s with kills)
    assert inj["not_restarted"] == 0 and inj["restarts"] == inj["kills"]
    for r in ("fault_free", "faulty"):
        assert doc[r]["rows"] == doc[r]["tasks"] == 400
    # the same seeds give the same conversations, faults or not
    assert doc["comparison"]["trajectories_differing"] == 0
    assert doc["comparison"]["throughput_change_percent"] is not None
    # the faulty run's own metrics: a restarted sink carried on its predecessor's counts
    faulty_dir = tmp_path / "coral" / "matrix" / "chaos-test"
    metrics = json.loads((faulty_dir / "metrics.json").read_text())
    assert metrics["tasks_finished"] == 400 and metrics["tasks_resumed"] == 0 and metrics["tasks_lost"] == 0
    assert metrics["chaos"]["lost"] == 0 and metrics["chaos"]["duplicate_rows"] == 0
    assert metrics["simulated"] is True
    table = chaos.format_table(doc)
    assert "SIMULATED" in table and "lost trajectories" in table and "4080 of 200k" in table


def summary(tps: float, lost: int = 0) -> dict[str, object]:
    return {"tokens_per_second": tps, "measured_seconds": 1000.0 / tps, "wall_seconds": 100.0 / tps,
            "lost": lost, "duplicate_rows": 0, "failed_rows": 0}  # fmt: skip


def test_rounds_are_judged_on_their_medians_and_each_rounds_losses_count() -> None:
    assert chaos._median([3.0, None, 1.0, 2.0]) == 2.0 and chaos._median([1.0, 4.0]) == 2.5
    assert chaos._median([None]) is None
    rounds = []
    for plain, free, faulty in [(100.0, 98.0, 90.0), (100.0, 95.0, 80.0), (100.0, 99.0, 95.0)]:
        one = {
            "fault_free_no_checkpoints": summary(plain), "fault_free": summary(free), "faulty": summary(faulty),
            "fault_injection": {"kills": 12}, "run_dirs": {"faulty": "x"},
        }  # fmt: skip
        one["comparison"] = chaos._comparison(one, [], [])
        rounds.append(one)
    c = rounds[1]["comparison"]
    assert c["loss_percent"] == pytest.approx(100 * 15 / 95) and c["checkpoint_overhead_percent"] == pytest.approx(5.0)
    assert c["loss_vs_no_checkpoints_percent"] == pytest.approx(20.0)
    figures = [chaos._round_figures(i + 1, o) for i, o in enumerate(rounds)]
    assert [f["round"] for f in figures] == [1, 2, 3] and figures[2]["faulty_tokens_per_second"] == 95.0
    assert chaos._median([f["checkpoint_overhead_percent"] for f in figures]) == pytest.approx(2.0)
    doc = {**rounds[0], "rounds": figures}
    doc["faulty"] = {**doc["faulty"], "unexpected_rows": 0}
    doc["fault_free"] = {**doc["fault_free"], "unexpected_rows": 0}
    doc["fault_free_no_checkpoints"] = {**doc["fault_free_no_checkpoints"], "unexpected_rows": 0}
    assert chaos.ok(doc)
    figures[2]["lost"] = 1  # a round not shown in full still counts
    assert not chaos.ok(doc)
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        chaos.run_chaos(tasks=10, repeats=0)
