"""Table 6 by kind of kill: one row per fault-injection run (agent, node, mixed), kinds not run say so, the
paper's row last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments import tables
from experiments.rundirs import Run


def chaos_run(run_id: str, targets: list[str], *, nodes: int = 1, lost: int = 0, change: float = -10.0) -> Run:
    chaos: dict[str, Any] = {
        "targets": targets, "interval_seconds": 5.0 if targets == ["agent"] else 10.0, "kills": 12, "restarts": 12,
        "mean_restart_seconds": 4.25, "lost": lost, "duplicate_rows": 0, "failed_rows": 0, "tasks_replayed": 300,
        "throughput_change_percent": change, "fault_free": {"tasks": 5000, "measured_seconds": 90.0},
        "cluster": {"nodes": nodes},
    }  # fmt: skip
    metrics = {"simulated": True, "measured_seconds": 100.0, "chaos": chaos}
    return Run(Path("/x") / run_id, "coral", "matrix", run_id, metrics)


def test_one_row_per_kind_of_kill_and_the_papers_row_last() -> None:
    runs = [
        chaos_run("chaos-mixed", ["agent", "sink", "model"]),
        chaos_run("chaos-node", ["node"], nodes=3, change=-21.04),
        chaos_run("chaos-agent", ["agent"], lost=1),
    ]
    made = tables.fault_tables(runs)
    assert [t.name for t in made][-1] == "table6_faults_by_kind"
    t = made[-1]
    first = [r[0] for r in t.rows]
    assert first == [
        "agent (ours)", "node (3 nodes) (ours)", "agent/sink/model (ours)", "admission (ours)", "agent (paper)",
    ]  # fmt: skip
    node = t.rows[1]
    assert node[1:6] == ["10 s", "5000", "12 / 12", "4.25", "0"] and node[-1] == "-21.0%"
    assert t.rows[0][5] == "1"  # the agent run's lost task is shown, not hidden
    assert t.rows[3][1] == "not run"
    assert t.rows[-1][5].startswith("4080") and t.rows[-1][-1] == "-5%"
    assert "SIMULATED" in t.title


def test_no_fault_runs_make_no_kinds_table() -> None:
    assert tables.fault_tables([]) == []
