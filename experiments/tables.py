"""Every paper table we reproduce, regenerated from run directories alone.

`make_tables(roots, out)` reads the runs under `roots` (experiments.rundirs), groups them by case
and experiment (a run id up to its sweep suffix), takes each system at its best point as the paper
does, and writes one Markdown and one CSV file per table, with the paper's values beside ours
(experiments/paper_tables.csv), speedups, 95% intervals for quality metrics and every simulated
figure marked. Tables: 1 (Coral), 2 (latency breakdown, from the Matrix runs' hops), 7, 8, 9
(NaturalReasoning), 10 (Tau2-bench); 4 from the overhead benchmark's JSON when it exists; 6 when
fault-injection runs exist. The experiment named `main` (default `twin`) gets the plain file names
(`table1_coral`); any other gets its name as a suffix (`table10_tau2_small_cpu`).

A run directory with a missing or corrupt file is reported by name (in the index and on stderr)
and left out; the other runs still make their tables.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import decompose, paper, rundirs
from experiments.common import Table, hms, sim_mark
from experiments.rundirs import Problem, Run

MATRIX = "matrix"
BASELINES = {"coral": "coral-controller", "natural_reasoning": "ray-data", "tau2": "tau2-threads"}


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the working directory when under it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _suffix(experiment: str, main: str) -> str:
    return "" if experiment == main else "_" + experiment.replace("-", "_").replace(".", "_")


def _run_line(r: Run) -> str:
    m = r.metrics
    q = m.get("quality") or {}
    extra = ""
    if "parallelism" in m:
        extra = f" at {tuple(m.get('parallelism') or ())}"
    quality = ""
    if isinstance(q.get("agreement_correctness"), dict):
        quality = f", agreement correctness {q['agreement_correctness']['value']:.3f}"
    elif "average_reward" in q:
        quality = f", reward {q['average_reward']:.4f}"
    elif "questions" in q:
        quality = f", {q['questions']:,} questions"
    return (
        f"- {r.system}{extra} at concurrency {r.concurrency}: {r.tokens_per_second:,.1f} tokens/s{sim_mark(m)}, "
        f"{m.get('trajectories', q.get('documents', '?'))} rows{quality}, {hms(float(m.get('measured_seconds', 0)))} "
        f"({r.label})"
    )


def _every_run(runs: Sequence[Run]) -> list[str]:
    return ["Every run (the table takes each system at its best tokens/s):", "", *map(_run_line, runs)]


# Why a pair's quality columns agree on the sim backend (what, with its verb) and where their level comes from.
_BY_CONSTRUCTION = {
    "coral": (
        "agreement correctness ({value}) is",
        "each agent starts from an answer the behaviour takes from Llama-3.1-8B-Instruct's real MMLU-Pro "
        "answers (or draws, for questions it does not hold) and moves with fixed persuasion and exploration "
        "probabilities (`matrix.cases.coral.sim`)",
    ),
    "natural_reasoning": (
        "the decisions (documents kept at each stage, questions, tokens) are",
        "the behaviour is calibrated to the paper's Table 7 funnel (`matrix.cases.nr.sim`)",
    ),
    "tau2": (
        "the average reward ({value}) is",
        "the behaviour follows a task's reference actions with a probability set to give the paper's reward of "
        "0.59 in expectation (`matrix.cases.tau2.sim`)",
    ),
}


def window_note(ours: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """How a pair's runtimes were timed, with each system's startup, when both runs recorded their window."""
    if not all(isinstance(m.get("window"), dict) and m.get("startup_seconds") is not None for m in (ours, base)):
        return []
    startup = ", ".join(f"{m.get('system')} {float(m['startup_seconds']):.1f} s" for m in (base, ours))
    return [
        "Runtimes are each system's run window, the same for both: from the moment every worker is up to its "
        f"last result (`matrix/runtime/window.py`). Startup is not in it: {startup} (wall clock).",
        "",
    ]


def _quality_value(case: str, m: dict[str, Any]) -> Any:
    q = m.get("quality") or {}
    if case == "coral":
        a = q.get("agreement_correctness") or {}
        return (a.get("k"), a.get("n")), f"{float(a.get('value') or 0):.3f}"
    if case == "tau2":
        return q.get("average_reward"), f"{float(q.get('average_reward') or 0):.4f}"
    return (q.get("counts"), m.get("tokens_generated")), ""


def equal_by_construction(case: str, ours: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The note a pair's table carries when both runs are simulated and their quality is the same: on the
    sim backend a reply depends only on the request and its seed, and both systems send the same requests,
    so equal quality is a check of the protocol, not a second measurement (as Table 6 says of its runs)."""
    if case not in _BY_CONSTRUCTION or not (ours.get("simulated") and base.get("simulated")):
        return []
    (mine, shown_value), (theirs, _) = _quality_value(case, ours), _quality_value(case, base)
    if mine != theirs:
        return []
    what, level = _BY_CONSTRUCTION[case]
    return [
        f"SIMULATED: {what.format(value=shown_value)} equal in both columns by construction, not measured "
        "twice: both systems send the same requests with the same seeds, and a sim reply depends only on the "
        f"request and its seed. The level is the sim behaviour's, not a model's: {level}.",
        "",
    ]


def breakdown_table(run: Run, name: str) -> Table | None:
    """Paper Table 2: where a Matrix task's end-to-end time goes (p50/p99 over tasks, % of e2e latency)."""
    b = run.breakdown
    if not b:
        return None
    s = b["share_percent"]
    mark = sim_mark(run.metrics)
    rows = [
        ["agent processing, p50", f"{s['agent_processing']['p50']:.2f}{mark}",
         paper.value("T2", "agent_processing_share_p50")],
        ["queuing, p50", f"{s['queuing']['p50']:.4f}", paper.value("T2", "queuing_share_p50")],
        ["queuing, p99", f"{s['queuing']['p99']:.4f}", paper.value("T2", "queuing_share_p99")],
        ["initialization, p50", f"{s['initialization']['p50']:.4f}", paper.value("T2", "initialization_share_p50")],
        ["other (transit, sink), p50", f"{s['other']['p50']:.4f}", ""],
    ]  # fmt: skip
    notes = [
        f"Ours: {b['tasks']:,} tasks of {run.label} on {run.metrics.get('hardware', '?')}; "
        f"paper: {paper.entry('T2', 'agent_processing_share_p50')['note']}.",
        "Shares are per task (a task's time in each part over its end-to-end time), from the hops in its row.",
    ]
    if run.simulated:
        notes.append(
            "SIMULATED: agent processing includes the sim backend's model time; queuing, initialization and "
            "transit are the runtime's own, measured."
        )
    header = ["share of end-to-end latency (%)", "matrix (ours)", "matrix (paper)"]
    return Table(name, "Matrix latency breakdown, paper Table 2 layout", header, rows, notes)


def coral_tables(runs: Sequence[Run], suffix: str) -> list[Table]:
    from experiments import coral

    systems = rundirs.by_system(runs)
    out: list[Table] = []
    if MATRIX in systems and coral.CONTROLLER in systems:
        ours, base = rundirs.best(systems[MATRIX]), rundirs.best(systems[coral.CONTROLLER])
        pair = {coral.P2P: ours.metrics, coral.CONTROLLER: base.metrics}
        hw = ours.metrics.get("hardware", "?")
        notes = [
            *window_note(ours.metrics, base.metrics),
            *equal_by_construction("coral", ours.metrics, base.metrics),
            *_every_run(runs),
        ]
        out.append(coral.pair_table(pair, title=f"Coral, paper Table 1 layout ({hw})", name="table1_coral" + suffix,
                                    notes=notes))  # fmt: skip
    if MATRIX in systems:
        t2 = breakdown_table(rundirs.best(systems[MATRIX]), "table2_overhead" + suffix)
        if t2:
            out.append(t2)
    return out


def nr_tables(runs: Sequence[Run], suffix: str) -> list[Table]:
    from experiments import nr

    systems = rundirs.by_system(runs)
    out: list[Table] = []
    p2p = systems.get(MATRIX, [])
    batch = systems.get(nr.BATCH, [])
    funnel_from = p2p or batch
    if funnel_from:
        out.append(nr.funnel_table(rundirs.best(funnel_from).metrics, "table7_nr" + suffix))
    if any("parallelism" in r.metrics for r in p2p):
        out.append(nr.parallelism_table([r.metrics for r in p2p], "table8_nr" + suffix))
    if p2p and batch:
        ours, base = rundirs.best(p2p).metrics, rundirs.best(batch).metrics
        t9 = nr.versus_table(ours, base, "table9_nr" + suffix)
        t9.notes += ["", *window_note(ours, base), *equal_by_construction("natural_reasoning", ours, base)]
        t9.notes += _every_run(runs)
        out.append(t9)
    return out


def tau2_tables(runs: Sequence[Run], suffix: str) -> list[Table]:
    from experiments import tau2

    systems = rundirs.by_system(runs)
    if MATRIX not in systems or tau2.THREADS not in systems:
        return []
    ours, base = rundirs.best(systems[MATRIX]), rundirs.best(systems[tau2.THREADS])
    notes = [
        "",
        *window_note(ours.metrics, base.metrics),
        *equal_by_construction("tau2", ours.metrics, base.metrics),
        *_every_run(runs),
    ]
    return [tau2.versus_table(base.metrics, ours.metrics, "table10_tau2" + suffix, notes)]


BUILDERS = {"coral": coral_tables, "natural_reasoning": nr_tables, "tau2": tau2_tables}


def tables_for(case: str, experiment: str, runs: Sequence[Run], *, main: str = "twin") -> list[Table]:
    """The paper tables one experiment's runs make (none when the case has no table or a system is missing)."""
    build = BUILDERS.get(case)
    out = build(runs, _suffix(experiment, main)) if build else []
    if experiment == decompose.EXPERIMENT:
        t = decompose.table(case, runs, _suffix(experiment, main))
        if t is not None:
            out.append(t)
    return out


def overhead_table(bench: Path, problems: list[Problem]) -> Table | None:
    """Paper Table 4 (runtime overhead with dummy agents, no LLM) from `matrix bench overhead`'s JSON."""
    try:
        data = json.loads(bench.read_text())
        points = [p for p in data["points"] if p.get("tasks_finished")]
        best = max(points, key=lambda p: float(p["trajectories_per_second"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(Problem(bench, f"unreadable benchmark ({type(exc).__name__}: {exc})"))
        return None
    rows = [
        ["trajectories/s", f"{best['trajectories_per_second']:,.1f}", paper.value("T4", "trajectories_per_second")],
        ["messages/s", f"{best['messages_per_second']:,.0f}", paper.value("T4", "messages_per_second")],
        ["bandwidth (MB/s)", f"{best['mb_per_second']:,.1f}", paper.value("T4", "bandwidth")],
        ["agent processing share p50 (%)", "not measured", paper.value("T4", "agent_processing_share_p50")],
    ]
    notes = [
        f"Ours: {data.get('workload', '?')}; {data.get('cpu_count', '?')} CPU cores; best of {len(points)} points "
        f"(concurrency {best.get('concurrency')}, offload threshold {best.get('offload_threshold')}); "
        f"from {shown(bench)}.",
        f"Paper: {paper.entry('T4', 'trajectories_per_second')['note']}. Real measurements (no model) on both sides,"
        " on very different machines.",
    ]
    return Table("table4_overhead", "Runtime overhead with dummy agents, paper Table 4 layout",
                 ["", "matrix (ours)", "matrix (paper)"], rows, notes)  # fmt: skip


def fault_tables(runs: Sequence[Run]) -> list[Table]:
    """Paper Table 6 (an agent killed at intervals), one per fault-injection run (`matrix bench chaos`: its
    metrics carry a `chaos` block, counted from the output rows, with its fault-free twin's figures). The
    agent-kill run with the shortest kill interval is `table6_faults`; any other is `table6_faults_<run id>`;
    `table6_faults_by_kind` puts them all in one table."""
    chaos = [r for r in runs if isinstance(r.metrics.get("chaos"), dict)]
    chaos.sort(
        key=lambda r: (
            r.metrics["chaos"].get("targets") != ["agent"],  # the paper's kind of kill first
            float(r.metrics["chaos"].get("interval_seconds") or math.inf),
            r.run_id,
        )
    )
    tables = [fault_table(r, "table6_faults" if i == 0 else f"table6_faults_{r.run_id}") for i, r in enumerate(chaos)]
    return tables + ([fault_kinds_table(chaos)] if chaos else [])


FAULT_KINDS = ("agent", "node", "admission")  # the kinds of kill Table 6's summary has a row for, run or not


def fault_kinds_table(runs: Sequence[Run]) -> Table:
    """Paper Table 6 as one row per fault-injection run (agent kills, node kills, admission kills, mixed), with
    the paper's row under them; a kind of kill with no run under the roots says so in its row."""
    header = ["killed", "every", "tasks", "kills / restarts", "mean restart (wall s)", "lost", "duplicate rows",
              "error rows", "tasks replayed", "throughput change"]  # fmt: skip

    def num(x: Any, fmt: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    def order(r: Run) -> tuple[int, str]:
        targets = r.metrics["chaos"].get("targets") or []
        kinds = [FAULT_KINDS.index(t) if t in FAULT_KINDS else len(FAULT_KINDS) for t in targets]
        return (min(kinds) if len(targets) == 1 else len(FAULT_KINDS) + 1, r.run_id)

    rows, marks = [], set()
    for r in sorted(runs, key=order):
        c = r.metrics["chaos"]
        base = c.get("fault_free") or {}
        targets = "/".join(c.get("targets") or []) or "?"
        nodes = (c.get("cluster") or {}).get("nodes") or r.metrics.get("nodes")
        where = f" ({nodes} nodes)" if nodes and nodes > 1 else ""
        change = c.get("throughput_change_percent")
        marks.add(sim_mark(r.metrics))
        rows.append([
            f"{targets}{where} (ours)", f"{num(c.get('interval_seconds'), 'g')} s", str(base.get("tasks", "?")),
            f"{c.get('kills', '?')} / {c.get('restarts', '?')}", num(c.get("mean_restart_seconds"), ".2f"),
            str(c.get("lost", "?")), str(c.get("duplicate_rows", "?")), str(c.get("failed_rows", "?")),
            str(c.get("tasks_replayed", "?")), "n/a" if change is None else f"{change:+.1f}%",
        ])  # fmt: skip
    ran = {t for r in runs for t in (r.metrics["chaos"].get("targets") or [])}
    for kind in FAULT_KINDS:
        if kind not in ran:
            rows.append([f"{kind} (ours)", "not run", "", "", "", "", "", "", "", ""])
    lost = f"{paper.value('T6', 'lost_trajectories')} (about 2%)"
    rows.append(["agent (paper)", "12 min", "200k", "not reported", "not reported", lost, "", "", "0 (at-most-once)",
                 "-5%"])  # fmt: skip
    mark = next((m for m in marks if m), "")
    notes = [
        "One row per fault-injection run (`matrix bench chaos`), the paper's row last. Lost, duplicate and error rows "
        "are counted from each run's output files; the throughput change is against the run's own fault-free twin.",
        "node: a whole worker node of a local multi-node Ray cluster (its raylet, object store and every actor on "
        "it) killed at once and a fresh node started; its restart runs until every actor that lived there "
        "answers again from a new process. admission: the admission actor killed and restarted by Ray.",
    ]
    if mark:
        notes.append("SIMULATED: the sim backend; throughput in simulated seconds; restarts in wall seconds.")
    return Table("table6_faults_by_kind", f"Fault tolerance by kind of kill, paper Table 6{mark}", header, rows, notes)


def fault_table(r: Run, name: str = "table6_faults") -> Table:
    """Paper Table 6's rows for one fault-injection run, ours beside the paper's."""
    c = r.metrics["chaos"]
    base = c.get("fault_free") or {}
    mark = sim_mark(r.metrics)
    unit = "simulated s" if r.metrics.get("simulated") else "s"
    n = base.get("tasks", "?")

    def num(x: Any, fmt: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    change = c.get("throughput_change_percent")
    quality = (r.metrics.get("quality") or {}).get("agreement_correctness") or {}
    rows = [
        ["kill interval", "none", f"{num(c.get('interval_seconds'), 'g')} s ({'/'.join(c.get('targets', []))})",
         "none", "12 min (agent)"],
        ["kills / restarts", "0 / 0", f"{c.get('kills', '?')} / {c.get('restarts', '?')}", "0", "not reported"],
        ["mean restart (wall s)", "", num(c.get("mean_restart_seconds"), ".2f"), "", "not reported"],
        [f"runtime ({unit}){mark}", hms(float(base.get("measured_seconds") or math.nan)),
         hms(float(r.metrics["measured_seconds"])), paper.value("T6", "runtime", "baseline"),
         paper.value("T6", "runtime")],
        ["lost trajectories", f"{base.get('lost', '?')} of {n}", f"{c.get('lost', '?')} of {n}",
         paper.value("T6", "lost_trajectories", "baseline"), f"{paper.value('T6', 'lost_trajectories')} of 200k"],
        ["duplicate rows", str(base.get("duplicate_rows", "?")), str(c.get("duplicate_rows", "?")), "", ""],
        ["error rows", "", str(c.get("failed_rows", "?")), "", ""],
        ["tasks replayed", "", str(c.get("tasks_replayed", "?")), "0", "0 (at-most-once)"],
        ["rows written by a replayed attempt", "", str(c.get("rows_from_replay", "?")), "", ""],
        ["agreement correctness", num(base.get("agreement_correctness"), ".4f"),
         num(quality.get("value"), ".4f"), paper.value("T6", "agreement_correctness", "baseline"),
         paper.value("T6", "agreement_correctness")],
        [f"tokens/s{mark}", num(base.get("tokens_per_second"), ",.1f"), num(c.get("tokens_per_second"), ",.1f"),
         paper.value("T6", "tokens_per_second", "baseline"), paper.value("T6", "tokens_per_second")],
        ["throughput change", "", "n/a" if change is None else f"{change:+.1f}%", "", "-5%"],
    ]  # fmt: skip
    header = ["", "no faults (ours)", "with kills (ours)", "no faults (paper)", "with kills (paper)"]
    notes = [
        f"Ours: {r.label}; fault-free twin: {shown(Path(base['run_dir'])) if base.get('run_dir') else '?'}.",
        "Lost, duplicate and error rows are counted from the output files (each input task exactly once, "
        "status done), not from the runtime's counters.",
        f"Trajectories that differ from the fault-free run: {c.get('trajectories_differing_from_fault_free', '?')}.",
        "Agreement correctness: generated questions answered by the sim behaviour, not MMLU-Pro with Llama-3.1-8B; "
        "only the two columns' equality means something, not their level against the paper's.",
    ]
    if mark:
        notes.append(
            "SIMULATED: the sim backend; runtime and tokens/s are in simulated seconds; restarts in wall seconds."
        )
    return Table(name, f"Fault tolerance, paper Table 6 layout{mark}", header, rows, notes)


@dataclass
class Result:
    tables: list[Table] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)  # experiments.plots.Plot


def make_tables(
    roots: Sequence[Path],
    out: Path,
    *,
    bench: Path | None = None,
    main: str = "twin",
    figures: Path | None = None,
    write: bool = True,
) -> Result:
    """Regenerate the tables from the runs under `roots` into `out` (plus `out/index.md`); with `figures`,
    also the main experiment's figures of each case (experiments.plots) there."""
    runs, problems = rundirs.discover(roots)
    res = Result(runs=runs, problems=problems)
    for (case, experiment), group in rundirs.experiments(runs).items():
        if all(isinstance(r.metrics.get("chaos"), dict) for r in group):
            continue  # fault-injection runs make Table 6 alone (below)
        made = tables_for(case, experiment, group, main=main)
        if not made:
            have = ", ".join(sorted(rundirs.by_system(group)))
            res.skipped.append(f"{case}/{experiment}: no table (systems present: {have}; a pair needs both)")
        res.tables += made
        if figures is not None and write and experiment in (main, decompose.EXPERIMENT):
            from experiments import plots

            res.figures += plots.plots_for(case, experiment, group, figures)
    t4 = overhead_table(bench / "overhead.json", problems) if bench else None
    if t4:
        res.tables.append(t4)
    t6 = fault_tables(runs)
    if t6:
        res.tables.extend(t6)
    else:
        res.skipped.append("Table 6: no fault-injection runs (metrics with a `chaos` block) under the roots")
    res.tables.sort(key=_order)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        for t in res.tables:
            t.write(out / t.name)
        (out / "index.md").write_text(index(res, roots, out))
    return res


def _order(t: Table) -> tuple[int, str]:
    """table1_coral, table2_overhead, ..., table10_tau2; a table's variants after it."""
    head = t.name.split("_")[0].removeprefix("table")
    return (int(head) if head.isdigit() else 99, t.name)


def index(res: Result, roots: Sequence[Path], out: Path) -> str:
    lines = [
        "# Tables regenerated from run directories",
        "",
        f"Made by `scripts/make_tables.py` from {', '.join(f'`{shown(r)}`' for r in roots)}: {len(res.runs)} runs. "
        "Paper values from `experiments/paper_tables.csv`. Figures marked SIMULATED (or *) come from the "
        "`sim` backend: runtimes and tokens/s are in simulated seconds.",
        "",
    ]
    lines += [f"- [{t.title}]({t.name}.md) (`{t.name}`)" for t in res.tables]
    if res.figures:
        lines += ["", "Figures:", ""]
        lines += [f"- [{p.path.name}]({os.path.relpath(p.path, out)}): {p.caption}" for p in res.figures]
    if res.skipped:
        lines += ["", "Not made:", "", *(f"- {s}" for s in res.skipped)]
    if res.problems:
        lines += ["", "Problems (these files were left out; the other runs made their tables):", ""]
        lines += [f"- `{shown(p.path)}`: {p.what}" for p in res.problems]
    return "\n".join(lines) + "\n"
