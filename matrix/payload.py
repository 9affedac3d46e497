"""Payload offloading: large fields move to the Ray object store, the message keeps a reference.

A multi-turn task drags its whole history through every hop. Above a byte threshold (512 in the
paper) a string or bytes field is `ray.put` once, by the actor that produced it, and from then on
only a small `Offloaded` handle travels; an actor that needs the text fetches it once and keeps it
in a small LRU cache. `offload_threshold=None` switches offloading off (the ablation).
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from matrix.message import Message

DEFAULT_OFFLOAD_THRESHOLD = 512


@dataclass(frozen=True, slots=True)
class Offloaded:
    """A reference to a string or bytes value in the Ray object store."""

    ref: Any  # ray.ObjectRef
    size: int
    kind: str  # "str" or "bytes"


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
    """One per process: offloads large fields, fetches them back, and remembers the pairing.

    Agents see plain strings. Before a step the store resolves every handle (through an LRU cache);
    after the step it offloads again, but a string that is the very object it resolved keeps its
    old handle, so each payload is put into the object store once, by the process that made it.
    """

    def __init__(self, threshold: int | None, put: Any, *, cache_bytes: int = 256 * 1024 * 1024) -> None:
        self.threshold = threshold
        self._put = put
        self.cache = PayloadCache(cache_bytes)
        self._handles: dict[int, tuple[Any, Offloaded]] = {}
        self.puts = 0
        self.bytes_offloaded = 0

    def offload_value(self, value: Any) -> Any:
        if self.threshold is None:
            return value
        if isinstance(value, str | bytes | bytearray):
            known = self._handles.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
            size = _size(value)
            if size <= self.threshold:
                return value
            handle = Offloaded(self._put(value), size, "str" if isinstance(value, str) else "bytes")
            self.puts += 1
            self.bytes_offloaded += size
            # The producer keeps its own payload cached: reading it back later costs nothing.
            self.cache.put(handle.ref, value, size)
            self._handles[id(value)] = (value, handle)
            return handle
        if isinstance(value, dict):
            return {k: self.offload_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.offload_value(v) for v in value]
        return value

    def offload(self, message: Message) -> Message:
        """Offload the row and turn contents in place (no-op when offloading is off)."""
        if self.threshold is None:
            return message
        message.row = self.offload_value(message.row)
        for turn in message.turns:
            turn.content = self.offload_value(turn.content)
        return message

    async def resolve_value(self, value: Any) -> Any:
        if isinstance(value, Offloaded):
            hit = self.cache.get(value.ref)
            if hit is not None:
                data = hit[0]
            else:
                data = await value.ref
                self.cache.put(value.ref, data, value.size)
            self._handles[id(data)] = (data, value)
            if len(self._handles) > 4 * max(1, len(self.cache)) + 1024:
                self._handles = {k: v for k, v in self._handles.items() if v[1].ref in self.cache}
            return data
        if isinstance(value, dict):
            return {k: await self.resolve_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self.resolve_value(v) for v in value]
        return value

    async def resolve(self, message: Message) -> Message:
        """Bring every offloaded field back inline, in place."""
        if has_offloaded(message.row):
            message.row = await self.resolve_value(message.row)
        for turn in message.turns:
            if has_offloaded(turn.content):
                turn.content = await self.resolve_value(turn.content)
        return message


def has_offloaded(value: Any) -> bool:
    if isinstance(value, Offloaded):
        return True
    if isinstance(value, dict):
        return any(has_offloaded(v) for v in value.values())
    if isinstance(value, list):
        return any(has_offloaded(v) for v in value)
    return False


class _SizePickler(pickle.Pickler):
    """Pickles a message for measuring only: object-store references become a 28-byte token
    (the size of an ObjectRef id), so measuring never touches Ray's reference counting."""

    def persistent_id(self, obj: Any) -> Any:
        if type(obj).__name__ == "ObjectRef":
            return b"r" * 28
        return None


def wire_size(message: Message) -> int:
    """Bytes this message costs on the wire (pickled; offloaded fields count as their handles)."""
    buf = io.BytesIO()
    _SizePickler(buf, protocol=5).dump(message)
    return buf.tell()
