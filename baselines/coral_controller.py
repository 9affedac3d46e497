"""Coral's central controller: the baseline the P2P runtime is measured against on the Coral case.

This is how the Coral reference (facebookresearch/collaborative-reasoner) generates its data: one
process and one asyncio loop own every conversation. A sliding window keeps `window` conversations
running; as soon as one ends, the next question starts, so the window stays full. Each
conversation is a plain loop:

    dialogue call (teacher first, then alternating)
      -> extraction call on that turn
      -> matcher rule (agreement or the turn limit)
      -> next dialogue call, or stop

Finished conversations are buffered and appended to the output JSONL in groups of `write_group`
(the reference's output batch size).

To make a P2P run and a controller run comparable, this module sends the same requests as the P2P
roles in `matrix.cases.coral` (same messages, sampling, seeds, role names and sticky key) and
writes output rows in the same schema (`Message.to_row()`), so `coral.quality` reads both alike.
Task ids, per-task seeds, error reasons, resume and duplicate-id handling also match the P2P
runtime. What differs is only the architecture: here one loop drives every step.

    python -m baselines.coral_controller --urls http://127.0.0.1:8000 --model M \\
        --input generated --limit 100 --window 100 --run-dir results/runs/coral-controller
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix import clock
from matrix.admission import task_seed
from matrix.cases.coral import (
    DIALOGUE_ROLES,
    WORKFLOW,
    CoralSettings,
    Question,
    Sampling,
    answers_so_far,
    dialogue,
    dialogue_messages,
    extraction_messages,
    extractor_turn,
    matcher_turn,
    next_speaker,
    quality,
    question_of,
    request_seed,
    verdict,
)
from matrix.llm.client import LLMClient, RetryPolicy, message_text
from matrix.message import DONE, ERROR, Hop, Message, Turn, Usage, new_message
from matrix.metrics import Metrics, TimeSeries
from matrix.runtime.report import AdmissionCounts, Progress, build_metrics, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter
from matrix.sources import read_rows

SYSTEM = "coral-controller"
TRANSPORT = "controller"
ACTOR = "controller"
EXTRACTOR = "extractor"
MATCHER = "matcher"
DESCRIPTION = "Coral's central controller (the baseline): one loop, a sliding window of conversations."


@dataclass
class ControllerConfig:
    """One controller run: where the models are, the protocol settings, the window and the output.

    `labels` (case, system, backend, simulated, time_scale, ...) are copied into metrics.json;
    `labels["time_scale"]` scales wall time into measured time for simulated servers. `seed` is the
    base of the per-task seeds stored on each row (the P2P runtime's default is 0). `retry` is the
    client's retry policy (None: the client's default, the same one the P2P roles use).
    """

    urls: Sequence[str]
    model: str | None
    settings: CoralSettings = field(default_factory=CoralSettings)
    window: int = 100
    write_group: int = 32
    run_dir: Path = Path("results/runs/coral-controller")
    max_concurrency: int = 256
    labels: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    seed: int = 0
    retry: RetryPolicy | None = None
    # The virtual clock's charge for the process's own CPU per LLM request (None: nothing charged;
    # real time needs none, the CPU is really spent). See experiments/virtual.
    request_cpu: Callable[[], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            self.urls = [self.urls]
        self.urls = [str(u) for u in self.urls]
        self.run_dir = Path(self.run_dir)
        if not self.model:
            raise ValueError("ControllerConfig.model is not set: every request needs a model name")
        if not self.urls:
            raise ValueError("ControllerConfig.urls is empty: give at least one model server base URL")
        if self.window < 1:
            raise ValueError(f"ControllerConfig.window must be >= 1 (concurrent conversations), got {self.window}")
        if self.write_group < 1:
            raise ValueError(f"ControllerConfig.write_group must be >= 1 (rows per write), got {self.write_group}")
        if self.max_concurrency < 1:
            raise ValueError(f"ControllerConfig.max_concurrency must be >= 1, got {self.max_concurrency}")
        if not isinstance(self.settings, CoralSettings):
            raise TypeError(f"ControllerConfig.settings must be a CoralSettings, got {type(self.settings).__name__}")

    @property
    def output_path(self) -> Path:
        return self.run_dir / "output.jsonl"


def plan_messages(
    rows: Sequence[dict[str, Any]], done: set[tuple[str, int]], stats: AdmissionCounts, *, seed: int = 0
) -> Iterator[Message]:
    """One message per input row that is not in the output yet, made when the loop asks for it.

    Task ids come from each row's "id" (else its position), as in the P2P runtime. A repeated id
    becomes an already-failed message naming both locations; rows already in `done` are skipped.
    """
    seen: dict[str, str] = {}
    for src in read_rows(rows, id_field="id"):
        task_id, reason = src.task_id, None
        if task_id in seen:
            reason = f"bad input row at {src.location}: duplicate task id {task_id!r} (first at {seen[task_id]})"
            task_id = f"{task_id}@{src.location}"
        else:
            seen[task_id] = src.location
        if (task_id, 0) in done:
            stats.skipped_done += 1
            continue
        if reason is not None:
            msg = new_message(task_id, WORKFLOW, src.row, trial=0).fail(reason)
            msg.route["location"] = src.location
            stats.bad_rows += 1
            yield msg
            continue
        msg = new_message(task_id, WORKFLOW, src.row, trial=0, seed=task_seed(seed, task_id, 0))
        msg.route["location"] = src.location  # as the P2P admission records it
        yield msg


class Conversations:
    """Runs single conversations to their end with one shared client; counts every step."""

    def __init__(
        self,
        llm: LLMClient,
        settings: CoralSettings,
        metrics: Metrics,
        request_cpu: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.llm = llm
        self.settings = settings
        self.metrics = metrics
        self.request_cpu = request_cpu

    async def run(self, msg: Message) -> Message:
        """Drive one conversation until agreement, the turn limit or an error; return its message.

        A failing step (a bad row, an LLM error after the client's retries) ends the conversation
        as an error row with the P2P runtime's reason format; the turns so far are kept.
        """
        q: Question | None = None
        role: str | None = next_speaker(msg.turns)
        msg.route["role"] = role
        msg.route["steps"] = 0
        sent = clock.wall()
        while role is not None:
            hop = Hop(role=role, actor=ACTOR, sent=sent, started=clock.wall())
            msg.hops.append(hop)
            stop = False
            try:
                if q is None:
                    q = question_of(msg.row)
                if role in DIALOGUE_ROLES:
                    await self.speak(msg, q, role)
                elif role == EXTRACTOR:
                    await self.extract(msg, q)
                else:
                    stop = self.match(msg)
            except Exception as exc:  # the conversation's own failure becomes its error row
                msg.fail(f"step error in role {role!r}: {type(exc).__name__}: {exc}")
                self.metrics.inc("step_errors", role)
            hop.finished = sent = clock.wall()
            self.metrics.observe("step_seconds", hop.finished - hop.started, role)
            self.metrics.inc("hops", role)
            self.metrics.inc("messages")
            if msg.status == ERROR:
                break
            msg.route["steps"] = int(msg.route["steps"]) + 1
            role = self.after(msg, role, stop)
            msg.route["role"] = role
        if msg.status != ERROR:
            msg.status = DONE
        return msg

    @staticmethod
    def after(msg: Message, role: str, stop: bool) -> str | None:
        """The step after `role`: speaker -> extractor -> matcher -> next speaker (or the end)."""
        if role in DIALOGUE_ROLES:
            return EXTRACTOR
        if role == EXTRACTOR:
            return MATCHER
        return None if stop else next_speaker(msg.turns)

    async def _chat(
        self, msg: Message, chat: list[dict[str, str]], role: str, seed: int, sampling: Sampling
    ) -> tuple[str, Usage]:
        if self.request_cpu is not None:
            await self.request_cpu()
        # The same call, argument order included, as the P2P roles make, so the request bodies match.
        reply = await self.llm.chat(chat, role=role, sticky_key=msg.task_id, seed=seed, **sampling.body())
        usage = Usage()
        usage.add(reply.get("usage"))
        return message_text(reply), usage

    async def speak(self, msg: Message, q: Question, role: str) -> None:
        """One dialogue turn by `role` (teacher or student) from the conversation so far."""
        said = [(t.role, str(t.content)) for t in msg.turns if t.role in DIALOGUE_ROLES]
        turn_no = len(said) + 1
        seed = request_seed(msg.task_id, msg.trial, turn_no, "dialogue")
        text, usage = await self._chat(msg, dialogue_messages(q, said), role, seed, self.settings.dialogue)
        msg.turns.append(Turn(role, text, usage))

    async def extract(self, msg: Message, q: Question) -> None:
        """The extraction call on the latest dialogue turn, inline in the same loop."""
        said = dialogue(msg.turns)
        seed = request_seed(msg.task_id, msg.trial, len(said), "extract")
        chat = extraction_messages(q, str(said[-1].content))
        text, usage = await self._chat(msg, chat, EXTRACTOR, seed, self.settings.extractor)
        msg.turns.append(extractor_turn(text, usage, len(said)))

    def match(self, msg: Message) -> bool:
        """The stop rule, recorded as a matcher turn; True when the conversation ends."""
        v = verdict(answers_so_far(msg.turns), self.settings.max_turns)
        msg.turns.append(matcher_turn(v))
        msg.route["stop"] = v.stop
        return v.stop


def read_output(path: Path) -> list[dict[str, Any]]:
    """Every row of an output JSONL (empty when the file does not exist)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


async def run_controller_async(rows: list[dict[str, Any]], cfg: ControllerConfig) -> dict[str, Any]:
    """Run every row not yet in `cfg.run_dir/output.jsonl` through the controller.

    Writes output.jsonl, metrics.json (the P2P results contract, with Coral quality over every row
    in the output) and timeseries.json, and returns the metrics.
    """
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    # Rows go out only in whole groups (and the remainder at the end), as in the reference.
    sink = SinkWriter(cfg.output_path, flush_every=cfg.write_group, flush_seconds=math.inf)
    stats = AdmissionCounts()
    metrics = Metrics()
    series = TimeSeries()
    todo = list(plan_messages(rows, sink.done, stats, seed=cfg.seed))
    progress = Progress(len(todo), enabled=cfg.progress, label="conversations")
    pending: set[asyncio.Task[Message]] = set()
    sampler: asyncio.Task[None] | None = None

    def finish(msg: Message) -> None:
        sink.accept(msg)
        progress.update(sink.stats.finished + sink.stats.failed, len(pending), sink.stats.failed)

    launched_at = clock.wall()
    t0 = clock.now()
    wall = 0.0
    try:
        async with LLMClient(
            list(cfg.urls), model=cfg.model, max_concurrency=cfg.max_concurrency, retry=cfg.retry
        ) as llm:
            # The window (matrix.runtime.window) starts here: the client is open; nothing else launches.
            ready_at = clock.wall()
            t0 = clock.now()
            conversations = Conversations(llm, cfg.settings, metrics, cfg.request_cpu)
            sampler = asyncio.create_task(_sample(series, sink, stats, metrics, llm, progress, t0))
            for msg in todo:
                if msg.status == ERROR:  # a bad input row: straight to the output
                    finish(msg)
                    continue
                while len(pending) >= cfg.window:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    stats.in_flight = len(pending)
                    for task in done:
                        finish(task.result())
                pending.add(asyncio.create_task(conversations.run(msg)))
                stats.admitted += 1
                stats.in_flight = len(pending)
                stats.peak_in_flight = max(stats.peak_in_flight, len(pending))
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                stats.in_flight = len(pending)
                for task in done:
                    finish(task.result())
            wall = clock.now() - t0
            client = llm.stats()
            usage = llm.usage.snapshot()
            _sample_once(series, sink, stats, metrics, llm, t0)
    finally:
        if sampler is not None:
            sampler.cancel()
        for task in pending:
            task.cancel()
        sink.close()
    progress.update(sink.stats.finished + sink.stats.failed, 0, sink.stats.failed, force=True)

    out = build_metrics(
        labels={"transport": TRANSPORT, "system": SYSTEM, **cfg.labels},
        wall_seconds=wall,
        sinks=[sink.stats],
        admissions=[stats.snapshot()],
        metrics=metrics,
        extra={
            "quality": quality(read_output(cfg.output_path)),
            "controller": {
                "window": cfg.window,
                "write_group": cfg.write_group,
                "max_concurrency": cfg.max_concurrency,
                "replicas": len(cfg.urls),
                "settings": cfg.settings.to_dict(),
            },
            **window_record(launched_at=launched_at, ready_at=ready_at, start_at=ready_at, end_at=ready_at + wall),
            "llm_client": {
                "requests": client.requests,
                "retries": client.retries,
                "failures": client.failures,
                "by_role": usage,
            },
        },
    )
    return write_run_files(cfg.run_dir, out, series.rows, metrics.to_prometheus())


def _sample_once(
    series: TimeSeries, sink: SinkWriter, stats: AdmissionCounts, metrics: Metrics, llm: LLMClient, t0: float
) -> None:
    series.sample(
        clock.now() - t0,
        tasks_done=sink.stats.finished + sink.stats.failed,
        tasks_in_flight=stats.in_flight,
        completion_tokens=sink.stats.completion_tokens,
        llm_completion_tokens=llm.usage.completion_tokens,
        messages=metrics.counter("messages"),
    )


async def _sample(
    series: TimeSeries,
    sink: SinkWriter,
    stats: AdmissionCounts,
    metrics: Metrics,
    llm: LLMClient,
    progress: Progress,
    t0: float,
) -> None:
    """Once a second: a time-series row and the progress line."""
    while True:
        await asyncio.sleep(1.0)
        _sample_once(series, sink, stats, metrics, llm, t0)
        progress.update(sink.stats.finished + sink.stats.failed, stats.in_flight, sink.stats.failed)


def run_controller(rows: list[dict[str, Any]], cfg: ControllerConfig) -> dict[str, Any]:
    """Run the controller in a fresh event loop and return the metrics written to metrics.json."""
    return asyncio.run(run_controller_async(rows, cfg))
