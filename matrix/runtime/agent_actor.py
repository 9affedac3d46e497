"""The Ray actor that hosts one role: many steps at once, each result sent straight to a peer.

A message comes in (`receive_batch`), becomes an asyncio task that runs the role's step, and leaves
for a live peer of the next role the workflow names, or for its partition's sink when the workflow
is done. The actor holds the task from arrival until a peer or the sink acknowledged it, and for a
few seconds after names it with the peer it went to (`census`): a census asks the actors one after
another, and a task moving between two of them is then still seen, unless that peer has died since
or a later hand-off of the task (more hops) shows where it went next.
A task that cannot go on (a payload's owner died, no peer took it, an internal error) is reported to
admission, which replays it.

After each hop that hands the task on, the actor sends admission a checkpoint (batched, not
awaited by the hop): the values of the fields it offloaded in this hop and, every
`checkpoint_every` hops, the message as handed on, so that a replay can start from there
(`RunConfig.checkpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import time
from collections import defaultdict
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError

from matrix.admission import Key
from matrix.agent import RoleSpec
from matrix.llm.client import process_stats
from matrix.message import ERROR, Hop, Message
from matrix.metrics import Metrics
from matrix.outbox import Outbox
from matrix.payload import PayloadLost, offloaded_bytes, wire_size
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import Sender, Watchable
from matrix.runtime.payload_owners import PayloadOwner, store_for
from matrix.workflow import get_workflow

RECENT_SECONDS = 5.0  # how long a task handed on is still named in a census
# Checkpoints leave for admission in one call per this many seconds at most: at ~1 checkpoint per hop
# the per-call cost, not the bytes, is what they add to a fault-free run; a death loses at most this
# much of its actor's latest checkpoints (their tasks then replay from an earlier one).
CHECKPOINT_LINGER = 0.1


@ray.remote(num_cpus=0)
class AgentActor(Watchable, PayloadOwner):
    def __init__(self, spec: RoleSpec, name: str, directory: str, cfg: RunConfig) -> None:
        cfg.import_modules()
        self.spec = spec
        self.name = name
        self.agent = spec.build()
        self.workflow = get_workflow(cfg.workflow)
        self.sender = Sender(directory, cfg.peer_policy, name)
        self.payload = store_for(self.sender, cfg)
        self.agent._payload = self.payload
        self.metrics = Metrics()
        self.holding: dict[Key, int] = defaultdict(int)
        self.attempts: dict[Key, int] = {}  # the highest attempt among the copies held
        # handed on a moment ago: (when, attempt, to whom, hops the message had then)
        self.recent: dict[Key, tuple[float, int, str, int]] = {}
        self._prune_at = 1024
        self.checkpoints = cfg.checkpoints
        self.checkpoint_every = cfg.checkpoint_every
        self._ck_boxes: dict[int, Outbox] = {}
        self.checkpoints_sent = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._setup_lock: asyncio.Lock | None = None
        self._ready = False
        self.errors: list[str] = []

    async def ready(self) -> str:
        await self._setup()
        await self.sender.load()
        return self.name

    async def _setup(self) -> None:
        if self._ready:
            return
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if not self._ready:
                await self.agent.setup()
                self._ready = True

    async def receive(self, msg: Message, sent: float) -> int:
        """Queue a message for this role; returns this actor's load (tasks held)."""
        return await self.receive_batch([(msg, sent)])

    async def receive_batch(self, batch: list[tuple[Message, float]]) -> int:
        """Queue several messages (one call from one sender); returns this actor's load."""
        for msg, sent in batch:
            self.holding[msg.key] += 1
            self.attempts[msg.key] = max(self.attempts.get(msg.key, 0), msg.attempt)
            task = asyncio.create_task(self._process(msg, sent))
            self.tasks.add(task)
            task.add_done_callback(self._done)
        return len(self.holding)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and len(self.errors) < 20:
            self.errors.append(repr(task.exception()))

    def _release(self, key: Key) -> None:
        n = self.holding.get(key, 0) - 1
        if n > 0:
            self.holding[key] = n
        else:
            self.holding.pop(key, None)
            self.attempts.pop(key, None)

    async def _process(self, msg: Message, sent: float) -> None:
        role = self.spec.role
        try:
            await self._setup()
            hop = Hop(role=role, actor=self.name, sent=sent, started=time.time())
            self.metrics.observe("queue_wait_seconds", hop.started - sent, role)
            try:
                msg = await self.agent.step(msg)
            except (RayActorError, RayError, PayloadLost) as exc:  # a payload's owner died: start over
                await self._report_lost(msg, f"payload lost in role {role!r}: {type(exc).__name__}")
                return
            except Exception as exc:
                msg.fail(f"step error in role {role!r}: {type(exc).__name__}: {exc}")
                self.metrics.inc("step_errors", role)
            hop.finished = time.time()
            msg.hops.append(hop)
            self.metrics.observe("step_seconds", hop.finished - hop.started, role)
            self.metrics.inc("hops", role)
            self.metrics.inc("messages")
            nxt = None if msg.status == ERROR else self.workflow.advance(msg)
            since = self.payload.next_key
            self.payload.offload(msg)
            size = wire_size(msg)
            self.metrics.observe("hop_bytes", size, role, kind="bytes")
            # the message's size with nothing offloaded (paper Fig 8 puts the offload threshold on it)
            full = size + offloaded_bytes(msg) if self.payload.threshold is not None else size
            self.metrics.observe("message_bytes", full, role, kind="bytes")
            self.metrics.inc("bytes_moved", "", size)
            if nxt is None:
                partition = int(msg.route.get("partition", 0))
                await self.sender.to_sink(partition, msg)
                peer: str | None = f"sink-{partition}"
            else:
                if self.checkpoints:
                    values = self.payload.new_values(msg, since)
                    whole = len(msg.hops) % self.checkpoint_every == 0
                    if values or whole:
                        await self.sender.load()  # a restarted actor may get messages before its `ready`
                        self._checkpoint(msg, nxt, values, whole)
                peer = await self.sender.deliver(nxt, msg)
                if peer is None:
                    self.metrics.inc("undeliverable", nxt)
                    await self._report_lost(msg, f"no live peer of role {nxt!r} took it")
                    return
            self._remember(msg.key, msg.attempt, peer or "", len(msg.hops))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A failure of the runtime itself (not of the step): never drop the task silently.
            self.metrics.inc("internal_errors", role)
            if len(self.errors) < 20:
                self.errors.append(f"{role}: {type(exc).__name__}: {exc}")
            await self._report_lost(msg, f"internal error in role {role!r}: {type(exc).__name__}")
        finally:
            self._release(msg.key)

    async def _report_lost(self, msg: Message, reason: str) -> None:
        await self.sender.load()
        adm = self.sender.admissions[int(msg.route.get("partition", 0))]
        with contextlib.suppress(RayError):
            await adm.replay.remote(msg.key, reason, msg.attempt)

    def _checkpoint(self, msg: Message, role: str, values: dict[Any, Any], whole: bool) -> None:
        """Send admission this hop's checkpoint (batched; the hop does not wait for it): the values of the
        fields offloaded in this hop and, every `checkpoint_every` hops, the message as handed on."""
        partition = int(msg.route.get("partition", 0))
        message = pickle.dumps(msg, protocol=5) if whole else None
        item = (msg.key, msg.attempt, role, len(msg.hops), message, values)
        box = self._ck_boxes.get(partition)
        if box is None:
            adm = self.sender.admissions[partition]

            async def send(batch: list[Any]) -> None:
                await adm.checkpoint_batch.remote(batch)

            box = self._ck_boxes[partition] = Outbox(send, max_batch=1024, max_in_flight=1, linger=CHECKPOINT_LINGER)
        box.post(item)  # a checkpoint that does not arrive only makes a replay start earlier
        self.checkpoints_sent += 1

    def _remember(self, key: Key, attempt: int, peer: str, hops: int) -> None:
        """Record a hand-off for the census; forget old ones as they pile up (a run without deaths takes
        no census, which would otherwise be what prunes them)."""
        self.recent[key] = (time.monotonic(), attempt, peer, hops)
        if len(self.recent) >= self._prune_at:
            self._prune_recent()
            self._prune_at = 2 * len(self.recent) + 1024

    def _prune_recent(self) -> None:
        cut = time.monotonic() - RECENT_SECONDS
        for key in [k for k, (t, *_) in self.recent.items() if t < cut]:
            del self.recent[key]

    def held(self) -> list[Key]:
        """Tasks this actor holds now."""
        return list(self.holding)

    def census(self) -> list[tuple[Key, int, str, float, int]]:
        """Each task held here (peer "") or handed on in the last few seconds (the peer's name), with its
        attempt, how many seconds ago it left and how many hops it had then (which of several actors'
        hand-offs of a task is the latest)."""
        self._prune_recent()
        now = time.monotonic()
        out = [(k, a, "", 0.0, 0) for k, a in self.attempts.items()]
        out += [(k, a, peer, now - t, hops) for k, (t, a, peer, hops) in self.recent.items() if k not in self.attempts]
        return out

    def load(self) -> int:
        return len(self.holding)

    def stats(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["payload"] = self.payload.stats()
        snap["errors"] = list(self.errors)
        snap["batching"] = self.sender.batching()
        snap["llm_calls"] = process_stats().to_dict()  # this actor's process: counted since it (re)started
        snap["pid"] = os.getpid()
        snap["checkpoints_sent"] = self.checkpoints_sent
        snap["checkpoints_not_delivered"] = sum(b.failed for b in self._ck_boxes.values())
        snap["peer_deaths_seen"] = self.sender.deaths_seen
        return snap

    async def shutdown(self) -> None:
        await self.agent.close()
