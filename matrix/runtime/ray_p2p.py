"""The Ray P2P transport: messages travel from agent actor to agent actor; nothing central in the loop.

    admission --msg--> agent(role 1) --msg--> agent(role 2) --> ... --msg--> sink
        ^                                                                     |
        +---------------------------- credit (push) -------------------------+

- An `AgentActor` hosts one role and runs many steps at once (asyncio tasks, not one actor per
  task). After a step it asks the workflow for the next role, picks a live peer of that role
  (`matrix.peers`) and sends the message itself; the call returns as soon as the peer has queued it,
  with the peer's load, which the sender uses for its next choice.
- Delivery is at-least-once. Admission holds a lease per task. It watches every actor (a call
  that never returns fails when the actor dies), and after a death it takes a census: a task that no
  live actor holds, that is not in transit and that the sink has not seen is replayed from its
  start with attempt + 1. Expired leases are replayed too. The sink keeps the first finished copy.
- A task is held by its sender until the receiver acknowledged it, so a census can see a task
  twice but never zero times while it is alive.
- The sink frees a task's admission slot at once (credit) but releases its lease only after the
  row is flushed to disk (durable), so a sink that dies loses no acknowledged row.

One file per part: `directory` (how actors find and reach each other), `agent_actor`,
`sink_actor`, `admission_actor`, `payload_owners` (who serves and frees offloaded fields), and
this driver, which deploys the actors of one run, drives it to the end and collects the results.

The run's window (`matrix.runtime.window`, the same for every system) starts once every actor is
up: the agents have set up their roles and the sinks and admissions answer. Deploying them is
startup (`startup_seconds`); the window ends when the last admission has seen its last task
credited, i.e. the sinks have accepted every row.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from matrix.llm.client import add_call_counts
from matrix.metrics import Metrics, TimeSeries
from matrix.ray_init import ensure_ray, local_only
from matrix.runtime.admission_actor import AdmissionActor
from matrix.runtime.agent_actor import AgentActor
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import Directory
from matrix.runtime.report import Progress, PrometheusExporter, build_metrics, gauges_text, write_run_files
from matrix.runtime.sink_actor import SinkActor
from matrix.runtime.window import record as window_record

__all__ = [
    "AdmissionActor",
    "AgentActor",
    "Directory",
    "RayRun",
    "SinkActor",
    "actor_names",
    "ensure_ray",
    "local_only",
    "run_ray",
    "stop_on_signals",
    "with_overrides",
]

# The per-second series a run keeps in timeseries.json (the Prometheus exporter gets every gauge).
SERIES = ("tasks_done", "tasks_in_flight", "completion_tokens")
INLINE_CONFIG_BYTES = 64 * 1024  # a run config up to this size is passed inline to each actor (Ray inlines < 100 KB)


def _get_or(default: Any, refs: list[Any], timeout: float = 10.0) -> list[Any]:
    """ray.get each ref; an actor that is restarting (or gone) yields `default` instead of raising."""
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except (RayError, TimeoutError):
            out.append(default)
    return out


def _call_restarting(method: Any, *args: Any, deadline_seconds: float = 120.0) -> Any:
    """Call a restartable actor's `method`, waiting for it while it restarts (up to the deadline)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return ray.get(method.remote(*args), timeout=max(1.0, deadline - time.monotonic()))
        except RayActorError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def actor_names(cfg: RunConfig) -> dict[str, list[str]]:
    return {s.role: [f"{s.role}-{i}" for i in range(s.num_instances)] for s in cfg.roles}


class RayRun:
    """Deploys the actors of one run, drives it to the end, and collects the results."""

    def __init__(self, cfg: RunConfig) -> None:
        cfg.check()
        ensure_ray()
        self.launched_at = time.time()  # startup: from here until every actor is up
        self.cfg = cfg
        self.run_id = uuid.uuid4().hex[:8]
        # Set from a signal handler (run_ray) or another thread: stop admitting, drain, close the output.
        self.stop_requested = threading.Event()
        self.stop_now = threading.Event()
        self.stop_reason = ""
        self.directory_name = f"matrix-directory-{self.run_id}"
        # The directory is not restartable: on a cluster it stays on the driver's node (a run whose driver's
        # node dies has ended anyway), never on a worker node that may be lost.
        pin: dict[str, Any] = {}
        if cfg.placement == "spread":
            here = ray.get_runtime_context().get_node_id()
            pin = {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}
        self.directory = Directory.options(name=self.directory_name, **pin).remote()  # type: ignore[attr-defined]
        # Restartable actors re-run their constructor from these arguments. A small config travels
        # inside each actor's creation spec; a large one (rows given inline) goes to the object store
        # once, pinned by the driver for the whole run, and Ray logs a warning about that
        # (ray-project/ray#53727) that does not apply while the driver holds the reference.
        self._cfg_ref: Any = cfg if len(ray.cloudpickle.dumps(cfg)) <= INLINE_CONFIG_BYTES else ray.put(cfg)
        self.agents: dict[str, list[tuple[str, Any]]] = {}
        spread = {"scheduling_strategy": "SPREAD"} if cfg.placement == "spread" else {}
        # Each sender keeps a `watch` call pending on every peer it talks to, and admission one on every
        # agent: slots beyond the role's own, so that watches never crowd out deliveries.
        watchers = sum(len(names) for names in actor_names(cfg).values()) + cfg.num_partitions
        for spec in cfg.roles:
            opts: dict[str, Any] = {
                "max_restarts": -1,
                "max_task_retries": 0,
                "max_concurrency": max(spec.max_concurrency, 100) + 10 + watchers,
                "num_cpus": float(spec.resources.get("num_cpus", 0)),
                **spread,
            }
            if spec.resources.get("num_gpus"):
                opts["num_gpus"] = float(spec.resources["num_gpus"])
            custom = {k: float(v) for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus")}
            if custom:
                opts["resources"] = custom
            self.agents[spec.role] = [
                (name, AgentActor.options(**opts).remote(spec, name, self.directory_name, self._cfg_ref))  # type: ignore[attr-defined]
                for name in actor_names(cfg)[spec.role]
            ]
        restart = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 10_000, **spread}
        self.sinks = {
            p: SinkActor.options(**restart).remote(self._cfg_ref, p, self.directory_name)  # type: ignore[attr-defined]
            for p in range(cfg.num_partitions)
        }
        # Restartable too; its calls (the driver's `run` among them) wait for the new incarnation.
        admission_opts = {"max_restarts": -1, "max_task_retries": -1, "max_concurrency": 10_000, **spread}
        self.admissions = {
            p: AdmissionActor.options(**admission_opts).remote(self._cfg_ref, p, self.directory_name)  # type: ignore[attr-defined]
            for p in range(cfg.num_partitions)
        }
        sticky = sorted(s.role for s in cfg.roles if s.is_sticky())
        ray.get(
            self.directory.set.remote(
                {"roles": self.agents, "sinks": self.sinks, "admissions": self.admissions, "sticky": sticky}
            )
        )
        ray.get([h.ready.remote() for entries in self.agents.values() for _, h in entries])
        # Sinks and admissions too: an actor still starting would otherwise start inside the window.
        ray.get(
            [s.counts.remote() for s in self.sinks.values()] + [a.progress.remote() for a in self.admissions.values()]
        )
        self.ready_at = time.time()

    def all_agents(self) -> list[tuple[str, Any]]:
        return [x for entries in self.agents.values() for x in entries]

    def _actor_metrics(self) -> tuple[Metrics, list[str], dict[str, int], dict[str, Any]]:
        """Merged metrics, internal errors, payload counters and LLM call counters of every agent actor."""
        merged = Metrics()
        errors: list[str] = []
        payload: dict[str, int] = defaultdict(int)
        calls: list[dict[str, Any]] = []
        for snap in _get_or(None, [h.stats.remote() for _, h in self.all_agents()], timeout=60):
            if snap is None:
                errors.append("an agent actor was restarting; its metrics since the restart are missing")
                continue
            merged.merge_snapshot(snap)
            calls.append(snap.get("llm_calls", {}))
            errors += snap["errors"]
            for k, v in snap["payload"].items():
                payload[k] += v
            for k, v in snap.get("batching", {}).items():
                payload[f"send_{k}"] += v
        return merged, errors, dict(payload), add_call_counts(calls)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        progress = Progress(None, enabled=cfg.progress)
        series = TimeSeries()
        exporter = None
        if cfg.prometheus_port is not None:
            exporter = PrometheusExporter(cfg.prometheus_host, cfg.prometheus_port, labels={"run_id": self.run_id})
            print(f"matrix: metrics for Prometheus at {exporter.url}", file=sys.stderr, flush=True)
        start_at, t0 = time.time(), time.monotonic()
        last_export = 0.0
        refs = [a.run.remote() for a in self.admissions.values()]
        pending = list(refs)
        stopped_at: float | None = None
        zero = {"finished": 0, "failed": 0, "completion_tokens": 0}
        last_counts: dict[int, dict[str, int]] = {}
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
                if self.stop_requested.is_set() and stopped_at is None:
                    stopped_at = time.monotonic()
                    for a in self.admissions.values():
                        a.stop.remote()
                    print(
                        f"matrix: stopping ({self.stop_reason}): no new tasks; waiting up to {cfg.drain_seconds:g} s "
                        "for the tasks in flight (again to stop now); the output stays resumable",
                        file=sys.stderr,
                        flush=True,
                    )
                if (
                    stopped_at is not None
                    and pending
                    and (self.stop_now.is_set() or time.monotonic() - stopped_at >= cfg.drain_seconds)
                ):
                    break
                snaps = ray.get([a.progress.remote() for a in self.admissions.values()])
                # A sink that is restarting keeps its last counts until it answers again.
                fresh = _get_or(None, [s.counts.remote() for s in self.sinks.values()], timeout=5.0)
                counts = [
                    c if c is not None else last_counts.get(p, zero) for p, c in zip(self.sinks, fresh, strict=True)
                ]
                last_counts = dict(zip(self.sinks, counts, strict=True))
                loads = _get_or(0, [h.load.remote() for _, h in self.all_agents()])
                depth: dict[str, int] = defaultdict(int)
                for (name, _), load in zip(self.all_agents(), loads, strict=True):
                    depth[name.rsplit("-", 1)[0]] += load
                done = sum(c["finished"] + c["failed"] for c in counts)
                in_flight = sum(int(s.get("in_flight", 0)) for s in snaps)
                by_role: dict[str, float] = defaultdict(float)
                for c in counts:
                    tokens = c.get("tokens_by_role")
                    for role, n in (tokens if isinstance(tokens, dict) else {}).items():
                        by_role[role] += n
                gauges = {
                    "tasks_done": done,
                    "tasks_in_flight": in_flight,
                    "tasks_admitted": sum(int(s.get("admitted", 0)) for s in snaps),
                    "tasks_finished": sum(c["finished"] for c in counts),
                    "tasks_failed": sum(c["failed"] for c in counts),
                    "tasks_replayed": sum(int(s.get("replayed", 0)) for s in snaps),
                    "replays_from_checkpoint": sum(int(s.get("resumed", 0)) for s in snaps),
                    "actor_deaths": sum(int(s.get("deaths", 0)) for s in snaps),
                    "admission_restarts": sum(int(s.get("restarts", 0)) for s in snaps),
                    "completion_tokens": sum(c["completion_tokens"] for c in counts),
                    **{f"queue_depth_{role}": float(n) for role, n in depth.items()},
                    **{f"completion_tokens_by_role_{role}": n for role, n in by_role.items()},
                }
                series.sample(
                    time.monotonic() - t0,
                    **{k: v for k, v in gauges.items() if k in SERIES or k.startswith("queue_depth_")},
                )
                progress.update(done, in_flight, sum(c["failed"] for c in counts))
                if exporter is not None and time.monotonic() - last_export >= 5.0:
                    last_export = time.monotonic()
                    exporter.update(self._actor_metrics()[0].to_prometheus() + gauges_text(gauges))
            drained = not pending
            results = ray.get(refs) if drained else _get_or({}, [a.progress.remote() for a in self.admissions.values()])
            wall = time.monotonic() - t0
            sinks = [_call_restarting(s.close) for s in self.sinks.values()]
            merged, errors, payload, llm_calls = self._actor_metrics()
        finally:
            if exporter is not None:
                exporter.stop()
        progress.update(sum(s.finished + s.failed for s in sinks), 0, sum(s.failed for s in sinks), force=True)
        out = build_metrics(
            labels={"transport": "ray_p2p", **cfg.labels},
            wall_seconds=wall,
            sinks=sinks,
            admissions=results,
            metrics=merged,
            extra={
                "offload_threshold": cfg.offload_threshold,
                "payload": payload,
                "actor_deaths": sum(r.get("deaths", 0) for r in results),
                "census_runs": sum(r.get("census", 0) for r in results),
                # Replays that started from the task's last checkpoint, and the hops they did not run again.
                "replays_from_checkpoint": sum(r.get("resumed", 0) for r in results),
                "hops_kept_by_checkpoints": sum(r.get("resumed_hops", 0) for r in results),
                "checkpoints": {
                    "enabled": cfg.checkpoints,
                    "received": sum(r.get("checkpoints_received", 0) for r in results),
                },
                "admission_restarts": sum(r.get("restarts", 0) for r in results),
                "internal_errors": errors,
                # Each agent actor's process since it (re)started: a killed actor's earlier calls are not here.
                "llm_calls": llm_calls,
                "actors": {role: len(v) for role, v in self.agents.items()},
                **window_record(
                    launched_at=self.launched_at, ready_at=self.ready_at, start_at=start_at, end_at=start_at + wall
                ),
                "stopped": None
                if stopped_at is None
                else {
                    "reason": self.stop_reason,
                    "after_seconds": stopped_at - t0,
                    "drained": drained,
                    "unfinished_in_flight": sum(int(r.get("in_flight", 0)) for r in results),
                },
            },
        )
        return write_run_files(cfg.run_dir, out, series.rows, merged.to_prometheus())

    def shutdown(self) -> None:
        handles = [h for _, h in self.all_agents()]
        with contextlib.suppress(RayError):
            ray.get([h.shutdown.remote() for h in handles], timeout=30)
        for h in [*self.admissions.values(), *handles, *self.sinks.values(), self.directory]:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(h, no_restart=True)

    def request_stop(self, reason: str) -> None:
        """First call: stop admitting and drain (up to `drain_seconds`); second call: stop now."""
        if self.stop_requested.is_set():
            self.stop_now.set()
        else:
            self.stop_reason = reason
            self.stop_requested.set()


@contextlib.contextmanager
def stop_on_signals(run: RayRun, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """SIGINT/SIGTERM stop `run` gracefully (the first drains, the second stops now, a third is the
    default action); outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}
    count = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal count
        count += 1
        if count > 2:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        run.request_stop(signal.Signals(signum).name)

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_ray(cfg: RunConfig) -> dict[str, Any]:
    """Run `cfg` on Ray (a private local cluster on 127.0.0.1 unless Ray is already initialised).

    SIGINT/SIGTERM stop it gracefully: nothing new is admitted, the tasks in flight get up to
    `cfg.drain_seconds` to finish, the output is closed and metrics say `stopped`. A rerun with the
    same `run_dir` skips what is in the output and does the rest (so does a rerun after SIGKILL).
    """
    deployment = RayRun(cfg)
    try:
        with stop_on_signals(deployment):
            return deployment.run()
    finally:
        deployment.shutdown()


def with_overrides(cfg: RunConfig, **changes: Any) -> RunConfig:
    return replace(cfg, **changes)
