"""Payload offloading without Ray: owners, fetches, frees, lost payloads, measurement."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from matrix.message import Message, Turn
from matrix.payload import Offloaded, PayloadLost, PayloadStore, has_offloaded, owners_of, wire_size


class Cluster:
    """Stores that fetch from each other in-process, counting the calls between them."""

    def __init__(self, *names: str, threshold: int | None = 512) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.stores = {n: PayloadStore(threshold, n, self.fetch) for n in names}

    async def fetch(self, owner: str, epoch: int, keys: list[int]) -> dict[int, Any]:
        self.calls.append((owner, keys))
        await asyncio.sleep(0)  # a real fetch is an actor call: let other steps queue behind it
        store = self.stores.get(owner)
        return {} if store is None else store.serve(epoch, keys)


def message(text: str, task: str = "t1") -> Message:
    return Message(task, "wf", {"question": "short", "doc": text}, turns=[Turn("teacher", text + "!")])


def test_large_fields_become_handles_small_ones_stay() -> None:
    c = Cluster("a")
    m = c.stores["a"].offload(message("x" * 600))
    assert m.row["question"] == "short"
    assert isinstance(m.row["doc"], Offloaded) and m.row["doc"].size == 600
    assert isinstance(m.turns[0].content, Offloaded)
    assert owners_of(m) == {"a"} and has_offloaded(m.row)
    assert wire_size(m) < 600


def test_threshold_none_switches_offloading_off() -> None:
    c = Cluster("a", threshold=None)
    m = c.stores["a"].offload(message("x" * 10_000))
    assert m.row["doc"] == "x" * 10_000 and not has_offloaded(m.row)
    assert c.stores["a"].puts == 0


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        PayloadStore(-1, "a")


def test_reader_fetches_once_per_owner_and_caches() -> None:
    c = Cluster("a", "b")
    m = c.stores["a"].offload(message("y" * 2000))
    pickled = pickle.loads(pickle.dumps(m))  # what b receives

    async def read() -> Message:
        return await c.stores["b"].resolve(pickled)

    out = asyncio.run(read())
    assert out.row["doc"] == "y" * 2000 and out.turns[0].content == "y" * 2000 + "!"
    assert len(c.calls) == 1 and sorted(c.calls[0][1]) == [0, 1]  # both fields in one call
    again = pickle.loads(pickle.dumps(m))
    asyncio.run(c.stores["b"].resolve(again))
    assert len(c.calls) == 1  # served from b's cache


def test_concurrent_steps_share_one_fetch_call() -> None:
    c = Cluster("a", "b")
    msgs = [pickle.loads(pickle.dumps(c.stores["a"].offload(message(f"{i}" * 900, f"t{i}")))) for i in range(20)]

    async def read_all() -> list[Message]:
        return await asyncio.gather(*(c.stores["b"].resolve(m) for m in msgs))

    out = asyncio.run(read_all())
    assert [m.row["doc"][:1] for m in out] == [f"{i}"[:1] for i in range(20)]
    # 40 values, a handful of calls: requests made while a call is in flight leave together.
    assert len(c.calls) <= 4 and sum(len(k) for _, k in c.calls) == 40


def test_a_resolved_value_sent_on_keeps_its_handle() -> None:
    c = Cluster("a", "b")
    m = pickle.loads(pickle.dumps(c.stores["a"].offload(message("z" * 700))))
    store_b = c.stores["b"]
    asyncio.run(store_b.resolve(m))
    m.turns.append(Turn("student", "w" * 800))
    store_b.offload(m)
    assert m.row["doc"].owner == "a" and m.turns[0].content.owner == "a"  # not copied into b
    assert m.turns[1].content.owner == "b" and store_b.puts == 1


def test_free_drops_a_tasks_payloads_and_later_reads_are_lost() -> None:
    c = Cluster("a", "b")
    a = c.stores["a"]
    m1 = pickle.loads(pickle.dumps(a.offload(message("p" * 1000, "t1"))))
    a.offload(message("q" * 1000, "t2"))
    assert a.owned_bytes == 2 * 2001
    assert a.free([("t1", 0)]) == 2 and a.owned_bytes == 2001
    with pytest.raises(PayloadLost, match="'a'"):
        asyncio.run(c.stores["b"].resolve(m1))


def test_a_restarted_owner_never_serves_another_incarnations_key() -> None:
    c = Cluster("a", "b")
    m = pickle.loads(pickle.dumps(c.stores["a"].offload(message("old" * 300))))
    c.stores["a"] = PayloadStore(512, "a", c.fetch)  # the actor restarted: same name, keys from 0
    c.stores["a"].offload(message("new" * 300))
    with pytest.raises(PayloadLost):
        asyncio.run(c.stores["b"].resolve(m))


def test_owner_evicts_its_oldest_payloads_beyond_its_budget() -> None:
    store = PayloadStore(10, "a", owned_bytes=5000)
    for i in range(10):
        store.offload(message(f"{i:03d}" + "e" * 997, f"t{i}"))
    assert store.owned_bytes <= 5000 and store.evicted >= 15
    assert store.stats()["evicted"] == store.evicted


def test_a_replayed_attempt_keeps_its_payloads_inline_when_asked() -> None:
    store = PayloadStore(512, "a", inline_replays=True)
    first = store.offload(message("x" * 600))
    assert isinstance(first.row["doc"], Offloaded)
    replay = message("y" * 600)
    replay.attempt = 2
    store.offload(replay)
    assert replay.row["doc"] == "y" * 600 and replay.turns[0].content == "y" * 600 + "!"
    assert not has_offloaded(replay.row) and owners_of(replay) == set()
    plain = PayloadStore(512, "b")  # the default: every attempt offloads
    again = message("z" * 600)
    again.attempt = 2
    assert isinstance(plain.offload(again).row["doc"], Offloaded)
