"""The soak: one long Coral run on sim replicas under mixed kills at a fixed rate, on a local cluster
of several nodes; nothing may be lost or written twice, and memory must stay flat.

Every `interval` seconds the chaos benchmark's killer (`experiments.bench.chaos.Killer`) kills one
victim of a target drawn at random from `targets`: an agent, a sink, a whole worker node (replaced
by a fresh one), a sim replica, or the admission actor (which Ray restarts). There is
no fault-free twin: the questions are whether the run ends with every task once, and whether the
memory of the Ray processes stays level over a long run.

Memory is the summed resident memory (RSS) of the cluster's processes (each node's raylet, object
store, GCS and agents, and every actor's worker process, sim replicas included) plus this driver,
sampled every `sample_seconds`. Warm-up ends once `warmup_fraction` of the tasks have been admitted
and finished; the level after warm-up is the mean of the samples in the `window_seconds` after that,
the level at the end the mean of the samples in the run's last `window_seconds`. The memory is
flat when the end level is within `tolerance` (10%) of the level after warm-up, either way.

Times and tokens/s are SIMULATED (sim backend); restarts and memory are measured in wall seconds and
bytes. The report goes to `results/bench/soak.json`; the run directory is
`<run_root>/coral/matrix/<run_id>/` with a `soak` block in its metrics.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
import ray
from ray.exceptions import RayError

from experiments.bench import chaos
from experiments.bench.nodes import DEFAULT_OBJECT_STORE_MB, ClusterError, LocalCluster, ray_processes, sum_rss
from matrix.runtime.ray_p2p import RayRun
from matrix.runtime.report import write_json

DEFAULTS: dict[str, Any] = {
    "tasks": 50_000,
    "interval": 10.0,
    "targets": ("agent", "sink", "node", "model", "admission"),
    "nodes": 2,
    "concurrency": 200,
    "replicas": 2,
    "instances": 2,
    "time_scale": 10.0,
    "max_turns": 20,
    "seed": 0,
    "max_attempts": 10,
    "sample_seconds": 10.0,
    "warmup_fraction": 0.1,
    "window_seconds": 120.0,
    "tolerance": 0.10,
}


class MemorySampler:
    """Samples, every `every` seconds while a run goes: tasks done, the Ray processes' summed RSS, kills."""

    def __init__(
        self, run: RayRun, cluster: LocalCluster | None, *, every: float, kills: Callable[[], int] = lambda: 0
    ) -> None:
        if every <= 0:
            raise ValueError(f"sample_seconds must be > 0, got {every}")
        self.run = run
        self.cluster = cluster
        self.every = every
        self.kills = kills
        self.samples: list[dict[str, Any]] = []
        self._driver = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="matrix-soak-memory", daemon=True)
        self._t0 = 0.0

    def __enter__(self) -> MemorySampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> dict[str, Any]:
        procs = self.cluster.processes() if self.cluster is not None else ray_processes()
        cluster_rss = sum_rss(procs)
        driver_rss = self._driver.memory_info().rss
        done: int | None = None
        with suppress(RayError, TimeoutError):
            snaps = ray.get([a.progress.remote() for a in self.run.admissions.values()], timeout=10)
            done = sum(int(s.get("admitted", 0)) - int(s.get("in_flight", 0)) for s in snaps)
        return {
            "t": round(time.monotonic() - self._t0, 2),
            "done": done,
            "rss_bytes": cluster_rss + driver_rss,
            "cluster_rss_bytes": cluster_rss,
            "driver_rss_bytes": driver_rss,
            "processes": len(procs),
            "kills": self.kills(),
        }

    def _loop(self) -> None:
        while True:
            with suppress(Exception):  # a sample that fails (a process gone mid-read) is skipped
                self.samples.append(self.sample())
            if self._stop.wait(self.every):
                return


def memory_verdict(
    samples: Sequence[dict[str, Any]], *, tasks: int, warmup_fraction: float, window_seconds: float, tolerance: float
) -> dict[str, Any]:
    """The level after warm-up against the level at the end (module docstring); `flat` within `tolerance`."""
    out: dict[str, Any] = {
        "warmup_fraction": warmup_fraction, "window_seconds": window_seconds, "tolerance": tolerance,
        "warmup_end_seconds": None, "level_after_warmup_bytes": None, "level_at_end_bytes": None,
        "change_percent": None, "flat": None, "samples_after_warmup": 0, "samples_at_end": 0,
    }  # fmt: skip
    warm = next((s for s in samples if s.get("done") is not None and s["done"] >= warmup_fraction * tasks), None)
    if warm is None or not samples:
        out["why_not"] = "the run never got past warm-up"
        return out
    t_warm, t_end = float(warm["t"]), float(samples[-1]["t"])
    after = [s["rss_bytes"] for s in samples if t_warm <= s["t"] <= t_warm + window_seconds]
    end = [s["rss_bytes"] for s in samples if s["t"] >= t_end - window_seconds]
    if t_end - window_seconds < t_warm + window_seconds:
        out["why_not"] = "the run was shorter than warm-up plus two windows; the windows overlap"
    level_a, level_e = sum(after) / len(after), sum(end) / len(end)
    change = (level_e - level_a) / level_a * 100.0
    out.update(
        warmup_end_seconds=t_warm, level_after_warmup_bytes=level_a, level_at_end_bytes=level_e,
        change_percent=change, flat=abs(change) <= tolerance * 100.0, samples_after_warmup=len(after),
        samples_at_end=len(end),
        peak_bytes=max(s["rss_bytes"] for s in samples), min_bytes_after_warmup=min(after),
    )  # fmt: skip
    return out


def run_soak(
    *,
    tasks: int = DEFAULTS["tasks"],
    interval: float = DEFAULTS["interval"],
    targets: Sequence[str] = DEFAULTS["targets"],
    nodes: int = DEFAULTS["nodes"],
    concurrency: int = DEFAULTS["concurrency"],
    replicas: int = DEFAULTS["replicas"],
    instances: int = DEFAULTS["instances"],
    time_scale: float = DEFAULTS["time_scale"],
    max_turns: int = DEFAULTS["max_turns"],
    seed: int = DEFAULTS["seed"],
    max_attempts: int = DEFAULTS["max_attempts"],
    sample_seconds: float = DEFAULTS["sample_seconds"],
    warmup_fraction: float = DEFAULTS["warmup_fraction"],
    window_seconds: float = DEFAULTS["window_seconds"],
    tolerance: float = DEFAULTS["tolerance"],
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
    run_root: Path = Path("results/runs"),
    run_id: str | None = None,
    progress: bool = True,
    stall_seconds: float = 300.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One Coral run of `tasks` under kills every `interval` seconds; returns the soak report."""
    targets = chaos.parse_targets(targets, nodes=nodes)
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    if not 0 < warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be between 0 and 1, got {warmup_fraction}")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    run_id = run_id or time.strftime("soak-%Y%m%d-%H%M%S")
    run_dir = Path(run_root) / "coral" / "matrix" / run_id
    case = chaos.coral_case(
        tasks=tasks, max_turns=max_turns, length_scale=1.0, replicas=replicas, profile=chaos.DEFAULTS["profile"]
    )  # fmt: skip
    (spec,) = case.pool_specs()
    plan = {"targets": list(targets), "interval": interval, "seed": seed}
    doc: dict[str, Any] = {
        "benchmark": "soak",
        "simulated": True,
        "note": "SIMULATED serving (sim backend): tokens/s in simulated seconds; restarts in wall seconds, "
        "memory in bytes (real)",
        "workload": {
            "case": "coral", "tasks": tasks, "max_turns": max_turns, "concurrency": concurrency,
            "instances": instances, "replicas": replicas, "time_scale": time_scale, "max_attempts": max_attempts,
        },
        "fault_injection": {"targets": list(targets), "interval_seconds": interval, "seed": seed},
        "cpu_count": os.cpu_count(),
        "run_dir": str(run_dir),
    }  # fmt: skip
    sampler: MemorySampler | None = None
    t_start = time.monotonic()
    with (
        chaos.maybe_cluster(nodes, object_store_mb=object_store_mb) as cluster,
        chaos.sim_fleet(spec, time_scale, cluster) as fleet,
    ):
        doc["cluster"] = chaos.cluster_record(cluster)
        pools = {spec.name: fleet.pool()}
        settings = case.settings(pools)
        inputs = case.inputs(settings)
        expected = [(str(r["id"]), 0) for r in inputs]

        @contextmanager
        def watch(run: RayRun, killer: chaos.Killer | None) -> Iterator[None]:
            nonlocal sampler
            count = (lambda: len(killer.kills)) if killer is not None else (lambda: 0)
            with MemorySampler(run, cluster, every=sample_seconds, kills=count) as sampler:
                yield

        say(f"soak: {tasks} Coral tasks, a kill every {interval:g} s ({', '.join(targets)}) -> {run_dir}")
        metrics, kills = chaos._run_once(
            case, pools, settings, inputs, run_dir, concurrency=concurrency, instances=instances,
            max_attempts=max_attempts, progress=progress, stall_seconds=stall_seconds, chaos=plan, fleet=fleet,
            log=say, cluster=cluster, watch=watch,
        )  # fmt: skip
    samples = sampler.samples if sampler is not None else []
    audit = chaos.audit_rows(chaos.iter_output_rows(sorted(run_dir.glob("output*.jsonl"))), expected)
    summary = chaos.run_summary(metrics, audit, time_scale=time_scale)
    doc["run"] = summary
    doc["fault_injection"].update(chaos.restart_summary(kills))
    doc["fault_injection"]["log"] = [asdict(k) for k in kills]
    doc["memory"] = memory_verdict(
        samples, tasks=tasks, warmup_fraction=warmup_fraction, window_seconds=window_seconds, tolerance=tolerance
    )
    doc["memory"]["samples"] = samples
    doc["elapsed_seconds"] = time.monotonic() - t_start
    doc["tasks_per_wall_second"] = tasks / summary["wall_seconds"] if summary["wall_seconds"] else None
    doc["ok"] = ok(doc)
    metrics["soak"] = {
        "lost": audit.lost, "duplicate_rows": audit.duplicate_rows, "failed_rows": audit.failed_rows,
        "kills": len(kills), "memory_change_percent": doc["memory"]["change_percent"],
        "memory_flat": doc["memory"]["flat"], "counted_from": "output.jsonl",
    }  # fmt: skip
    write_json(run_dir / "metrics.json", metrics)
    return doc


def ok(doc: dict[str, Any]) -> bool:
    """Nothing lost, duplicated, failed or unexpected, every kill came back, and memory flat."""
    r = doc["run"]
    return (
        r["lost"] == 0
        and r["duplicate_rows"] == 0
        and r["failed_rows"] == 0
        and not r["unexpected_rows"]
        and doc["fault_injection"].get("not_restarted", 0) == 0
        and doc["memory"].get("flat") is True
    )


def format_soak(doc: dict[str, Any]) -> str:
    r, fi, mem = doc["run"], doc["fault_injection"], doc["memory"]

    def mb(x: float | None) -> str:
        return "n/a" if x is None else f"{x / 2**20:,.0f} MB"

    change = mem.get("change_percent")
    by_target = ", ".join(f"{k} {v}" for k, v in (fi.get("kills_by_target") or {}).items())
    lines = [
        f"soak (SIMULATED serving): {r['tasks']:,} Coral tasks in {r['wall_seconds']:.0f} s wall "
        f"({doc.get('tasks_per_wall_second') or 0:.1f} tasks/s), {doc['cluster'].get('nodes', 1)} nodes",
        f"  kills: {fi.get('kills', 0)} ({by_target}), "
        f"restarted {fi.get('restarts', 0)}, mean restart {chaos._num(fi.get('mean_restart_seconds'), '.2f')} s",
        f"  lost {r['lost']}, duplicate rows {r['duplicate_rows']}, error rows {r['failed_rows']}, "
        f"rows from a replayed attempt {r['rows_from_replay']}",
        f"  memory (Ray processes + driver): {mb(mem.get('level_after_warmup_bytes'))} after warm-up, "
        f"{mb(mem.get('level_at_end_bytes'))} at the end"
        + ("" if change is None else f" ({change:+.1f}%, {'flat' if mem.get('flat') else 'NOT flat'})")
        + (f"; {mem['why_not']}" if mem.get("why_not") else ""),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """`matrix bench soak`."""
    from experiments.bench import portable as _portable

    out = args.out or Path("results/bench/soak.json")
    targets = chaos.parse_targets(args.targets, nodes=args.nodes)  # one line, before anything starts
    try:
        doc = run_soak(
            tasks=args.tasks, interval=args.interval, targets=targets, nodes=args.nodes, run_root=args.run_root,
            run_id=args.run_id, sample_seconds=args.sample_seconds, window_seconds=args.window_seconds,
        )  # fmt: skip
    except (chaos.RunStalled, ClusterError) as exc:  # a fault the run did not survive: the reason, no hang
        print(f"matrix bench soak: {exc} (rows so far stay in {args.run_root}/coral/matrix/)", file=sys.stderr)
        return 1
    write_json(out, _portable(doc))
    print(format_soak(doc))
    print(f"wrote {out}")
    return 0 if doc["ok"] else 1
