"""The Ray actor that admits one partition's rows and makes sure each task ends exactly once in the output.

It wraps `matrix.admission.Admission` (the bound on tasks in flight, a lease per task, replays) with
what only a distributed run needs: it watches every agent actor and its sink (a call that never
returns fails when the actor dies), and after a death it takes a census. A task that no live actor
holds, that is not in transit and that the sink has not seen is replayed with attempt + 1; so is a
task whose lease expired, and, after a sink died, a row that was credited but never flushed.

Replays start from the task's last checkpoint: after each hop the agent that ran it sends the
message it hands on (small: large fields travel as handles) and the values of the fields it
offloaded in that hop (`checkpoint_batch`). Together they are the whole task as of that hop, kept
here until the task is credited, so a replay needs no payload owner to be alive and runs only the
hops after it. A task with no usable checkpoint starts from its first role.

The sink reports each task twice: a credit when the row is accepted (frees the slot) and a durable
report when it is flushed (releases the lease). Calls to an async actor may run out of order, so a
durable report can come first (`durable_early`).

The actor is restartable. Calls made to it while it restarts are kept by Ray and run on the new
incarnation (`max_task_retries=-1`), the driver's `run` among them; until its lease table is built
again, credits, durable reports and losses are buffered. The new incarnation rebuilds from what
survived: the sink's ledger (done rows, flushed or not), a census of the agents (tasks they hold,
with their attempts), the source read again, and this actor's state file (`admission-<p>.state.json`
in the run directory, written twice a second: counters and how many rows it had read). Checkpoints
die with it; a task in flight then replays from its first role if its holder dies too.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError

from matrix.admission import Admission, Key, Lease
from matrix.message import Message
from matrix.payload import Offloaded, PayloadLost, iter_handles
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import ACTOR_GONE, Sender, Watchable
from matrix.runtime.payload_owners import PayloadOwner, store_for
from matrix.runtime.report import write_json
from matrix.sources import read_rows
from matrix.workflow import get_workflow

STATE_EVERY = 0.5  # seconds between writes of the state file a restarted incarnation starts from
SETTLE_SECONDS = 0.25  # after a death, before its census
STALL_SECONDS = 20.0  # no task ended for this long while some are in flight: take a census
COUNTERS = ("admitted", "skipped_done", "bad_rows", "replayed", "resumed", "resumed_hops", "gave_up", "stale_losses")


@dataclass
class Checkpoint:
    """A task as of its last checkpointed hop: the message handed on, where to, and the values of
    every field that travels as a handle (`Offloaded.ref` -> value)."""

    attempt: int
    role: str
    hops: int
    message: bytes | None  # None until a hop sends the whole message
    values: dict[tuple[str, int, int], Any] = field(default_factory=dict)


def _inline(value: Any, values: dict[tuple[str, int, int], Any]) -> Any:
    if isinstance(value, Offloaded):
        if value.ref not in values:
            raise KeyError(value.ref)
        return values[value.ref]
    if isinstance(value, dict):
        return {k: _inline(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, values) for v in value]
    return value


def held_from_census(
    answers: list[list[Any]], died_at: dict[str, float], *, now: float, watching_since: float
) -> dict[Key, int]:
    """Which tasks are somewhere, from the agents' census answers: (key, attempt, peer, seconds ago, hops).

    A task an agent holds (peer "") is held. Otherwise its latest hand-off decides, the one with the most
    hops for that attempt (a task moves on, so each actor's record of it is older than the next one's):
    if that peer died after (or about when) it got the task, or before `watching_since` when a death
    could go unseen, the task is lost; if not, it is in transit to a live peer and held. An earlier
    hand-off to a live peer says nothing once a later one exists: that peer has passed the task on.
    """
    held: dict[Key, int] = {}
    latest: dict[tuple[Key, int], tuple[int, bool]] = {}  # (task, attempt) -> (hops, its peer still has it)
    for answer in answers:
        for k, attempt, peer, ago, *rest in answer:
            key, attempt = (k[0], k[1]), int(attempt)
            if not peer:
                held[key] = max(held.get(key, 0), attempt)
                continue
            hops = int(rest[0]) if rest else 0
            gone = died_at.get(peer, 0.0) >= now - ago - 1.0 or now - ago < watching_since + 1.0
            seen = latest.get((key, attempt))
            if seen is None or hops > seen[0] or (hops == seen[0] and not gone):
                latest[(key, attempt)] = (hops, not gone)
    for (key, attempt), (_, there) in latest.items():
        if there:
            held[key] = max(held.get(key, 0), attempt)
    return held


def restarted_actor() -> bool:
    with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated attribute here
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


@ray.remote(num_cpus=0)
class AdmissionActor(Watchable, PayloadOwner):
    def __init__(self, cfg: RunConfig, partition: int, directory: str) -> None:
        cfg.import_modules()
        self.cfg = cfg
        self.partition = partition
        self.directory_name = directory
        self.workflow = get_workflow(cfg.workflow)
        self.sender = Sender(directory, cfg.peer_policy, f"admission-{partition}")
        self.payload = store_for(self.sender, cfg)
        self.admission: Admission | None = None
        self.credited: dict[Key, Lease] = {}  # finished, row not yet durable
        self.durable_early: set[Key] = set()  # durable reported before its credit arrived
        self.in_transit: dict[Key, int] = defaultdict(int)
        self.checkpoints: dict[Key, Checkpoint] = {}
        self.checkpoint_count = 0
        self.last_credit = time.monotonic()
        self.started_at = time.time()
        self._sending: set[asyncio.Task[None]] = set()
        self.census_count = 0
        self.died_at: dict[str, float] = {}  # actor name -> when its death was seen
        self.down: set[str] = set()  # died, and not answering yet
        self.deaths = 0
        self.events: list[dict[str, Any]] = []
        self.stop_requested = False
        # What arrives before the lease table is (re)built: applied once it is.
        self.early: list[tuple[str, Any]] = []
        self.state_path = cfg.run_dir / f"admission-{partition}.state.json"
        self.carried: dict[str, Any] = {}  # the previous incarnations' counters
        self.restarts = 0
        self.restart_rows = 0
        if restarted_actor() and self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("directory") == directory:  # this run's (a rerun starts afresh)
                self.carried = state["counters"]
                self.restarts = int(state["restarts"]) + 1
                self.restart_rows = int(state["rows_read"])
                self.census_count = int(state.get("census", 0))
                self.deaths = int(state.get("deaths", 0))
                self.events = list(state.get("events", []))
                self.events.append({"t": time.time(), "event": "admission restarted", "rows_read": self.restart_rows})
                self._write_state()  # a death before the table is rebuilt still counts this restart

    async def _send_first(self, msg: Message) -> None:
        msg.route["partition"] = self.partition
        role = self.workflow.start(msg)
        self.payload.offload(msg)
        await self._send_to(role, msg)

    async def _send_to(self, role: str, msg: Message) -> None:
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
        adopted: dict[Key, int] = {}
        unflushed: list[Key] = []
        this_run: set[Key] = set()
        if self.restarts:
            ledger = await self.sender.call_with_retry(sink.ledger)
            done = {(k[0], k[1]) for k in ledger["done"]}
            this_run = {(k[0], k[1]) for k in ledger["this_run"]}
            # Rows accepted but not yet flushed: the lease stays until they are durable (or readmitted
            # if the sink dies first), as for rows credited to the previous incarnation.
            unflushed = [(k[0], k[1]) for k in ledger["unflushed"]]
            adopted = {k: a for k, a in (await self._held_attempts()).items() if k not in done}
        else:
            done = {(k[0], k[1]) for k in await self.sender.call_with_retry(sink.done_keys)}
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
            resume=self._resume if cfg.checkpoints else None,
            adopted=adopted,
            restart_rows=self.restart_rows,
            done_this_run=this_run,
        )
        if self.restarts and unflushed:
            wanted = {k[0] for k in unflushed}
            by_id = {
                row.task_id: row
                for row in read_rows(
                    cfg.source, id_field=cfg.id_field, partition=self.partition, num_partitions=cfg.num_partitions,
                    limit=cfg.limit,
                )
                if row.task_id in wanted
            }  # fmt: skip
            for key in unflushed:
                if key[0] in by_id:
                    self.credited[key] = Lease(by_id[key[0]], key[1], 1, float("inf"), holds_slot=False)
        if self.stop_requested:
            self.admission.stop()
        for kind, arg in self.early:  # what came in while the table was being built
            if kind == "credit":
                self.credit(arg)
            elif kind == "durable":
                self.durable(arg)
            else:
                await self.replay(*arg)
        self.early.clear()
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
            self._write_state()
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
        self.last_credit = time.monotonic()
        if self.admission is None:
            self.early.append(("credit", key))
            return
        self.checkpoints.pop(key, None)
        lease = self.admission.leases.get(key)
        if lease is not None:
            if key in self.durable_early:
                # Calls to an async actor may run out of order: this row was flushed already.
                self.durable_early.discard(key)
            else:
                self.credited[key] = lease
        self.admission.credit(key)

    def durable(self, keys: list[Key]) -> None:
        if self.admission is None:
            self.early.append(("durable", list(keys)))
            return
        for k in keys:
            key = (k[0], k[1])
            if self.credited.pop(key, None) is None and key in self.admission.leases:
                self.durable_early.add(key)

    async def replay(self, key: Key, reason: str, attempt: int | None = None) -> bool:
        if self.admission is None:
            self.early.append(("replay", ((key[0], key[1]), reason, attempt)))
            return False
        return await self.admission.replay((key[0], key[1]), reason, attempt)

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_batch(self, items: list[tuple[Key, int, str, int, bytes | None, dict[Any, Any]]]) -> None:
        """Keep each task's latest checkpoint: (key, attempt, next role, hops, pickled message or None,
        values of the fields offloaded in that hop). One of an older attempt, or of a task no longer
        leased, is dropped."""
        if self.admission is None:
            return
        for k, attempt, role, hops, message, values in items:
            key = (k[0], k[1])
            lease = self.admission.leases.get(key)
            if lease is None or lease.attempt != attempt:
                continue
            ck = self.checkpoints.get(key)
            if ck is None or ck.attempt != attempt:
                ck = self.checkpoints[key] = Checkpoint(attempt, "", 0, None, {})
            ck.values.update(values)
            if message is not None and hops >= ck.hops:
                ck.role, ck.hops, ck.message = role, hops, message
            self.checkpoint_count += 1

    async def _resume(self, lease: Lease) -> int:
        """Send the replay of `lease` (its attempt already raised) from the task's last checkpoint;
        returns how many hops it kept, 0 if there was none usable (the caller starts it over)."""
        key = (lease.row.task_id, lease.trial)
        ck = self.checkpoints.pop(key, None)
        if ck is None or ck.message is None:
            return 0
        msg: Message = pickle.loads(ck.message)
        try:
            values = dict(ck.values)
            msg.row = _inline(msg.row, values | self._own_values(msg.row))
            for turn in msg.turns:
                turn.content = _inline(turn.content, values)
        except KeyError:
            # A hop's values never arrived (its actor died before sending them): ask the owners.
            try:
                await self.payload.resolve(msg)
            except (RayError, PayloadLost):
                self.events.append({"t": time.time(), "event": "checkpoint unusable", "task": list(key)})
                return 0
        msg.attempt = lease.attempt
        hops = max(1, ck.hops)
        task = asyncio.create_task(self._send_to(ck.role, msg))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return hops

    def _own_values(self, value: Any) -> dict[tuple[str, int, int], Any]:
        """Values this actor owns (the row it offloaded when it first sent the task)."""
        return {
            h.ref: self.payload.serve(h.epoch, [h.key]).get(h.key) for h in iter_handles(value) if self.payload.owns(h)
        }

    # -- state across restarts -----------------------------------------------------------------

    def _counters(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.admission.snapshot() if self.admission else {}
        out: dict[str, Any] = {}
        for name in COUNTERS:
            out[name] = int(self.carried.get(name, 0)) + int(snap.get(name, 0))
        reasons = dict(self.carried.get("replay_reasons", {}))
        for r, n in snap.get("replay_reasons", {}).items():
            reasons[r] = reasons.get(r, 0) + n
        out["replay_reasons"] = reasons
        out["peak_in_flight"] = max(int(self.carried.get("peak_in_flight", 0)), int(snap.get("peak_in_flight", 0)))
        return out

    def _write_state(self) -> None:
        rows_read = max(self.admission.rows_read if self.admission else 0, self.restart_rows)
        write_json(
            self.state_path,
            {
                "directory": self.directory_name,
                "restarts": self.restarts,
                "rows_read": rows_read,
                "counters": self._counters(),
                "census": self.census_count,
                "deaths": self.deaths,
                "events": self.events[-50:],
            },
        )

    def progress(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.admission.snapshot() if self.admission else {"admitted": 0, "in_flight": 0}
        snap.update(self._counters())
        snap.update(
            census=self.census_count,
            deaths=self.deaths,
            events=self.events[-50:],
            restarts=self.restarts,
            checkpoints_received=self.checkpoint_count,
            checkpoints_held=len(self.checkpoints),
        )
        return snap

    # -- watching the other actors -------------------------------------------------------------

    async def _held_attempts(self) -> dict[Key, int]:
        """Every task some live agent holds, or handed on a moment ago to a peer that has not died since,
        with its highest attempt."""
        # An agent that died and has not answered since holds nothing: asking it would only wait for
        # the call to fail (half a second or more).
        handles = [(n, h) for n, h in self.sender.agent_handles if n not in self.down]
        answers = await asyncio.gather(
            *(asyncio.wait_for(h.census.remote(), timeout=30) for _, h in handles), return_exceptions=True
        )
        now = time.time()
        ok: list[Any] = []
        for (name, _), answer in zip(handles, answers, strict=True):
            if isinstance(answer, BaseException):
                self.events.append({"t": now, "event": "census: actor unavailable", "actor": name})
                continue  # a restarting actor holds nothing
            ok.append(answer)
        return held_from_census(ok, self.died_at, now=now, watching_since=self.started_at)

    async def _monitor(self) -> None:
        """Watch every agent actor and the sink; census after a death; replay expired leases."""
        await self.sender.load()
        watched = {name: h for name, h in self.sender.agent_handles}
        watched[f"sink-{self.partition}"] = self.sender.sinks[self.partition]
        futures = {name: asyncio.ensure_future(h.watch.remote()) for name, h in watched.items()}
        try:
            if self.restarts:
                # Deaths before these watches began went unseen (the sink may have died with the previous
                # incarnation, taking rows it had not flushed): look at every lease once.
                await asyncio.sleep(0.5)
                await self._census(sink_died=True)
            await self._watch(watched, futures)
        finally:
            for f in futures.values():
                f.cancel()
                if f.done() and not f.cancelled():
                    f.exception()  # retrieved: a watch ending at shutdown is expected

    async def _watch(self, watched: dict[str, Any], futures: dict[str, asyncio.Future[Any]]) -> None:
        last_state = 0.0
        while True:
            done, _ = await asyncio.wait(futures.values(), timeout=STATE_EVERY, return_when=asyncio.FIRST_COMPLETED)
            dead = [name for name, f in futures.items() if f in done]
            for name in dead:
                if not futures[name].cancelled():
                    futures[name].exception()  # a RayActorError: the actor died
                self.deaths += 1
                self.died_at[name] = time.time()
                self.down.add(name)
                self.events.append({"t": time.time(), "event": "actor died", "actor": name})
                futures[name] = asyncio.ensure_future(self._watch_again(name, watched[name]))
            if dead:
                # Let messages the dead actor sent just before it died land (a call on one host or rack
                # arrives in milliseconds): one still on its way would be replayed, and run twice.
                await asyncio.sleep(SETTLE_SECONDS)
                await self._census(sink_died=any(n.startswith("sink-") for n in dead))
            await self._replay_expired()
            assert self.admission is not None
            if (self.admission.leases or self.credited) and time.monotonic() - self.last_credit >= STALL_SECONDS:
                # Nothing ended for a while although tasks are in flight, or rows wait to be flushed: check
                # that each is somewhere (a credit from a sink that died before flushing its row can arrive
                # after the census its death started; the sink's answer tells whether it has the row).
                self.last_credit = time.monotonic()
                self.events.append({"t": time.time(), "event": "stall census"})
                await self._census(sink_died=True)
            if time.monotonic() - last_state >= STATE_EVERY:
                last_state = time.monotonic()
                self._write_state()

    async def _watch_again(self, name: str, handle: Any) -> None:
        """Watch `name` again once its next incarnation answers (a watch made while it restarts would fail
        at once and count one death twice); until then it is down, and a census does not ask it."""
        while True:
            try:
                await handle.ping.remote()
                break
            except ACTOR_GONE:
                await asyncio.sleep(0.1)
        self.down.discard(name)
        await handle.watch.remote()

    async def _census(self, *, sink_died: bool) -> None:
        assert self.admission is not None
        self.census_count += 1
        # Only tasks leased before the agents are asked: one admitted while they answer may reach them after.
        before = set(self.admission.leases)
        held: set[Key] = set(self.in_transit)
        held.update(await self._held_attempts())
        held.update(self.in_transit)
        leased = [k for k in before if k in self.admission.leases and k not in held]
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
        # The replays go out together: each one that starts over waits for its first peer's answer,
        # and one after another they held the last of a death's tasks back by up to a second.
        again: list[Any] = []
        readmitted: set[Key] = set()
        for key in unflushed:
            # A credit or a durable report may have come in while the sink was asked: look again.
            lost_row = self.credited.pop(key, None) if key not in known else None
            if lost_row is not None:
                again.append(self.admission.readmit(lost_row, "sink died before flush"))
                readmitted.add(key)  # its lease is leased too: one run again, not two
        # `replay` passes over a task credited in the meantime (its row reached the sink).
        again += [
            self.admission.replay(key, "actor died") for key in leased if key not in known and key not in readmitted
        ]
        replayed = sum(1 for ok in await asyncio.gather(*again) if ok is not False)
        self.events.append({"t": time.time(), "event": "census", "replayed": replayed})
        self._write_state()

    async def _replay_expired(self) -> None:
        assert self.admission is not None
        for key in self.admission.expired():
            await self.admission.replay(key, "lease expired")
