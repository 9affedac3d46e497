"""The sink: finished tasks become output rows, each exactly once.

- Append-only JSONL, flushed in small batches (by count or age), fsync'd on close.
- A done-ledger keyed by (task_id, trial): a second finished copy of a task (a replay that raced
  its original) is counted as a duplicate and dropped, so the output holds each task once.
- Resume: opening an existing output reads its ledger back; a torn last line (the writer was
  killed mid-write) is cut off and reported, never parsed as data.
- Metrics: counts by status, tokens by role, end-to-end latency.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix import clock
from matrix.message import DONE, ERROR, Message
from matrix.procs import lock_holders

Key = tuple[str, int]


@dataclass
class SinkStats:
    finished: int = 0
    failed: int = 0
    duplicates: int = 0
    resumed: int = 0
    repaired_bytes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_by_role: dict[str, dict[str, int]] = field(default_factory=dict)
    e2e_latencies: list[float] = field(default_factory=list)
    errors_by_reason: dict[str, int] = field(default_factory=dict)


def repair_and_load_ledger(path: Path) -> tuple[set[Key], int]:
    """Read the (task_id, trial) keys already in `path`; truncate a torn final line.

    Returns the keys and the number of bytes cut off. A line in the middle of the file that does
    not parse is an error (the file was edited by hand or corrupted) and is reported with its number.
    The file is read a line at a time: a restarted sink of a long run must not hold it whole.
    """
    keys: set[Key] = set()
    if not path.exists():
        return keys, 0
    cut = cut_torn_tail(path)
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                keys.add((str(row["task_id"]), int(row.get("trial", 0))))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: existing output line is not a task row ({exc})") from exc
    return keys, cut


def cut_torn_tail(path: Path, block: int = 1 << 16) -> int:
    """Truncate `path` after its last newline (a row cut off by a crash); returns the bytes cut. Reads
    backwards from the end, a block at a time."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "r+b") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            i = fh.read(pos - start).rfind(b"\n")
            if i >= 0:
                fh.truncate(start + i + 1)
                return size - (start + i + 1)
            pos = start
        fh.truncate(0)
        return size


LOCK_WAIT_SECONDS = 120.0


def lock_exclusive(fh: Any, path: Path, wait_seconds: float) -> None:
    """Hold an exclusive lock on the open output `fh` (released when it is closed or the process dies);
    wait up to `wait_seconds` for another writer to let go, then fail naming the file."""
    deadline = clock.now() + wait_seconds
    said = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if clock.now() >= deadline:
                holders = "; ".join(f"PID {pid} {cmd[:80]}".rstrip() for pid, cmd in lock_holders(path))
                raise RuntimeError(
                    f"{path} is still being written by another process after {wait_seconds:g} s "
                    f"({f'held by {holders}: ' if holders else ''}an earlier run of the same run directory?); "
                    "stop it, or wait, and run again"
                ) from None
            if not said:
                said = True
                print(f"sink: waiting for the earlier writer of {path} to exit", file=sys.stderr, flush=True)
            time.sleep(0.2)


class SinkWriter:
    """Writes finished messages; `accept` returns False for a duplicate."""

    def __init__(
        self,
        path: str | Path,
        *,
        flush_every: int = 64,
        flush_seconds: float = 0.5,
        resolve: Callable[[Message], dict[str, Any]] | None = None,
        keep_latencies: int = 200_000,
        lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One writer per output file: a run killed with SIGKILL can leave its sink process alive for a
        # few seconds, still flushing; a rerun waits for it to go before reading the ledger.
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        try:
            lock_exclusive(self._fh, self.path, lock_wait_seconds)
            self.done, cut = repair_and_load_ledger(self.path)
        except BaseException:
            self._fh.close()
            raise
        self.stats = SinkStats(resumed=len(self.done), repaired_bytes=cut)
        self._buffer: list[bytes] = []
        self._buffered_keys: set[Key] = set()
        self.this_run: set[Key] = set()  # rows of this run (not resumed from an earlier one)
        self._last_flush = clock.now()
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._to_row = resolve or (lambda m: m.to_row())
        self._keep_latencies = keep_latencies

    @property
    def buffered(self) -> int:
        """Rows accepted but not yet written to the file."""
        return len(self._buffer)

    def written(self, key: Key) -> bool:
        """Whether `key`'s row is in the file (not merely accepted and still buffered)."""
        return key in self.done and key not in self._buffered_keys

    def __contains__(self, key: Key) -> bool:
        return key in self.done

    def accept(self, message: Message) -> bool:
        if message.key in self.done:
            self.stats.duplicates += 1
            return False
        self.done.add(message.key)
        self.this_run.add(message.key)
        if not message.finished:
            message.finished = clock.wall()
        row = self._to_row(message)
        self._buffer.append(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        self._buffered_keys.add(message.key)
        self._account(message)
        if len(self._buffer) >= self.flush_every or clock.now() - self._last_flush >= self.flush_seconds:
            self.flush()
        return True

    def _account(self, message: Message) -> None:
        usage = [(role, u.prompt_tokens, u.completion_tokens) for role, u in message.usage_by_role().items()]
        self._count(message.status, message.error, usage, message.finished - message.created)

    def _count(self, status: str, error: str | None, usage: list[tuple[str, int, int]], latency: float) -> None:
        s = self.stats
        if status == ERROR:
            s.failed += 1
            reason = (error or "unknown").split(":")[0][:80]
            s.errors_by_reason[reason] = s.errors_by_reason.get(reason, 0) + 1
        elif status == DONE:
            s.finished += 1
        for role, prompt, completion in usage:
            r = s.tokens_by_role.setdefault(role, {"prompt_tokens": 0, "completion_tokens": 0})
            r["prompt_tokens"] += prompt
            r["completion_tokens"] += completion
            s.prompt_tokens += prompt
            s.completion_tokens += completion
        if len(s.e2e_latencies) < self._keep_latencies:
            s.e2e_latencies.append(latency)

    def size(self) -> int:
        """Bytes in the output file, rows still buffered left out."""
        return self._fh.tell()

    def take_over(self, offset: int) -> None:
        """Count the rows after byte `offset` of the file as this writer's own (not as resumed).

        A sink that is restarted in the middle of a run opens the file again and would count its
        predecessor's rows as resumed from an earlier run; given where this run began, it carries
        on the predecessor's counts instead (latencies included, from the rows' timestamps).
        """
        taken = 0
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:  # a line at a time: the file of a long run is large
                if not raw.strip():
                    continue
                row = json.loads(raw)
                self.this_run.add((str(row["task_id"]), int(row.get("trial", 0))))
                usage: dict[str, list[int]] = {}
                for turn in row.get("turns") or []:
                    u = turn.get("usage") or {}
                    acc = usage.setdefault(str(turn.get("role")), [0, 0])
                    acc[0] += int(u.get("prompt_tokens") or 0)
                    acc[1] += int(u.get("completion_tokens") or 0)
                latency = float(row.get("finished") or 0.0) - float(row.get("created") or 0.0)
                counts = [(r, p, c) for r, (p, c) in usage.items()]
                self._count(str(row.get("status")), row.get("error"), counts, latency)
                taken += 1
        self.stats.resumed = max(0, self.stats.resumed - taken)

    def flush(self) -> None:
        if self._buffer:
            self._fh.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered_keys.clear()
            self._fh.flush()
        self._last_flush = clock.now()

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
