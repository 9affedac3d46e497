"""A tool-server pool shared by every agent of a run: in this process, or as a named Ray actor.

Agents carry a lease in the task's message and call the leased server directly (`call_tool`); only
acquire and release go through the pool. Leases are keyed by their holder (task id and trial), so a
task that is replayed from its start (its actor died) gets a fresh session and its earlier one is
closed instead of leaking a slot.

`sandbox: inproc` gives the same pool over in-process servers (`matrix.tools.inproc`: no process, no
socket, costs charged on the loop's clock), which is what a run on the virtual clock uses.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from matrix.tools.inproc import SANDBOX as INPROC
from matrix.tools.inproc import InprocToolPool
from matrix.tools.pool import Lease, ToolPoolConfig, ToolServerPool


def make_pool(config: ToolPoolConfig) -> ToolServerPool | InprocToolPool:
    """The pool for `config.sandbox`: in-process servers for "inproc", sandboxed processes otherwise."""
    return InprocToolPool(config) if config.sandbox == INPROC else ToolServerPool(config)


class KeyedPool:
    """`ToolServerPool` plus one lease per holder key; leases cross process boundaries as dicts."""

    def __init__(self, config: ToolPoolConfig | dict[str, Any]) -> None:
        self.config = config if isinstance(config, ToolPoolConfig) else ToolPoolConfig(**config)
        self.pool = make_pool(self.config)
        self.by_holder: dict[str, Lease] = {}
        self.replaced = 0

    async def start(self) -> dict[str, Any]:
        await self.pool.start()
        return self.pool.stats()

    async def acquire(self, task_id: str, holder: str, timeout: float | None = None) -> dict[str, Any]:
        """A session on `task_id`'s environment for `holder` (closing any earlier one it held)."""
        old = self.by_holder.pop(holder, None)
        if old is not None:
            self.replaced += 1
            await self.pool.release(old)
        lease = await self.pool.acquire(task_id, timeout=timeout)
        self.by_holder[holder] = lease
        return asdict(lease)

    async def release(self, lease: dict[str, Any], holder: str | None = None) -> None:
        held = Lease(**lease)
        if holder is not None and self.by_holder.get(holder) == held:
            del self.by_holder[holder]
        await self.pool.release(held)

    async def stats(self) -> dict[str, Any]:
        return {**self.pool.stats(), "replaced_on_replay": self.replaced, "holders": len(self.by_holder)}

    async def stop(self) -> None:
        await self.pool.stop()


class ToolPoolActor(KeyedPool):
    """The Ray actor form (async methods; many acquire/release calls run concurrently)."""


def start_pool_actor(name: str, config: ToolPoolConfig | dict[str, Any], *, timeout: float = 300.0) -> Any:
    """Start the named pool actor on this Ray cluster and wait until its servers are up."""
    import ray

    cfg = asdict(config) if isinstance(config, ToolPoolConfig) else dict(config)
    cls: Any = ray.remote(num_cpus=0)(ToolPoolActor)
    actor = cls.options(name=name, max_concurrency=100_000).remote(cfg)
    try:
        ray.get(actor.start.remote(), timeout=timeout)
    except BaseException:
        stop_pool_actor(actor)
        raise
    return actor


def stop_pool_actor(actor: Any, *, timeout: float = 60.0) -> None:
    """Stop the servers the actor started (by PID), then the actor."""
    import ray

    try:
        ray.get(actor.stop.remote(), timeout=timeout)
    finally:
        ray.kill(actor)


async def run_local(config: ToolPoolConfig | dict[str, Any]) -> KeyedPool:
    """A started in-process pool (the local runtime and tests)."""
    pool = KeyedPool(config)
    await pool.start()
    return pool


__all__ = ["KeyedPool", "ToolPoolActor", "make_pool", "run_local", "start_pool_actor", "stop_pool_actor"]
