"""`export_run`: a run directory's output rows as training records, every row accounted for."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.export.rows import TORN, UNREADABLE, Line, RunInfo, open_run, read_lines
from matrix.export.views import COMMON_FIELDS, Field, LeftOut, Record, View, view_for
from matrix.export.where import check_fields, parse_where
from matrix.export.writers import FORMATS, Writer, check_out, open_writer
from matrix.sources import need_datasets

NAMED = 3  # locations named per kind of bad line


@dataclass
class ExportSummary:
    """What happened to every input row and every record made from them."""

    run: str = ""
    out: str = ""
    fmt: str = "chat"
    rows: int = 0  # non-blank lines of the output files, torn and unreadable ones included
    exported_rows: int = 0  # rows that made records
    left_out: Counter[str] = field(default_factory=Counter)  # reason -> rows
    where_named: dict[str, list[str]] = field(default_factory=dict)  # reason -> first locations
    records: int = 0
    failed_where: int = 0
    duplicates: int = 0
    written: int = 0

    @property
    def accounted(self) -> bool:
        rows_ok = self.rows == self.exported_rows + sum(self.left_out.values())
        return rows_ok and self.records == self.failed_where + self.duplicates + self.written

    def leave_out(self, reason: str, location: str) -> None:
        self.left_out[reason] += 1
        named = self.where_named.setdefault(reason, [])
        if len(named) < NAMED:
            named.append(location)

    def line(self) -> str:
        parts = []
        for reason, n in sorted(self.left_out.items(), key=lambda kv: (-kv[1], kv[0])):
            where = ""
            if reason in (TORN, UNREADABLE) or reason.startswith("view failed"):
                more = ", ..." if n > len(self.where_named.get(reason, [])) else ""
                where = f" [{', '.join(self.where_named.get(reason, []))}{more}]"
            parts.append(f"{reason} {n}{where}")
        left = f"{sum(self.left_out.values())} left out ({'; '.join(parts)})" if parts else "0 left out"
        dup = "duplicate" if self.duplicates == 1 else "duplicates"
        return (
            f"matrix export: {self.rows} rows in {self.run}: {self.exported_rows} exported, {left}; "
            f"{self.records} records made: {self.failed_where} failed --where, {self.duplicates} {dup} removed, "
            f"{self.written} written to {self.out} ({self.fmt})"
        )


def _common(row: Mapping[str, Any], run: RunInfo) -> dict[str, Any]:
    usage = row.get("usage") or {}
    simulated = run.label("simulated")
    return {
        "run_id": run.run_id,
        "case": run.label("case") or row.get("workflow"),
        "system": run.label("system"),
        "workflow": row.get("workflow"),
        "task_id": str(row.get("task_id")),
        "trial": int(row.get("trial") or 0),
        "backend": run.label("backend"),
        "simulated": None if simulated is None else bool(simulated),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def _digest(messages: Any) -> bytes:
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _Progress:
    def __init__(self, every: float, say: Callable[[str], None] | None) -> None:
        self.every, self.say = every, say
        self.start = self.last = time.monotonic()

    def tick(self, s: ExportSummary) -> None:
        now = time.monotonic()
        if self.say is not None and now - self.last >= self.every:
            self.last = now
            rate = s.rows / max(now - self.start, 1e-9)
            self.say(f"matrix export: {s.rows} rows read, {s.written} records written ({rate:,.0f} rows/s)")


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    fmt: str = "chat",
    where: Sequence[str] = (),
    dedupe: bool = True,
    push_to_hub: str | None = None,
    views: Sequence[str] = (),
    progress_seconds: float = 10.0,
    say: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write the records of `run_dir`'s output rows to `out` in `fmt` (chat, hf or parquet).

    Error rows, rows with nothing to train on, torn and unreadable lines are left out and counted by
    reason; records failing a `where` condition (see `matrix.export.where`) and, with `dedupe`, records
    whose messages repeat an earlier record's exactly, are counted apart. Nothing is dropped silently:
    the summary accounts for every line and every record.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if push_to_hub and fmt != "hf":
        raise ValueError("--push-to-hub needs --format hf")
    if push_to_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise ValueError("--push-to-hub needs the network, but HF_HUB_OFFLINE is set; unset it to push")
    if fmt == "hf":
        need_datasets("matrix export --format hf")
    conditions = [parse_where(w) for w in where]
    run, files = open_run(run_dir)
    out = Path(out)
    check_out(fmt, out)
    summary = ExportSummary(run=str(run_dir), out=str(out), fmt=fmt)
    seen: set[bytes] = set()
    view: View | None = None
    workflow: str | None = None
    writer: Writer | None = None
    fields: list[Field] = list(COMMON_FIELDS)
    ticker = _Progress(progress_seconds, say)
    ok = False
    try:
        for line in read_lines(files):
            summary.rows += 1
            ticker.tick(summary)
            if view is None and line.row is not None and line.row.get("status") == "done":
                workflow = str(line.row.get("workflow"))
                view = view_for(workflow, views)
                fields = [*COMMON_FIELDS, *view.fields]
                check_fields(conditions, [f.name for f in fields])
            if writer is None and view is not None:
                writer = open_writer(fmt, out, fields, push_to_hub)
            records = _records(line, view, workflow, run, summary)
            if records is None:
                continue
            summary.exported_rows += 1
            for rec in records:
                summary.records += 1
                if not all(c.test(rec["metadata"]) for c in conditions):
                    summary.failed_where += 1
                    continue
                if dedupe:
                    key = _digest(rec["messages"])
                    if key in seen:
                        summary.duplicates += 1
                        continue
                    seen.add(key)
                assert writer is not None
                writer.write(rec)
                summary.written += 1
        if writer is None:  # no finished row at all: an empty output, the --where fields checked anyway
            check_fields(conditions, [f.name for f in fields])
            writer = open_writer(fmt, out, fields, push_to_hub)
        ok = True
    finally:
        if writer is not None:
            writer.close(ok)
    return summary


def _records(
    line: Line, view: View | None, workflow: str | None, run: RunInfo, summary: ExportSummary
) -> list[Record] | None:
    """The records of one line, or None when it is left out (counted in `summary`)."""
    row = line.row
    if row is None:
        summary.leave_out(str(line.problem), line.location)
        return None
    status = row.get("status")
    if status != "done":
        reason = str(row.get("error") or "unknown").split(":")[0][:80] if status == "error" else f"status {status}"
        summary.leave_out(f"error: {reason}" if status == "error" else reason, line.location)
        return None
    if view is None or row.get("workflow") != workflow:
        summary.leave_out(f"workflow {row.get('workflow')!r}, not {workflow!r}", line.location)
        return None
    try:
        made = view.records(row, run)
    except LeftOut as why:
        summary.leave_out(str(why), line.location)
        return None
    except Exception as exc:  # a row the view cannot read: counted and named, the export goes on
        summary.leave_out(f"view failed: {type(exc).__name__}", line.location)
        return None
    if not made:
        summary.leave_out("no records", line.location)
        return None
    common = _common(row, run)
    return [{**rec, "metadata": {**common, **rec["metadata"]}} for rec in made]
