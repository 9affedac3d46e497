"""The sink: finished tasks become output rows, each exactly once.

- Append-only JSONL, flushed in small batches (by count or age), fsync'd on close.
- A done-ledger keyed by (task_id, trial): a second finished copy of a task (a replay that raced
  its original) is counted as a duplicate and dropped, so the output holds each task once.
- Resume: opening an existing output reads its ledger back; a torn last line (the writer was
  killed mid-write) is cut off and reported, never parsed as data.
- Metrics: counts by status, tokens by role, end-to-end latency.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.message import DONE, ERROR, Message

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
    """
    keys: set[Key] = set()
    if not path.exists():
        return keys, 0
    with open(path, "rb") as fh:
        data = fh.read()
    cut = 0
    if data and not data.endswith(b"\n"):
        last_nl = data.rfind(b"\n")
        keep = last_nl + 1
        cut = len(data) - keep
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        data = data[:keep]
    for line_no, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            keys.add((str(row["task_id"]), int(row.get("trial", 0))))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{line_no}: existing output line is not a task row ({exc})") from exc
    return keys, cut


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
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done, cut = repair_and_load_ledger(self.path)
        self.stats = SinkStats(resumed=len(self.done), repaired_bytes=cut)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._buffer: list[bytes] = []
        self._last_flush = time.monotonic()
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._to_row = resolve or (lambda m: m.to_row())
        self._keep_latencies = keep_latencies

    @property
    def buffered(self) -> int:
        """Rows accepted but not yet written to the file."""
        return len(self._buffer)

    def __contains__(self, key: Key) -> bool:
        return key in self.done

    def accept(self, message: Message) -> bool:
        if message.key in self.done:
            self.stats.duplicates += 1
            return False
        self.done.add(message.key)
        if not message.finished:
            message.finished = time.time()
        row = self._to_row(message)
        self._buffer.append(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        self._account(message)
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        return True

    def _account(self, message: Message) -> None:
        s = self.stats
        if message.status == ERROR:
            s.failed += 1
            reason = (message.error or "unknown").split(":")[0][:80]
            s.errors_by_reason[reason] = s.errors_by_reason.get(reason, 0) + 1
        elif message.status == DONE:
            s.finished += 1
        for role, u in message.usage_by_role().items():
            r = s.tokens_by_role.setdefault(role, {"prompt_tokens": 0, "completion_tokens": 0})
            r["prompt_tokens"] += u.prompt_tokens
            r["completion_tokens"] += u.completion_tokens
            s.prompt_tokens += u.prompt_tokens
            s.completion_tokens += u.completion_tokens
        if len(s.e2e_latencies) < self._keep_latencies:
            s.e2e_latencies.append(message.finished - message.created)

    def flush(self) -> None:
        if self._buffer:
            self._fh.write(b"".join(self._buffer))
            self._buffer.clear()
            self._fh.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
