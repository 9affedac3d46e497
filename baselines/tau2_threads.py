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
  fewest calls in flight from this process (`_spread`), as a Ray Serve or SGLang router in front of
  the replicas would; tau2 itself takes a single `api_base`.

Rows go to `output.jsonl` in the P2P system's schema (one turn per tau2 message, a final
`reward` turn), so `matrix.cases.tau2.quality` and `rescore` read both systems' output alike.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from matrix.cases import tau2 as case
from matrix.message import DONE, ERROR, Message, Turn, Usage
from matrix.metrics import Metrics
from matrix.runtime.report import AdmissionCounts, build_metrics, write_json, write_run_files
from matrix.sink import SinkWriter

SYSTEM = "tau2-threads"
TRANSPORT = "threads"
RESULTS_FILE = "tau2_results.json"


@dataclass
class ThreadsConfig:
    """One baseline run: tasks x trials through `run_tasks` with `max_concurrency` threads."""

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
    timeout_s: float = 600.0
    labels: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("tau2 threads baseline: need at least one model server URL")
        if self.max_concurrency < 1 or self.num_trials < 1:
            raise ValueError(
                f"max_concurrency and num_trials must be >= 1, got {self.max_concurrency}, {self.num_trials}"
            )
        self.run_dir = Path(self.run_dir)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["settings"] = self.settings.to_dict()
        return out


class _Spread:
    """Least-in-flight choice of replica for each litellm call (tau2 takes one api_base)."""

    def __init__(self, urls: Sequence[str], completion: Any) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.inflight = [0] * len(self.urls)
        self.calls = 0
        self.lock = threading.Lock()
        self.completion = completion

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            i = min(range(len(self.urls)), key=self.inflight.__getitem__)
            self.inflight[i] += 1
            self.calls += 1
        try:
            base = self.urls[i]
            kwargs["api_base"] = base if base.endswith("/v1") else base + "/v1"
            return self.completion(*args, **kwargs)
        finally:
            with self.lock:
                self.inflight[i] -= 1


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
    import tau2.utils.llm_utils as llm_utils
    from tau2.run import run_tasks

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / "config.json", cfg.to_dict())
    tasks = case.load_tasks(cfg.settings.domain, cfg.task_ids, cfg.limit)
    results_file = cfg.run_dir / RESULTS_FILE
    if results_file.exists():
        results_file.unlink()  # tau2 would try to resume it and ask on stdin
    args = {**cfg.settings.llm_args(), "api_key": cfg.api_key, "timeout": cfg.timeout_s, "num_retries": 0}
    spread = _Spread(cfg.urls, llm_utils.completion)
    original = llm_utils.completion
    llm_utils.completion = spread
    started = time.time()
    t0, cpu0 = time.monotonic(), time.process_time()
    try:
        results = run_tasks(
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
        llm_utils.completion = original
        from loguru import logger

        logger.remove()  # run_tasks adds a print handler; take it away again
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    sink = SinkWriter(cfg.run_dir / "output.jsonl", flush_every=1024)
    metrics = Metrics()
    for sim in results.simulations:
        msg = _row_message(sim, started)
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
            # the runner is one Python process: its CPU time (all threads) per call shows how close it runs to
            # the one core the GIL allows it
            "runner_cpu_seconds": cpu,
            "runner_cpu_per_llm_call_ms": 1000 * cpu / spread.calls if spread.calls else None,
            "results_file_bytes": results_file.stat().st_size if results_file.exists() else 0,
            "rewrite_results": cfg.rewrite_results,
        },
    )
    return write_run_files(cfg.run_dir, out, timeseries(rows, started, started + wall))
