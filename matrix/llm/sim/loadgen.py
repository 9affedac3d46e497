"""Virtual-time load generators for the engine core: what a benchmark client would measure.

These drive `EngineCore` directly, with no HTTP and no wall clock, so a run at concurrency 256 over
thousands of requests takes about a second and gives the same answer every time. The calibration
uses them to reproduce published benchmark points; tests use them to check emergent behaviour.

Metrics follow vLLM's `benchmark_serving` definitions: TTFT from send to first token, TPOT per
request as (e2e - TTFT) / (output tokens - 1), output tokens per second over the measured window.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from matrix.llm.sim.core import EngineCore
from matrix.llm.sim.profile import SimProfile


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload: prompt length and the number of tokens its reply will have."""

    prompt_tokens: int
    output_tokens: int


@dataclass
class RequestRecord:
    spec: RequestSpec
    sent: float
    first_token: float = math.nan
    finished: float = math.nan

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def e2e(self) -> float:
        return self.finished - self.sent

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first; NaN for one-token replies."""
        n = self.spec.output_tokens
        return (self.finished - self.first_token) / (n - 1) if n > 1 else math.nan


@dataclass(frozen=True)
class LoadResult:
    """A virtual-time run's summary (simulated seconds)."""

    concurrency: int | None
    requests: int
    duration_s: float
    output_tokens_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    e2e_p50_s: float
    preemptions: int
    records: tuple[RequestRecord, ...]

    def metric(self, name: str) -> float:
        """A summary value by the calibration's metric names (ms for latencies)."""
        table = {
            "output_tokens_per_s": self.output_tokens_per_s,
            "ttft_p50_ms": 1e3 * self.ttft_p50_s,
            "ttft_p99_ms": 1e3 * self.ttft_p99_s,
            "tpot_p50_ms": 1e3 * self.tpot_p50_s,
            "e2e_p50_ms": 1e3 * self.e2e_p50_s,
        }
        return table[name]


def _quantile(values: Sequence[float], q: float) -> float:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return math.nan
    if len(vals) == 1:
        return vals[0]
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _drain(
    core: EngineCore, records: dict[int, RequestRecord], on_finish: Callable[[float], None] | None = None
) -> None:
    """Step until every added request has finished; collect per-request times.

    `on_finish(t)` is called at each request's finish time `t` (a closed loop sends its next one).
    """
    while core.has_work:
        res = core.step()
        for rid in res.first_tokens:
            records[rid].first_token = res.end  # type: ignore[index]
        for rid in res.finished:
            records[rid].finished = res.end  # type: ignore[index]
            if on_finish is not None:
                on_finish(res.end)


def run_burst(profile: SimProfile, requests: Sequence[RequestSpec]) -> LoadResult:
    """Send every request at t=0 (a benchmark at request rate `inf`) and run to completion."""
    core = EngineCore(profile)
    records = {i: RequestRecord(spec, sent=0.0) for i, spec in enumerate(requests)}
    for i, spec in enumerate(requests):
        core.add(i, spec.prompt_tokens, spec.output_tokens, arrival=0.0)
    _drain(core, records)
    recs = tuple(records.values())
    end = max(r.finished for r in recs)
    tokens = sum(r.spec.output_tokens for r in recs)
    return _summary(None, recs, tokens / end if end > 0 else math.nan, end, core.stats.preemptions)


def unloaded_latency(profile: SimProfile, spec: RequestSpec) -> float:
    """End-to-end latency of one request alone on the replica (simulated seconds)."""
    return run_burst(profile, [spec]).records[0].e2e


def run_closed_loop(
    profile: SimProfile,
    requests: Sequence[RequestSpec],
    concurrency: int,
    *,
    warmup: int | None = None,
) -> LoadResult:
    """`concurrency` clients each send a request, wait for its last token and send the next.

    Clients start evenly spread over one unloaded request's latency, as they would be in a loop
    that has been running for a while, rather than in lockstep. The first `warmup` requests
    (default: one per client) are left out of the latency figures; throughput is measured from the
    first measured send to the last send, while every client is still busy.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if len(requests) <= concurrency:
        raise ValueError(f"need more requests than clients ({concurrency}), got {len(requests)}")
    warm = concurrency if warmup is None else warmup
    core = EngineCore(profile)
    records: dict[int, RequestRecord] = {}
    spread = unloaded_latency(profile, requests[0]) / concurrency
    next_index = 0

    def send(at: float) -> None:
        nonlocal next_index
        if next_index == len(requests):
            return
        spec = requests[next_index]
        records[next_index] = RequestRecord(spec, sent=at)
        core.add(next_index, spec.prompt_tokens, spec.output_tokens, arrival=at)
        next_index += 1

    for c in range(concurrency):
        send(c * spread)
    _drain(core, records, on_finish=send)

    recs = tuple(records[i] for i in range(len(requests)))
    measured = recs[warm:]
    start = measured[0].sent
    stop = recs[-1].sent
    tokens = 0.0
    for r in recs:
        # tokens are spread evenly from first token to finish; count the share inside the window
        lo, hi = max(r.first_token, start), min(r.finished, stop)
        if hi <= lo:
            continue
        span = r.finished - r.first_token
        tokens += r.spec.output_tokens * ((hi - lo) / span if span > 0 else 1.0)
    window = stop - start
    tput = tokens / window if window > 0 else math.nan
    return _summary(concurrency, measured, tput, recs[-1].finished, core.stats.preemptions)


def _summary(
    concurrency: int | None,
    recs: Sequence[RequestRecord],
    tput: float,
    duration: float,
    preemptions: int,
) -> LoadResult:
    return LoadResult(
        concurrency=concurrency,
        requests=len(recs),
        duration_s=duration,
        output_tokens_per_s=tput,
        ttft_p50_s=_quantile([r.ttft for r in recs], 0.5),
        ttft_p99_s=_quantile([r.ttft for r in recs], 0.99),
        tpot_p50_s=_quantile([r.tpot for r in recs], 0.5),
        e2e_p50_s=_quantile([r.e2e for r in recs], 0.5),
        preemptions=preemptions,
        records=tuple(recs),
    )


def fixed_workload(n: int, prompt_tokens: int, output_tokens: int) -> list[RequestSpec]:
    return [RequestSpec(prompt_tokens, output_tokens)] * n


def lognormal_workload(
    n: int,
    *,
    prompt_mean: float,
    output_mean: float,
    sigma: float = 0.9,
    prompt_range: tuple[int, int] = (4, 1024),
    max_total: int = 2048,
    min_output: int = 4,
    seed: int = 0,
) -> list[RequestSpec]:
    """Heavy-tailed lengths like chat datasets (ShareGPT), filtered like vLLM's benchmark does.

    Lengths are log-normal with the given spread; samples outside `prompt_range`, with fewer than
    `min_output` output tokens or more than `max_total` in all are redrawn. The log-normal
    location is chosen so that the *filtered* means come out at `prompt_mean` / `output_mean`.
    """
    rng = random.Random(seed)

    def draw(mu_p: float, mu_o: float, count: int, r: random.Random) -> list[RequestSpec]:
        out: list[RequestSpec] = []
        while len(out) < count:
            p = round(r.lognormvariate(mu_p, sigma))
            o = round(r.lognormvariate(mu_o, sigma))
            if prompt_range[0] <= p <= prompt_range[1] and o >= min_output and p + o <= max_total:
                out.append(RequestSpec(p, o))
        return out

    mu_p = math.log(prompt_mean) - sigma**2 / 2
    mu_o = math.log(output_mean) - sigma**2 / 2
    for _ in range(4):  # fixed-point on the filtered means, with a fixed probe sample
        probe = draw(mu_p, mu_o, 4000, random.Random(seed + 1))
        mu_p += math.log(prompt_mean / statistics.fmean(s.prompt_tokens for s in probe))
        mu_o += math.log(output_mean / statistics.fmean(s.output_tokens for s in probe))
    return draw(mu_p, mu_o, n, rng)
