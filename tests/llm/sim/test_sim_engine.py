"""The engine in scaled real time: same simulated timings at any time scale, lag reported honestly."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from matrix.llm.sim.engine import EngineStoppedError, SimEngine, SimTiming


async def sequential(time_scale: float, n: int = 2, output: int = 100) -> tuple[float, list[SimTiming]]:
    async with SimEngine("h100-llama31-8b", time_scale=time_scale) as engine:
        start = time.perf_counter()
        timings = [await engine.complete(200, output) for _ in range(n)]
        return time.perf_counter() - start, timings


def test_time_scale_runs_faster_with_the_same_simulated_timings() -> None:
    wall_1, real = asyncio.run(sequential(1.0, n=2))
    wall_100, fast = asyncio.run(sequential(100.0, n=40))
    sim_1 = sum(t.e2e_s for t in real)
    sim_100 = sum(t.e2e_s for t in fast)
    # never faster than the declared scale; slower only by host stalls (CI machines are shared,
    # so the bounds on the slow side are loose: on a quiet machine the speed-up is about 90x)
    assert wall_1 >= sim_1 * 0.98 and wall_100 >= sim_100 / 100 * 0.98
    assert wall_1 <= sim_1 * 3 + 1.0
    speedup = (wall_1 / sim_1) / (wall_100 / sim_100)
    assert speedup > 10, f"scale 100 ran only {speedup:.0f}x faster than scale 1"
    for a, b in zip(real, fast[: len(real)], strict=True):
        assert (a.ttft_s, a.tpot_s, a.e2e_s) == pytest.approx((b.ttft_s, b.tpot_s, b.e2e_s), rel=1e-9)
        assert a.completion_tokens == b.completion_tokens == 100
        assert a.time_scale == 1.0 and b.time_scale == 100.0


def test_concurrent_requests_stream_their_tokens() -> None:
    async def main() -> None:
        async with SimEngine("a100-llama31-8b", time_scale=200) as engine:
            reqs = [engine.submit(300, 40 + i) for i in range(16)]

            async def consume(req: object) -> list[float]:
                seen: list[float] = []
                async for batch in req.updates():  # type: ignore[attr-defined]
                    seen += batch
                return seen

            streams = await asyncio.gather(*(consume(r) for r in reqs))
            for i, (req, times) in enumerate(zip(reqs, streams, strict=True)):
                assert len(times) == 40 + i and times == sorted(times)
                assert req.timing().ttft_s > engine.profile.api_overhead_s
            assert engine.core.kv_usage == 0.0
            snap = engine.snapshot()
            assert snap["simulated"] is True and snap["lagging"] is False

    asyncio.run(main())


def test_host_that_cannot_keep_up_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> SimEngine:
        # at 1e4 simulated seconds per wall second a 256-sequence step must take under ~2 us of
        # Python: impossible, so the loop falls behind and must say so
        async with SimEngine("h100-llama31-8b", time_scale=1e4, max_lag_s=0.005) as engine:
            timings = await asyncio.gather(*(engine.complete(500, 150) for _ in range(300)))
            assert all(0 < t.ttft_s <= t.e2e_s for t in timings)
            return engine

    with caplog.at_level(logging.WARNING, logger="matrix.llm.sim"):
        engine = asyncio.run(main())
    snap = engine.snapshot()
    assert snap["lagging"] is True and snap["late_steps"] > 0 and snap["wall_lag_max_s"] > 0.005
    assert "behind its schedule" in caplog.text
    metrics = engine.metrics.render()
    assert 'matrix_sim_late_steps_total{model="meta-llama/Llama-3.1-8B-Instruct"' in metrics


def test_stop_fails_requests_in_flight_and_cancel_aborts() -> None:
    async def main() -> None:
        engine = SimEngine("h100-llama31-8b", time_scale=1.0)
        await engine.start()
        task = asyncio.create_task(engine.complete(100, 1000))
        await asyncio.sleep(0.05)
        assert engine.core.num_running == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not engine.core.has_work
        req = engine.submit(100, 1000)
        await engine.stop()
        with pytest.raises(EngineStoppedError):
            await req.wait()
        with pytest.raises(EngineStoppedError):
            engine.submit(1, 1)

    asyncio.run(main())


def test_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        SimEngine("h100-llama31-8b", time_scale=0)
