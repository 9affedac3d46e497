"""The Ray Data batch pipeline: the baseline the P2P runtime is measured against on NaturalReasoning.

This is how the paper's baseline curates web documents (section 5.2, Table 9): the documents form a
Ray Data dataset, and `map_batches` hands fixed-size batches of them to a pool of `data_parallelism`
actors. Inside an actor a batch is one `asyncio.gather` over its rows; each row runs the three
stages in sequence (English check and classifier on the small model, then score and question on
the large model) and stops at the first drop:

    batch of B rows --gather--> row 1: filter -> score -> question
                                row 2: filter (dropped)
                                ...
                                row B: filter -> score (dropped)
                     <-- the batch returns when its slowest row is done (a barrier)

An actor takes its next batch only after the whole current batch has returned, so at most
B x data_parallelism documents are in flight, and a slot whose row finished early stays idle until
the batch's slowest row ends. The P2P runtime has no such barrier; that difference is what the
comparison measures. The result rows are written by Ray Data (`write_json` into
`run_dir/ray_data_output/`) and then gathered into `run_dir/output.jsonl`, one row per document.

The decisions (prompts, sampling, seeds, parsing, thresholds) are those of
`matrix.cases.nr.curate`, the code the P2P roles run, and the rows follow the P2P
output schema (`Message.to_row()`), so `natural_reasoning.funnel`/`quality`/`decisions` read both
systems' output alike. Error reasons use the P2P runtime's wording too ("bad input row at ...",
"step error in role ...").

Deviations from the reference script, on purpose:

- Input is read with `matrix.sources.read_rows` on the driver, not `ray.data.read_json`. A line
  that is not JSON or not UTF-8 then becomes one error row naming its file and line, and the other
  rows are processed; `read_json` fails the whole block (and with it the run) on such a line. The
  records then enter Ray Data with `ray.data.from_items`, so the whole input (after `limit`) is held
  in the object store at once; give very large inputs in shards or with a limit.
- The actor pool is set with `compute=ActorPoolStrategy(size=...)`, the current spelling of the
  deprecated `concurrency=`. Each actor reserves `worker_cpus` CPUs; by default the pool shares half
  of the cluster's CPUs (at most one per actor), because the work is waiting on HTTP and a whole CPU
  per actor would silently cap the pool at the core count (the rest of the actors would never
  start), while the other half stays free for Ray Data's write tasks.
- A row whose LLM call fails after the client's retries becomes an error row instead of failing the
  batch; the batch and the run go on.
- The run's window (`matrix.runtime.window`, the same for every system) starts when the whole
  actor pool is up, not when the dataset is built. Ray Data launches its pool lazily, inside the
  execution, so two things make that moment exact: `DataContext.wait_for_min_actors_s` makes the
  map operator wait for all `data_parallelism` actors to be constructed before it hands out the
  first batch (without it, batches start on the first actors up while the others still launch),
  and each actor reports the time its constructor finished. The window starts at the last of those
  (or at the first batch's start, should a batch ever start earlier); everything before it, the
  dataset's build and the pool's launch, is `startup_seconds`. The input is read on the driver
  and put into the object store before the pool launches, so that is startup too; the P2P
  runtime reads its input inside its window, as it streams it (both take well under a second at
  6,000 documents).

    python -m baselines.ray_data_batch --input docs.jsonl --small-url http://h:8000 --small-model S \\
        --large-url http://h:8001 --large-model L --batch-size 50 --parallelism 4 --out results/runs/nr-ray-data
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from matrix.admission import task_seed
from matrix.cases import nr
from matrix.llm.client import LLMClient, RetryPolicy, message_text
from matrix.message import DONE, ERROR, Hop, Message, Turn, Usage
from matrix.metrics import Metrics
from matrix.runtime.report import AdmissionCounts, build_metrics, exact_summary, write_json, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter
from matrix.sources import read_rows

SYSTEM = "ray-data"
TRANSPORT = "ray-data"
STAGING = "ray_data_output"
PROGRESS_SECONDS = 10.0
DESCRIPTION = "NaturalReasoning on Ray Data (the baseline): map_batches over a fixed actor pool, one barrier per batch."


# ------------------------------------------------------------------------------------------ config


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BatchConfig.{name} must be a positive integer, got {value!r}")


def _urls(name: str, value: Any) -> list[str]:
    urls = [value] if isinstance(value, str) else [str(u) for u in value or ()]
    urls = [u for u in urls if u.strip()]
    if not urls:
        raise ValueError(f"BatchConfig.{name} is empty: give at least one OpenAI-compatible base URL")
    return urls


@dataclass
class BatchConfig:
    """One batch run: the two model pools, the shared NR settings, the batch shape and the output.

    `small_urls` serve the filter stage's classifier, `large_urls` the score and question stages.
    `batch_size` rows go to an actor at once and `data_parallelism` actors run (the paper's best
    baseline setting is 240 x 50). `labels` are copied into metrics.json (`time_scale` there scales
    wall time into measured time for simulated servers). `retry` is the client's retry policy
    (None: the client's default, as the P2P roles use). `worker_cpus` is what each actor reserves
    (None: `auto_worker_cpus`). `pool_start_timeout_s` is how long the actor pool may take to
    start before the run fails (Ray Data's `wait_for_min_actors_s`).
    """

    small_urls: Sequence[str]
    large_urls: Sequence[str]
    small_model: str | None
    large_model: str | None
    settings: nr.NRSettings = field(default_factory=nr.NRSettings)
    batch_size: int = 50
    data_parallelism: int = 4
    run_dir: Path = Path("results/runs/nr-ray-data")
    labels: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    max_concurrency_per_replica: int = 1024
    limit: int | None = None
    worker_cpus: float | None = None
    id_field: str | None = "id"
    retry: RetryPolicy | None = None
    pool_start_timeout_s: int = 600

    def __post_init__(self) -> None:
        self.small_urls = _urls("small_urls", self.small_urls)
        self.large_urls = _urls("large_urls", self.large_urls)
        for name in ("small_model", "large_model"):
            if not getattr(self, name):
                raise ValueError(f"BatchConfig.{name} is not set: every request needs a model name")
        if not isinstance(self.settings, nr.NRSettings):
            raise TypeError(f"BatchConfig.settings must be an NRSettings, got {type(self.settings).__name__}")
        _positive_int("batch_size", self.batch_size)
        _positive_int("data_parallelism", self.data_parallelism)
        _positive_int("max_concurrency_per_replica", self.max_concurrency_per_replica)
        _positive_int("pool_start_timeout_s", self.pool_start_timeout_s)
        if self.limit is not None:
            _positive_int("limit", self.limit)
        cpus = self.worker_cpus
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus < 0):
            raise ValueError(f"BatchConfig.worker_cpus must be a number >= 0 or None (auto), got {cpus!r}")
        self.run_dir = Path(self.run_dir)

    @property
    def output_path(self) -> Path:
        return self.run_dir / "output.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": SYSTEM,
            "small_urls": list(self.small_urls),
            "large_urls": list(self.large_urls),
            "small_model": self.small_model,
            "large_model": self.large_model,
            "settings": self.settings.to_dict(),
            "batch_size": self.batch_size,
            "data_parallelism": self.data_parallelism,
            "in_flight_bound": self.batch_size * self.data_parallelism,
            "worker_cpus": self.worker_cpus,
            "max_concurrency_per_replica": self.max_concurrency_per_replica,
            "limit": self.limit,
            "id_field": self.id_field,
            "retry": asdict(self.retry) if self.retry else None,
            "pool_start_timeout_s": self.pool_start_timeout_s,
            "run_dir": str(self.run_dir),
            "labels": dict(self.labels),
        }


# ------------------------------------------------------------------------------------------ worker


@ray.remote(num_cpus=0)
class Tally:
    """What the workers report: when each one was ready (constructed), and after every batch its
    counts, for the progress line and client stats."""

    def __init__(self) -> None:
        self.ready_at: dict[str, float] = {}
        self.docs = 0
        self.failed = 0
        self.completion_tokens = 0
        self.batches = 0
        self.clients: dict[str, dict[str, Any]] = {}

    def ready(self, worker: str, at: float) -> None:
        self.ready_at.setdefault(worker, at)  # a restarted actor keeps its first time

    def add(self, worker: str, docs: int, failed: int, completion_tokens: int, clients: dict[str, Any]) -> None:
        self.docs += docs
        self.failed += failed
        self.completion_tokens += completion_tokens
        self.batches += 1
        self.clients[worker] = clients  # cumulative per worker: the latest snapshot wins

    def snapshot(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "failed": self.failed,
            "completion_tokens": self.completion_tokens,
            "batches": self.batches,
            "clients": dict(self.clients),
            "ready_at": dict(self.ready_at),
        }


class NRBatchWorker:
    """The callable class `map_batches` runs in each pool actor.

    It keeps one asyncio event loop and two LLM clients (small pool for the filter stage, large pool
    for score and question) for its whole life, so connections are pooled across batches. Each call
    processes one batch: every row concurrently with `asyncio.gather`, the call returning when the
    last row is done. The batch it returns has two columns: `index` (the input position) and
    `row_json` (the output row, a P2P-schema JSON string).

    Timestamps on a row: `created` is when its batch started, each hop ends when that stage's reply
    came back, `route.work_finished` is when the row's own stages ended and `finished` is when the
    batch returned, the first moment its result exists outside the actor. So end-to-end latency
    includes the wait at the batch barrier.

    The constructor's last act is to tell the tally when it finished: the pool is ready when its
    last actor is (`pool_ready_at`).
    """

    def __init__(
        self,
        *,
        small_urls: Sequence[str],
        large_urls: Sequence[str],
        small_model: str | None,
        large_model: str | None,
        settings: Mapping[str, Any],
        max_concurrency: int,
        retry: RetryPolicy | None = None,
        tally: Any = None,
    ) -> None:
        self.settings = nr.NRSettings.from_dict(settings)
        self.loop = asyncio.new_event_loop()
        self.small = LLMClient(list(small_urls), model=small_model, max_concurrency=max_concurrency, retry=retry)
        self.large = LLMClient(list(large_urls), model=large_model, max_concurrency=max_concurrency, retry=retry)
        self.tally = tally
        self.batches = 0
        actor = ""
        if ray.is_initialized():  # asking Ray for the runtime context starts a Ray instance when none is up
            try:
                actor = ray.get_runtime_context().get_actor_id() or ""
            except Exception:  # outside an actor (unit use): any stable name will do
                actor = ""
        self.name = "ray-data-" + (actor[:8] or f"{id(self):x}")
        if tally is not None:
            ray.get(tally.ready.remote(self.name, time.time()))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        records = batch.to_dict("records")
        self.batches += 1
        batch_id = f"{self.name}#{self.batches}"
        started = time.time()
        # Ray Data may call from a pool thread with no current loop: the gather is built inside ours.
        results = self.loop.run_until_complete(self._gather(records, started))
        ended = time.time()
        rows: list[str] = []
        failed = tokens = 0
        for rec, res in zip(records, results, strict=True):
            if isinstance(res, BaseException):  # a bug in this module, not the row's: still one row
                msg = self._message(rec, started)
                msg.fail(f"batch worker error: {type(res).__name__}: {res}")
                res = msg
            res.finished = ended
            res.route.update(batch=batch_id, batch_rows=len(records), batch_started=started, batch_finished=ended)
            failed += res.status == ERROR
            tokens += res.usage().completion_tokens
            rows.append(json.dumps(res.to_row(), ensure_ascii=False, default=str))
        if self.tally is not None:
            # Waited on, so the driver's last snapshot includes this batch.
            ray.get(self.tally.add.remote(self.name, len(records), failed, tokens, self.client_stats()))
        return pd.DataFrame({"index": [int(r["index"]) for r in records], "row_json": rows})

    async def _gather(self, records: list[dict[str, Any]], started: float) -> list[Message | BaseException]:
        return await asyncio.gather(*(self._row(r, started) for r in records), return_exceptions=True)

    def client_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": 0, "retries": 0, "failures": 0, "by_role": {}}
        for client in (self.small, self.large):
            s = client.stats()
            out["requests"] += s.requests
            out["retries"] += s.retries
            out["failures"] += s.failures
            for role, usage in client.usage.snapshot().items():
                mine = out["by_role"].setdefault(role, {})
                for k, v in usage.items():
                    mine[k] = mine.get(k, 0) + v
        return out

    def _message(self, rec: Mapping[str, Any], started: float) -> Message:
        row = json.loads(rec["row_json"]) if rec.get("row_json") else None
        msg = Message(
            task_id=str(rec["task_id"]),
            workflow=nr.WORKFLOW,
            row=row,
            trial=0,
            seed=int(rec["seed"]),
            created=started,
        )
        msg.route = {"role": None, "location": str(rec["location"]), "worker": self.name}
        return msg

    async def _row(self, rec: Mapping[str, Any], started: float) -> Message:
        """One document through the three stages (or its error row); never raises for the row's own faults."""
        msg = await self._stages(rec, started)
        msg.route.setdefault("work_finished", time.time())
        return msg

    async def _stages(self, rec: Mapping[str, Any], started: float) -> Message:
        msg = self._message(rec, started)
        location = msg.route["location"]
        if rec.get("error"):
            return msg.fail(str(rec["error"]))
        calls: list[tuple[str, float, Mapping[str, Any]]] = []  # (stage, reply time, response)
        current = ["filter"]

        async def call(
            stage: str, messages: list[dict[str, str]], body: dict[str, Any], seed: int
        ) -> Mapping[str, Any]:
            current[0] = stage
            client = self.small if stage == "filter" else self.large
            # The same call, argument order included, as the P2P roles make (`_NRStage._call`).
            resp = await client.chat(messages, role=stage, seed=seed, **body)
            calls.append((stage, time.time(), resp))
            return resp

        try:
            results = await nr.curate(msg.row, msg.task_id, call, self.settings, msg.trial)
        except nr.BadDocument as exc:
            msg.fail(f"step error in role 'filter': BadDocument: {exc} (input {location})")
            msg.hops.append(Hop("filter", self.name, started, started, time.time()))
            return msg
        except Exception as exc:  # an LLM call that failed after the client's retries, or a 4xx
            failed_at = time.time()
            # Calls that returned before the failure all kept the row (else it would have stopped);
            # their turns are kept so that their tokens are counted, as the P2P runtime keeps them.
            prev = started
            for stage, at, resp in calls:
                text = message_text(resp)
                usage = Usage()
                usage.add(resp.get("usage"))
                msg.turns.append(Turn(stage, text, usage, {"keep": True, "reason": None}))
                msg.hops.append(Hop(stage, self.name, prev, prev, at))
                prev = at
            msg.hops.append(Hop(current[0], self.name, prev, prev, failed_at))
            msg.fail(f"step error in role {current[0]!r}: {type(exc).__name__}: {exc}")
            return msg
        work_done = time.time()
        replied = {stage: at for stage, at, _ in calls}
        prev = started
        for res in results:
            at = replied.get(res.stage, work_done)
            msg.turns.append(res.turn())
            msg.hops.append(Hop(res.stage, self.name, prev, prev, at))
            prev = at
        msg.status = DONE
        msg.route["stop"] = True
        msg.route["work_finished"] = work_done
        return msg

    def __del__(self) -> None:
        # Ray Data drops the UDF when the pool shuts down gracefully; close the HTTP sessions then.
        loop = getattr(self, "loop", None)
        if loop is None or loop.is_closed() or loop.is_running():
            return
        try:
            loop.run_until_complete(self._close())
            loop.close()
        except Exception:
            pass

    async def _close(self) -> None:
        await self.small.close()
        await self.large.close()


# ------------------------------------------------------------------------------------------ driver


def plan_records(
    source: str | Path | Iterable[dict[str, Any]],
    done: set[tuple[str, int]],
    stats: AdmissionCounts,
    *,
    id_field: str | None = "id",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The small records that enter the dataset: one per input row not yet in the output.

    A line the reader could not parse, or a repeated task id, becomes a record with `error` set
    (the P2P runtime's wording), which the worker turns into an error row without any LLM call.
    """
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for src in read_rows(source, id_field=id_field, limit=limit):
        task_id, error = src.task_id, src.error
        if error is None and task_id in seen:
            error = f"duplicate task id {task_id!r} (first at {seen[task_id]})"
            task_id = f"{task_id}@{src.location}"
        elif error is None:
            seen[task_id] = src.location
        if (task_id, 0) in done:
            stats.skipped_done += 1
            continue
        if error is not None:
            stats.bad_rows += 1
        else:
            stats.admitted += 1
        records.append(
            {
                "index": src.index,
                "task_id": task_id,
                "location": src.location,
                "seed": task_seed(0, task_id, 0),
                "row_json": json.dumps(src.row, ensure_ascii=False, default=str) if src.row is not None else "",
                "error": f"bad input row at {src.location}: {error}" if error is not None else "",
            }
        )
    return records


def message_of(row: Mapping[str, Any]) -> Message:
    """The Message an output row was made from (the inverse of `Message.to_row()`)."""
    return Message(
        task_id=str(row["task_id"]),
        workflow=str(row["workflow"]),
        row=row.get("row"),
        trial=int(row.get("trial", 0)),
        seed=int(row.get("seed", 0)),
        route=dict(row.get("route") or {}),
        turns=[
            Turn(str(t["role"]), t.get("content"), Usage(**(t.get("usage") or {})), dict(t.get("meta") or {}))
            for t in row.get("turns") or []
        ],
        hops=[Hop(**h) for h in row.get("hops") or []],
        status=str(row.get("status", DONE)),
        error=row.get("error"),
        attempt=int(row.get("attempt", 1)),
        created=float(row.get("created", 0.0)),
        finished=float(row.get("finished", 0.0)),
        version=int(row.get("version", 1)),
    )


def gather_output(staging: Path) -> list[tuple[int, dict[str, Any]]]:
    """(input index, output row) for every row Ray Data wrote under `staging`, in input order."""
    found: list[tuple[int, dict[str, Any]]] = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file() and not p.name.startswith(".")):
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    found.append((int(rec["index"]), json.loads(rec["row_json"])))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{line_no}: not a row written by this pipeline ({exc})") from exc
    found.sort(key=lambda item: item[0])
    return found


def read_output(path: Path) -> list[dict[str, Any]]:
    """Every row of an output JSONL (empty when the file does not exist)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _batches(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """batch id -> (started, finished, rows), from the route the worker stamped on each row."""
    out: dict[str, tuple[float, float, int]] = {}
    for r in rows:
        route = r.get("route") or {}
        if "batch" in route:
            out[str(route["batch"])] = (
                float(route["batch_started"]),
                float(route["batch_finished"]),
                int(route["batch_rows"]),
            )
    return out


def _peak(intervals: Iterable[tuple[float, float, int]]) -> int:
    """The most rows held at once by intervals (start, end, rows)."""
    # At the same instant ends (negative counts) sort before starts, so back-to-back batches don't add up.
    events = sorted(ev for s, e, n in intervals for ev in ((s, n), (e, -n)))
    peak = level = 0
    for _, n in events:
        level += n
        peak = max(peak, level)
    return peak


def timeseries(rows: Sequence[Mapping[str, Any]], t0: float, end: float) -> list[dict[str, float]]:
    """Per-second samples from the rows' own timestamps (seconds since `t0`, wall clock).

    completion_tokens is cumulative over LLM replies (each turn's tokens at its hop's end);
    tasks_done counts rows whose batch has returned, tasks_work_done rows whose own stages ended;
    tasks_in_flight counts rows in a running batch and tasks_active those of them still working,
    so their difference is the slots the batch barrier keeps idle.
    """
    token_events: list[tuple[float, int]] = []
    released: list[float] = []
    worked: list[float] = []
    for r in rows:
        hops = r.get("hops") or []
        for i, turn in enumerate(r.get("turns") or []):
            at = float(hops[i]["finished"]) if i < len(hops) else float(r.get("finished") or end)
            token_events.append((at, int((turn.get("usage") or {}).get("completion_tokens") or 0)))
        route = r.get("route") or {}
        if "batch_finished" in route:
            released.append(float(route["batch_finished"]))
            worked.append(float(route.get("work_finished") or route["batch_finished"]))
    token_events.sort()
    times = [t for t, _ in token_events]
    cumulative = []
    total = 0
    for _, n in token_events:
        total += n
        cumulative.append(total)
    released.sort()
    worked.sort()
    batches = _batches(rows)
    starts = sorted(s for s, _, n in batches.values() for _ in range(n))
    out: list[dict[str, float]] = []
    for second in range(math.ceil(max(0.0, end - t0)) + 1):
        t = t0 + second
        k = bisect.bisect_right(times, t)
        started = bisect.bisect_right(starts, t)
        done = bisect.bisect_right(released, t)
        work_done = bisect.bisect_right(worked, t)
        out.append(
            {
                "t": float(second),
                "completion_tokens": float(cumulative[k - 1] if k else 0),
                "tasks_done": float(done),
                "tasks_work_done": float(work_done),
                "tasks_in_flight": float(started - done),
                "tasks_active": float(max(0, started - work_done)),
            }
        )
    return out


def _batch_report(rows: Sequence[Mapping[str, Any]], cfg: BatchConfig, t0: float) -> dict[str, Any]:
    """How the batches went: sizes, durations, the share of slot time the barrier left idle, and how
    long after `t0` (the window's start, epoch seconds) the first batch started."""
    batches = _batches(rows)
    slot = busy = 0.0
    for r in rows:
        route = r.get("route") or {}
        if "batch_started" not in route:
            continue
        slot += float(route["batch_finished"]) - float(route["batch_started"])
        busy += float(route.get("work_finished") or route["batch_finished"]) - float(route["batch_started"])
    workers = {b.split("#")[0] for b in batches}
    first = min((s for s, _, _ in batches.values()), default=None)
    return {
        "batch_size": cfg.batch_size,
        "data_parallelism": cfg.data_parallelism,
        "in_flight_bound": cfg.batch_size * cfg.data_parallelism,
        "worker_cpus": worker_cpus(cfg),
        "workers_used": len(workers),
        "batches": len(batches),
        "batch_rows": exact_summary(sorted(float(n) for _, _, n in batches.values())),
        "batch_seconds": exact_summary(sorted(e - s for s, e, _ in batches.values())),
        "barrier_idle_fraction": 1.0 - busy / slot if slot > 0 else 0.0,
        "first_batch_after_start_seconds": first - t0 if first is not None else None,
    }


class _Reporter:
    """The progress line on stderr every PROGRESS_SECONDS while Ray Data runs (a daemon thread)."""

    def __init__(self, tally: Any, total: int, enabled: bool) -> None:
        self.tally = tally
        self.total = total
        self.start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="ray-data-progress", daemon=True)
        if enabled:
            self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(PROGRESS_SECONDS):
            self.line()

    def line(self) -> None:
        try:
            snap = ray.get(self.tally.snapshot.remote(), timeout=10)
        except Exception as exc:  # progress is best effort; the run goes on
            print(f"{SYSTEM}: no progress snapshot ({type(exc).__name__})", file=sys.stderr, flush=True)
            return
        elapsed = max(1e-9, time.monotonic() - self.start)
        print(
            f"{SYSTEM}: {snap['docs']}/{self.total} documents done, {snap['failed']} failed, "
            f"{snap['batches']} batches, {snap['completion_tokens'] / elapsed:.1f} tokens/s, {elapsed:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self, final: bool) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=15)
        if final:
            self.line()


def auto_worker_cpus(data_parallelism: int) -> float:
    """CPUs per actor when none are given: the pool shares half the cluster's CPUs, at most one each."""
    total = float(ray.cluster_resources().get("CPU", 0.0))
    return round(min(1.0, 0.5 * total / data_parallelism), 4)


def worker_cpus(cfg: BatchConfig) -> float:
    return float(cfg.worker_cpus) if cfg.worker_cpus is not None else auto_worker_cpus(cfg.data_parallelism)


def worker_kwargs(cfg: BatchConfig, tally: Any = None) -> dict[str, Any]:
    """The constructor arguments of every pool actor (`NRBatchWorker(**worker_kwargs(cfg))`)."""
    return {
        "small_urls": list(cfg.small_urls),
        "large_urls": list(cfg.large_urls),
        "small_model": cfg.small_model,
        "large_model": cfg.large_model,
        "settings": cfg.settings.to_dict(),
        "max_concurrency": cfg.max_concurrency_per_replica,
        "retry": cfg.retry,
        "tally": tally,
    }


def pool_ready_at(ready_at: Mapping[str, float], pool_size: int) -> float | None:
    """When the pool was up: the `pool_size`-th actor's ready time (an actor restarted later, or one
    beyond the pool, does not move it); None when no actor reported."""
    times = sorted(ready_at.values())
    return times[min(pool_size, len(times)) - 1] if times else None


def _execute(records: list[dict[str, Any]], cfg: BatchConfig, staging: Path, tally: Any) -> None:
    """Build the dataset, run map_batches over the actor pool (started in full before the first
    batch), and write the rows with Ray Data."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    bars, wait = ctx.enable_progress_bars, ctx.wait_for_min_actors_s
    ctx.enable_progress_bars = False  # the progress line above replaces Ray Data's bars
    ctx.wait_for_min_actors_s = cfg.pool_start_timeout_s  # the whole pool is up before the first batch
    try:
        items = ray.data.from_items(records, override_num_blocks=max(1, math.ceil(len(records) / cfg.batch_size)))
        ds = items.map_batches(
            NRBatchWorker,
            fn_constructor_kwargs=worker_kwargs(cfg, tally),
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.data_parallelism),
            num_cpus=worker_cpus(cfg),
            batch_format="pandas",
        )
        ds.write_json(str(staging))
    finally:
        ctx.enable_progress_bars, ctx.wait_for_min_actors_s = bars, wait


def run_batch(source: str | Path | Iterable[dict[str, Any]], cfg: BatchConfig) -> dict[str, Any]:
    """Run every input row not yet in `cfg.run_dir/output.jsonl` through the Ray Data pipeline.

    `source` is a .jsonl / .jsonl.gz / .jsonl.zst path (anything `matrix.sources.read_rows` reads) or
    a list of dicts. Ray must be initialised by the caller (`matrix.runtime.ray_p2p.ensure_ray()`).
    Writes output.jsonl, config.json, metrics.json (the results contract plus NR quality over every
    row in the output) and timeseries.json, and returns the metrics.
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call matrix.runtime.ray_p2p.ensure_ray() (or ray.init) first")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / "config.json", {**cfg.to_dict(), "input": _describe(source)})
    staging = cfg.run_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)  # our own staging area: rows from an earlier run are in output.jsonl or lost
    sink = SinkWriter(cfg.output_path, flush_every=1024, flush_seconds=math.inf)
    stats = AdmissionCounts()
    try:
        records = plan_records(source, sink.done, stats, id_field=cfg.id_field, limit=cfg.limit)
        tally = Tally.remote() if records else None  # type: ignore[attr-defined]
        reporter = _Reporter(tally, len(records), cfg.progress and tally is not None)
        launched_at, t0 = time.time(), time.monotonic()
        ok = False
        try:
            if records:
                _execute(records, cfg, staging, tally)
            ok = True
        finally:
            total = time.monotonic() - t0
            reporter.close(final=ok and cfg.progress and tally is not None)
            client = ray.get(tally.snapshot.remote()) if ok and tally is not None else {"clients": {}}
            if tally is not None:
                ray.kill(tally)
        got = gather_output(staging) if staging.exists() else []
        new_rows = [row for _, row in got]
        # The window: from the pool being up (or the first batch's start, were it earlier) to the end.
        ready_at = pool_ready_at(client.get("ready_at") or {}, cfg.data_parallelism) or launched_at
        first = min((s for s, _, _ in _batches(new_rows).values()), default=ready_at)
        start_at = min(ready_at, first)
        wall = max(0.0, total - (start_at - launched_at))
        end_at = start_at + wall
        for row in new_rows:
            sink.accept(message_of(row))
        stats.in_flight = len(records) - len(got)  # rows Ray Data never returned (0 unless something broke)
    finally:
        sink.close()

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
    clients = list(client["clients"].values())
    by_role: dict[str, dict[str, int]] = {}
    for c in clients:
        for role, usage in c["by_role"].items():
            mine = by_role.setdefault(role, {})
            for k, v in usage.items():
                mine[k] = mine.get(k, 0) + v
    out = build_metrics(
        labels={"case": nr.WORKFLOW, "transport": TRANSPORT, "system": SYSTEM, **cfg.labels},
        wall_seconds=wall,
        sinks=[sink.stats],
        admissions=[stats.snapshot()],
        metrics=metrics,
        extra={
            "quality": nr.quality(read_output(cfg.output_path)),
            "documents": len(records),
            "bad_documents": sum(1 for r in new_rows if "BadDocument" in str(r.get("error") or "")),
            **window_record(launched_at=launched_at, ready_at=ready_at, start_at=start_at, end_at=end_at),
            "ray_data": _batch_report(new_rows, cfg, start_at),
            "llm_client": {
                "requests": sum(c["requests"] for c in clients),
                "retries": sum(c["retries"] for c in clients),
                "failures": sum(c["failures"] for c in clients),
                "by_role": by_role,
            },
        },
    )
    return write_run_files(cfg.run_dir, out, timeseries(new_rows, start_at, end_at), metrics.to_prometheus())


def _describe(source: Any) -> str:
    if isinstance(source, str | Path):
        return str(source)
    return f"<{len(source)} rows in memory>" if isinstance(source, Sequence) else "<rows in memory>"


# --------------------------------------------------------------------------------------------- CLI


def _split(values: Sequence[str]) -> list[str]:
    return [u.strip() for arg in values for u in arg.split(",") if u.strip()]
