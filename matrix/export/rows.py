"""Reading a run directory for export: its labels (config.json, metrics.json) and its output rows.

Rows are read one line at a time from `output.jsonl` (or a partitioned run's `output-NNNN.jsonl`,
in partition order), never the whole file at once. A line is one of:

- a task row (a JSON object with a `task_id`): handed on;
- blank: not a row, skipped;
- the last line of a file without its final newline that does not parse: a torn line (the writer was
  killed mid-write, as the sink's own resume also finds), skipped and named in the summary;
- anything else: an unreadable line, left out and named with its file and line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TORN = "torn last line"
UNREADABLE = "unreadable line"


@dataclass
class RunInfo:
    """What a run directory says about itself, for the records' metadata."""

    path: Path
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def label(self, key: str) -> Any:
        """`key` from config.json, else metrics.json (the labels every system writes), else None."""
        if key in self.config:
            return self.config[key]
        return self.metrics.get(key)

    def model(self, pool: str) -> str | None:
        """The model the case configured for `pool` (config.json's case_config.models), if recorded."""
        models = (self.config.get("case_config") or {}).get("models") or {}
        entry = models.get(pool) if isinstance(models, Mapping) else None
        if isinstance(entry, Mapping) and entry.get("model"):
            return str(entry["model"])
        return None

    def settings(self) -> dict[str, Any]:
        """The case's settings as the run recorded them (sampling per role, limits); {} if none."""
        value = self.config.get("settings")
        return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Line:
    """One line of an output file: a row, or why it is not one (`problem` is TORN or UNREADABLE)."""

    location: str
    row: dict[str, Any] | None
    problem: str | None = None
    detail: str = ""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc}); fix or remove it and export again") from exc
    return value if isinstance(value, dict) else {}


def output_files(run_dir: Path) -> list[Path]:
    """The output files of a run directory (or the one file given), in partition order."""
    if run_dir.is_file():
        return [run_dir]
    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} does not exist")
    single = run_dir / "output.jsonl"
    parts = sorted(run_dir.glob("output-[0-9][0-9][0-9][0-9].jsonl"))
    files = ([single] if single.is_file() else []) + parts
    if not files:
        raise ValueError(f"{run_dir} has no output.jsonl (nor output-NNNN.jsonl): is it a run directory?")
    return files


def open_run(run_dir: str | Path) -> tuple[RunInfo, list[Path]]:
    """The run's labels and its output files; a path to an output file is accepted too."""
    path = Path(run_dir)
    files = output_files(path)
    home = path.parent if path.is_file() else path
    info = RunInfo(home, home.name, _read_json(home / "config.json"), _read_json(home / "metrics.json"))
    return info, files


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not a row object"
    if "task_id" not in value:
        return None, "a JSON object without a task_id"
    return value, ""


def read_lines(files: list[Path]) -> Iterator[Line]:
    """Every line of `files` that is a row or a problem, one at a time."""
    for path in files:
        with open(path, "rb") as fh:
            line_no = 0
            for raw in fh:
                line_no += 1
                where = f"{path.name}:{line_no}"
                if not raw.strip():
                    continue
                row, why = _parse(raw)
                if row is not None:
                    yield Line(where, row)
                elif not raw.endswith(b"\n"):  # only the last line of a file can lack its newline
                    yield Line(where, None, TORN, f"{len(raw)} bytes without a final newline")
                else:
                    yield Line(where, None, UNREADABLE, why)
