"""A model of tau2's threaded runner's scheduling, for the virtual clock (SIMULATED, issue 19).

The real baseline (`baselines.tau2_threads`) is tau2's `run_tasks`: a `ThreadPoolExecutor` of N
threads in one Python process, each thread running one simulation at a time with synchronous
litellm calls, and after each simulation the whole results JSON re-read and rewritten under a lock.
Threads cannot run on one asyncio loop whose time is simulated, so this module keeps what decides
the baseline's throughput and replaces the threads with coroutines:

- Scheduling. `run_tasks` submits every (trial, task) pair, trial-major in task order, to the
  executor at once; each of the N threads takes the next pair when its simulation is done (FIFO).
  Here N worker coroutines take the same pairs in the same order from one queue.
- The conversation. Each simulation is driven by the P2P case's own tau2 roles
  (`matrix.cases.tau2`: user simulator, assistant, tools, reward), in one coroutine, one step at a
  time, as tau2's orchestrator moves it. Those roles send byte-identical requests to tau2's runner
  (tests/cases/tau2/test_tau2.py), so the requests, the replies, the token counts and the rewards
  are the real ones; the tools run on a fresh tau2 environment per simulation, in-process.
- The one CPU. The N threads share one interpreter: whatever Python work a simulation does (litellm
  building and parsing each request, tau2's orchestrator, its environment, its evaluator) holds the
  GIL, so it queues on one CPU. Each LLM call charges `llm_call_cpu_s` (the runner's measured CPU per
  call) on the process's `SerialCpu` before the request goes out. The GIL hands the CPU to another
  thread every `sys.getswitchinterval()` (5 ms), so a long hold is charged in slices of that size,
  each queued anew: threads share the CPU in turns rather than waiting for a whole rewrite.
- The rewrite. After each simulation, under one lock, the results file holding n simulations costs
  `rewrite_a_s + rewrite_b_s * n` seconds of that same CPU (results/bench/tau2_results_rewrite.json:
  json.load, append, json.dump indent=2). No file is written: the cost is charged, the size recorded.

What it leaves out: tau2's startup (imports, task loading, thread creation: the window starts when
the workers start, startup 0), litellm's own retries (the client's are used; none happen against
the in-process replicas) and the GIL's effect on the socket reads themselves. Output rows are the
baseline's (`_row_message` on tau2's `SimulationRun`, in submission order), and metrics.json
carries the baseline's fields; the labels say `model: "tau2 threads scheduling model"`,
`simulated: True` and the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from baselines.tau2_threads import RESULTS_FILE, SYSTEM, TRANSPORT, ThreadsConfig, _row_message, timeseries
from matrix import clock
from matrix.cases import tau2 as case
from matrix.clock import SerialCpu
from matrix.message import ERROR, Message, new_message
from matrix.metrics import Metrics
from matrix.runtime.report import AdmissionCounts, build_metrics, write_json, write_run_files
from matrix.runtime.window import record as window_record
from matrix.sink import SinkWriter
from matrix.workflow import get_workflow

MODEL = "tau2 threads scheduling model"
LLM_CALL_KEY = "tau2_litellm_thread"  # ctx.charges: the runner's CPU seconds per LLM call
REWRITE_KEY = "tau2_rewrite"  # ctx.charges: {"a", "b_per_simulation"} of the results rewrite
REWRITE_FILE = Path(__file__).resolve().parents[2] / "results" / "bench" / "tau2_results_rewrite.json"
POOL_NAME = "tau2_threads_model_envs"  # the in-process environments of the model's simulations


@dataclasses.dataclass(frozen=True)
class ThreadsCosts:
    """CPU seconds the one runner process spends, charged on its one CPU (see the module doc)."""

    llm_call_cpu_s: float = 0.0
    rewrite_a_s: float = 0.0
    rewrite_b_s: float = 0.0  # per simulation in the file
    gil_slice_s: float = 0.005  # sys.getswitchinterval() of CPython
    bytes_per_simulation: float = 0.0  # only to report the file size the rewrites would have made
    source: str = "none"

    def __post_init__(self) -> None:
        for name in ("llm_call_cpu_s", "rewrite_b_s", "bytes_per_simulation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"threads model cost {name} must be >= 0, got {getattr(self, name)!r}")
        if not self.gil_slice_s > 0:
            raise ValueError(f"threads model cost gil_slice_s must be > 0, got {self.gil_slice_s!r}")

    def rewrite_seconds(self, n: int) -> float:
        """One rewrite of a file holding `n` simulations (the fit can go below 0 for small n: then 0)."""
        return max(0.0, self.rewrite_a_s + self.rewrite_b_s * n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_charges(cls, charges: Mapping[str, Any], rewrite_file: Path = REWRITE_FILE) -> ThreadsCosts:
        """From the virtual runner's measured charges; no charges at all (charging off): nothing charged.

        A missing `tau2_litellm_thread` charges nothing per call; a missing `tau2_rewrite` takes the
        committed fit of the rewrite benchmark (`rewrite_file`), as the real baseline keeps the rewrite.
        """
        if not charges:
            return cls(source="none (no charges)")
        per_call = charges.get(LLM_CALL_KEY, 0.0)
        if not isinstance(per_call, int | float) or per_call < 0:
            raise ValueError(f"charge {LLM_CALL_KEY!r} must be seconds >= 0, got {per_call!r}")
        rewrite = charges.get(REWRITE_KEY)
        source = f"charges ({LLM_CALL_KEY}: {'measured' if LLM_CALL_KEY in charges else 'missing, 0'})"
        if not isinstance(rewrite, Mapping):
            data = json.loads(rewrite_file.read_text())
            rewrite = {**data["fit_save_seconds"], "bytes_per_simulation": data.get("bytes_per_simulation", 0.0)}
            source += f", rewrite fit from {rewrite_file.name}"
        size = float(rewrite.get("bytes_per_simulation") or 0.0)
        try:
            a, b = float(rewrite["a"]), float(rewrite["b_per_simulation"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"charge {REWRITE_KEY!r} needs numbers 'a' and 'b_per_simulation', got {rewrite!r}"
            ) from exc
        slice_s = sys.getswitchinterval()
        return cls(float(per_call), a, b, slice_s, size, source)


async def hold(cpu: SerialCpu, seconds: float, slice_s: float) -> None:
    """Hold the one CPU for `seconds` in GIL-sized turns, queueing anew for each."""
    while seconds > 1e-12:
        step = min(seconds, slice_s)
        await cpu.charge(step)
        seconds -= step


class _ChargedClient:
    """The shared LLM client, each request first holding the process's CPU for the runner's cost per call."""

    def __init__(self, client: Any, cpu: SerialCpu, costs: ThreadsCosts, counter: list[int]) -> None:
        self.client, self.cpu, self.costs, self.counter = client, cpu, costs, counter

    async def chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        self.counter[0] += 1
        await hold(self.cpu, self.costs.llm_call_cpu_s, self.costs.gil_slice_s)
        result: dict[str, Any] = await self.client.chat(messages, **kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _simulation(msg: Message, started_at: float, duration: float) -> Any:
    """tau2's `SimulationRun` for a finished model conversation, as `run_tasks` would have returned it."""
    from tau2.data_model.simulation import RewardInfo, SimulationRun, TerminationReason

    route = msg.route
    if msg.status == ERROR or route.get("termination") in case.INFRA_ENDINGS:
        # run_task raised: tau2 (skip_failed_samples) records an empty, skipped run scored 0
        now = case._now()
        return SimulationRun(
            id=f"{msg.task_id}_{msg.trial}_failed", task_id=msg.task_id, start_time=now, end_time=now,
            duration=0.0, termination_reason=TerminationReason.AGENT_ERROR, messages=[], trial=msg.trial,
            seed=route.get("trial_seed"), reward_info=RewardInfo(reward=0.0), skipped=True,
        )  # fmt: skip
    turns = [{"role": t.role, "content": t.content} for t in msg.turns]
    row = {"task_id": msg.task_id, "trial": msg.trial, "turns": turns, "route": {**route, "duration": duration}}
    sim = case.simulation_of(row)
    reward = next((t.content for t in reversed(msg.turns) if t.role == "reward"), None)
    sim.reward_info = RewardInfo.model_validate(reward) if reward is not None else None
    return sim


async def run_threads_model(cfg: ThreadsConfig, *, cpu: SerialCpu | None = None, costs: ThreadsCosts | None = None
                            ) -> dict[str, Any]:  # fmt: skip
    """Run the threaded runner's model on the running loop; write the baseline's run directory.

    The same config and files as `baselines.tau2_threads.run_threads` (output.jsonl in submission
    order, config.json, metrics.json, timeseries.json), on whatever clock the loop keeps. `cpu` is
    the process's one CPU (a fresh one when None) and `costs` what is charged on it (nothing when None).
    """
    costs = costs or ThreadsCosts()
    cpu = cpu or SerialCpu("tau2-threads")
    labels = {"case": case.WORKFLOW, "transport": TRANSPORT, "system": SYSTEM, **cfg.labels}
    labels.update(clock="virtual" if clock.is_virtual() else "real", simulated=True, model=MODEL)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / "config.json", {**cfg.to_dict(), "model": MODEL, "costs": costs.to_dict()})
    (cfg.run_dir / RESULTS_FILE).unlink(missing_ok=True)
    settings = cfg.settings
    tasks = case.load_tasks(settings.domain, cfg.task_ids, cfg.limit)
    pairs = [(trial, task) for trial in range(cfg.num_trials) for task in tasks]  # run_tasks' submission order

    # The simulations' roles: the P2P case's, in this process; tools on a private in-process pool (the
    # threads call their environment directly: its CPU is part of the per-call charge).
    from matrix.tools.pool_actor import KeyedPool

    envs = KeyedPool({"domain": settings.domain, "servers": 1, "sessions_per_server": cfg.max_concurrency,
                      "sandbox": "inproc", "call_timeout_s": settings.tool_timeout_s})  # fmt: skip
    await envs.start()
    pool_name = f"{POOL_NAME}-{id(envs)}"
    case.register_local_pool(pool_name, envs)
    deployment = case.Tau2Deployment(cfg.urls, cfg.model, settings, pool=pool_name, max_concurrency=cfg.max_concurrency)
    agents = {spec.role: spec.build() for spec in deployment.roles()}
    calls = [0]
    try:
        for agent in agents.values():
            await agent.setup()
            if hasattr(agent, "llm"):
                agent.llm = _ChargedClient(agent.llm, cpu, costs, calls)
        workflow = get_workflow(case.WORKFLOW)
        results: list[Any] = [None] * len(pairs)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(pairs)):
            queue.put_nowait(i)
        results_lock = asyncio.Lock()
        saved = [0]
        rewrite_seconds = [0.0]
        in_flight = [0, 0]  # now, peak

        async def simulate(i: int) -> Any:
            trial, task = pairs[i]
            msg = new_message(task.id, case.WORKFLOW, {"id": task.id, "domain": settings.domain}, trial=trial)
            started = clock.now()
            role: str | None = workflow.start(msg)
            while role is not None:
                try:
                    msg = await agents[role].step(msg)
                except Exception as exc:  # tau2 would have raised out of run_task: a skipped sample
                    msg.fail(f"step error in role {role!r}: {type(exc).__name__}: {exc}")
                if msg.status == ERROR:
                    break
                role = workflow.advance(msg)
            sim = _simulation(msg, started, clock.now() - started)
            if cfg.rewrite_results:
                async with results_lock:  # tau2's `_save`, under its lock, on the one CPU
                    saved[0] += 1
                    seconds = costs.rewrite_seconds(saved[0])
                    rewrite_seconds[0] += seconds
                    await hold(cpu, seconds, costs.gil_slice_s)
            return sim

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
                try:
                    results[i] = await simulate(i)
                finally:
                    in_flight[0] -= 1

        started_wall, t0 = clock.wall(), clock.now()
        async with asyncio.TaskGroup() as group:
            for _ in range(min(cfg.max_concurrency, len(pairs))):
                group.create_task(worker())
        wall, end_wall = clock.now() - t0, clock.wall()
    finally:
        for agent in agents.values():
            await agent.close()
        case.unregister_local_pool(pool_name, envs)
        await envs.stop()

    sink = SinkWriter(cfg.run_dir / "output.jsonl", flush_every=1024)
    metrics = Metrics()
    for sim in results:
        row = _row_message(sim, started_wall)
        sink.accept(row)
        metrics.inc("messages", value=len(row.turns))
    sink.close()
    rows = [json.loads(line) for line in (cfg.run_dir / "output.jsonl").read_text().splitlines() if line.strip()]
    stats = AdmissionCounts()
    stats.admitted = len(pairs)
    stats.peak_in_flight = in_flight[1]
    out = build_metrics(
        labels=labels,
        wall_seconds=wall,
        sinks=[sink.stats],
        admissions=[stats.snapshot()],
        metrics=metrics,
        extra={
            "quality": case.quality(rows),
            "threads": cfg.max_concurrency,
            "llm_calls": calls[0],
            # the model's one CPU: what the runner's threads spent on it, and how long they queued for it
            "runner_cpu_seconds": cpu.busy,
            "runner_cpu_per_llm_call_ms": 1000 * cpu.busy / calls[0] if calls[0] else None,
            "runner_cpu": cpu.snapshot(),
            "rewrite_seconds": rewrite_seconds[0],
            "results_file_bytes": math.floor(costs.bytes_per_simulation * saved[0]),
            "rewrite_results": cfg.rewrite_results,
            "costs": costs.to_dict(),
            # the workers are up at once: startup 0, the window from the first simulation to the last save
            **window_record(launched_at=started_wall, ready_at=started_wall, start_at=started_wall, end_at=end_wall),
        },
    )
    return write_run_files(cfg.run_dir, out, timeseries(rows, started_wall, end_wall), metrics.to_prometheus())


__all__ = ["LLM_CALL_KEY", "MODEL", "REWRITE_KEY", "ThreadsCosts", "hold", "run_threads_model"]
