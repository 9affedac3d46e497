"""Serving benchmark: a concurrency sweep of streamed chat completions against one backend.

Each point is a closed loop: `concurrency` workers each send a request, wait for its last token and
send the next, until `requests` have finished. Per point it reports output tokens/s (from the
server's completion-token usage), time to first token and inter-token latency. Against the `sim`
backend, wall time is converted to simulated time (multiplied by the time scale) and every figure
is labelled simulated.
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matrix.llm.client import LLMClient, RetryPolicy
from matrix.llm.errors import LLMError

# A prompt of roughly 250 tokens for the Llama-3 and SmolLM2 tokenizers: varied English prose, so
# that a real model's prefill sees ordinary text.
_PROMPT_BODY = (
    "A research team is studying how traffic flows through a small city over one week. They "
    "collected counts of cars, buses and bicycles at twelve intersections every fifteen minutes, "
    "along with the weather, school holidays and two road closures caused by repairs. The mayor "
    "wants to know whether a new bus lane on the main avenue would shorten commutes without "
    "pushing cars onto residential streets. "
)
DEFAULT_PROMPT = (
    _PROMPT_BODY * 3 + "Write a careful, step-by-step analysis plan for the team, covering data "
    "cleaning, the comparisons to make, and the risks in drawing conclusions."
)


@dataclass
class RequestTiming:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    gaps: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""
    server_timing: dict[str, Any] | None = None


@dataclass
class PointResult:
    concurrency: int
    requests: int
    failed: int
    duration_s: float
    output_tokens: int
    prompt_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    e2e_p50_ms: float
    errors: list[str] = field(default_factory=list)
    # The sim engine's own per-request timings (simulated seconds, exact; absent for real engines).
    # Client-side figures above include this host's overheads, multiplied by the time scale.
    server_ttft_p50_ms: float | None = None
    server_tpot_p50_ms: float | None = None


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile; NaN for no data (reported as null in JSON)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))])


async def _one_request(
    llm: LLMClient, prompt: str, max_tokens: int, fixed_length: bool, extra: dict[str, Any]
) -> RequestTiming:
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, **extra}
    if fixed_length:
        params["ignore_eos"] = True  # vLLM/SGLang/sim extension: every request decodes max_tokens
    t0 = time.perf_counter()
    first = last = 0.0
    gaps: list[float] = []
    usage: dict[str, Any] = {}
    server_timing: dict[str, Any] | None = None
    try:
        async for chunk in llm.chat_stream([{"role": "user", "content": prompt}], role="bench", **params):
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("sim_timing"):
                server_timing = chunk["sim_timing"]
            choices = chunk.get("choices") or []
            if not choices or not (choices[0].get("delta") or {}).get("content"):
                continue
            now = time.perf_counter()
            if first == 0.0:
                first = now
            else:
                gaps.append(now - last)
            last = now
    except LLMError as exc:
        return RequestTiming(ok=False, error=str(exc)[:300])
    end = time.perf_counter()
    return RequestTiming(
        ok=True,
        ttft=(first or end) - t0,
        e2e=end - t0,
        gaps=gaps,
        completion_tokens=int(usage.get("completion_tokens") or 0),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        server_timing=server_timing,
    )


async def measure_point(
    llm: LLMClient,
    *,
    concurrency: int,
    requests: int,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 128,
    fixed_length: bool = True,
    time_scale: float = 1.0,
    extra: dict[str, Any] | None = None,
) -> PointResult:
    """Run one closed-loop point; times are multiplied by `time_scale` (1 for real engines)."""
    remaining = requests
    timings: list[RequestTiming] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            timings.append(await _one_request(llm, prompt, max_tokens, fixed_length, extra or {}))

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(min(concurrency, requests)):
            tg.create_task(worker())
    wall = (time.perf_counter() - t0) * time_scale
    ok = [t for t in timings if t.ok]
    out_tokens = sum(t.completion_tokens for t in ok)
    ms = 1000.0 * time_scale
    ttfts = [t.ttft * ms for t in ok]
    gaps = [g * ms for t in ok for g in t.gaps]
    return PointResult(
        concurrency=concurrency,
        requests=requests,
        failed=len(timings) - len(ok),
        duration_s=wall,
        output_tokens=out_tokens,
        prompt_tokens=sum(t.prompt_tokens for t in ok),
        output_tokens_per_s=out_tokens / wall if wall > 0 else 0.0,
        requests_per_s=len(ok) / wall if wall > 0 else 0.0,
        ttft_p50_ms=quantile(ttfts, 0.5),
        ttft_p99_ms=quantile(ttfts, 0.99),
        itl_p50_ms=quantile(gaps, 0.5),
        itl_p99_ms=quantile(gaps, 0.99),
        e2e_p50_ms=quantile([t.e2e * ms for t in ok], 0.5),
        errors=sorted({t.error for t in timings if not t.ok})[:5],
        server_ttft_p50_ms=_server_p50(ok, "ttft_s"),
        server_tpot_p50_ms=_server_p50(ok, "tpot_s"),
    )


def _server_p50(timings: Sequence[RequestTiming], key: str) -> float | None:
    values = [1000.0 * float(t.server_timing[key]) for t in timings if t.server_timing and key in t.server_timing]
    return quantile(values, 0.5) if values else None


async def sweep(
    base_urls: Sequence[str],
    model: str,
    *,
    concurrencies: Sequence[int],
    requests_per_point: Callable[[int], int],
    max_tokens: int,
    fixed_length: bool,
    time_scale: float,
    api_key: str | None = None,
    progress: Callable[[PointResult], None] | None = None,
) -> list[PointResult]:
    points = []
    top = max(concurrencies)
    retry = RetryPolicy(max_retries=2, base_delay=0.5, max_delay=5.0)
    async with LLMClient(base_urls, model=model, api_key=api_key, max_concurrency=top, retry=retry) as llm:
        # One warm-up request so that lazy initialisation is not charged to the first point.
        await _one_request(llm, "Say hello.", 8, False, {})
        for c in concurrencies:
            point = await measure_point(
                llm,
                concurrency=c,
                requests=requests_per_point(c),
                max_tokens=max_tokens,
                fixed_length=fixed_length,
                time_scale=time_scale,
            )
            points.append(point)
            if progress:
                progress(point)
    return points


def _clean(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN -> null
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_results(path: Path, key: str, run: dict[str, Any]) -> dict[str, Any]:
    """Merge this run into `path` under `runs[key]` (one file per backend, one entry per profile)."""
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            doc = {}
    doc.setdefault("runs", {})[key] = _clean(run)
    doc["backend"] = run["backend"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return doc


def run_record(
    *,
    backend: str,
    model: str,
    simulated: bool,
    time_scale: float,
    points: Sequence[PointResult],
    settings: dict[str, Any],
    info: dict[str, Any],
) -> dict[str, Any]:
    from matrix import __version__

    return {
        "backend": backend,
        "model": model,
        "simulated": simulated,
        "time_unit": "simulated seconds" if simulated else "seconds",
        "time_scale": time_scale,
        "settings": settings,
        "server": info,
        "points": [asdict(p) for p in points],
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "matrix_harness": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_points(points: Sequence[PointResult], *, simulated: bool) -> str:
    label = " (simulated)" if simulated else ""
    header = (
        f"{'conc':>5} {'reqs':>5} {'fail':>4} {'out tok/s' + label:>24} {'TTFT p50 ms':>12} "
        f"{'TTFT p99 ms':>12} {'ITL p50 ms':>11} {'e2e p50 ms':>11}"
    )
    rows = [header]
    for p in points:
        rows.append(
            f"{p.concurrency:>5} {p.requests:>5} {p.failed:>4} {p.output_tokens_per_s:>24.1f} "
            f"{p.ttft_p50_ms:>12.1f} {p.ttft_p99_ms:>12.1f} {p.itl_p50_ms:>11.2f} {p.e2e_p50_ms:>11.1f}"
        )
    if any(p.server_ttft_p50_ms is not None for p in points):
        rows.append("sim engine's own timings (simulated ms, exact):")
        for p in points:
            ttft, tpot = p.server_ttft_p50_ms or 0.0, p.server_tpot_p50_ms or 0.0
            rows.append(f"{p.concurrency:>5}  TTFT p50 {ttft:8.1f}  TPOT p50 {tpot:6.2f}")
    return "\n".join(rows)
