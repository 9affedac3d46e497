"""Tau2-bench's results: the paper's Table 10 from run directories, and re-scoring a run's rewards.

Runs are made by the one entry point (`make reproduce-tau2`; experiments/conf/experiment/tau2_*.yaml).
Each run writes `<root>/tau2/<system>/<run-id>/` (output.jsonl, metrics.json, config.json; the
baseline also keeps tau2's own results file); tables read only those files.

The twin (every figure SIMULATED): `h100-gpt-oss-120b` replicas with prefix caching play both the
user simulator and the assistant (`matrix.cases.tau2.sim`), on tau2's telecom tasks. Both systems
get the same replicas and the same task list (same task count, not same duration); the baseline
runs tau2's `run_tasks` with a pool of threads in one process, P2P runs the four roles on Ray with
tool servers in bubblewrap. See REPRODUCE.md for the scale and why it differs from the paper's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import paper
from experiments.common import Table, hms, read_rows, sim_mark
from matrix.cases import tau2 as case

CASE = "tau2"
P2P = "matrix"
THREADS = "tau2-threads"
SYSTEMS = (P2P, THREADS)
# Paper v2 Table 10 (experiments/paper_tables.csv): telecom, gpt-oss-120b.
_T10_KEYS = {"concurrent_tasks": "concurrent_tasks", "trajectories": "trajectories", "tokens": "tokens_generated",
             "tokens_per_second": "tokens_per_second"}  # fmt: skip
PAPER_T10: dict[str, dict[str, Any]] = {
    system: {"runtime": paper.value("T10", "runtime", side)}
    | {"average_reward": paper.number("T10", "average_reward", side)}
    | {k: int(paper.number("T10", m, side)) for k, m in _T10_KEYS.items()}
    for system, side in ((THREADS, "baseline"), (P2P, "matrix"))
}
PAPER_SPEEDUP = 15.4


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / CASE / system / run_id


# ------------------------------------------------------------------------------------------ tables


def table10(threads: dict[str, Any], p2p: dict[str, Any], out: Path, notes: Sequence[str] = ()) -> str:
    return versus_table(threads, p2p, out.name, notes).write(out)


def versus_table(
    threads: dict[str, Any], p2p: dict[str, Any], name: str = "table10_tau2", notes: Sequence[str] = ()
) -> Table:
    """The paper's Table 10 rows, ours beside the paper's."""
    s = sim_mark(p2p)

    def cells(m: dict[str, Any]) -> list[str]:
        q = m["quality"]
        lo, hi = q["average_reward_ci95"]
        return [
            hms(float(m["measured_seconds"])) + s,
            f"{m['concurrency']:,}",
            f"{q['trajectories']:,}",
            f"{q['average_reward']:.4f} [{lo:.3f}, {hi:.3f}]",
            f"{int(m['tokens_generated']):,}",
            f"{float(m['tokens_per_second']):,.1f}{s}",
        ]

    def paper(system: str) -> list[str]:
        p = PAPER_T10[system]
        return [
            p["runtime"],
            f"{p['concurrent_tasks']:,}",
            f"{p['trajectories']:,}",
            f"{p['average_reward']:.4f}",
            f"{p['tokens']:,}",
            f"{p['tokens_per_second']:,}",
        ]

    names = ["runtime", "concurrent tasks", "trajectories", "average reward [95% CI]", "tokens generated", "tokens/s"]
    ours_t, ours_p, paper_t, paper_p = cells(threads), cells(p2p), paper(THREADS), paper(P2P)
    rows = [[n, ours_t[i], ours_p[i], paper_t[i], paper_p[i]] for i, n in enumerate(names)]
    tps_t, tps_p = float(threads["tokens_per_second"]), float(p2p["tokens_per_second"])
    speedup = tps_p / tps_t if tps_t else float("nan")
    rows.append(["speedup (tokens/s)" + s, "1.0x", f"{speedup:.2f}x", "1.0x", f"{PAPER_SPEEDUP}x"])
    header = ["", "tau2 threads (ours)", "Matrix P2P (ours)", "tau2 baseline (paper)", "Matrix (paper)"]
    if threads.get("hardware") == p2p.get("hardware"):
        base = [f"Ours on {p2p.get('hardware', '')}; both systems on the same replicas, tasks, sampling and evaluator."]
    else:
        base = [
            f"Ours: the baseline on {threads.get('hardware', '')}, P2P on {p2p.get('hardware', '')}; "
            "the same tasks, sampling and evaluator."
        ]
    title = "Tau2-bench P2P vs tau2's threaded runner, paper Table 10 layout"
    return Table(name, title, header, rows, [*base, *notes])


def summary_line(m: dict[str, Any]) -> str:
    q = m["quality"]
    return (
        f"- {m['system']} at concurrency {m['concurrency']}: "
        f"{float(m['tokens_per_second']):,.1f} tokens/s{sim_mark(m)}, "
        f"{q['trajectories']} trajectories, reward {q['average_reward']:.4f}, endings {q['endings']}, "
        f"{float(m['measured_seconds']):.0f} s"
    )


# ------------------------------------------------------------------------------------------ drivers


def rescore_run(run_dir: Path, domain: str | None = None) -> int:
    """Re-score every finished trajectory of a run with tau2's evaluator; 0 when all agree with the run."""
    if domain is None:
        config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
        domain = str((config.get("settings") or {}).get("domain") or "telecom")
    rows = read_rows(run_dir)
    if not rows:
        print(f"no output rows in {run_dir}", file=sys.stderr)
        return 2
    again = case.rescore(rows, domain)
    recorded = {(str(r.get("task_id")), int(r.get("trial", 0))): case.reward_of(r) for r in rows}
    scored = [k for k, v in again.items() if v is not None]
    differ = [k for k in scored if again[k] != recorded[k]]
    print(
        f"{run_dir}: {len(rows)} rows, {len(scored)} re-scored with tau2's evaluator, "
        f"{len(scored) - len(differ)} equal to the run's reward, {len(differ)} different"
    )
    for k in differ[:10]:
        print(f"  {k}: run {recorded[k]} vs re-scored {again[k]}")
    return 1 if differ else 0
