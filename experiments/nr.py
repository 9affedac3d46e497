"""NaturalReasoning's results: the paper's Tables 7, 8 and 9 from run directories.

Runs are made by the one entry point (`make reproduce-nr`; experiments/conf/experiment/nr_*.yaml).
Each run writes `<root>/natural_reasoning/<system>/<run-id>/` (output.jsonl, metrics.json,
timeseries.json, config.json); tables read only those files.

The twin's scale: one small replica (`h100-llama32-3b`, the filter's classifier) and two large
ones (`h100x4-llama33-70b`, score and question), about the paper's 32 : 56 pool ratio, and a
concurrent-task budget of 500 instead of 14,000 (1/28). Table 8's parallelism settings are scaled
the same way: concurrency by 1/28, data partitions by about 1/20 (each partition is an admission
and a sink actor, and this machine has two cores). Every twin figure is SIMULATED.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import paper
from experiments.common import (
    Table,
    hms,
    sim_mark,
)
from matrix.cases import nr
from matrix.cases.common import wilson

CASE = "natural_reasoning"
P2P = "matrix"
BATCH = "ray-data"
SYSTEMS = (P2P, BATCH)
# Paper v2 Tables 7, 8, 9 (experiments/paper_tables.csv).
PAPER_T7 = {k: paper.number("T7", k) for k in (nr.ENGLISH, nr.CLASSIFIER, nr.SCORE, nr.NO_BOXED, nr.SUCCESS)}
PAPER_T8 = {
    s: paper.number("T8", "(" + ",".join(map(str, s)) + ")")
    for s in [(1, 14000, 1), (20, 700, 1), (240, 1, 1), (240, 50, 1), (1, 14000, 2), (1, 14000, 10)]
}
# The twin's counterpart of each paper setting (partitions, tasks per partition, agent instances).
TWIN_T8 = {
    (1, 14000, 1): (1, 500, 1),
    (20, 700, 1): (4, 125, 1),
    (240, 1, 1): (12, 1, 1),
    (240, 50, 1): (12, 36, 1),
    (1, 14000, 2): (1, 500, 2),
    (1, 14000, 10): (1, 500, 10),
}
_T9_KEYS = {"concurrent_tasks": "concurrent_tasks", "docs": "webdocs_processed", "questions": "questions_generated",
            "tokens": "tokens_generated", "tokens_per_second": "tokens_per_second"}  # fmt: skip
PAPER_T9: dict[str, dict[str, Any]] = {
    system: {"runtime": paper.value("T9", "runtime", side)}
    | {k: int(paper.number("T9", m, side)) for k, m in _T9_KEYS.items()}
    for system, side in ((BATCH, "baseline"), (P2P, "matrix"))
}
PAPER_SPEEDUP = 2.1


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / CASE / system / run_id


# ------------------------------------------------------------------------------------------ tables


def _sim_seconds(m: dict[str, Any]) -> float:
    """Run time in the replicas' clock: `measured_seconds` is already wall time x time scale."""
    return float(m["measured_seconds"])


def tokens_per_second(m: dict[str, Any]) -> float:
    """Completion tokens per second of the replicas' clock (simulated seconds for sim runs)."""
    return float(m["tokens_per_second"])


def table7(m: dict[str, Any], out: Path) -> str:
    """The funnel, measured from the run's drop reasons, beside the paper's."""
    return funnel_table(m, out.name).write(out)


def funnel_table(m: dict[str, Any], name: str = "table7_nr") -> Table:
    """Paper Table 7 from the run's drop reasons: counts, our % with a 95% Wilson interval, the paper's %."""
    q = m["quality"]
    star = "*" if m.get("simulated") else ""
    n = int(q.get("decided", sum(q["counts"].values())))  # the shares' denominator: decided documents

    def pct(k: str) -> str:
        lo, hi = wilson(int(q["counts"][k]), n) if n else (math.nan, math.nan)
        return f"{q['percent'][k]:.2f}{star} [{100 * lo:.2f}, {100 * hi:.2f}]"

    rows = [[k, f"{q['counts'][k]:,}", pct(k), f"{PAPER_T7[k]:.2f}"] for k in nr.OUTCOMES]
    rows.append(["documents that failed (bad input, errors)", f"{q['failed']:,}", "", ""])
    notes = [f"Ours: {m['system']} run of {q['documents']:,} documents on {m.get('hardware', '')}."]
    if m.get("simulated"):
        notes.append("* SIMULATED: the model decisions come from the sim behaviour calibrated to the paper's rates.")
    header = ["outcome", "documents", "ours % [95% CI]", "paper %"]
    return Table(name, "NaturalReasoning funnel, paper Table 7 layout", header, rows, notes)


def table8(points: Sequence[dict[str, Any]], out: Path) -> str:
    return parallelism_table(points, out.name).write(out)


def parallelism_table(points: Sequence[dict[str, Any]], name: str = "table8_nr") -> Table:
    """P2P throughput per (partitions, tasks per partition, instances), normalized to the first setting."""
    base = None
    rows = []
    for paper_setting, twin_setting in TWIN_T8.items():
        m = next((p for p in points if tuple(p.get("parallelism") or ()) == twin_setting), None)
        if m is None:
            rows.append([str(paper_setting), str(twin_setting), "not run", "", f"{PAPER_T8[paper_setting]:.2f}"])
            continue
        tps = tokens_per_second(m)
        base = base or tps
        rows.append(
            [
                str(paper_setting),
                str(twin_setting),
                f"{tps:,.1f}{sim_mark(m)}",
                f"{tps / base:.2f}",
                f"{PAPER_T8[paper_setting]:.2f}",
            ]
        )
    header = ["paper setting (P, T, A)", "ours (P, T, A)", "tokens/s", "ours normalized", "paper normalized"]
    notes = ["P: data partitions; T: concurrent tasks per partition; A: instances per agent role."]
    return Table(name, "NaturalReasoning parallelism, paper Table 8 layout", header, rows, notes)


def table9(p2p: dict[str, Any], batch: dict[str, Any], out: Path) -> str:
    return versus_table(p2p, batch, out.name).write(out)


def versus_table(p2p: dict[str, Any], batch: dict[str, Any], name: str = "table9_nr") -> Table:
    """Both systems at their best: the paper's Table 9 rows, ours beside the paper's."""
    s = sim_mark(p2p)

    def cells(m: dict[str, Any]) -> list[str]:
        q = m["quality"]
        return [
            hms(_sim_seconds(m)) + s,
            f"{m['concurrency']:,} {tuple(m.get('parallelism') or ())}",
            f"{q['documents']:,}",
            f"{q['questions']:,}",
            f"{int(m['tokens_generated']):,}",
            f"{tokens_per_second(m):,.1f}{s}",
        ]

    names = ["runtime", "concurrent tasks", "documents processed", "questions", "tokens generated", "tokens/s"]
    ours_b, ours_p = cells(batch), cells(p2p)

    def paper(system: str) -> list[str]:
        p = PAPER_T9[system]
        counts = (p[k] for k in ("concurrent_tasks", "docs", "questions", "tokens", "tokens_per_second"))
        return [p["runtime"], *(f"{v:,}" for v in counts)]

    paper_b, paper_p = paper(BATCH), paper(P2P)
    rows: list[list[str]] = [[n, ours_b[i], ours_p[i], paper_b[i], paper_p[i]] for i, n in enumerate(names)]
    speedup = tokens_per_second(p2p) / tokens_per_second(batch) if tokens_per_second(batch) else float("nan")
    rows.append(["speedup (tokens/s)" + s, "1.0x", f"{speedup:.2f}x", "1.0x", f"{PAPER_SPEEDUP}x"])
    header = ["", "Ray Data (ours)", "Matrix P2P (ours)", "Ray Data (paper)", "Matrix (paper)"]
    notes = [f"Ours on {p2p.get('hardware', '')}; both systems on the same replicas, documents and decisions."]
    return Table(name, "NaturalReasoning P2P vs Ray Data, paper Table 9 layout", header, rows, notes)


# ------------------------------------------------------------------------------------------ drivers


def best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=tokens_per_second)


def sweep_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"- {m['system']} at {tuple(m.get('parallelism') or ())} (concurrency {m['concurrency']}): "
        f"{tokens_per_second(m):,.1f} tokens/s{sim_mark(m)}, {m['quality']['documents']:,} documents, "
        f"{m['quality']['questions']:,} questions"
        for m in runs
    ]


def write_tables(
    t8_runs: Sequence[dict[str, Any]], batch_runs: Sequence[dict[str, Any]], out_dir: Path, *, tag: str = ""
) -> dict[str, Any]:
    """Tables 7, 8 and 9 from finished runs; each system is taken at its best point."""
    p2p, batch = best(t8_runs), best(batch_runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [
        table7(p2p, out_dir / f"table7_nr{tag}"),
        table8(t8_runs, out_dir / f"table8_nr{tag}"),
        table9(p2p, batch, out_dir / f"table9_nr{tag}"),
    ]
    sweep = "\n".join(sweep_lines([*t8_runs, *batch_runs]))
    t9 = out_dir / f"table9_nr{tag}.md"
    t9.write_text(t9.read_text() + "\nEvery run (the table takes each system's best):\n\n" + sweep + "\n")
    return {"texts": texts, "p2p": p2p, "batch": batch}
