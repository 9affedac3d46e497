"""The Ray actor that admits one partition's rows and makes sure each task ends exactly once in the output.

It wraps `matrix.admission.Admission` (the bound on tasks in flight, a lease per task, replays) with
what only a distributed run needs: it watches every agent actor and its sink (a call that never
returns fails when the actor dies), and after a death it takes a census. A task that no live actor
holds, that is not in transit and that the sink has not seen is replayed from its start with
attempt + 1; so is a task whose lease expired, and, after a sink died, a row that was credited but
never flushed.

The sink reports each task twice: a credit when the row is accepted (frees the slot) and a durable
report when it is flushed (releases the lease). Calls to an async actor may run out of order, so a
durable report can come first (`durable_early`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import ray
from ray.exceptions import RayError

from matrix.admission import Admission, Key, Lease
from matrix.message import Message
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import Sender, Watchable
from matrix.runtime.payload_owners import PayloadOwner, store_for
from matrix.sources import read_rows
from matrix.workflow import get_workflow


@ray.remote(num_cpus=0)
class AdmissionActor(Watchable, PayloadOwner):
    def __init__(self, cfg: RunConfig, partition: int, directory: str) -> None:
        cfg.import_modules()
        self.cfg = cfg
        self.partition = partition
        self.workflow = get_workflow(cfg.workflow)
        self.sender = Sender(directory, cfg.peer_policy, f"admission-{partition}")
        self.payload = store_for(self.sender, cfg)
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
