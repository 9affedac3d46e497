from __future__ import annotations

import asyncio

import pytest

from matrix.outbox import Outbox


def test_items_sent_while_a_call_is_in_flight_share_the_next_call() -> None:
    calls: list[list[int]] = []

    async def send(batch: list[int]) -> int:
        calls.append(batch)
        await asyncio.sleep(0.01)
        return len(batch)

    async def main() -> list[int]:
        box = Outbox(send, max_in_flight=1, max_batch=100)
        first = asyncio.create_task(box.put(0))
        await asyncio.sleep(0.001)  # the first call is now in flight
        rest = await asyncio.gather(*(box.put(i) for i in range(1, 50)))
        return [await first, *rest]

    results = asyncio.run(main())
    assert sorted(x for c in calls for x in c) == list(range(50))
    assert calls[0] == [0] and len(calls) == 2  # the first went alone, the rest together
    assert results[0] == 1 and results[1] == 49


def test_a_failed_call_fails_exactly_its_own_items() -> None:
    async def send(batch: list[int]) -> str:
        await asyncio.sleep(0)
        if 0 in batch:
            raise ConnectionError("peer died")
        return "ok"

    async def main() -> list[object]:
        box = Outbox(send, max_in_flight=1)
        first = asyncio.create_task(box.put(0))
        await asyncio.sleep(0)
        rest = await asyncio.gather(*(box.put(i) for i in range(1, 5)), return_exceptions=True)
        return [*(await asyncio.gather(first, return_exceptions=True)), *rest]

    results = asyncio.run(main())
    assert isinstance(results[0], ConnectionError)
    assert results[1:] == ["ok"] * 4


def test_bad_arguments() -> None:
    async def send(batch: list[int]) -> None:
        return None

    with pytest.raises(ValueError, match="max_batch"):
        Outbox(send, max_batch=0)
