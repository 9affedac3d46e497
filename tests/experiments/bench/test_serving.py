from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from experiments.bench.serving import measure_point, quantile, write_results
from matrix.llm.client import LLMClient
from tests.llm.fake_openai import Behaviour, FakeServer, serve_fake


def test_quantile() -> None:
    assert math.isnan(quantile([], 0.5))
    assert quantile([3.0], 0.99) == 3.0
    assert quantile([float(i) for i in range(1, 101)], 0.5) == 50.5


def test_measure_point_counts_tokens_and_failures() -> None:
    async def main() -> None:
        s = FakeServer()
        async with serve_fake(s), LLMClient([s.url], model="m") as llm:
            p = await measure_point(llm, concurrency=4, requests=10, max_tokens=16, time_scale=2.0)
        assert p.requests == 10 and p.failed == 0
        assert p.output_tokens == 30  # the fake reports 3 completion tokens per request
        assert p.output_tokens_per_s > 0 and p.ttft_p50_ms > 0
        assert all(b["ignore_eos"] is True and b["stream"] is True for b in s.bodies)

        bad = FakeServer(default=Behaviour(status=400))
        async with serve_fake(bad), LLMClient([bad.url], model="m") as llm:
            p = await measure_point(llm, concurrency=2, requests=4)
        assert p.failed == 4 and p.output_tokens == 0
        assert any("HTTP 400" in e for e in p.errors)

    asyncio.run(main())


def test_results_merge_keeps_other_profiles(tmp_path: Path) -> None:
    out = tmp_path / "serving_sim.json"
    write_results(out, "a100", {"backend": "sim", "x": float("nan")})
    write_results(out, "h100", {"backend": "sim", "x": 1.0})
    doc = json.loads(out.read_text())
    assert set(doc["runs"]) == {"a100", "h100"}
    assert doc["runs"]["a100"]["x"] is None
