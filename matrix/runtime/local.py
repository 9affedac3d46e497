"""The `local` transport: the whole workflow in one process, asyncio only, no Ray.

Same message, workflow, agents, admission and sink as the Ray P2P transport; only the hop is a
function call. Tests and small jobs use it; it is also the reference a P2P run is checked against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from matrix import clock
from matrix.admission import Admission
from matrix.agent import Agent
from matrix.llm.client import process_stats
from matrix.message import ERROR, Hop, Message
from matrix.metrics import Metrics, TimeSeries
from matrix.runtime.config import RunConfig
from matrix.runtime.report import Progress, build_metrics, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter
from matrix.sources import read_rows
from matrix.workflow import get_workflow

StepHook = Callable[[str, Message], Awaitable[None]]


async def _run_partition(
    cfg: RunConfig,
    partition: int,
    agents: dict[str, Agent],
    metrics: Metrics,
    progress: Progress,
    before_step: StepHook | None = None,
) -> tuple[SinkWriter, Admission]:
    wf = get_workflow(cfg.workflow)
    sink = SinkWriter(cfg.output_path(partition), flush_every=cfg.flush_every)
    admission: Admission

    async def finish(msg: Message) -> None:
        msg.route["partition"] = partition  # as the Ray transport's admission records it
        if sink.accept(msg):
            if admission.credit(msg.key):
                metrics.inc("in_flight", "", -1)
            metrics.inc("completion_tokens", "", msg.usage().completion_tokens)
        progress.update(sink.stats.finished + sink.stats.failed, admission.in_flight, sink.stats.failed)

    async def run_task(msg: Message) -> None:
        role: str | None = wf.start(msg)
        sent = clock.wall()
        while role is not None:
            hop = Hop(role=role, actor="local", sent=sent, started=clock.wall())
            msg.hops.append(hop)
            metrics.observe("queue_wait_seconds", hop.started - sent, role)
            try:
                if before_step is not None:
                    await before_step(role, msg)
                msg = await agents[role].step(msg)
            except Exception as exc:  # a step's own failure ends the task as an error row
                msg.fail(f"step error in role {role!r}: {type(exc).__name__}: {exc}")
                metrics.inc("step_errors", role)
            hop.finished = sent = clock.wall()
            metrics.observe("step_seconds", hop.finished - hop.started, role)
            metrics.inc("hops", role)
            metrics.inc("messages")
            if msg.status == ERROR:
                break
            role = wf.advance(msg)
        await finish(msg)

    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def send(msg: Message) -> None:
        msg.route["partition"] = partition
        metrics.inc("in_flight")
        t = asyncio.create_task(run_task(msg))
        tasks.add(t)
        t.add_done_callback(_reap)

    def _reap(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            failures.append(t.exception())  # type: ignore[arg-type]

    rows = read_rows(
        cfg.source, id_field=cfg.id_field, partition=partition, num_partitions=cfg.num_partitions, limit=cfg.limit
    )
    admission = Admission(
        rows,
        workflow=cfg.workflow,
        send=send,
        emit_error=finish,
        max_concurrent_tasks=cfg.partition_bound(),
        num_trials=cfg.num_trials,
        seed=cfg.seed,
        done=sink.done,
        lease_seconds=cfg.lease_seconds,
        max_attempts=cfg.max_attempts,
    )
    try:
        run = asyncio.create_task(admission.run())
        while not run.done():
            await asyncio.wait({run}, timeout=0.5)
            if failures:
                run.cancel()
                raise RuntimeError(f"internal error in the local transport: {failures[0]!r}") from failures[0]
        await run
    finally:
        for t in list(tasks):
            t.cancel()
        sink.close()
    return sink, admission


async def run_local_async(cfg: RunConfig, *, before_step: StepHook | None = None) -> dict[str, Any]:
    """Run `cfg` on the running loop. `before_step(role, msg)` is awaited before every step (the virtual
    clock charges each hop's CPU there, on the CPU of the actor that would run it)."""
    cfg.check()
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    launched_at = clock.wall()
    agents = {spec.role: spec.build() for spec in cfg.roles}
    for agent in agents.values():
        await agent.setup()
    metrics = Metrics()
    series = TimeSeries()
    progress = Progress(None, enabled=cfg.progress)
    calls_before = process_stats()
    ready_at = clock.wall()  # the window (matrix.runtime.window): every role set up
    t0 = clock.now()
    sampler = asyncio.create_task(_sample(series, metrics, t0))
    try:
        results = await asyncio.gather(
            *(_run_partition(cfg, p, agents, metrics, progress, before_step) for p in range(cfg.num_partitions))
        )
    finally:
        sampler.cancel()
        for agent in agents.values():
            await agent.close()
    wall = clock.now() - t0
    sinks = [s.stats for s, _ in results]
    progress.update(sum(s.finished + s.failed for s in sinks), 0, sum(s.failed for s in sinks), force=True)
    out = build_metrics(
        labels={"transport": "local", **cfg.labels},
        wall_seconds=wall,
        sinks=sinks,
        admissions=[a.snapshot() for _, a in results],
        metrics=metrics,
        # Every LLM client of this process, so a second run at the same time in it would count here too.
        extra={
            "llm_calls": process_stats().since(calls_before).to_dict(),
            **window_record(launched_at=launched_at, ready_at=ready_at, start_at=ready_at, end_at=ready_at + wall),
        },
    )
    return write_run_files(cfg.run_dir, out, series.rows, metrics.to_prometheus())


async def _sample(series: TimeSeries, metrics: Metrics, t0: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        series.sample(
            clock.now() - t0,
            messages=metrics.counter("messages"),
            tasks_in_flight=metrics.counter("in_flight"),
            completion_tokens=metrics.counter("completion_tokens"),
        )


def run_local(cfg: RunConfig) -> dict[str, Any]:
    """Run `cfg` in this process and return the metrics written to `run_dir/metrics.json`."""
    return asyncio.run(run_local_async(cfg))
