"""How the actors of a Ray run find and reach each other.

The driver registers every actor's handle in one named `Directory` actor. Each actor's `Sender`
reads it once (again after a restart) and from then on picks peers, batches messages to them and
waits out a peer's death or restart. `Watchable` is the liveness probe every actor offers: a sender
keeps a `watch` call pending on each peer it talks to, so a death is seen when Ray reports it, not
when the next message to that peer fails, and what was queued for the dead peer goes elsewhere at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError

from matrix.message import Message
from matrix.outbox import Outbox
from matrix.peers import Peer, PeerSet

# Errors that mean "the actor is gone or restarting", as opposed to a bug in a step.
ACTOR_GONE: tuple[type[Exception], ...] = (RayActorError,)
with contextlib.suppress(ImportError):
    from ray.exceptions import ActorUnavailableError

    ACTOR_GONE = (RayActorError, ActorUnavailableError)


class PeerDown(Exception):
    """The peer's watch failed (its actor died): the item was queued for it, or in a call to it whose
    answer is no longer waited for."""


GONE_OR_DOWN: tuple[type[Exception], ...] = (*ACTOR_GONE, PeerDown)

DELIVERY_DEADLINE = 120.0  # seconds a sender keeps trying to hand a message to some peer of a role
PROBE_CAP = 30.0  # a dead peer is left out this long at most; a probe brings it back when it answers


@ray.remote(num_cpus=0)
class Directory:
    """Handles of every actor of a run; read once by each actor at start (and again after a restart)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def set(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self) -> dict[str, Any]:
        return self.data


class Sender:
    """What every message-sending actor shares: its view of the peers, and delivery with failover."""

    def __init__(self, directory: str, policy: str, name: str) -> None:
        # The directory is a named actor, looked up by name: an actor handle among a restartable
        # actor's constructor arguments would put them in the object store (ray-project/ray#53727).
        self._directory_name = directory
        self._directory: Any = None
        self._policy = policy
        self.name = name
        self.peers: dict[str, PeerSet] = {}
        self.sinks: dict[int, Any] = {}
        self.admissions: dict[int, Any] = {}
        self.agent_handles: list[tuple[str, Any]] = []
        self.by_name: dict[str, Any] = {}
        self._loaded = asyncio.Event()
        self._loading = False
        self._boxes: dict[str, Outbox] = {}
        self._probing: set[str] = set()
        self._probes: set[asyncio.Task[None]] = set()
        self.deaths_seen = 0  # peer deaths this sender's watches saw

    async def load(self) -> None:
        if self._loaded.is_set():
            return
        if self._loading:
            await self._loaded.wait()
            return
        self._loading = True
        data: dict[str, Any] = {}
        while not data:
            if self._directory is None:
                try:
                    self._directory = ray.get_actor(self._directory_name)
                except ValueError:  # not registered yet
                    await asyncio.sleep(0.05)
                    continue
            data = await self._directory.get.remote()
            if not data:
                await asyncio.sleep(0.05)
        self.peers = {
            role: PeerSet(role, [Peer(h, n) for n, h in entries], policy=self._policy, sticky=role in data["sticky"])
            for role, entries in data["roles"].items()
        }
        self.sinks = data["sinks"]
        self.admissions = data["admissions"]
        self.agent_handles = [(n, h) for entries in data["roles"].values() for n, h in entries]
        self.by_name = dict(self.agent_handles)
        self.by_name.update({f"sink-{p}": h for p, h in self.sinks.items()})
        self.by_name.update({f"admission-{p}": h for p, h in self.admissions.items()})
        self._loaded.set()

    async def deliver(self, role: str, msg: Message) -> str | None:
        """Hand `msg` to a live peer of `role`; the peer's name, or None if none took it before the deadline."""
        await self.load()
        peers = self.peers[role]
        deadline = time.monotonic() + DELIVERY_DEADLINE
        sent = time.time()
        while True:
            peer = peers.pick(msg.task_id)
            peer.sending += 1
            try:
                load = await self._outbox(peer).put((msg, sent))
            except GONE_OR_DOWN:
                self._down(peer)
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.05)
                continue
            finally:
                peer.sending -= 1
            PeerSet.mark_up(peer, int(load))
            return peer.name

    def _down(self, peer: Peer) -> None:
        """A call to `peer` failed (its actor died): leave it out until a probe finds it back.

        Calls made while Ray restarts an actor wait for the new incarnation, so a peer left out only
        for a short cooldown would hold every task sent to it meanwhile; a probe (`ping`, which waits
        the same way) brings it back as soon as it answers."""
        PeerSet.mark_down(peer, base=PROBE_CAP, cap=PROBE_CAP)
        if peer.name in self._probing:
            return

        async def probe() -> None:
            deadline = time.monotonic() + PROBE_CAP
            try:
                while time.monotonic() < deadline:
                    try:
                        await peer.handle.ping.remote()
                    except ACTOR_GONE:  # still restarting (a call fails after a second or two)
                        await asyncio.sleep(0.1)
                        continue
                    PeerSet.mark_up(peer, 0)
                    return
            finally:
                self._probing.discard(peer.name)

        self._probing.add(peer.name)
        task = asyncio.create_task(probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _outbox(self, peer: Peer) -> Outbox:
        box = self._boxes.get(peer.name)
        if box is None:
            handle = peer.handle

            async def send(batch: list[tuple[Message, float]]) -> int:
                return int(await handle.receive_batch.remote(batch))

            box = self._boxes[peer.name] = Outbox(send)
            self._watch(peer)
        return box

    def _watch(self, peer: Peer) -> None:
        """Keep a `watch` call pending on `peer`: when it fails the peer died, so leave it out (a probe
        brings it back) and send what was queued for it, or is in a call to it, to another peer now: a
        call to an actor that just died takes about a second more to fail. (Should such a call still
        reach the restarted actor, the task runs twice and the sink keeps one row.)"""

        async def watch() -> None:
            while True:
                try:
                    await peer.handle.watch.remote()
                    return  # the peer ended the watch itself (it shuts down)
                except ACTOR_GONE:
                    self.deaths_seen += 1
                    self._down(peer)
                    box = self._boxes.get(peer.name)
                    if box is not None:
                        box.fail_queued(PeerDown(peer.name), in_call=True)
                    while peer.name in self._probing:  # watch the next incarnation once it answers
                        await asyncio.sleep(0.1)
                except RayError:
                    return

        task = asyncio.create_task(watch())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def to_sink(self, partition: int, msg: Message) -> None:
        """Hand a finished message to its partition's sink (batched), waiting out a sink restart."""
        await self.load()
        box = self._boxes.get(f"sink-{partition}")
        if box is None:
            handle = self.sinks[partition]

            async def send(batch: list[Message]) -> None:
                await handle.finish_batch.remote(batch)

            box = self._boxes[f"sink-{partition}"] = Outbox(send)
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while True:
            try:
                await box.put(msg)
                return
            except ACTOR_GONE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def batching(self) -> dict[str, float]:
        calls = sum(b.calls for b in self._boxes.values())
        items = sum(b.items for b in self._boxes.values())
        return {"calls": calls, "items": items}

    async def call_with_retry(self, method: Any, *args: Any) -> Any:
        """Call a sink/admission method, waiting out a restart of that actor."""
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while True:
            try:
                return await method.remote(*args)
            except ACTOR_GONE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


class Watchable:
    """A call that never returns: its failure is how others learn that this actor died."""

    _forever: asyncio.Event | None = None

    async def watch(self) -> None:
        if self._forever is None:
            self._forever = asyncio.Event()
        await self._forever.wait()

    def ping(self) -> str:
        return "pong"
