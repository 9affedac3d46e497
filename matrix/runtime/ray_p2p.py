"""The Ray P2P transport: messages travel from agent actor to agent actor; nothing central in the loop.

    admission --msg--> agent(role 1) --msg--> agent(role 2) --> ... --msg--> sink
        ^                                                                     |
        +---------------------------- credit (push) -------------------------+

- An `AgentActor` hosts one role and runs many steps at once (asyncio tasks, not one actor per
  task). After a step it asks the workflow for the next role, picks a live peer of that role
  (`matrix.peers`) and sends the message itself; the call returns as soon as the peer has queued it,
  with the peer's load, which the sender uses for its next choice.
- Delivery is at-least-once. Admission holds a lease per task. It watches every actor (a call
  that never returns fails when the actor dies), and after a death it takes a census: a task that no
  live actor holds, that is not in transit and that the sink has not seen is replayed from its
  start with attempt + 1. Expired leases are replayed too. The sink keeps the first finished copy.
- A task is held by its sender until the receiver acknowledged it, so a census can see a task
  twice but never zero times while it is alive.
- The sink frees a task's admission slot at once (credit) but releases its lease only after the
  row is flushed to disk (durable), so a sink that dies loses no acknowledged row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError

from matrix.admission import Admission, Key, Lease
from matrix.agent import RoleSpec
from matrix.llm.client import add_call_counts, process_stats
from matrix.message import ERROR, Hop, Message
from matrix.metrics import Metrics, TimeSeries
from matrix.payload import PayloadLost, PayloadStore, offloaded_bytes, owners_of, wire_size
from matrix.peers import Peer, PeerSet
from matrix.runtime.config import RunConfig
from matrix.runtime.outbox import Outbox
from matrix.runtime.report import Progress, PrometheusExporter, build_metrics, gauges_text, write_json
from matrix.sink import SinkStats, SinkWriter
from matrix.sources import read_rows
from matrix.workflow import get_workflow

# Errors that mean "the actor is gone or restarting", as opposed to a bug in a step.
_ACTOR_GONE: tuple[type[Exception], ...] = (RayActorError,)
with contextlib.suppress(ImportError):
    from ray.exceptions import ActorUnavailableError

    _ACTOR_GONE = (RayActorError, ActorUnavailableError)

DELIVERY_DEADLINE = 120.0  # seconds a sender keeps trying to hand a message to some peer of a role
INLINE_CONFIG_BYTES = 64 * 1024  # a run config up to this size is passed inline to each actor (Ray inlines < 100 KB)


@ray.remote(num_cpus=0)
class Directory:
    """Handles of every actor of a run; read once by each actor at start (and again after a restart)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def set(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self) -> dict[str, Any]:
        return self.data


class _Sender:
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

    def payload_store(self, threshold: int | None, *, inline_replays: bool = False) -> PayloadStore:
        """A payload store owned by this actor that fetches from the run's other actors."""

        async def fetch(owner: str, epoch: int, keys: list[int]) -> dict[int, Any]:
            await self.load()
            handle = self.by_name.get(owner)
            if handle is None:
                return {}
            return dict(await handle.fetch_payloads.remote(epoch, keys))

        return PayloadStore(threshold, self.name, fetch, inline_replays=inline_replays)

    async def deliver(self, role: str, msg: Message) -> bool:
        """Hand `msg` to a live peer of `role`; False if none took it before the deadline."""
        await self.load()
        peers = self.peers[role]
        deadline = time.monotonic() + DELIVERY_DEADLINE
        sent = time.time()
        while True:
            peer = peers.pick(msg.task_id)
            peer.sending += 1
            try:
                load = await self._outbox(peer).put((msg, sent))
            except _ACTOR_GONE:
                PeerSet.mark_down(peer)
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.05)
                continue
            finally:
                peer.sending -= 1
            PeerSet.mark_up(peer, int(load))
            return True

    def _outbox(self, peer: Peer) -> Outbox:
        box = self._boxes.get(peer.name)
        if box is None:
            handle = peer.handle

            async def send(batch: list[tuple[Message, float]]) -> int:
                return int(await handle.receive_batch.remote(batch))

            box = self._boxes[peer.name] = Outbox(send)
        return box

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
            except _ACTOR_GONE:
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
            except _ACTOR_GONE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


class _Watchable:
    """A call that never returns: its failure is how others learn that this actor died."""

    _forever: asyncio.Event | None = None

    async def watch(self) -> None:
        if self._forever is None:
            self._forever = asyncio.Event()
        await self._forever.wait()

    def ping(self) -> str:
        return "pong"


class _PayloadOwner:
    """Serves the payloads this actor offloaded to whoever reads them, and frees them when told."""

    payload: PayloadStore

    def fetch_payloads(self, epoch: int, keys: list[int]) -> dict[int, Any]:
        return self.payload.serve(epoch, keys)

    def free_payloads(self, tasks: list[Key]) -> int:
        return self.payload.free(tasks)


@ray.remote(num_cpus=0)
class AgentActor(_Watchable, _PayloadOwner):
    def __init__(self, spec: RoleSpec, name: str, directory: str, cfg: RunConfig) -> None:
        cfg.import_modules()
        self.spec = spec
        self.name = name
        self.agent = spec.build()
        self.workflow = get_workflow(cfg.workflow)
        self.sender = _Sender(directory, cfg.peer_policy, name)
        self.payload = self.sender.payload_store(cfg.offload_threshold, inline_replays=cfg.inline_replays)
        self.agent._payload = self.payload
        self.metrics = Metrics()
        self.holding: dict[Key, int] = defaultdict(int)
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
            self.payload.offload(msg)
            size = wire_size(msg)
            self.metrics.observe("hop_bytes", size, role, kind="bytes")
            # the message's size with nothing offloaded (paper Fig 8 puts the offload threshold on it)
            full = size + offloaded_bytes(msg) if self.payload.threshold is not None else size
            self.metrics.observe("message_bytes", full, role, kind="bytes")
            self.metrics.inc("bytes_moved", "", size)
            if nxt is None:
                await self.sender.to_sink(int(msg.route.get("partition", 0)), msg)
            elif not await self.sender.deliver(nxt, msg):
                self.metrics.inc("undeliverable", nxt)
                await self._report_lost(msg, f"no live peer of role {nxt!r} took it")
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

    def held(self) -> list[Key]:
        return list(self.holding)

    def load(self) -> int:
        return len(self.holding)

    def stats(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["payload"] = self.payload.stats()
        snap["errors"] = list(self.errors)
        snap["batching"] = self.sender.batching()
        snap["llm_calls"] = process_stats().to_dict()  # this actor's process: counted since it (re)started
        snap["pid"] = os.getpid()
        return snap

    async def shutdown(self) -> None:
        await self.agent.close()


@ray.remote(num_cpus=0)
class SinkActor(_Watchable, _PayloadOwner):
    def __init__(self, cfg: RunConfig, partition: int, directory: str) -> None:
        cfg.import_modules()
        self.partition = partition
        self.writer = SinkWriter(cfg.output_path(partition), flush_every=cfg.flush_every)
        # Where this run's rows begin, for a restarted incarnation to carry on its predecessor's counts.
        start = cfg.output_path(partition).with_name(cfg.output_path(partition).name + ".offset")
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated attribute here
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted and start.exists():
            self.writer.take_over(int(json.loads(start.read_text())["offset"]))
        else:
            write_json(start, {"offset": self.writer.size()})
        self.sender = _Sender(directory, cfg.peer_policy, f"sink-{partition}")
        self.payload = self.sender.payload_store(cfg.offload_threshold, inline_replays=cfg.inline_replays)
        self.pending_free: dict[str, list[Key]] = defaultdict(list)
        self.payload_lost = 0
        self._bg: set[asyncio.Future[None]] = set()
        self.pending_durable: list[Key] = []
        self.receiving: set[Key] = set()  # keys of messages in finish_batch, until accepted or refused
        self._flusher: asyncio.Task[None] | None = None

    def done_keys(self) -> list[Key]:
        return list(self.writer.done)

    def known(self, keys: list[Key]) -> list[tuple[Key, bool]]:
        """The keys that have a row here, or are being received (a census must not replay those), each
        with whether its row is in the file already."""
        return [(k, self.writer.written(k)) for k in keys if k in self.writer.done or k in self.receiving]

    async def finish(self, msg: Message) -> bool:
        return (await self.finish_batch([msg]))[0]

    async def finish_batch(self, msgs: list[Message]) -> list[bool]:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop())
        self.receiving.update(m.key for m in msgs)  # `known` counts them while their payloads are fetched
        await self.sender.load()
        owners = [owners_of(m) for m in msgs]
        resolved = await asyncio.gather(*(self._resolve(m) for m in msgs))
        accepted = [ok and self.writer.accept(m) for m, ok in zip(msgs, resolved, strict=True)]
        self.receiving.difference_update(m.key for m in msgs)  # in writer.done now, or refused
        # Free a task's payloads only once it is done here (a free is per task, so freeing after a
        # failed fetch would also drop the payloads of its replay), and only after the fetches: a
        # free sent earlier could overtake a fetch still queued.
        for m, names in zip(msgs, owners, strict=True):
            if m.key in self.writer.done:
                for owner in names:
                    self.pending_free[owner].append(m.key)
        # Credit every task that has its row now, a duplicate copy's too: a copy that arrives after its
        # task was replayed frees the replay's lease, which would otherwise wait for a row forever.
        credited = list(dict.fromkeys(m.key for m in msgs if m.key in self.writer.done))
        if credited:
            self.pending_durable.extend(credited)
            # Push the credits (one call per batch); each lease stays until its row is durable.
            self.sender.admissions[self.partition].credit_batch.remote(credited)
        if not self.writer.buffered:
            self._report_durable()
        return accepted

    async def _resolve(self, msg: Message) -> bool:
        """Fetch the message's payloads; a task whose payload is gone is replayed, not written."""
        try:
            await self.payload.resolve(msg)
            return True
        except (RayError, PayloadLost) as exc:
            if msg.key in self.writer.done:
                self.writer.stats.duplicates += 1
                return False
            self.payload_lost += 1
            adm = self.sender.admissions[self.partition]
            with contextlib.suppress(RayError):
                await adm.replay.remote(msg.key, f"payload lost at the sink: {type(exc).__name__}", msg.attempt)
            return False

    def _free_payloads(self) -> None:
        """Tell each owner to drop the payloads of the tasks this sink has finished."""
        pending, self.pending_free = self.pending_free, defaultdict(list)
        for owner, keys in pending.items():
            handle = self.sender.by_name.get(owner)
            if handle is not None:
                self._background(handle.free_payloads.remote(keys))

    def _background(self, ref: Any) -> None:
        async def wait() -> None:
            with contextlib.suppress(RayError):
                await ref

        task = asyncio.ensure_future(wait())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _report_durable(self) -> None:
        if self.pending_durable:
            keys, self.pending_durable = self.pending_durable, []
            self.sender.admissions[self.partition].durable.remote(keys)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.writer.flush()
            self._report_durable()
            self._free_payloads()

    def counts(self) -> dict[str, int]:
        st = self.writer.stats
        return {"finished": st.finished, "failed": st.failed, "completion_tokens": st.completion_tokens}

    async def close(self) -> SinkStats:
        if self._flusher is not None:
            self._flusher.cancel()
        self.writer.close()
        self._report_durable()
        self._free_payloads()
        await asyncio.gather(*self._bg, return_exceptions=True)
        return self.writer.stats


@ray.remote(num_cpus=0)
class AdmissionActor(_Watchable, _PayloadOwner):
    def __init__(self, cfg: RunConfig, partition: int, directory: str) -> None:
        cfg.import_modules()
        self.cfg = cfg
        self.partition = partition
        self.workflow = get_workflow(cfg.workflow)
        self.sender = _Sender(directory, cfg.peer_policy, f"admission-{partition}")
        self.payload = self.sender.payload_store(cfg.offload_threshold, inline_replays=cfg.inline_replays)
        self.admission: Admission | None = None
        self.credited: dict[Key, Lease] = {}  # finished, row not yet durable
        self.durable_early: set[Key] = set()  # durable reported before its credit arrived
        self.in_transit: dict[Key, int] = defaultdict(int)
        self.census_count = 0
        self.deaths = 0
        self.events: list[dict[str, Any]] = []
        self.stop_requested = False

    async def _send_first(self, msg: Message) -> None:
        msg.route["partition"] = self.partition
        role = self.workflow.start(msg)
        self.payload.offload(msg)
        self.in_transit[msg.key] += 1
        try:
            await self.sender.deliver(role, msg)
        finally:
            n = self.in_transit[msg.key] - 1
            if n > 0:
                self.in_transit[msg.key] = n
            else:
                self.in_transit.pop(msg.key, None)

    async def _emit_error(self, msg: Message) -> None:
        msg.route["partition"] = self.partition
        await self.sender.to_sink(self.partition, msg)

    async def run(self) -> dict[str, Any]:
        await self.sender.load()
        sink = self.sender.sinks[self.partition]
        done = {tuple(k) for k in await sink.done_keys.remote()}
        cfg = self.cfg
        rows = read_rows(
            cfg.source, id_field=cfg.id_field, partition=self.partition, num_partitions=cfg.num_partitions,
            limit=cfg.limit,
        )  # fmt: skip
        self.admission = Admission(
            rows,
            workflow=cfg.workflow,
            send=self._send_first,
            emit_error=self._emit_error,
            max_concurrent_tasks=cfg.partition_bound(),
            num_trials=cfg.num_trials,
            seed=cfg.seed,
            done=done,
            lease_seconds=cfg.lease_seconds,
            max_attempts=cfg.max_attempts,
        )
        if self.stop_requested:
            self.admission.stop()
        monitor = asyncio.create_task(self._monitor())
        try:
            await self.admission.run()
            # Every task has been credited; wait until the sink has made every row durable. A sink that
            # dies now takes unflushed rows with it, and the census admits those tasks again: wait for
            # them too (`leases`), or they would be left in flight when the run ends.
            while self.credited or self.admission.leases:
                await asyncio.sleep(0.05)
        finally:
            monitor.cancel()
        return self.progress()

    def stop(self) -> None:
        """Graceful stop: admit nothing more; `run` returns when the tasks in flight have ended."""
        self.stop_requested = True
        if self.admission is not None:
            self.admission.stop()

    def credit_batch(self, keys: list[Key]) -> None:
        for key in keys:
            self.credit(key)

    def credit(self, key: Key) -> None:
        key = (key[0], key[1])
        if self.admission is None:
            return
        lease = self.admission.leases.get(key)
        if lease is not None:
            if key in self.durable_early:
                # Calls to an async actor may run out of order: this row was flushed already.
                self.durable_early.discard(key)
            else:
                self.credited[key] = lease
        self.admission.credit(key)

    def durable(self, keys: list[Key]) -> None:
        for k in keys:
            key = (k[0], k[1])
            if self.credited.pop(key, None) is None and self.admission is not None and key in self.admission.leases:
                self.durable_early.add(key)

    async def replay(self, key: Key, reason: str, attempt: int | None = None) -> bool:
        if self.admission is None:
            return False
        return await self.admission.replay((key[0], key[1]), reason, attempt)

    def progress(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.admission.snapshot() if self.admission else {"admitted": 0, "in_flight": 0}
        snap.update(census=self.census_count, deaths=self.deaths, events=self.events[-50:])
        return snap

    async def _monitor(self) -> None:
        """Watch every agent actor and the sink; census after a death; replay expired leases."""
        await self.sender.load()
        watched = {name: h for name, h in self.sender.agent_handles}
        watched[f"sink-{self.partition}"] = self.sender.sinks[self.partition]
        futures = {name: asyncio.ensure_future(h.watch.remote()) for name, h in watched.items()}
        try:
            await self._watch(watched, futures)
        finally:
            for f in futures.values():
                f.cancel()
                if f.done() and not f.cancelled():
                    f.exception()  # retrieved: a watch ending at shutdown is expected

    async def _watch(self, watched: dict[str, Any], futures: dict[str, asyncio.Future[Any]]) -> None:
        while True:
            done, _ = await asyncio.wait(futures.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            dead = [name for name, f in futures.items() if f in done]
            for name in dead:
                if not futures[name].cancelled():
                    futures[name].exception()  # a RayActorError: the actor died
                self.deaths += 1
                self.events.append({"t": time.time(), "event": "actor died", "actor": name})
                futures[name] = asyncio.ensure_future(watched[name].watch.remote())
            if dead:
                await asyncio.sleep(0.5)  # let in-flight acknowledgements settle
                await self._census(sink_died=any(n.startswith("sink-") for n in dead))
            await self._replay_expired()

    async def _census(self, *, sink_died: bool) -> None:
        assert self.admission is not None
        self.census_count += 1
        held: set[Key] = set(self.in_transit)
        for name, handle in self.sender.agent_handles:
            try:
                keys = await asyncio.wait_for(handle.held.remote(), timeout=30)
            except (RayError, TimeoutError):
                self.events.append({"t": time.time(), "event": "census: actor unavailable", "actor": name})
                continue  # a restarting actor holds nothing
            held.update((k[0], k[1]) for k in keys)
        leased = [k for k in self.admission.leases if k not in held]
        # Rows credited but not yet flushed died with the sink (if it died): run them again.
        unflushed = [k for k in self.credited if k not in held] if sink_died else []
        if not leased and not unflushed:
            return
        sink = self.sender.sinks[self.partition]
        answer = await self.sender.call_with_retry(sink.known, leased + unflushed)
        known = {(k[0], k[1]) for k, _ in answer}
        # A row in the file whose credit or durable report died with the sink that sent it: settle it
        # here, or its lease would wait for that report for ever.
        for k, written in answer:
            key = (k[0], k[1])
            if written:
                if key in self.admission.leases:
                    self.credit(key)
                self.credited.pop(key, None)
                self.durable_early.discard(key)
        replayed = 0
        for key in unflushed:
            # A credit or a durable report may have come in while the sink was asked: look again.
            lost_row = self.credited.pop(key, None) if key not in known else None
            if lost_row is not None:
                await self.admission.readmit(lost_row, "sink died before flush")
                replayed += 1
        for key in leased:
            # `replay` passes over a task credited in the meantime (its row reached the sink).
            if key not in known and await self.admission.replay(key, "actor died"):
                replayed += 1
        self.events.append({"t": time.time(), "event": "census", "replayed": replayed})

    async def _replay_expired(self) -> None:
        assert self.admission is not None
        for key in self.admission.expired():
            await self.admission.replay(key, "lease expired")


def _get_or(default: Any, refs: list[Any], timeout: float = 10.0) -> list[Any]:
    """ray.get each ref; an actor that is restarting (or gone) yields `default` instead of raising."""
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except (RayError, TimeoutError):
            out.append(default)
    return out


def _call_restarting(method: Any, *args: Any, deadline_seconds: float = 120.0) -> Any:
    """Call a restartable actor's `method`, waiting for it while it restarts (up to the deadline)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return ray.get(method.remote(*args), timeout=max(1.0, deadline - time.monotonic()))
        except RayActorError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def local_only() -> None:
    """Make a Ray node started from this process bind 127.0.0.1 only.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when `ray` is first imported; with it on (its
    default) `ray.init(_node_ip_address="127.0.0.1")` is overridden by the machine's address and the
    raylet and GCS listen on every interface. Setting the variable after the import is too late, so
    this sets it and the constant Ray already read. An explicit "1" in the environment is honoured.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start a private local Ray on 127.0.0.1 unless one is already initialised (or RAY_ADDRESS says where)."""
    if ray.is_initialized():
        return
    local_only()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    # address="local": always a new private instance, never a cluster that `ray start` left on this
    # machine (ray.init() with no address joins one through /tmp/ray/ray_current_cluster).
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        log_to_driver=True,
        configure_logging=False,
    )


def actor_names(cfg: RunConfig) -> dict[str, list[str]]:
    return {s.role: [f"{s.role}-{i}" for i in range(s.num_instances)] for s in cfg.roles}


class RayRun:
    """Deploys the actors of one run, drives it to the end, and collects the results."""

    def __init__(self, cfg: RunConfig) -> None:
        cfg.check()
        ensure_ray()
        self.cfg = cfg
        self.run_id = uuid.uuid4().hex[:8]
        # Set from a signal handler (run_ray) or another thread: stop admitting, drain, close the output.
        self.stop_requested = threading.Event()
        self.stop_now = threading.Event()
        self.stop_reason = ""
        self.directory_name = f"matrix-directory-{self.run_id}"
        self.directory = Directory.options(name=self.directory_name).remote()  # type: ignore[attr-defined]
        # Restartable actors re-run their constructor from these arguments. A small config travels
        # inside each actor's creation spec; a large one (rows given inline) goes to the object store
        # once, pinned by the driver for the whole run, and Ray logs a warning about that
        # (ray-project/ray#53727) that does not apply while the driver holds the reference.
        self._cfg_ref: Any = cfg if len(ray.cloudpickle.dumps(cfg)) <= INLINE_CONFIG_BYTES else ray.put(cfg)
        self.agents: dict[str, list[tuple[str, Any]]] = {}
        for spec in cfg.roles:
            opts: dict[str, Any] = {
                "max_restarts": -1,
                "max_task_retries": 0,
                "max_concurrency": max(spec.max_concurrency, 100) + 10,
                "num_cpus": float(spec.resources.get("num_cpus", 0)),
            }
            if spec.resources.get("num_gpus"):
                opts["num_gpus"] = float(spec.resources["num_gpus"])
            custom = {k: float(v) for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus")}
            if custom:
                opts["resources"] = custom
            self.agents[spec.role] = [
                (name, AgentActor.options(**opts).remote(spec, name, self.directory_name, self._cfg_ref))  # type: ignore[attr-defined]
                for name in actor_names(cfg)[spec.role]
            ]
        restart = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 10_000}
        self.sinks = {
            p: SinkActor.options(**restart).remote(self._cfg_ref, p, self.directory_name)  # type: ignore[attr-defined]
            for p in range(cfg.num_partitions)
        }
        self.admissions = {
            p: AdmissionActor.options(max_concurrency=10_000).remote(self._cfg_ref, p, self.directory_name)  # type: ignore[attr-defined]
            for p in range(cfg.num_partitions)
        }
        sticky = sorted(s.role for s in cfg.roles if s.is_sticky())
        ray.get(
            self.directory.set.remote(
                {"roles": self.agents, "sinks": self.sinks, "admissions": self.admissions, "sticky": sticky}
            )
        )
        ray.get([h.ready.remote() for entries in self.agents.values() for _, h in entries])

    def all_agents(self) -> list[tuple[str, Any]]:
        return [x for entries in self.agents.values() for x in entries]

    def _actor_metrics(self) -> tuple[Metrics, list[str], dict[str, int], dict[str, Any]]:
        """Merged metrics, internal errors, payload counters and LLM call counters of every agent actor."""
        merged = Metrics()
        errors: list[str] = []
        payload: dict[str, int] = defaultdict(int)
        calls: list[dict[str, Any]] = []
        for snap in _get_or(None, [h.stats.remote() for _, h in self.all_agents()], timeout=60):
            if snap is None:
                errors.append("an agent actor was restarting; its metrics since the restart are missing")
                continue
            merged.merge_snapshot(snap)
            calls.append(snap.get("llm_calls", {}))
            errors += snap["errors"]
            for k, v in snap["payload"].items():
                payload[k] += v
            for k, v in snap.get("batching", {}).items():
                payload[f"send_{k}"] += v
        return merged, errors, dict(payload), add_call_counts(calls)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        progress = Progress(None, enabled=cfg.progress)
        series = TimeSeries()
        exporter = None
        if cfg.prometheus_port is not None:
            exporter = PrometheusExporter(cfg.prometheus_host, cfg.prometheus_port)
            print(f"matrix: metrics for Prometheus at {exporter.url}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        last_export = 0.0
        refs = [a.run.remote() for a in self.admissions.values()]
        pending = list(refs)
        stopped_at: float | None = None
        zero = {"finished": 0, "failed": 0, "completion_tokens": 0}
        last_counts: dict[int, dict[str, int]] = {}
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
                if self.stop_requested.is_set() and stopped_at is None:
                    stopped_at = time.monotonic()
                    for a in self.admissions.values():
                        a.stop.remote()
                    print(
                        f"matrix: stopping ({self.stop_reason}): no new tasks; waiting up to {cfg.drain_seconds:g} s "
                        "for the tasks in flight (again to stop now); the output stays resumable",
                        file=sys.stderr,
                        flush=True,
                    )
                if (
                    stopped_at is not None
                    and pending
                    and (self.stop_now.is_set() or time.monotonic() - stopped_at >= cfg.drain_seconds)
                ):
                    break
                snaps = ray.get([a.progress.remote() for a in self.admissions.values()])
                # A sink that is restarting keeps its last counts until it answers again.
                fresh = _get_or(None, [s.counts.remote() for s in self.sinks.values()], timeout=5.0)
                counts = [
                    c if c is not None else last_counts.get(p, zero) for p, c in zip(self.sinks, fresh, strict=True)
                ]
                last_counts = dict(zip(self.sinks, counts, strict=True))
                loads = _get_or(0, [h.load.remote() for _, h in self.all_agents()])
                depth: dict[str, int] = defaultdict(int)
                for (name, _), load in zip(self.all_agents(), loads, strict=True):
                    depth[name.rsplit("-", 1)[0]] += load
                done = sum(c["finished"] + c["failed"] for c in counts)
                in_flight = sum(int(s.get("in_flight", 0)) for s in snaps)
                gauges = {
                    "tasks_done": done,
                    "tasks_in_flight": in_flight,
                    "completion_tokens": sum(c["completion_tokens"] for c in counts),
                    **{f"queue_depth_{role}": float(n) for role, n in depth.items()},
                }
                series.sample(time.monotonic() - t0, **gauges)
                progress.update(done, in_flight, sum(c["failed"] for c in counts))
                if exporter is not None and time.monotonic() - last_export >= 5.0:
                    last_export = time.monotonic()
                    exporter.update(self._actor_metrics()[0].to_prometheus() + gauges_text(gauges))
            drained = not pending
            results = ray.get(refs) if drained else _get_or({}, [a.progress.remote() for a in self.admissions.values()])
            wall = time.monotonic() - t0
            sinks = [_call_restarting(s.close) for s in self.sinks.values()]
            merged, errors, payload, llm_calls = self._actor_metrics()
        finally:
            if exporter is not None:
                exporter.stop()
        progress.update(sum(s.finished + s.failed for s in sinks), 0, sum(s.failed for s in sinks), force=True)
        out = build_metrics(
            labels={"transport": "ray_p2p", **cfg.labels},
            wall_seconds=wall,
            sinks=sinks,
            admissions=results,
            metrics=merged,
            time_scale=float(cfg.labels.get("time_scale", 1.0)),
            extra={
                "offload_threshold": cfg.offload_threshold,
                "payload": payload,
                "actor_deaths": sum(r.get("deaths", 0) for r in results),
                "census_runs": sum(r.get("census", 0) for r in results),
                "internal_errors": errors,
                # Each agent actor's process since it (re)started: a killed actor's earlier calls are not here.
                "llm_calls": llm_calls,
                "actors": {role: len(v) for role, v in self.agents.items()},
                "stopped": None
                if stopped_at is None
                else {
                    "reason": self.stop_reason,
                    "after_seconds": stopped_at - t0,
                    "drained": drained,
                    "unfinished_in_flight": sum(int(r.get("in_flight", 0)) for r in results),
                },
            },
        )
        write_json(cfg.run_dir / "metrics.json", out)
        write_json(cfg.run_dir / "timeseries.json", series.rows)
        (cfg.run_dir / "metrics.prom").write_text(merged.to_prometheus())
        return out

    def shutdown(self) -> None:
        handles = [h for _, h in self.all_agents()]
        with contextlib.suppress(RayError):
            ray.get([h.shutdown.remote() for h in handles], timeout=30)
        for h in [*self.admissions.values(), *handles, *self.sinks.values(), self.directory]:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(h, no_restart=True)

    def request_stop(self, reason: str) -> None:
        """First call: stop admitting and drain (up to `drain_seconds`); second call: stop now."""
        if self.stop_requested.is_set():
            self.stop_now.set()
        else:
            self.stop_reason = reason
            self.stop_requested.set()


@contextlib.contextmanager
def stop_on_signals(run: RayRun, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """SIGINT/SIGTERM stop `run` gracefully (the first drains, the second stops now, a third is the
    default action); outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}
    count = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal count
        count += 1
        if count > 2:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        run.request_stop(signal.Signals(signum).name)

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_ray(cfg: RunConfig) -> dict[str, Any]:
    """Run `cfg` on Ray (a private local cluster on 127.0.0.1 unless Ray is already initialised).

    SIGINT/SIGTERM stop it gracefully: nothing new is admitted, the tasks in flight get up to
    `cfg.drain_seconds` to finish, the output is closed and metrics say `stopped`. A rerun with the
    same `run_dir` skips what is in the output and does the rest (so does a rerun after SIGKILL).
    """
    deployment = RayRun(cfg)
    try:
        with stop_on_signals(deployment):
            return deployment.run()
    finally:
        deployment.shutdown()


def with_overrides(cfg: RunConfig, **changes: Any) -> RunConfig:
    return replace(cfg, **changes)
