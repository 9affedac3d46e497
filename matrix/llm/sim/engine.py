"""The simulated engine in scaled real time: the discrete-event core driven by one asyncio task.

Simulated time maps to the event loop's clock as `wall = wall0 + sim / time_scale`; a request's
arrival is stamped from the wall clock on that schedule. The driver runs a core step, then sleeps
until that step's *deadline* on the schedule (not for its duration), so Python overhead and sleep
jitter do not accumulate: a late step is followed by steps without sleep until the schedule is
caught up, and over a run the simulated clock keeps pace with `wall x time_scale`, which is what
consumers that convert wall time rely on.

When the host cannot keep up (a high time scale with a big batch, or a busy machine), wall time
lags the schedule. Simulated timings stay exact (they come from the core, not the wall clock),
but tokens reach clients later than the time scale promises, so anything measured on the wall
clock is off. The lag is exported (`wall_lag_seconds`, `wall_lag_max_seconds`,
`late_steps_total`) and logged when it passes `max_lag_s`. Wall-clock resolution also limits
what a client can see: the event loop sleeps in ~1 ms steps, i.e. `time_scale` ms of simulated
time, so streamed tokens arrive in bursts at high scales; `sim_timing` in each response is exact.

Every timing the engine reports is in simulated seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from matrix.clock import now as clock_now
from matrix.llm.sim.behaviour import BehaviourModel, get_behaviour
from matrix.llm.sim.core import EngineCore, RequestId, StepResult
from matrix.llm.sim.metrics import Registry
from matrix.llm.sim.profile import SimProfile, load_profile

log = logging.getLogger("matrix.llm.sim")


class EngineStoppedError(RuntimeError):
    """The engine stopped (or its loop failed) before the request finished."""


@dataclass(frozen=True)
class SimTiming:
    """One request's timings in simulated seconds (arrival and finish on the engine's clock)."""

    arrival_s: float
    first_token_s: float
    finished_s: float
    prompt_tokens: int
    completion_tokens: int
    preemptions: int
    time_scale: float

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finished_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 for a one-token reply)."""
        n = self.completion_tokens
        return (self.finished_s - self.first_token_s) / (n - 1) if n > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": "simulated seconds",
            "ttft_s": round(self.ttft_s, 6),
            "tpot_s": round(self.tpot_s, 6),
            "e2e_s": round(self.e2e_s, 6),
            "arrival_s": round(self.arrival_s, 6),
            "finished_s": round(self.finished_s, 6),
            "preemptions": self.preemptions,
            "time_scale": self.time_scale,
        }


class SimRequest:
    """A request in flight: its tokens' simulated emission times as they happen."""

    __slots__ = (
        "_changed",
        "_engine",
        "arrival",
        "error",
        "finished",
        "id",
        "output_tokens",
        "preemptions",
        "prompt_tokens",
        "streaming",
        "token_times",
    )

    def __init__(
        self, engine: SimEngine, request_id: RequestId, prompt_tokens: int, output_tokens: int, arrival: float
    ) -> None:
        self._engine = engine
        self.id = request_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.arrival = arrival
        self.token_times: list[float] = []
        self.preemptions = 0
        self.finished = False
        self.error: BaseException | None = None
        self.streaming = False  # only a streaming reader is woken per token; wait() only at the end
        self._changed = asyncio.Event()

    def _push(self, t: float) -> None:
        self.token_times.append(t)
        if self.streaming:
            self._changed.set()

    def _finish(self, error: BaseException | None = None) -> None:
        self.finished = True
        self.error = error
        self._changed.set()

    async def updates(self) -> AsyncIterator[list[float]]:
        """Yield the simulated times of newly emitted tokens, in batches, until the last one."""
        self.streaming = True
        seen = 0
        while True:
            if seen < len(self.token_times):
                batch = self.token_times[seen:]
                seen += len(batch)
                yield batch
                continue
            if self.finished:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()
            self._changed.clear()

    async def wait(self) -> SimTiming:
        """Wait for the last token; the request's timings."""
        while not self.finished:
            await self._changed.wait()
            self._changed.clear()
        if self.error is not None:
            raise self.error
        return self.timing()

    def timing(self) -> SimTiming:
        if not self.token_times:
            raise EngineStoppedError(f"request {self.id!r} produced no tokens")
        return SimTiming(
            arrival_s=self.arrival,
            first_token_s=self.token_times[0],
            finished_s=self.token_times[-1],
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.token_times),
            preemptions=self.preemptions,
            time_scale=self._engine.time_scale,
        )

    def abort(self) -> None:
        """The client went away: free the request's place and KV on the replica."""
        self._engine.abort(self.id)


class SimEngine:
    """One simulated replica running in (scaled) real time inside the current event loop.

    Use as `async with SimEngine(profile, time_scale=10) as engine:`; `submit()` a request whose
    length the behaviour model already decided, then stream `req.updates()` or `await req.wait()`.
    """

    def __init__(
        self,
        profile: SimProfile | str,
        *,
        time_scale: float = 1.0,
        behaviour: BehaviourModel | str | None = None,
        model_name: str | None = None,
        max_lag_s: float = 0.05,
    ) -> None:
        if not (isinstance(time_scale, int | float) and math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.time_scale = float(time_scale)
        if behaviour is None or isinstance(behaviour, str):
            behaviour = get_behaviour(behaviour or "generic")
        self.behaviour = behaviour
        self.model_name = model_name or self.profile.model
        self.max_lag_s = max_lag_s
        self.core = EngineCore(self.profile)
        self.error: BaseException | None = None
        self._requests: dict[RequestId, SimRequest] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._wall0 = 0.0
        self._wall_start = 0.0
        self._wall_stop: float | None = None
        self._lag = 0.0
        self._lag_max = 0.0
        self._late_steps = 0
        self._last_warning = -math.inf
        self.metrics = Registry({"simulated": "true", "profile": self.profile.name, "model": self.model_name})
        self._init_metrics()

    # ------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("engine already started")
        self._wall0 = self._wall_start = clock_now()
        self._wall_stop = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"sim-engine-{self.profile.name}")
        self._task.add_done_callback(self._loop_done)

    async def stop(self) -> None:
        """Stop the loop; requests still in flight fail with `EngineStoppedError`."""
        task, self._task = self._task, None
        if self._wall_stop is None and task is not None:
            self._wall_stop = clock_now()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(EngineStoppedError("the simulated engine stopped"))

    async def __aenter__(self) -> SimEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.error = exc
            log.error("simulated engine loop failed: %r", exc, exc_info=exc)
            self._fail_all(EngineStoppedError(f"the simulated engine failed: {exc!r}"))

    def _fail_all(self, error: BaseException) -> None:
        for req in list(self._requests.values()):
            req._finish(error)
        self._requests.clear()

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    # ------------------------------------------------------------------------------- clock

    def now(self) -> float:
        """Simulated seconds since start, by the wall clock on the (re-anchored) schedule."""
        wall = self._wall_stop if self._wall_stop is not None else clock_now()
        return (wall - self._wall0) * self.time_scale

    @property
    def effective_time_scale(self) -> float:
        """Simulated seconds the engine has computed per wall second (below the declared scale while it lags)."""
        wall = self._wall_stop if self._wall_stop is not None else clock_now()
        elapsed = wall - self._wall_start
        if elapsed <= 0:
            return self.time_scale
        return self.time_scale * max(elapsed - self._lag, 0.0) / elapsed

    # ------------------------------------------------------------------------------- requests

    def submit(
        self,
        prompt_tokens: int,
        output_tokens: int,
        *,
        request_id: RequestId | None = None,
        prefix: Sequence[tuple[Hashable, int]] = (),
    ) -> SimRequest:
        """Queue a request now; `output_tokens` is how long the reply will be."""
        if not self.healthy:
            raise EngineStoppedError(
                "the simulated engine is not running" + (f": {self.error!r}" if self.error else "")
            )
        rid = next(self._ids) if request_id is None else request_id
        arrival = self.now()
        self.core.add(rid, prompt_tokens, output_tokens, arrival=arrival, prefix=prefix)
        req = SimRequest(self, rid, prompt_tokens, output_tokens, arrival)
        self._requests[rid] = req
        self._m_requests.inc(status="received")
        self._m_prompt_tokens.inc(prompt_tokens)
        assert self._wake is not None
        self._wake.set()
        return req

    async def complete(self, prompt_tokens: int, output_tokens: int) -> SimTiming:
        """Submit and wait (aborting the request if the caller is cancelled)."""
        req = self.submit(prompt_tokens, output_tokens)
        try:
            return await req.wait()
        except asyncio.CancelledError:
            req.abort()
            raise

    def abort(self, request_id: RequestId) -> None:
        req = self._requests.pop(request_id, None)
        if req is not None and not req.finished:
            self.core.abort(request_id)
            self._m_requests.inc(status="aborted")
            req._finish(EngineStoppedError(f"request {request_id!r} was aborted"))

    # ------------------------------------------------------------------------------- the loop

    async def _run(self) -> None:
        # the event loop's clock (real or virtual, matrix.clock) is the clock the schedule is anchored on
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self.core.has_work:
                self._wake.clear()
                await self._wake.wait()
                continue
            res = self.core.step()
            if res.idle:
                await asyncio.sleep(0)
                continue
            delay = self._wall0 + res.end / self.time_scale - loop.time()
            if delay > 0:
                self._lag = 0.0
                await asyncio.sleep(delay)
            else:
                self._behind(-delay, loop.time())
                await asyncio.sleep(0)  # let the HTTP handlers run even while catching up
            self._dispatch(res)

    def _behind(self, lag: float, now: float) -> None:
        self._lag = lag
        self._lag_max = max(self._lag_max, lag)
        if lag <= self.max_lag_s:
            return
        self._late_steps += 1
        self._m_late.inc()
        if now - self._last_warning > 10.0:
            self._last_warning = now
            log.warning(
                "simulated engine %s is behind its schedule at time scale %g: wall time lags by "
                "%.3fs (max %.3fs); simulated timings stay exact, but wall-clock measurements of this "
                "replica are not; lower --time-scale or the load",
                self.profile.name,
                self.time_scale,
                lag,
                self._lag_max,
            )

    def _dispatch(self, res: StepResult) -> None:
        t = res.end
        requests = self._requests
        itl = self._m_itl
        for rid in res.tokens:
            req = requests.get(rid)
            if req is None:
                continue
            if req.token_times:
                itl.observe(t - req.token_times[-1])
            req._push(t)
        for rid in res.first_tokens:
            req = requests.get(rid)
            if req is not None:
                self._m_ttft.observe(t - req.arrival)
        for rid in res.preempted:
            req = requests.get(rid)
            if req is not None:
                req.preemptions += 1
        for rid in res.finished:
            req = requests.pop(rid, None)
            if req is not None:
                self._m_e2e.observe(t - req.arrival)
                self._m_requests.inc(status="finished")
                req._finish()
        self._m_steps.inc()
        self._m_generation_tokens.inc(len(res.tokens))
        self._m_preemptions.inc(len(res.preempted))
        self._m_busy.inc(res.duration)

    # ------------------------------------------------------------------------------- metrics

    def _init_metrics(self) -> None:
        m = self.metrics
        core = self.core
        self._m_requests = m.counter("requests_total", "Requests by status (received, finished, aborted).")
        self._m_prompt_tokens = m.counter("prompt_tokens_total", "Prompt tokens of received requests.")
        self._m_generation_tokens = m.counter("generation_tokens_total", "Tokens generated.")
        self._m_preemptions = m.counter("preemptions_total", "Sequences preempted for lack of KV cache.")
        self._m_steps = m.counter("engine_steps_total", "Engine steps run.")
        self._m_busy = m.counter("engine_busy_seconds_total", "Simulated seconds spent in engine steps.")
        m.gauge("requests_running", "Sequences in the running batch.", lambda: core.num_running)
        m.gauge("requests_waiting", "Requests waiting for admission.", lambda: core.num_waiting)
        m.gauge("kv_cache_usage_ratio", "Fraction of KV-cache blocks in use.", lambda: core.kv_usage)
        m.gauge("clock_seconds", "Simulated clock of the engine.", lambda: core.clock)
        m.gauge("time_scale", "Declared simulated seconds per wall second.", lambda: self.time_scale)
        m.gauge(
            "effective_time_scale",
            "Achieved simulated seconds per wall second.",
            lambda: self.effective_time_scale,
        )
        m.gauge("wall_lag_seconds", "Wall seconds the loop is behind its schedule now.", lambda: self._lag)
        m.gauge("wall_lag_max_seconds", "Largest lag behind the schedule seen.", lambda: self._lag_max)
        self._m_late = m.counter(
            "late_steps_total", "Steps run more than max_lag_s behind the schedule (the host could not keep up)."
        )
        self._m_ttft = m.histogram("time_to_first_token_seconds", "Time to first token (simulated seconds).")
        self._m_itl = m.histogram("inter_token_latency_seconds", "Inter-token latency (simulated seconds).")
        self._m_e2e = m.histogram("e2e_request_latency_seconds", "Request latency (simulated seconds).")

    def snapshot(self) -> dict[str, Any]:
        """The live state, for `/health` and logs."""
        return {
            "simulated": True,
            "profile": self.profile.name,
            "gpu": self.profile.gpu,
            "model": self.model_name,
            "behaviour": getattr(self.behaviour, "name", type(self.behaviour).__name__),
            "time_scale": self.time_scale,
            "effective_time_scale": round(self.effective_time_scale, 4),
            "clock_s": round(self.core.clock, 6),
            "running": self.core.num_running,
            "waiting": self.core.num_waiting,
            "kv_cache_usage": round(self.core.kv_usage, 4),
            "prefix_caching": self.profile.enable_prefix_caching,
            "prompt_tokens_computed": self.core.stats.prompt_tokens,
            "prompt_tokens_cached": self.core.stats.cached_tokens,
            "wall_lag_s": round(self._lag, 6),
            "wall_lag_max_s": round(self._lag_max, 6),
            "late_steps": self._late_steps,
            "lagging": self._late_steps > 0,
        }
