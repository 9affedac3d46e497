"""The Tau2-bench baseline: tau2's own runner, one process, a pool of threads (paper 5.3, Table 10).

This is `tau2.run.run_tasks` itself, called the way `tau2 run --max-concurrency 500` calls it:
`ThreadPoolExecutor(max_workers=max_concurrency)` runs one simulation per task and trial, each with
a fresh environment, tau2's `LLMAgent` and `UserSimulator` making synchronous litellm calls, tau2's
`Orchestrator` moving the messages and tau2's `evaluate_simulation` giving the reward. We point
litellm at the same OpenAI-compatible servers the P2P system uses, with the same sampling.

Kept as the reference does it:
- after every simulation, `run_tasks` re-reads and rewrites its whole results JSON file under a
  lock (`save_to`); that cost grows with the run and is part of the baseline, so it is kept
  (`rewrite_results=False` turns it off, to measure what it costs);
- litellm's synchronous client, one call per thread at a time.

Changed, and why:
- `skip_failed_samples=True` (a tau2 option): a simulation that raises is scored 0 and the run
  goes on, instead of one error ending the whole run (tau2's default).
- With several model replicas, each litellm call is given the base URL of the replica with the
  fewest calls in flight from this process (`_Spread`), as a Ray Serve or SGLang router in front of
  the replicas would; tau2 itself takes a single `api_base`.
- Retries and timeout are the P2P roles' (the paper's setting: 1,800 s, 3 retries), so that
  neither system outlasts a fault the other gives up on:
  - an empty reply (neither text nor tool calls) is asked again up to `empty_retries` times (3).
    tau2 does this itself in `generate`, counting with the `num_retries` LLM argument, as the P2P
    roles do in `matrix.cases.tau2`; after that the trajectory ends as tau2 ends it (user or
    agent error);
  - a failed call (429, 5xx, timeout, dropped connection) is retried by `_Spread` with the P2P
    client's own `RetryPolicy` (same count, same backoff with jitter, another replica next), and
    litellm's and the OpenAI SDK's own retries are turned off, so that nothing multiplies them;
  - each call may take `timeout_s` (1,800 s), the P2P client's total timeout.

The run's window (`matrix.runtime.window`, the same for every system) starts when tau2's thread
pool starts its first simulation: what `run_tasks` does before (its run info, the results file's
first write) is `startup_seconds`. It ends when `run_tasks` returns, its last results rewrite
included; converting the simulations to rows comes after.

Rows go to `output.jsonl` in the P2P system's schema (one turn per tau2 message, a final
`reward` turn), so `matrix.cases.tau2.quality` and `rescore` read both systems' output alike.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from matrix.cases import tau2 as case
from matrix.llm.client import RetryPolicy, is_retryable_status
from matrix.message import DONE, ERROR, Message, Turn, Usage
from matrix.metrics import Metrics
from matrix.runtime.report import AdmissionCounts, build_metrics, write_json, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter

SYSTEM = "tau2-threads"
TRANSPORT = "threads"
RESULTS_FILE = "tau2_results.json"


@dataclass
class ThreadsConfig:
    """One baseline run: tasks x trials through `run_tasks` with `max_concurrency` threads.

    `timeout_s`, `retry` (None: the client's default `RetryPolicy`, the P2P roles' one) and
    `empty_retries` are the same policy the P2P roles follow (module docstring).
    """

    urls: Sequence[str]
    model: str
    run_dir: Path
    settings: case.Tau2Settings = field(default_factory=case.Tau2Settings)
    task_ids: Sequence[str] | None = None
    limit: int | None = None
    num_trials: int = 1
    max_concurrency: int = 500
    rewrite_results: bool = True
    api_key: str = "EMPTY"
    timeout_s: float = 1800.0
    retry: RetryPolicy | None = None
    empty_retries: int = 3
    labels: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("tau2 threads baseline: need at least one model server URL")
        if self.max_concurrency < 1 or self.num_trials < 1:
            raise ValueError(
                f"max_concurrency and num_trials must be >= 1, got {self.max_concurrency}, {self.num_trials}"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"ThreadsConfig.timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        if isinstance(self.empty_retries, bool) or not isinstance(self.empty_retries, int) or self.empty_retries < 0:
            raise ValueError(f"ThreadsConfig.empty_retries must be an integer >= 0, got {self.empty_retries!r}")
        self.run_dir = Path(self.run_dir)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.retry or RetryPolicy()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["settings"] = self.settings.to_dict()
        out["retry"] = asdict(self.retry_policy)
        return out


def litellm_args(cfg: ThreadsConfig) -> dict[str, Any]:
    """The LLM arguments tau2's runner gets for the agent and the user: the sampling, and in
    `num_retries` how often tau2's `generate` asks again after an empty reply (`_Spread` takes it
    out of the call itself, so that litellm does not retry with it too)."""
    return {**cfg.settings.llm_args(), "api_key": cfg.api_key, "num_retries": cfg.empty_retries}


def _retryable(exc: BaseException) -> bool:
    """The P2P client's rule on a litellm error: 429, 408, 425 and 5xx, timeouts and lost connections."""
    import litellm

    if isinstance(exc, litellm.Timeout | litellm.APIConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and is_retryable_status(status)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class _Spread:
    """Every litellm call of the runner: on the replica with the fewest calls in flight (tau2 takes
    one api_base), with the P2P client's timeout and retries (`retry`; another replica after a
    failure, as the client does), litellm's own retries off."""

    def __init__(
        self, urls: Sequence[str], completion: Any, *, retry: RetryPolicy | None = None, timeout_s: float = 1800.0
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.inflight = [0] * len(self.urls)
        self.calls = 0
        self.attempts = 0
        self.retries = 0
        self.failures = 0
        self.lock = threading.Lock()
        self.completion = completion
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.rng = random.Random()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("num_retries", None)  # tau2's count of empty-reply retries, already used by tau2
        kwargs["max_retries"] = 0  # litellm hands this to the OpenAI SDK, which would retry on its own
        kwargs["timeout"] = self.timeout_s
        with self.lock:
            self.calls += 1
        tried: set[int] = set()
        for attempt in range(self.retry.max_retries + 1):
            with self.lock:
                i = min((j for j in range(len(self.urls)) if j not in tried), key=self.inflight.__getitem__)
                self.inflight[i] += 1
                self.attempts += 1
            try:
                base = self.urls[i]
                kwargs["api_base"] = base if base.endswith("/v1") else base + "/v1"
                return self.completion(*args, **kwargs)
            except Exception as exc:
                if not _retryable(exc) or attempt == self.retry.max_retries:
                    with self.lock:
                        self.failures += 1
                    raise
                tried.add(i)
                if len(tried) == len(self.urls):
                    tried.clear()
                with self.lock:
                    self.retries += 1
                wait = self.retry.delay(attempt, self.rng, _retry_after(exc))
            finally:
                with self.lock:
                    self.inflight[i] -= 1
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def stats(self) -> dict[str, int]:
        return {"requests": self.calls, "attempts": self.attempts, "retries": self.retries, "failures": self.failures}


class _FirstStart:
    """Wraps tau2's `run_task` to note when the runner's pool starts its first simulation."""

    def __init__(self, run_task: Any) -> None:
        self.run_task = run_task
        self.lock = threading.Lock()
        self.at: tuple[float, float] | None = None  # (epoch, monotonic)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if self.at is None:
                self.at = (time.time(), time.monotonic())
        return self.run_task(*args, **kwargs)


def _epoch(stamp: Any, default: float) -> float:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return default


def _ending(sim: Any) -> str:
    return str(getattr(sim.termination_reason, "value", sim.termination_reason))


def _row_message(sim: Any, started: float) -> Message:
    """A tau2 SimulationRun as a message in the P2P schema (its turns, ending, reward)."""
    turns: list[Turn] = []
    for m in sim.messages:
        d = m.model_dump(mode="json", exclude={"raw_data"})
        usage = Usage()
        usage.add(d.get("usage"))
        turns.append(Turn(d["role"], d, usage))
    skipped = bool(getattr(sim, "skipped", False))
    msg = Message(
        task_id=str(sim.task_id),
        workflow=case.WORKFLOW,
        row={"id": sim.task_id},
        trial=int(sim.trial or 0),
        seed=int(sim.seed or 0),
        route={
            "termination": str(getattr(sim.termination_reason, "value", sim.termination_reason)),
            "trial_seed": sim.seed,
        },
        turns=turns,
    )
    msg.finished = _epoch(sim.end_time, time.time())
    msg.created = max(started, msg.finished - float(sim.duration or 0.0))
    if skipped:
        msg.status = ERROR
        msg.error = "simulation raised; tau2 scored it 0 (skip_failed_samples)"
    else:
        msg.status = DONE
        info = sim.reward_info.model_dump(mode="json") if sim.reward_info is not None else {"reward": None}
        msg.turns.append(Turn("reward", info))
    return msg


def timeseries(rows: Sequence[dict[str, Any]], t0: float, end: float | None = None) -> list[dict[str, float]]:
    """Per-second samples from the rows' own timestamps (seconds since `t0`, epoch seconds).

    tau2's runner keeps no live counters, so the series is rebuilt afterwards: each turn's completion
    tokens count at that turn's timestamp, a task is in flight from its row's `created` to `finished`.
    """
    tokens: list[tuple[float, int]] = []
    spans: list[tuple[float, float]] = []
    for r in rows:
        created, finished = float(r.get("created") or t0), float(r.get("finished") or t0)
        spans.append((created, finished))
        for turn in r.get("turns") or []:
            content = turn.get("content") if isinstance(turn.get("content"), dict) else {}
            n = int((turn.get("usage") or {}).get("completion_tokens") or 0)
            if n:
                tokens.append((_epoch(content.get("timestamp"), finished), n))
    last = max([end or 0.0, *(f for _, f in spans), *(t for t, _ in tokens)], default=t0)
    tokens.sort()
    out: list[dict[str, float]] = []
    total, i = 0, 0
    for sec in range(1, math.ceil(last - t0) + 1):
        now = t0 + sec
        while i < len(tokens) and tokens[i][0] <= now:
            total += tokens[i][1]
            i += 1
        done = sum(1 for _, f in spans if f <= now)
        started = sum(1 for c, _ in spans if c <= now)
        out.append({"t": float(sec), "tasks_done": done, "tasks_in_flight": started - done, "completion_tokens": total})
    return out


def run_threads(cfg: ThreadsConfig) -> dict[str, Any]:
    """Run the baseline; writes output.jsonl, tau2's results file, config.json, timeseries.json and metrics.json."""
    case.import_tau2()
    import tau2.run as tau2_run
    import tau2.utils.llm_utils as llm_utils

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / "config.json", cfg.to_dict())
    tasks = case.load_tasks(cfg.settings.domain, cfg.task_ids, cfg.limit)
    results_file = cfg.run_dir / RESULTS_FILE
    if results_file.exists():
        results_file.unlink()  # tau2 would try to resume it and ask on stdin
    args = litellm_args(cfg)
    spread = _Spread(cfg.urls, llm_utils.completion, retry=cfg.retry_policy, timeout_s=cfg.timeout_s)
    first = _FirstStart(tau2_run.run_task)
    original, original_run_task = llm_utils.completion, tau2_run.run_task
    llm_utils.completion, tau2_run.run_task = spread, first
    launched_at = time.time()
    t0, cpu0 = time.monotonic(), time.process_time()
    try:
        results = tau2_run.run_tasks(
            domain=cfg.settings.domain,
            tasks=tasks,
            agent="llm_agent",
            user="user_simulator",
            llm_agent=f"openai/{cfg.model}",
            llm_args_agent=dict(args),
            llm_user=f"openai/{cfg.model}",
            llm_args_user=dict(args),
            num_trials=cfg.num_trials,
            max_steps=cfg.settings.max_steps,
            max_errors=cfg.settings.max_errors,
            save_to=results_file if cfg.rewrite_results else None,
            console_display=False,
            max_concurrency=cfg.max_concurrency,
            skip_failed_samples=True,
            seed=cfg.settings.seed,
            log_level="ERROR",
        )
    finally:
        llm_utils.completion, tau2_run.run_task = original, original_run_task
        from loguru import logger

        logger.remove()  # run_tasks adds a print handler; take it away again
    end, cpu = time.monotonic(), time.process_time() - cpu0
    ready_at, ready = first.at or (launched_at, t0)
    wall = end - ready
    sink = SinkWriter(cfg.run_dir / "output.jsonl", flush_every=1024)
    metrics = Metrics()
    for sim in results.simulations:
        msg = _row_message(sim, ready_at)
        sink.accept(msg)
        metrics.inc("messages", value=len(msg.turns))
    sink.close()
    rows = [json.loads(line) for line in (cfg.run_dir / "output.jsonl").read_text().splitlines() if line.strip()]
    stats = AdmissionCounts()
    stats.admitted = len(tasks) * cfg.num_trials
    out = build_metrics(
        labels={"case": case.WORKFLOW, "transport": TRANSPORT, "system": SYSTEM, **cfg.labels},
        wall_seconds=wall,
        sinks=[sink.stats],
        admissions=[stats.snapshot()],
        metrics=metrics,
        extra={
            "quality": case.quality(rows),
            "threads": cfg.max_concurrency,
            "llm_calls": spread.calls,
            "llm_client": spread.stats(),
            **window_record(launched_at=launched_at, ready_at=ready_at, start_at=ready_at, end_at=ready_at + wall),
            # the runner is one Python process: its CPU time (all threads) per call shows how close it runs to
            # the one core the GIL allows it
            "runner_cpu_seconds": cpu,
            "runner_cpu_per_llm_call_ms": 1000 * cpu / spread.calls if spread.calls else None,
            "results_file_bytes": results_file.stat().st_size if results_file.exists() else 0,
            "rewrite_results": cfg.rewrite_results,
        },
    )
    return write_run_files(cfg.run_dir, out, timeseries(rows, ready_at, ready_at + wall))
