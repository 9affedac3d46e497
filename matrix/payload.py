"""Payload offloading: large fields stay with the actor that made them; the message keeps a handle.

A multi-turn task drags its whole history through every hop. Above a byte threshold (512 in the
paper) a string or bytes field is kept by the process that produced it (its *owner*), and from
then on only a small `Offloaded` handle travels. An actor that needs the text asks the owner for it
once (one call per owner, coalesced across the steps running at that moment) and keeps it in a
small LRU cache. When the sink has finished a task it tells each owner to free that task's
payloads. `offload_threshold=None` switches offloading off (the ablation).

Why not `ray.put`: on one node each put and each borrowed reference costs the object store and
Ray's distributed reference counting about as much as a whole hop. An owner-held value costs
nothing until someone reads it, and a reader pays one small actor call per owner. If an owner
dies its payloads die with it: a reader gets `PayloadLost` and the task is replayed from its start,
exactly as when the actor holding the task dies (at-least-once delivery covers both).
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from matrix.message import Message
from matrix.outbox import Outbox

DEFAULT_OFFLOAD_THRESHOLD = 512
DEFAULT_OWNED_BYTES = 1024**3  # what one process may hold for others before it evicts the oldest

TaskKey = tuple[str, int]
# fetch(owner, epoch, keys) -> {key: value} for the keys the owner still has
Fetch = Callable[[str, int, list[int]], Awaitable[dict[int, Any]]]


class PayloadLost(Exception):
    """An offloaded value is gone (its owner died, restarted, or freed it): replay the task."""

    def __init__(self, handle: Offloaded) -> None:
        super().__init__(f"payload {handle.key} of owner {handle.owner!r} (epoch {handle.epoch}) is gone")
        self.handle = handle


@dataclass(frozen=True, slots=True)
class Offloaded:
    """A reference to a string or bytes value kept by the actor `owner`."""

    owner: str
    epoch: int  # distinguishes incarnations of a restarted owner: keys restart, epochs do not
    key: int
    size: int
    kind: str  # "str" or "bytes"

    @property
    def ref(self) -> tuple[str, int, int]:
        return (self.owner, self.epoch, self.key)


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", errors="surrogatepass"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    return 0


class PayloadCache:
    """Per-process LRU of fetched payloads, bounded by total bytes."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any) -> tuple[Any, int] | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: Any, value: Any, size: int) -> None:
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and self._items:
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old


class PayloadStore:
    """One per process: owns the payloads it offloaded, fetches others' payloads, frees on request.

    Agents see plain strings. Before a step the store resolves every handle (its own values
    directly, others' through the cache or a fetch); after the step it offloads again, but a string
    that is the very object it resolved keeps its old handle, so a payload is stored once, by the
    process that made it, and never copied back.
    """

    def __init__(
        self,
        threshold: int | None,
        owner: str,
        fetch: Fetch | None = None,
        *,
        cache_bytes: int = 256 * 1024 * 1024,
        owned_bytes: int = DEFAULT_OWNED_BYTES,
        inline_replays: bool = False,
    ) -> None:
        if threshold is not None and threshold < 0:
            raise ValueError(f"offload threshold must be >= 0 bytes or None (off), got {threshold}")
        self.threshold = threshold
        self.inline_replays = inline_replays
        self.owner = owner
        self.epoch = int.from_bytes(os.urandom(6), "big")
        self._fetch = fetch
        self.cache = PayloadCache(cache_bytes)
        self.owned_limit = owned_bytes
        self._owned: dict[int, tuple[Any, int]] = {}  # key -> (value, size); insertion order = age
        self._by_task: dict[TaskKey, list[int]] = defaultdict(list)
        self._owned_bytes = 0
        self._next = 0
        self._handles: dict[int, tuple[Any, Offloaded]] = {}
        self._boxes: dict[tuple[str, int], Outbox] = {}
        self.puts = 0
        self.bytes_offloaded = 0
        self.fetch_calls = 0
        self.fetched = 0
        self.served = 0
        self.fetched_bytes = 0
        self.served_bytes = 0
        self.freed = 0
        self.evicted = 0

    # -- owning -------------------------------------------------------------------------------

    def _own(self, value: Any, size: int, task: TaskKey | None) -> Offloaded:
        key = self._next
        self._next += 1
        self._owned[key] = (value, size)
        self._owned_bytes += size
        if task is not None:
            self._by_task[task].append(key)
        self.puts += 1
        self.bytes_offloaded += size
        while self._owned_bytes > self.owned_limit and len(self._owned) > 1:
            old = next(iter(self._owned))
            self._owned_bytes -= self._owned.pop(old)[1]
            self.evicted += 1
        return Offloaded(self.owner, self.epoch, key, size, "str" if isinstance(value, str) else "bytes")

    @property
    def owned_bytes(self) -> int:
        return self._owned_bytes

    @property
    def next_key(self) -> int:
        """The key the next offloaded value will get: handles from here on are newer."""
        return self._next

    def new_values(self, message: Message, since: int) -> dict[tuple[str, int, int], Any]:
        """The values of `message`'s handles that this store made from key `since` on (`Offloaded.ref`
        -> value): what a checkpoint of this hop must carry besides the message itself."""
        out: dict[tuple[str, int, int], Any] = {}
        if self._next > since:
            for h in message_handles(message):
                if h.owner == self.owner and h.epoch == self.epoch and h.key >= since:
                    item = self._owned.get(h.key)
                    if item is not None:
                        out[h.ref] = item[0]
        return out

    def owns(self, handle: Offloaded) -> bool:
        return handle.owner == self.owner and handle.epoch == self.epoch and handle.key in self._owned

    def serve(self, epoch: int, keys: list[int]) -> dict[int, Any]:
        """The values of `keys` this process still holds (answer to another process's fetch)."""
        if epoch != self.epoch:
            return {}
        out: dict[int, Any] = {}
        for k in keys:
            item = self._owned.get(k)
            if item is not None:
                out[k] = item[0]
                self.served_bytes += item[1]
        self.served += len(out)
        return out

    def free(self, tasks: list[TaskKey]) -> int:
        """Drop every payload this process holds for these tasks (all attempts); returns how many."""
        n = 0
        for task in tasks:
            for key in self._by_task.pop((task[0], task[1]), ()):
                item = self._owned.pop(key, None)
                if item is not None:
                    self._owned_bytes -= item[1]
                    n += 1
        self.freed += n
        self._prune()
        return n

    def _prune(self) -> None:
        """Forget value->handle pairings whose value is neither owned nor cached any more."""
        if len(self._handles) > 2 * (len(self._owned) + len(self.cache)) + 1024:
            self._handles = {k: v for k, v in self._handles.items() if self.owns(v[1]) or v[1].ref in self.cache}

    # -- offloading ---------------------------------------------------------------------------

    def offload_value(self, value: Any, task: TaskKey | None = None) -> Any:
        if self.threshold is None:
            return value
        if isinstance(value, str | bytes | bytearray):
            known = self._handles.get(id(value))
            if known is not None and known[0] is value and (self.owns(known[1]) or known[1].owner != self.owner):
                return known[1]
            size = _size(value)
            if size <= self.threshold:
                return value
            handle = self._own(value, size, task)
            self._handles[id(value)] = (value, handle)
            return handle
        if isinstance(value, dict):
            return {k: self.offload_value(v, task) for k, v in value.items()}
        if isinstance(value, list):
            return [self.offload_value(v, task) for v in value]
        return value

    def offload(self, message: Message) -> Message:
        """Offload the row and turn contents in place (no-op when offloading is off, and for a replayed
        attempt when `inline_replays` is set: its payloads travel with it, so no owner's death can
        lose them again)."""
        if self.threshold is None or (self.inline_replays and message.attempt > 1):
            return message
        task = message.key
        message.row = self.offload_value(message.row, task)
        for turn in message.turns:
            turn.content = self.offload_value(turn.content, task)
        return message

    # -- resolving ----------------------------------------------------------------------------

    def _outbox(self, owner: str, epoch: int) -> Outbox:
        box = self._boxes.get((owner, epoch))
        if box is None:
            fetch = self._fetch
            if fetch is None:
                raise RuntimeError(f"payload store {self.owner!r} has no way to fetch from {owner!r}")

            async def send(batch: list[int]) -> dict[int, Any]:
                self.fetch_calls += 1
                return await fetch(owner, epoch, list(dict.fromkeys(batch)))

            box = self._boxes[(owner, epoch)] = Outbox(send, max_batch=1024)
        return box

    async def _get(self, handle: Offloaded) -> Any:
        if handle.owner == self.owner and handle.epoch == self.epoch:
            item = self._owned.get(handle.key)
            if item is None:
                raise PayloadLost(handle)
            return item[0]
        hit = self.cache.get(handle.ref)
        if hit is not None:
            data = hit[0]
        else:
            values = await self._outbox(handle.owner, handle.epoch).put(handle.key)
            if handle.key not in values:
                raise PayloadLost(handle)
            data = values[handle.key]
            self.fetched += 1
            self.fetched_bytes += handle.size
            self.cache.put(handle.ref, data, handle.size)
        self._handles[id(data)] = (data, handle)
        self._prune()
        return data

    async def resolve_value(self, value: Any) -> Any:
        if isinstance(value, Offloaded):
            return await self._get(value)
        if isinstance(value, dict):
            keys = list(value)
            got = await asyncio.gather(*(self.resolve_value(value[k]) for k in keys))
            return dict(zip(keys, got, strict=True))
        if isinstance(value, list):
            return list(await asyncio.gather(*(self.resolve_value(v) for v in value)))
        return value

    async def resolve(self, message: Message) -> Message:
        """Bring every offloaded field back inline, in place (one fetch per owner, at most)."""
        fields: list[Any] = [message.row] + [t.content for t in message.turns]
        if not any(has_offloaded(f) for f in fields):
            return message
        row, *contents = await asyncio.gather(*(self.resolve_value(f) for f in fields))
        message.row = row
        for turn, content in zip(message.turns, contents, strict=True):
            turn.content = content
        return message

    def stats(self) -> dict[str, int]:
        return {
            "puts": self.puts,
            "bytes_offloaded": self.bytes_offloaded,
            "owned_bytes": self._owned_bytes,
            "fetch_calls": self.fetch_calls,
            "fetched": self.fetched,
            "fetched_bytes": self.fetched_bytes,
            "served": self.served,
            "served_bytes": self.served_bytes,
            "freed": self.freed,
            "evicted": self.evicted,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
        }


def has_offloaded(value: Any) -> bool:
    if isinstance(value, Offloaded):
        return True
    if isinstance(value, dict):
        return any(has_offloaded(v) for v in value.values())
    if isinstance(value, list):
        return any(has_offloaded(v) for v in value)
    return False


def iter_handles(value: Any) -> Iterator[Offloaded]:
    """Every handle inside `value` (a row or a turn's content: strings, lists and dicts)."""
    if isinstance(value, Offloaded):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_handles(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_handles(v)


def message_handles(message: Message) -> Iterator[Offloaded]:
    """Every handle in `message`'s row and turns."""
    yield from iter_handles(message.row)
    for turn in message.turns:
        yield from iter_handles(turn.content)


def owners_of(message: Message) -> set[str]:
    """Names of the processes that hold payloads of this message."""
    return {h.owner for h in message_handles(message)}


def wire_size(message: Message) -> int:
    """Bytes this message costs on the wire (pickled; offloaded fields count as their handles)."""
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=5).dump(message)
    return buf.tell()


def handle_bytes(value: Any) -> int:
    """Bytes of the values that handles in `value` stand for (a message's row or a turn's content)."""
    if isinstance(value, Offloaded):
        return value.size
    if isinstance(value, dict):
        return sum(handle_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(handle_bytes(v) for v in value)
    return 0


def offloaded_bytes(message: Message) -> int:
    """How many bytes of `message` travel as handles: its size with nothing offloaded is about its wire size
    plus this (each handle's own few bytes aside)."""
    return handle_bytes(message.row) + sum(handle_bytes(t.content) for t in message.turns)
