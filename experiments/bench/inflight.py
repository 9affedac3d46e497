"""The in-flight benchmark: 10,000 tasks in flight at once on one machine, sim backend, no errors.

A two-role LLM workflow (`writer` then `critic`, each one chat completion through the process's
pooled client) runs on the Ray P2P transport against simulated A100 replicas hosted as Ray actors
(`matrix.llm.sim.replicas`), with `max_concurrent_tasks` 10,000 and more tasks than that, so that
admission has to hold the bound. What it shows is that the runtime, the client and the servers
keep 10,000 concurrent tasks (and up to 10,000 open requests) without timeouts, descriptor
exhaustion or lost tasks, and what that costs in memory and descriptors.

Every token figure comes from the simulated engine; tokens/s in simulated seconds is labelled so.

Why real time (time scale 1), two replicas and 18,000 tasks by default: tasks in flight are
admitted minus finished, so the bound fills only if admission outpaces completion for long enough.
On a 2-core host admission reaches about 300 tasks/s. At time scale 50-200 the simulated fleet
answers faster than the host can drive it, tasks leave as fast as they arrive and the peak stays in
the hundreds (measured: 560 of 10,000 at time scale 100 with four replicas). At time scale 1 two
simulated A100s finish about 60-90 tasks/s of this workload, queues build at the replicas, the bound
fills after 40-65 s, and the 8,000 tasks beyond it keep it full while admission waits for credits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from experiments.bench.memory import RaySampler
from matrix.agent import RoleSpec
from matrix.llm.agent import LLMAgent
from matrix.message import Message
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import RayRun, ensure_ray
from matrix.workflow import Sequential, register_workflow

WORKFLOW = "inflight-llm"
ROLES = ("writer", "critic")
INFLIGHT = register_workflow(Sequential(WORKFLOW, list(ROLES)))
TARGET_IN_FLIGHT = 10_000

PROMPTS = (
    "Write one sentence about rivers.",
    "Name a use for a small garden.",
    "Describe a quiet city at night.",
    "Say something about careful study.",
)


class CountingLLMAgent(LLMAgent):
    """`LLMAgent` that counts its concurrent steps and, when the actor shuts down, writes its
    client's counters (requests, retries, failures, usage) to `stats_dir` as one JSON file.

    Actors keep their clients to themselves; a file per actor is how the driver sees them.
    """

    async def setup(self) -> None:
        await super().setup()
        self.active = 0
        self.peak_active = 0
        self.peak_outstanding = 0

    async def step(self, message: Message) -> Message:
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        self.peak_outstanding = max(self.peak_outstanding, self.llm.stats().outstanding + 1)
        try:
            return await super().step(message)
        finally:
            self.active -= 1

    async def close(self) -> None:
        stats_dir = self.config.get("stats_dir")
        llm = getattr(self, "llm", None)
        if stats_dir and llm is not None:
            s = llm.stats()
            doc = {
                "role": self.role,
                "pid": os.getpid(),
                "peak_concurrent_steps": self.peak_active,
                "peak_outstanding_requests": self.peak_outstanding,
                "requests": s.requests,
                "retries": s.retries,
                "failures": s.failures,
                "outstanding_at_close": s.outstanding,
                "usage": llm.usage.snapshot(),
                "endpoints": {e.base_url: {"failures": e.failures} for e in llm.endpoints},
            }
            path = Path(stats_dir) / f"client-{self.role}-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=2) + "\n")
        await super().close()


@contextlib.contextmanager
def bench_run_dir(run_dir: Path | None, prefix: str) -> Iterator[Path]:
    """Where a benchmark's runs write: `run_dir`, or a temporary directory (`prefix`) removed afterwards.
    Ray is up for the benchmark's length, and shut down after it unless it was running already."""
    owns_ray = not ray.is_initialized()
    ensure_ray()
    tmp = tempfile.TemporaryDirectory(prefix=prefix) if run_dir is None else None
    try:
        yield Path(tmp.name) if tmp is not None else Path(str(run_dir))
    finally:
        if tmp is not None:
            tmp.cleanup()
        if owns_ray:
            ray.shutdown()


class RunStalled(RuntimeError):
    """Every row was written but the run did not end; the message says what admission still waited for."""


def run_ray_watched(
    cfg: RunConfig, *, expected_rows: int, stall_seconds: float = 60.0, poll_seconds: float = 2.0
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`run_ray`, watched: returns (metrics, watch) where metrics is None if the run stalled.

    The watch polls admission and the sink every `poll_seconds` (peak in flight, rows written).
    When every expected row has been written and nothing is in flight, but the run has not
    returned for `stall_seconds`, it is declared stalled, the deployment is shut down and
    `watch['stalled']` explains it, so a benchmark fails with a reason instead of hanging.
    """
    deployment = RayRun(cfg)
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["metrics"] = deployment.run()
        except BaseException as exc:  # reported through the watch; the main thread decides
            box["error"] = exc

    watch: dict[str, Any] = {
        "peak_in_flight": 0, "admitted": 0, "rows": 0, "failed": 0, "in_flight": None, "stalled": None,
    }  # fmt: skip
    driver = threading.Thread(target=drive, name="matrix-bench-run", daemon=True)
    driver.start()
    quiet_since: float | None = None
    try:
        while driver.is_alive():
            driver.join(poll_seconds)
            if not driver.is_alive():
                break
            try:
                snaps = ray.get([a.progress.remote() for a in deployment.admissions.values()], timeout=30)
                counts = ray.get([s.counts.remote() for s in deployment.sinks.values()], timeout=30)
            except (ray.exceptions.RayError, TimeoutError):
                continue
            watch["peak_in_flight"] = max(watch["peak_in_flight"], sum(int(x.get("in_flight", 0)) for x in snaps))
            watch["admitted"] = sum(int(x.get("admitted", 0)) for x in snaps)
            watch["in_flight"] = sum(int(x.get("in_flight", 0)) for x in snaps)
            watch["rows"] = sum(c["finished"] + c["failed"] for c in counts)
            watch["failed"] = sum(c["failed"] for c in counts)
            if watch["rows"] >= expected_rows and watch["in_flight"] == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > stall_seconds:
                    watch["stalled"] = (
                        f"all {watch['rows']} rows written and nothing in flight, but the run had not ended "
                        f"{stall_seconds:.0f} s later; with nothing in flight, the one wait left in admission is "
                        "for the sink's durable acknowledgements (AdmissionActor.run, `while self.credited`)"
                    )
                    break
            else:
                quiet_since = None
    finally:
        deployment.shutdown()
        driver.join(60)
    if watch["stalled"] is None and "error" in box:
        raise box["error"]
    return box.get("metrics"), watch


def inflight_roles(
    urls: list[str],
    model: str,
    *,
    per_replica_concurrency: int,
    max_tokens: int,
    instances: int,
    stats_dir: Path,
) -> list[RoleSpec]:
    config = {
        "urls": list(urls),
        "model": model,
        "max_concurrency": per_replica_concurrency,
        "sampling": {"max_tokens": max_tokens, "temperature": 0.7},
        "system": "You are a concise assistant.",
        "stats_dir": str(stats_dir),
    }
    return [
        RoleSpec(role, CountingLLMAgent, config, num_instances=instances, max_concurrency=TARGET_IN_FLIGHT)
        for role in ROLES
    ]


def run_inflight(
    *,
    tasks: int = 18_000,
    concurrency: int = TARGET_IN_FLIGHT,
    replicas: int = 2,
    profile: str = "a100-llama31-8b",
    time_scale: float = 1.0,
    mean_tokens: float = 48.0,
    sigma: float = 0.4,
    max_tokens: int = 64,
    per_replica_concurrency: int = 2_000,
    instances: int = 1,
    stall_seconds: float = 60.0,
    run_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark once and return its record (see `summary` for what `ok` requires)."""
    if tasks < concurrency:
        raise ValueError(f"tasks ({tasks}) must be >= concurrency ({concurrency}) for the bound to be reached")
    from matrix.llm.sim.profile import load_profile
    from matrix.llm.sim.replicas import start_sim_replicas

    model = load_profile(profile).model
    with bench_run_dir(run_dir, "matrix-inflight-") as base:
        mem = RaySampler()
        with mem:
            fleet = start_sim_replicas(
                replicas, profile, time_scale, "generic", behaviour_config={"mean_tokens": mean_tokens, "sigma": sigma}
            )
            try:
                cfg = RunConfig(
                    workflow=WORKFLOW,
                    roles=inflight_roles(
                        list(fleet),
                        model,
                        per_replica_concurrency=per_replica_concurrency,
                        max_tokens=max_tokens,
                        instances=instances,
                        stats_dir=base / "clients",
                    ),
                    source=[{"id": i, "prompt": PROMPTS[i % len(PROMPTS)] + f" (#{i})"} for i in range(tasks)],
                    run_dir=base / "run",
                    max_concurrent_tasks=concurrency,
                    workflow_modules=["experiments.bench.inflight"],
                    progress=progress,
                    labels={"case": "inflight", "system": "p2p", "backend": "sim", "simulated": True,
                            "time_scale": time_scale, "profile": profile},
                )  # fmt: skip
                t0 = time.monotonic()
                m, watch = run_ray_watched(cfg, expected_rows=tasks, stall_seconds=stall_seconds)
                driver_seconds = time.monotonic() - t0
                servers = ray.get([a.snapshot.remote() for a in fleet.actors], timeout=60)
            finally:
                fleet.stop()
        clients = [json.loads(p.read_text()) for p in sorted((base / "clients").glob("client-*.json"))]
        series_path = base / "run" / "timeseries.json"
        series = json.loads(series_path.read_text()) if m is not None and series_path.exists() else []
    settings = dict(
        tasks=tasks, concurrency=concurrency, replicas=replicas, profile=profile, time_scale=time_scale,
        mean_tokens=mean_tokens, sigma=sigma, max_tokens=max_tokens, per_replica_concurrency=per_replica_concurrency,
        instances=instances,
    )  # fmt: skip
    if m is None:
        return _stalled_record(watch, servers, clients, mem, driver_seconds, settings)
    record = _record(m, servers, clients, mem, driver_seconds, settings, series)
    record["watch"] = watch
    return record


def _record(
    m: dict[str, Any],
    servers: list[dict[str, Any]],
    clients: list[dict[str, Any]],
    mem: RaySampler,
    driver_seconds: float,
    settings: dict[str, Any],
    series: list[dict[str, float]],
) -> dict[str, Any]:
    wall = float(m["wall_seconds"])
    tokens = int(m["tokens_generated"])
    e2e = m["latency_seconds"]["end_to_end"]
    record: dict[str, Any] = {
        "benchmark": "inflight",
        "workload": f"{WORKFLOW}: {' -> '.join(ROLES)}, one chat completion each (generic behaviour, simulated)",
        "settings": {**settings, "target_in_flight": TARGET_IN_FLIGHT},
        "simulated": True,
        "cpu_count": os.cpu_count(),
        "tasks_admitted": m["tasks_admitted"],
        "tasks_finished": m["tasks_finished"],
        "tasks_failed": m["tasks_failed"],
        "tasks_lost": m["tasks_lost"],
        "tasks_replayed": m["tasks_replayed"],
        "duplicates_dropped": m["duplicates_dropped"],
        "peak_in_flight": m["peak_in_flight"],
        "errors_by_reason": m["errors_by_reason"],
        "internal_errors": m.get("internal_errors", []),
        "wall_seconds": wall,
        "driver_seconds": driver_seconds,
        "tokens_generated": tokens,
        "prompt_tokens": m["prompt_tokens"],
        "tokens_per_wall_second": tokens / wall if wall > 0 else 0.0,
        "tokens_per_simulated_second": m["tokens_per_second"],
        "tasks_per_wall_second": m["tasks_finished"] / wall if wall > 0 else 0.0,
        "messages_per_wall_second": m["messages"] / wall if wall > 0 else 0.0,
        "e2e_simulated_seconds": {"p50": e2e.get("p50"), "p99": e2e.get("p99"), "max": e2e.get("max")},
        "queue_wait_simulated_seconds": m["latency_seconds"].get("queue_wait"),
        "peak_ray_memory_mb": mem.peak_bytes / 1e6,
        "peak_ray_memory_note": "summed RSS of the driver and every process of its Ray cluster, sim replicas included",
        "host_load_average": list(os.getloadavg()),
        "peak_ray_processes": mem.peak_processes,
        "peak_fds_one_process": mem.peak_fds,
        "peak_fds_process": mem.peak_fds_process,
        "fd_soft_limit": _fd_limit(),
        "clients": clients,
        "client_requests": sum(c["requests"] for c in clients),
        "client_retries": sum(c["retries"] for c in clients),
        "client_failures": sum(c["failures"] for c in clients),
        "servers": servers,
        "server_lagging": any(s.get("lagging") for s in servers),
        "fill": fill_profile(series, int(settings["concurrency"])),
        "metrics": {k: m[k] for k in ("hops_by_role", "tokens_by_role", "bytes_per_hop", "latency_seconds")},
    }
    record["ok"] = not problems(record)
    record["problems"] = problems(record)
    return record


def _stalled_record(
    watch: dict[str, Any],
    servers: list[dict[str, Any]],
    clients: list[dict[str, Any]],
    mem: RaySampler,
    driver_seconds: float,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """What is known of a run that never returned its metrics (from the watch's polls)."""
    return {
        "benchmark": "inflight",
        "settings": {**settings, "target_in_flight": TARGET_IN_FLIGHT},
        "simulated": True,
        "ok": False,
        "problems": [f"run stalled: {watch['stalled']}"],
        "watch": watch,
        "tasks_admitted": watch["admitted"],
        "rows_written": watch["rows"],
        "tasks_failed": watch["failed"],
        "peak_in_flight_polled": watch["peak_in_flight"],
        "driver_seconds": driver_seconds,
        "peak_ray_memory_mb": mem.peak_bytes / 1e6,
        "peak_fds_one_process": mem.peak_fds,
        "clients": clients,
        "client_failures": sum(c["failures"] for c in clients),
        "servers": servers,
    }


def fill_profile(series: list[dict[str, float]], bound: int) -> dict[str, Any]:
    """How fast admission filled the bound, from the driver's once-a-second samples.

    In flight = admitted - done, so tasks admitted per second is the growth of (done + in flight).
    """
    if not series:
        return {}
    admitted = [(r["t"], r.get("tasks_done", 0) + r.get("tasks_in_flight", 0)) for r in series]
    at_bound = [r["t"] for r in series if r.get("tasks_in_flight", 0) >= bound]
    first = at_bound[0] if at_bound else None
    t_end, n_end = next(((t, n) for t, n in admitted if first is not None and t >= first), admitted[-1])
    return {
        "seconds_to_bound": first,
        "samples_at_bound": len(at_bound),
        "admitted_per_second_until_then": n_end / t_end if t_end > 0 else None,
        "peak_sampled_in_flight": max(r.get("tasks_in_flight", 0) for r in series),
    }


def _fd_limit() -> int | None:
    try:
        import resource

        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, ValueError, OSError):
        return None


def problems(record: dict[str, Any]) -> list[str]:
    """Why a run does not meet the bar: every task finished, none lost, the bound reached."""
    out = []
    target = int(record["settings"]["concurrency"])
    if record["tasks_failed"]:
        out.append(f"{record['tasks_failed']} tasks failed: {record['errors_by_reason']}")
    if record["tasks_lost"]:
        out.append(f"{record['tasks_lost']} tasks lost")
    if record["tasks_finished"] != record["settings"]["tasks"]:
        out.append(f"{record['tasks_finished']} of {record['settings']['tasks']} tasks finished")
    if record["peak_in_flight"] < target:
        out.append(f"peak in flight {record['peak_in_flight']} < {target}")
    if record["internal_errors"]:
        out.append(f"internal errors: {record['internal_errors'][:3]}")
    return out


def summary(record: dict[str, Any]) -> str:
    s = record["settings"]
    if "watch" in record and record["watch"].get("stalled"):
        w = record["watch"]
        return (
            f"inflight: {s['tasks']} tasks, max_concurrent_tasks {s['concurrency']}: STALLED after "
            f"{record['driver_seconds']:.0f} s; polled peak in flight {w['peak_in_flight']}, "
            f"{w['rows']} rows written, client failures {record['client_failures']}, peak Ray memory "
            f"{record['peak_ray_memory_mb']:.0f} MB\n  FAILED: {w['stalled']}"
        )
    e2e = record["e2e_simulated_seconds"]
    lines = [
        f"inflight: {s['tasks']} tasks, max_concurrent_tasks {s['concurrency']}, {s['replicas']} sim replicas "
        f"({s['profile']}, time scale {s['time_scale']:g}, SIMULATED), {len(ROLES)} LLM calls per task",
        f"  peak in flight      {record['peak_in_flight']:>10}   (target {s['concurrency']})",
        f"  finished/failed/lost {record['tasks_finished']:>9} / {record['tasks_failed']} / {record['tasks_lost']}"
        f"   replayed {record['tasks_replayed']}, errors {record['errors_by_reason'] or 'none'}",
        f"  wall                {record['wall_seconds']:>10.1f} s   ({record['tasks_per_wall_second']:.0f} tasks/s, "
        f"{record['messages_per_wall_second']:.0f} hops/s on this host)",
        f"  tokens              {record['tokens_generated']:>10}   ({record['tokens_per_wall_second']:.0f}/wall s; "
        f"{record['tokens_per_simulated_second']:.1f}/simulated s)",
        f"  e2e (simulated s)   p50 {e2e['p50']:.1f}  p99 {e2e['p99']:.1f}  max {e2e['max']:.1f}",
        f"  bound reached after {record['fill'].get('seconds_to_bound')} s, held for "
        f"{record['fill'].get('samples_at_bound')} one-second samples; admission "
        f"{record['fill'].get('admitted_per_second_until_then') or 0:.0f} tasks/s until then",
        f"  peak Ray memory     {record['peak_ray_memory_mb']:>10.0f} MB over {record['peak_ray_processes']} processes",
        f"  peak fds (1 proc)   {record['peak_fds_one_process']:>10}   (soft limit {record['fd_soft_limit']})",
        f"  client              {record['client_requests']} requests, {record['client_retries']} retries, "
        f"{record['client_failures']} failures; peak outstanding per actor "
        + ", ".join(f"{c['role']}={c['peak_outstanding_requests']}" for c in record["clients"]),
        f"  servers lagging     {record['server_lagging']}   (effective time scale "
        + ", ".join(f"{x.get('effective_time_scale', 0):.1f}" for x in record["servers"])
        + ")",
        "  OK" if record["ok"] else "  FAILED: " + "; ".join(record["problems"]),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """`matrix bench inflight`: run once, write the record, print the summary; 1 unless every task finished."""
    from matrix.runtime.report import write_json

    names = (
        "tasks", "concurrency", "replicas", "profile", "time_scale", "mean_tokens", "max_tokens",
        "per_replica_concurrency", "instances",
    )  # fmt: skip
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    record = run_inflight(**options)
    out = args.out or Path("results/bench/inflight.json")
    write_json(out, record)
    print(summary(record))
    print(f"wrote {out}")
    return 0 if record["ok"] else 1
