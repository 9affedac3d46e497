"""A model of the Ray Data batch baseline's scheduling, for the virtual clock (SIMULATED, issue 19).

The real baseline (`baselines.ray_data_batch`) cannot run on one asyncio loop: its rows are
processed inside Ray Data actors, separate processes that Ray's streaming executor feeds. This
module replays the scheduling that the baseline's configuration gets from Ray Data, and runs each
batch's rows with the baseline's own per-row code (`NRBatchWorker`: the same requests, decisions,
error rows and timestamps) against the pools' `LLMClient`, so on the virtual loop only the
scheduling is a model. What it reproduces, read from Ray 2.60's Ray Data:

- Tasks. `from_items(records, override_num_blocks=ceil(n / B))` cuts the rows into that many
  blocks (sizes differ by at most one, the larger first); `map_batches(batch_size=B)` bundles whole
  blocks, in input order, until a bundle holds at least B rows (`EstimateSize`, no slicing), and
  the last, smaller bundle is flushed at the end. One task is one bundle; inside it the UDF is
  called on consecutive batches of B rows (the last one smaller), one after the other. When B
  divides n, as in every reference run, each task is one batch of exactly B rows.
- Dispatch. Tasks go out in input order, each to the least busy actor (fewest tasks in flight),
  as `_ActorPool.select_actors` does, but only while that actor holds fewer than
  `max_tasks_in_flight_per_actor` tasks. The baseline's UDF is a synchronous class, so Ray gives
  each actor `max_concurrency=1` and that bound is 1 x
  `DEFAULT_ACTOR_MAX_TASKS_IN_FLIGHT_TO_MAX_CONCURRENCY_FACTOR` = 2: one batch running and one
  queued behind it. A queued batch is fixed to its actor when it is dispatched, not when the actor
  becomes free, which matters at the start and the tail of a run. Ties between equally busy
  actors are broken as Ray breaks them: the actors' ranks are kept in Ray Data's own `heapdict`,
  updated as `_ActorPool` updates it (on submission and on completion), the actors ready in index
  order (the baseline's `wait_for_min_actors_s` has the whole pool up before the first batch).
- The barrier. An actor runs one batch at a time: all its rows concurrently (the baseline's one
  `asyncio.gather`), and it takes its next batch only when the slowest row has returned.

What it leaves out (so the virtual figures are for the scheduling, not for Ray): actor start-up
(all actors are ready at the window's start, startup 0), the executor's dispatch latency, moving
blocks through the object store, the pandas conversion and the per-batch tally RPC. Output rows,
their order (input order) and metrics.json are those of the baseline; the labels say
`model: "ray-data scheduling model"` and `simulated: True`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from baselines import ray_data_batch
from baselines.ray_data_batch import (
    SYSTEM,
    TRANSPORT,
    BatchConfig,
    NRBatchWorker,
    _batch_report,
    _batches,
    _describe,
    _peak,
    plan_records,
    read_output,
    timeseries,
)
from matrix import clock
from matrix.cases import nr
from matrix.clock import SerialCpu
from matrix.llm.client import LLMClient
from matrix.message import ERROR, Message
from matrix.metrics import Metrics
from matrix.runtime.report import AdmissionCounts, build_metrics, write_json, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter

MODEL = "ray-data scheduling model"
# The measured CPU per request (`matrix bench ceiling`) that each actor pays on its own CPU: our pooled
# client plus the Coral controller's own work per request (prompts, parsing, rows), the measured
# figure closest to an NR actor's client and row work.
CHARGE_KEY = "controller_pooled"
PROGRESS_SECONDS = 10.0  # clock seconds between progress lines (simulated seconds on the virtual clock)


class BatchRunner(Protocol):
    """What the scheduler needs of an actor: one `map_batches` call on a batch of records."""

    async def process(self, records: list[dict[str, Any]]) -> list[Message]: ...


def max_tasks_in_flight_per_actor() -> int:
    """The bound Ray Data puts on the baseline's actors: its global override, else 2 x `max_concurrency` (1)."""
    from ray.data import DataContext
    from ray.data.context import DEFAULT_ACTOR_MAX_TASKS_IN_FLIGHT_TO_MAX_CONCURRENCY_FACTOR as FACTOR

    override = DataContext.get_current().max_tasks_in_flight_per_actor
    return int(override or 1 * FACTOR)


def ray_data_tasks(n_rows: int, batch_size: int) -> list[list[range]]:
    """The baseline's map tasks over `n_rows` input rows: each task a list of its batches (row ranges).

    `from_items` blocks (ceil(n / B) of them, sizes from `divmod`), whole blocks bundled until a
    bundle has at least B rows, each bundle cut into batches of B rows: see the module docstring.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if n_rows <= 0:
        return []
    n_blocks = math.ceil(n_rows / batch_size)
    size, extra = divmod(n_rows, n_blocks)
    tasks: list[list[range]] = []
    start = pending = 0
    for i in range(n_blocks):
        pending += size + (i < extra)
        if pending >= batch_size or i == n_blocks - 1:
            stop = start + pending
            tasks.append([range(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)])
            start, pending = stop, 0
    return tasks


class _ClockTime:
    """The `time` module, except that `time()` is `matrix.clock.wall()` (the loop's epoch time)."""

    def time(self) -> float:
        return clock.wall()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def _row_code_on_clock() -> Iterator[None]:
    """While the model runs, the baseline's row code stamps its hops with `clock.wall()`.

    `NRBatchWorker` stamps hops and `work_finished` with `time.time()`, which on the virtual loop
    is the host's time, not the simulated one. Off the virtual loop `clock.wall()` is `time.time()`,
    so this changes nothing there (and nothing in Ray's actor processes, which this never reaches).
    A bridge until the baseline reads `matrix.clock` itself; then it does nothing.
    """
    if ray_data_batch.time is not time:  # already replaced, or the baseline no longer uses it
        yield
        return
    ray_data_batch.time = _ClockTime()  # type: ignore[assignment]
    try:
        yield
    finally:
        ray_data_batch.time = time


class _Charged:
    """An `LLMClient` whose every request first holds its actor's CPU for the measured client cost."""

    def __init__(self, client: LLMClient, cpu: SerialCpu | None, seconds: float) -> None:
        self.client, self.cpu, self.seconds = client, cpu, seconds

    async def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> dict[str, Any]:
        if self.cpu is not None:
            await self.cpu.charge(self.seconds)
        return await self.client.chat(messages, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class ModelActor(NRBatchWorker):
    """One actor of the pool: the baseline worker's per-row code, without Ray and without its own loop.

    The base `__init__` is not called: it makes an event loop of its own (the model runs on the
    caller's) and asks Ray for the actor id, which starts a Ray instance when none is up. The
    attributes the row code reads are set here instead.

    CPU: Ray Data's actors are separate processes, each with its own interpreter, event loop and
    client, so the client's CPU per request (building the body, JSON both ways, the HTTP stack) is
    spent on that actor's own core: an actor's requests queue for its CPU, but one actor's requests
    never wait for another's. Each request therefore charges `charge` seconds on this actor's own
    `SerialCpu`, not on one shared CPU as for a single-process system (the reference runs reserved a
    fraction of a core per actor on a 2-core machine; one core each is the model's assumption).
    """

    def __init__(
        self,
        name: str,
        *,
        small: LLMClient,
        large: LLMClient,
        settings: nr.NRSettings,
        cpu: SerialCpu | None = None,
        charge: float = 0.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clients = (small, large)
        self.small = _Charged(small, cpu, charge)  # type: ignore[assignment]
        self.large = _Charged(large, cpu, charge)  # type: ignore[assignment]
        self.tally = None
        self.batches = 0
        self.loop = None  # type: ignore[assignment]

    async def process(self, records: list[dict[str, Any]]) -> list[Message]:
        """One `map_batches` call: every row at once, returning when the slowest is done (the barrier)."""
        self.batches += 1
        batch_id = f"{self.name}#{self.batches}"
        started = clock.wall()
        results = await self._gather(records, started)
        ended = clock.wall()
        out: list[Message] = []
        for rec, res in zip(records, results, strict=True):
            if isinstance(res, BaseException):  # a bug in the row code, not the row's: still one row
                msg = self._message(rec, started)
                msg.fail(f"batch worker error: {type(res).__name__}: {res}")
                res = msg
            res.finished = ended
            res.route.update(batch=batch_id, batch_rows=len(records), batch_started=started, batch_finished=ended)
            out.append(res)
        return out

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@dataclasses.dataclass
class _Slot:
    """The dispatcher's view of one actor: tasks assigned and not yet finished, and its task queue."""

    actor: BatchRunner
    index: int
    assigned: int = 0
    queue: asyncio.Queue[list[range] | None] = dataclasses.field(default_factory=asyncio.Queue)


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.docs, self.failed, self.tokens, self.batches = total, 0, 0, 0, 0
        self.t0 = clock.now()

    def add(self, rows: Sequence[Message]) -> None:
        self.docs += len(rows)
        self.failed += sum(m.status == ERROR for m in rows)
        self.tokens += sum(m.usage().completion_tokens for m in rows)
        self.batches += 1

    def line(self) -> None:
        elapsed = max(1e-9, clock.now() - self.t0)
        unit = "virtual s" if clock.is_virtual() else "s"
        print(
            f"{SYSTEM} ({MODEL}): {self.docs}/{self.total} documents done, {self.failed} failed, "
            f"{self.batches} batches, {self.tokens / elapsed:.1f} tokens per {unit}, {elapsed:.0f} {unit}",
            file=sys.stderr,
            flush=True,
        )

    async def every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.line()


async def schedule(
    records: list[dict[str, Any]],
    actors: Sequence[BatchRunner],
    batch_size: int,
    depth: int,
    progress: _Progress | None = None,
) -> list[tuple[int, Message]]:
    """Run every record through the actors as Ray Data would; (input index, row message) per record,
    in the order the batches returned."""
    from ray.data._internal.utils.heapdict import heapdict

    slots = [_Slot(a, i) for i, a in enumerate(actors)]
    ranks: heapdict[int, int] = heapdict()  # actor index -> tasks in flight, as `_ActorPool` keeps it
    for s in slots:
        ranks[s.index] = 0
    freed = asyncio.Condition()
    done: list[tuple[int, Message]] = []

    async def dispatch() -> None:
        for task in ray_data_tasks(len(records), batch_size):
            async with freed:
                await freed.wait_for(lambda: ranks.peekitem()[1] < depth)
                slot = slots[ranks.peekitem()[0]]
                slot.assigned += 1
                ranks[slot.index] = slot.assigned
            slot.queue.put_nowait(task)
        for s in slots:
            s.queue.put_nowait(None)

    async def work(slot: _Slot) -> None:
        while (task := await slot.queue.get()) is not None:
            for batch in task:
                rows = [records[i] for i in batch]
                out = await slot.actor.process(rows)
                done.extend((int(r["index"]), m) for r, m in zip(rows, out, strict=True))
                if progress is not None:
                    progress.add(out)
            async with freed:
                slot.assigned -= 1
                ranks[slot.index] = slot.assigned
                freed.notify_all()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(dispatch())
        for s in slots:
            tg.create_task(work(s))
    return done


async def run_model(
    source: str | Path | Iterable[dict[str, Any]],
    cfg: BatchConfig,
    *,
    cpu: Callable[[str], SerialCpu] | None = None,
    charge: float = 0.0,
    tasks_in_flight_per_actor: int | None = None,
) -> dict[str, Any]:
    """Run the Ray Data baseline's scheduling model on the running loop; write the run directory.

    The same inputs, config and files as `baselines.ray_data_batch.run_batch` (output.jsonl in
    input order, config.json, metrics.json, timeseries.json), on whatever clock the loop keeps.
    `cpu(name)` gives each actor its own `SerialCpu` and `charge` is the client CPU per request
    (seconds) charged on it (None / 0: nothing charged). `tasks_in_flight_per_actor` replaces Ray
    Data's bound (`max_tasks_in_flight_per_actor()`). The window starts when the actors are ready
    (now: they start at once) and ends when the last batch returns.
    """
    depth = tasks_in_flight_per_actor if tasks_in_flight_per_actor is not None else max_tasks_in_flight_per_actor()
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"tasks_in_flight_per_actor must be a positive integer, got {depth!r}")
    if not charge >= 0:
        raise ValueError(f"charge (client CPU seconds per request) must be >= 0, got {charge!r}")
    if cfg.worker_cpus is None:  # every model actor has a CPU of its own (ModelActor)
        cfg = dataclasses.replace(cfg, worker_cpus=1.0)
    labels = {"case": nr.WORKFLOW, "transport": TRANSPORT, "system": SYSTEM, **cfg.labels}
    labels.update(clock="virtual" if clock.is_virtual() else "real", simulated=True, model=MODEL)
    cfg = dataclasses.replace(cfg, labels=labels)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        cfg.run_dir / "config.json",
        {**cfg.to_dict(), "input": _describe(source), "model": MODEL, "tasks_in_flight_per_actor": depth},
    )
    sink = SinkWriter(cfg.output_path, flush_every=1024, flush_seconds=math.inf)
    stats = AdmissionCounts()
    actors: list[ModelActor] = []
    cpus: list[SerialCpu] = []
    try:
        records = plan_records(source, sink.done, stats, id_field=cfg.id_field, limit=cfg.limit)
        for i in range(cfg.data_parallelism):
            name = f"ray-data-model-{i}"
            own = cpu(name) if cpu is not None and charge > 0 else None
            if own is not None:
                cpus.append(own)
            limit, retry = cfg.max_concurrency_per_replica, cfg.retry
            small = LLMClient(list(cfg.small_urls), model=cfg.small_model, max_concurrency=limit, retry=retry)
            large = LLMClient(list(cfg.large_urls), model=cfg.large_model, max_concurrency=limit, retry=retry)
            actors.append(ModelActor(name, small=small, large=large, settings=cfg.settings, cpu=own, charge=charge))
        progress = _Progress(len(records))
        t0_wall, t0 = clock.wall(), clock.now()
        ticker = asyncio.create_task(progress.every(PROGRESS_SECONDS)) if cfg.progress and records else None
        try:
            with _row_code_on_clock():
                got = await schedule(records, actors, cfg.batch_size, depth, progress)
        finally:
            wall, end_wall = clock.now() - t0, clock.wall()
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        if ticker is not None:
            progress.line()
        got.sort(key=lambda item: item[0])
        for _, msg in got:
            sink.accept(msg)
        stats.in_flight = len(records) - len(got)
    finally:
        sink.close()
        for actor in actors:
            await actor.close()

    new_rows = [m.to_row() for _, m in got]
    metrics = Metrics()
    for row in new_rows:
        for hop in row.get("hops") or []:
            metrics.inc("hops", hop["role"])
            metrics.inc("messages")
            metrics.observe("step_seconds", float(hop["finished"]) - float(hop["started"]), hop["role"])
        if row.get("status") == ERROR:
            role = (row.get("hops") or [{}])[-1].get("role")
            if role:
                metrics.inc("step_errors", role)
    stats.peak_in_flight = _peak(_batches(new_rows).values())
    clients = [a.client_stats() for a in actors]
    by_role: dict[str, dict[str, int]] = {}
    for c in clients:
        for role, usage in c["by_role"].items():
            mine = by_role.setdefault(role, {})
            for k, v in usage.items():
                mine[k] = mine.get(k, 0) + v
    out = build_metrics(
        labels=labels,
        wall_seconds=wall,
        sinks=[sink.stats],
        admissions=[stats.snapshot()],
        metrics=metrics,
        extra={
            "quality": nr.quality(read_output(cfg.output_path)),
            "documents": len(records),
            "bad_documents": sum(1 for r in new_rows if "BadDocument" in str(r.get("error") or "")),
            # The model's actors are up at once: startup 0, the window from its start to the last batch.
            **window_record(launched_at=t0_wall, ready_at=t0_wall, start_at=t0_wall, end_at=end_wall),
            "ray_data": {**_batch_report(new_rows, cfg, t0_wall), "tasks_in_flight_per_actor": depth},
            "llm_client": {
                "requests": sum(c["requests"] for c in clients),
                "retries": sum(c["retries"] for c in clients),
                "failures": sum(c["failures"] for c in clients),
                "by_role": by_role,
            },
            "cpu": {"charge_key": CHARGE_KEY, "seconds_per_request": charge, "actors": [c.snapshot() for c in cpus]},
        },
    )
    return write_run_files(cfg.run_dir, out, timeseries(new_rows, t0_wall, end_wall), metrics.to_prometheus())
