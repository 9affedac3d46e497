"""Coral's results: paper Table 1 from run directories, and a simulated run's backend efficiency.

Runs are made by the one entry point (`python -m experiments.run case=coral ...`, see
experiments/cases/coral.py and experiments/systems/); this module reads what they wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import paper
from experiments.common import Table, hms

P2P = "matrix"
CONTROLLER = "coral-controller"
SYSTEMS = (P2P, CONTROLLER)


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / "coral" / system / run_id


def read_output(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    with open(run_dir / "output.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


# ------------------------------------------------------------------------------------------ tables

PAPER_T1 = {  # experiments/paper_tables.csv, Table 1 (paper v2): (baseline, matrix)
    k: (paper.value("T1", k, "baseline"), paper.value("T1", k, "matrix"))
    for k in ("runtime", "concurrent_tasks", "trajectories", "agreement_correctness", "tokens_generated",
              "tokens_per_second")
}  # fmt: skip


def table1(pair: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Paper Table 1's rows for a matched pair: ours beside the paper's, simulated figures marked."""
    base, ours = pair[CONTROLLER], pair[P2P]
    sim = bool(ours.get("simulated"))
    mark = " (SIMULATED)" if sim else ""
    unit = "simulated s" if sim else "s"

    def ac(m: dict[str, Any]) -> str:
        q = (m.get("quality") or {}).get("agreement_correctness")
        if not isinstance(q, dict):
            return "not scored"
        return f"{q['value']:.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}]"

    speed = ours["tokens_per_second"] / base["tokens_per_second"] if base["tokens_per_second"] else float("nan")
    header = ["metric", "coral controller (ours)", "matrix P2P (ours)", "coral controller (paper)", "matrix (paper)"]
    b, o = base, ours
    rows = [
        [f"runtime ({unit}){mark}", hms(b["measured_seconds"]), hms(o["measured_seconds"]), *PAPER_T1["runtime"]],
        ["concurrent tasks", str(base.get("concurrency")), str(ours.get("concurrency")), *PAPER_T1["concurrent_tasks"]],
        ["trajectories", str(base["trajectories"]), str(ours["trajectories"]), *PAPER_T1["trajectories"]],
        ["agreement correctness [95% CI]", ac(base), ac(ours), *PAPER_T1["agreement_correctness"]],
        ["tokens generated", str(b["tokens_generated"]), str(o["tokens_generated"]), *PAPER_T1["tokens_generated"]],
        [f"tokens per {unit}{mark}", f"{base['tokens_per_second']:.1f}", f"{ours['tokens_per_second']:.1f}",
         *PAPER_T1["tokens_per_second"]],
        [f"speedup (tokens/s){mark}", "1.0x", f"{speed:.2f}x", "1.0x", "6.8x"],
    ]  # fmt: skip
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pair_table(
    pair: dict[str, dict[str, Any]], *, title: str, name: str = "table1_coral", notes: Sequence[str] = ()
) -> Table:
    header, rows = table1(pair)
    return Table(name, title, header, rows, list(notes))


def write_table(pair: dict[str, dict[str, Any]], out: Path, *, title: str) -> str:
    return pair_table(pair, title=title, name=out.name).write(out)


def best_of(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """The run with the most tokens/s among `run_dirs` (a sweep's best point), from metrics.json alone."""
    runs = []
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"run directory {d}: cannot read metrics.json ({exc})") from None
    if not runs:
        raise ValueError("no run directories given")
    return max(runs, key=lambda m: m["tokens_per_second"])


def sweep_lines(run_dirs: Sequence[Path]) -> list[str]:
    lines = []
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        tps = m["tokens_per_second"]
        lines.append(f"- {m['system']} at concurrency {m.get('concurrency')}: {tps:.1f} tokens/s ({d})")
    return lines


def print_pair(pair: dict[str, dict[str, Any]]) -> str:
    header, rows = table1(pair)
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(width[i]) for i, c in enumerate(r[:3])) for r in [header, *rows]]
    return "\n".join(lines)


def steady_tokens_per_second(run_dir: Path, bound: int) -> float | None:
    """Completion tokens/s while the run held its concurrency bound (the longest such stretch of the
    per-second series), i.e. without the ramp-up and the tail where the last conversations finish."""
    path = run_dir / "timeseries.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())
    best: tuple[float, float, float] | None = None  # (duration, t0, t1) of the longest stretch
    start = None
    for i, r in enumerate([*rows, {"t": math.inf, "tasks_in_flight": -1}]):
        full = r.get("tasks_in_flight", 0) >= bound
        if full and start is None:
            start = i
        elif not full and start is not None:
            t0, t1 = rows[start]["t"], rows[i - 1]["t"]
            if t1 > t0 and (best is None or t1 - t0 > best[0]):
                best = (t1 - t0, start, i - 1)
            start = None
    if best is None or best[0] < 10:
        return None
    a, b = rows[int(best[1])], rows[int(best[2])]
    return (b["completion_tokens"] - a["completion_tokens"]) / (b["t"] - a["t"])


def backend_efficiency(
    metrics: dict[str, Any], run_dir: Path | None = None, bench: Path = Path("results/bench/serving_sim.json")
) -> dict[str, Any]:
    """A simulated run's tokens/s as a fraction of its replicas' saturation throughput, over the
    whole run and in steady state (while the concurrency bound was held).

    Saturation is the replica's best output tokens/s *for the run's own request mix*
    (`matrix bench saturation`: its LLM calls replayed on the sim engine core by ideal clients),
    times the replicas. Coral's requests carry the conversation, so that figure is well below the
    short-prompt serving benchmark's; the latter is kept beside it as `short_prompt_*`, and is the
    denominator only when the run has no output to take the mix from.
    """
    profile = (metrics.get("sim") or {}).get("profile")
    if not metrics.get("simulated") or not profile:
        return {}
    replicas = int(metrics.get("replicas", 1))
    out: dict[str, Any] = {"profile": profile, "replicas": replicas}
    short = None
    if bench.exists():
        points = (json.loads(bench.read_text()).get("runs", {}).get(profile) or {}).get("points") or []
        if points:
            short = max(p["output_tokens_per_s"] for p in points)
            out["short_prompt_saturation_tokens_per_s"] = short
            out["short_prompt_source"] = str(bench)
    best = None
    if run_dir is not None and (run_dir / "output.jsonl").exists():
        from experiments.bench import saturation as sat

        try:
            doc = sat.saturation(profile, sat.requests_from_run(run_dir), replicas=replicas)
        except (sat.WorkloadError, ValueError) as e:
            out["workload_error"] = str(e)
        else:
            best = doc["replica_saturation_tokens_per_s"]
            out["source"] = "the run's own request mix on the sim engine core (matrix bench saturation)"
            out["workload_saturation"] = {k: v for k, v in doc.items() if k != "points"}
    if best is None:
        if short is None:
            return {}
        best, out["source"] = short, "short-prompt serving benchmark (matrix bench serving)"
    saturation = best * replicas
    out["replica_saturation_tokens_per_s"] = best
    out["fraction_of_saturation"] = metrics["tokens_per_second"] / saturation if saturation else 0.0
    if short:
        out["short_prompt_fraction"] = metrics["tokens_per_second"] / (short * replicas)
    steady = steady_tokens_per_second(run_dir, int(metrics.get("concurrency") or 0)) if run_dir else None
    if steady is not None:
        time_scale = float(metrics.get("time_scale") or 1.0)
        out["steady_tokens_per_second"] = steady / time_scale
        out["steady_fraction_of_saturation"] = steady / time_scale / saturation if saturation else 0.0
    return out
