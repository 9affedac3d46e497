"""Coalescing sends: messages bound for the same peer share one call while another is in flight.

A hop is one actor call, and on a small machine the per-call cost of the RPC layer, not the bytes,
limits how many hops a second fit. An `Outbox` sends what it has at once (messages queued in the
same event-loop turn go together); messages that arrive while that call is in flight wait and
leave together in the next call. At low load nothing waits; at high load batches grow by
themselves, so the number of calls per hop falls as the load rises. Each caller awaits the
acknowledgement of the call that carried its item, so a sender can still hold a task until its
peer has it (at-least-once delivery is unchanged). Traffic nobody waits for (checkpoints) can be
`post`ed instead, and an outbox with a `linger` gathers it for that long before each call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any


class Outbox:
    def __init__(
        self,
        send_batch: Callable[[list[Any]], Awaitable[Any]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError(f"max_batch and max_in_flight must be >= 1, got {max_batch}, {max_in_flight}")
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger}")
        self._send_batch = send_batch
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.linger = linger  # seconds a call waits for more items before it leaves (0: at once)
        self._queue: deque[tuple[Any, asyncio.Future[Any] | None]] = deque()
        self._running = 0
        self._in_call: list[list[tuple[Any, asyncio.Future[Any] | None]]] = []  # batches in a call now
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.items = 0
        self.failed = 0  # items whose call failed

    def __len__(self) -> int:
        return len(self._queue)

    async def put(self, item: Any) -> Any:
        """Queue `item`; returns what the call that carried it returned (or raises what it raised)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._kick()
        return await fut

    def post(self, item: Any) -> None:
        """Queue `item` and return at once: nobody waits for its call (a failed call counts in `failed`)."""
        self._queue.append((item, None))
        self._kick()

    def _kick(self) -> None:
        if self._running < self.max_in_flight:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def fail_queued(self, exc: BaseException, *, in_call: bool = False) -> int:
        """Fail every item still waiting for a call (none of them was sent) with `exc`, and with `in_call`
        also those whose call is under way (their callers stop waiting; the call's outcome is then
        ignored); returns how many."""
        n = 0
        pending = list(self._queue)
        self._queue.clear()
        if in_call:
            pending += [entry for batch in self._in_call for entry in batch]
        for _, fut in pending:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                n += 1
        return n

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self.linger:
                    await asyncio.sleep(self.linger)
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                if not batch:
                    continue
                self.calls += 1
                self.items += len(batch)
                self._in_call.append(batch)
                try:
                    result = await self._send_batch([item for item, _ in batch])
                except BaseException as exc:  # every caller in the batch sees the failure
                    self.failed += len(batch)
                    for _, fut in batch:
                        if fut is not None and not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                finally:
                    self._in_call.remove(batch)
                for _, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_result(result)
        finally:
            self._running -= 1
