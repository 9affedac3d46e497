"""Admission: feeds rows in, keeps at most `max_concurrent_tasks` in flight, holds a lease per task.

The sink pushes a credit back when a task ends (no polling). A task whose lease expires, or that the
transport reports lost (its actor died), is replayed with `attempt + 1`, up to `max_attempts`; after
that it becomes an error row rather than being retried forever. A replay starts from the task's last
checkpoint when the transport keeps one (`resume`), else from its first role. A row that cannot
become a task (malformed line, duplicate id) becomes an error row naming its location.

An admission that restarts (its process died) is built again over the same source with what
survived: `adopted` (tasks some live actor still holds, with their attempts: they keep running and
get a lease without being sent again), `restart_rows` (how many source rows the previous
incarnation had read: a task among them that is neither done nor adopted was lost with it, or is in
transit, and is sent again as a replay; the sink keeps one row per task either way) and
`done_this_run` (rows this run wrote: one beyond `restart_rows` was admitted by the previous
incarnation after it last recorded its counts, and is counted as admitted, not as skipped).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from matrix import clock
from matrix.message import Message, new_message
from matrix.sources import SourceRow

Key = tuple[str, int]


def task_seed(base_seed: int, task_id: str, trial: int) -> int:
    """A per-task seed that is the same in every process and every replay."""
    digest = hashlib.blake2b(f"{base_seed}|{task_id}|{trial}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class Lease:
    row: SourceRow
    trial: int
    attempt: int
    deadline: float
    holds_slot: bool = True


@dataclass
class AdmissionStats:
    admitted: int = 0
    skipped_done: int = 0
    bad_rows: int = 0
    replayed: int = 0
    resumed: int = 0  # replays that started from a checkpoint instead of the first role
    resumed_hops: int = 0  # hops those replays did not have to run again
    gave_up: int = 0
    stale_losses: int = 0  # losses reported by copies of attempts that had been replayed already
    peak_in_flight: int = 0
    stopped: bool = False
    replay_reasons: dict[str, int] = field(default_factory=dict)


class Admission:
    """Transport-independent admission; `send` delivers a new message to the first role.

    `done` is the sink's ledger at start (resume), `emit_error` writes an error row straight to the
    sink for input that can never run.
    """

    def __init__(
        self,
        rows: Iterable[SourceRow],
        *,
        workflow: str,
        send: Callable[[Message], Awaitable[None]],
        emit_error: Callable[[Message], Awaitable[None]],
        max_concurrent_tasks: int,
        num_trials: int = 1,
        seed: int = 0,
        done: set[Key] | frozenset[Key] = frozenset(),
        lease_seconds: float = 3600.0,
        max_attempts: int = 3,
        max_sends_in_flight: int = 256,
        resume: Callable[[Lease], Awaitable[int]] | None = None,
        adopted: Mapping[Key, int] | None = None,
        restart_rows: int = 0,
        done_this_run: set[Key] | frozenset[Key] = frozenset(),
    ) -> None:
        if max_concurrent_tasks < 1:
            raise ValueError(f"max_concurrent_tasks must be >= 1, got {max_concurrent_tasks}")
        if num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {num_trials}")
        self._rows = rows
        self.workflow = workflow
        self._send = send
        self._emit_error = emit_error
        self.max_concurrent_tasks = max_concurrent_tasks
        self.num_trials = num_trials
        self.seed = seed
        self.done = set(done)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.max_sends_in_flight = max_sends_in_flight
        self.leases: dict[Key, Lease] = {}
        self.stats = AdmissionStats()
        self._slots = asyncio.Semaphore(max_concurrent_tasks)
        self._idle = asyncio.Event()
        self._exhausted = False
        self._stopping = False
        self._seen_ids: dict[str, str] = {}
        self._resume = resume
        self.adopted = dict(adopted or {})
        self.restart_rows = restart_rows
        self.done_this_run = done_this_run
        self.rows_read = 0

    @property
    def in_flight(self) -> int:
        return len(self.leases)

    def stop(self) -> None:
        """Admit nothing more (a graceful stop): `run` returns once the tasks in flight have ended."""
        if not self._stopping:
            self._stopping = True
            self.stats.stopped = True
            self._slots.release()  # wakes an admission loop waiting for a slot; it sees the flag

    def _message(self, lease: Lease) -> Message:
        r = lease.row
        msg = new_message(
            r.task_id,
            self.workflow,
            r.row,
            trial=lease.trial,
            seed=task_seed(self.seed, r.task_id, lease.trial),
            attempt=lease.attempt,
        )
        msg.route["location"] = r.location  # so that a role's error can name the input line
        return msg

    async def _error_row(self, row: SourceRow, trial: int, reason: str) -> None:
        msg = new_message(row.task_id, self.workflow, row.row, trial=trial)
        msg.fail(reason)
        msg.route["location"] = row.location
        self.stats.bad_rows += 1
        self.done.add(msg.key)
        await self._emit_error(msg)

    async def run(self) -> None:
        """Admit every row; returns when all admitted tasks have been credited back.

        First hops are sent concurrently (up to `max_sends_in_flight` awaiting their acknowledgement)
        so that admission's rate is not one round trip per task.
        """
        sends = asyncio.Semaphore(self.max_sends_in_flight)
        async with asyncio.TaskGroup() as tg:
            await self._admit_all(tg, sends)
        self._exhausted = True
        if not self.leases:
            self._idle.set()
        await self._idle.wait()

    async def _send_bounded(self, msg: Message, sends: asyncio.Semaphore) -> None:
        try:
            await self._send(msg)
        finally:
            sends.release()

    async def _admit_all(self, tg: asyncio.TaskGroup, sends: asyncio.Semaphore) -> None:
        for row in self._rows:
            if self._stopping:
                return
            # Rows the previous incarnation had read whole (every trial admitted) when it recorded its counts.
            before_restart = self.rows_read < self.restart_rows
            if row.error is None and row.task_id in self._seen_ids:
                first = self._seen_ids[row.task_id]
                row = SourceRow(
                    row.index, f"{row.task_id}@{row.location}", row.row, row.location,
                    f"duplicate task id {row.task_id!r} (first at {first})",
                )  # fmt: skip
            elif row.error is None:
                self._seen_ids[row.task_id] = row.location
            for trial in range(self.num_trials):
                key = (row.task_id, trial)
                if key in self.done:
                    # Admitted (and ended) after the previous incarnation last recorded its counts, or
                    # done in an earlier run; a row the previous incarnation had read is counted already.
                    if not before_restart and key in self.done_this_run:
                        self.stats.admitted += 1
                    elif not before_restart:
                        self.stats.skipped_done += 1
                    continue
                if row.error is not None:
                    await self._error_row(row, trial, f"bad input row at {row.location}: {row.error}")
                    continue
                await self._slots.acquire()
                if self._stopping:
                    return
                held = self.adopted.pop(key, None)
                lease = Lease(row, trial, held or 1, clock.now() + self.lease_seconds)
                self.leases[key] = lease
                self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(self.leases))
                self._idle.clear()
                if not before_restart:
                    self.stats.admitted += 1
                if held is not None:
                    continue  # a live actor holds it: it goes on, under this lease
                if before_restart:
                    # Admitted by the previous incarnation, then lost with it (or in transit: the sink
                    # keeps one row). Its copy, if any, had attempt 1 at most once replayed: go past it.
                    lease.attempt = 2
                    self._count_replay("admission restarted")
                await sends.acquire()
                tg.create_task(self._send_bounded(self._message(lease), sends))
            self.rows_read += 1

    def credit(self, key: Key) -> bool:
        """A task ended (first finished copy); free its slot. False if it held no lease."""
        lease = self.leases.pop(key, None)
        self.done.add(key)
        if lease is None:
            return False
        if lease.holds_slot:
            self._slots.release()
        if self._exhausted and not self.leases:
            self._idle.set()
        return True

    async def replay(self, key: Key, reason: str, attempt: int | None = None) -> bool:
        """Start a lost task again from its first role with attempt + 1 (or give up).

        `attempt` is the attempt of the copy that was lost, when a copy reports its own loss: a copy
        of an attempt that was already replayed is stale, and its loss changes nothing (the newer
        attempt carries on). Without it (a census, an expired lease) the current attempt is meant.
        """
        lease = self.leases.get(key)
        if lease is None or key in self.done:
            return False
        if attempt is not None and attempt != lease.attempt:
            self.stats.stale_losses += 1
            return False
        self.stats.replay_reasons[reason] = self.stats.replay_reasons.get(reason, 0) + 1
        if lease.attempt >= self.max_attempts:
            self.stats.gave_up += 1
            msg = self._message(lease)
            msg.fail(f"lost {lease.attempt} times (last: {reason}); gave up after max_attempts={self.max_attempts}")
            await self._emit_error(msg)
            return False
        lease.attempt += 1
        lease.deadline = clock.now() + self.lease_seconds
        self.stats.replayed += 1
        hops = await self._resume(lease) if self._resume is not None else 0
        if hops > 0:
            self.stats.resumed += 1
            self.stats.resumed_hops += hops
        else:
            await self._send(self._message(lease))
        return True

    def _count_replay(self, reason: str) -> None:
        self.stats.replayed += 1
        self.stats.replay_reasons[reason] = self.stats.replay_reasons.get(reason, 0) + 1

    async def readmit(self, lease: Lease, reason: str) -> None:
        """Run a task again whose finished row was lost (it had already been credited)."""
        key = (lease.row.task_id, lease.trial)
        self.done.discard(key)
        lease.holds_slot = False  # its slot was freed at the first credit
        lease.attempt += 1
        lease.deadline = clock.now() + self.lease_seconds
        self.leases[key] = lease
        self._idle.clear()
        self._count_replay(reason)
        await self._send(self._message(lease))

    def expired(self, now: float | None = None) -> list[Key]:
        now = clock.now() if now is None else now
        return [k for k, lease in self.leases.items() if lease.deadline <= now]

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {
            "admitted": s.admitted,
            "skipped_done": s.skipped_done,
            "bad_rows": s.bad_rows,
            "replayed": s.replayed,
            "resumed": s.resumed,
            "resumed_hops": s.resumed_hops,
            "gave_up": s.gave_up,
            "stale_losses": s.stale_losses,
            "peak_in_flight": s.peak_in_flight,
            "in_flight": len(self.leases),
            "stopped": s.stopped,
            "replay_reasons": dict(s.replay_reasons),
            "rows_read": self.rows_read,
        }
