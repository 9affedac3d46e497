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


def test_fail_queued_fails_only_items_not_yet_sent() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(batch: list[int]) -> str:
        sent.append(batch)
        await release.wait()
        return "ok"

    async def main() -> tuple[list[object], int]:
        box = Outbox(send, max_in_flight=1)
        first = asyncio.create_task(box.put(0))
        await asyncio.sleep(0)  # item 0 is in a call now
        queued = [asyncio.create_task(box.put(i)) for i in range(1, 4)]
        await asyncio.sleep(0)
        n = box.fail_queued(ConnectionError("peer down"))
        release.set()
        return await asyncio.gather(first, *queued, return_exceptions=True), n

    results, n = asyncio.run(main())
    assert n == 3 and sent == [[0]]  # the queued items never left
    assert results[0] == "ok"
    assert all(isinstance(r, ConnectionError) for r in results[1:])


def test_posted_items_linger_into_one_call_and_failures_are_counted() -> None:
    calls: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        calls.append(batch)
        if -1 in batch:
            raise ConnectionError("admission restarting")

    async def main() -> Outbox:
        box = Outbox(send, max_in_flight=1, linger=0.05)
        for i in range(10):
            box.post(i)
            await asyncio.sleep(0.001)  # posted over ~10 ms: well inside one linger
        await asyncio.sleep(0.1)
        box.post(-1)
        await asyncio.sleep(0.1)
        return box

    box = asyncio.run(main())
    assert calls == [list(range(10)), [-1]]
    assert box.calls == 2 and box.items == 11 and box.failed == 1
    with pytest.raises(ValueError, match="linger"):
        Outbox(send, linger=-1)


def test_fail_queued_in_call_also_releases_the_callers_of_a_call_under_way() -> None:
    release = asyncio.Event()

    async def send(batch: list[int]) -> str:
        await release.wait()
        return "late ack"

    async def main() -> list[object]:
        box = Outbox(send, max_in_flight=1)
        first = asyncio.create_task(box.put(0))
        await asyncio.sleep(0)
        queued = asyncio.create_task(box.put(1))
        await asyncio.sleep(0)
        assert box.fail_queued(ConnectionError("peer down"), in_call=True) == 2
        release.set()  # the call's late answer changes nothing for callers already released
        return await asyncio.gather(first, queued, return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))
