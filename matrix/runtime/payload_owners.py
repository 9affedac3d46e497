"""The Ray side of payload offloading: actors as owners that serve, fetch and free payloads.

`matrix.payload.PayloadStore` holds one process's payloads and knows nothing of Ray. In a Ray run
every actor has one store, named after the actor, and a payload's life goes through this module:

- an actor offloads a large field into its own store (`store_for` builds that store);
- a reader fetches it from the owner by name, through the run's directory (`fetch_payloads`);
- once the sink has a task's row it tells each owner named in the task's handles to drop that
  task's payloads (`PayloadFrees`, answered by `free_payloads`).

A payload whose owner died is gone; its reader gets `PayloadLost` and the task is replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ray.exceptions import RayError

from matrix.admission import Key
from matrix.payload import PayloadStore
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import Sender


def store_for(sender: Sender, cfg: RunConfig) -> PayloadStore:
    """The payload store of the actor that owns `sender`; it fetches from the run's other actors."""

    async def fetch(owner: str, epoch: int, keys: list[int]) -> dict[int, Any]:
        await sender.load()
        handle = sender.by_name.get(owner)
        if handle is None:
            return {}
        return dict(await handle.fetch_payloads.remote(epoch, keys))

    return PayloadStore(cfg.offload_threshold, sender.name, fetch, inline_replays=cfg.inline_replays)


class PayloadOwner:
    """Serves the payloads this actor offloaded to whoever reads them, and frees them when told."""

    payload: PayloadStore

    def fetch_payloads(self, epoch: int, keys: list[int]) -> dict[int, Any]:
        return self.payload.serve(epoch, keys)

    def free_payloads(self, tasks: list[Key]) -> int:
        return self.payload.free(tasks)


class PayloadFrees:
    """The sink's list of finished tasks per payload owner, sent to the owners as free requests.

    A free is per task (all attempts), so only a task that has its row may be added: freeing after
    a failed fetch would also drop the payloads of its replay. And a free must not overtake a fetch
    of the same payload, so the sink adds a task only after its fetches have returned.
    """

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._pending: dict[str, list[Key]] = defaultdict(list)
        self._calls: set[asyncio.Future[None]] = set()

    def add(self, key: Key, owners: Iterable[str]) -> None:
        for owner in owners:
            self._pending[owner].append(key)

    def send(self) -> None:
        """Tell each owner to drop the payloads of the tasks added since the last send (one call per owner)."""
        pending, self._pending = self._pending, defaultdict(list)
        for owner, keys in pending.items():
            handle = self._sender.by_name.get(owner)
            if handle is not None:
                self._watch(handle.free_payloads.remote(keys))

    def _watch(self, ref: Any) -> None:
        async def wait() -> None:
            with contextlib.suppress(RayError):  # an owner that died has freed everything already
                await ref

        call = asyncio.ensure_future(wait())
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def wait(self) -> None:
        """Wait for the free requests still in flight (at the sink's close)."""
        await asyncio.gather(*self._calls, return_exceptions=True)
