"""What the experiment drivers share: run directories for measurements, and the backend labels
every run's metrics carry.

A timed run must start empty. The runtimes resume from a run directory's output (rows already
written are skipped), which is what a crashed production run wants and what a measurement must
not get: a rerun of `make reproduce-*` would otherwise "finish" in no time with zero tokens. An
existing directory with output is moved aside (never deleted) to `<name>.prev-<timestamp>`, and
the move is reported.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@contextmanager
def serve_replicas(backend: str, model: str, replicas: int, **options: Any) -> Iterator[Any]:
    """`replicas` GPU replicas of `model` on Ray Serve (`vllm` or `sglang`) on the Ray cluster this process
    is on; `options` override the model's serving spec. Yields the backend's server (`base_url`, `model`)."""
    from matrix.llm.backends import get_backend
    from matrix.runtime.ray_p2p import ensure_ray

    ensure_ray()
    with get_backend(backend).start(model=model, min_replicas=replicas, max_replicas=replicas, **options) as server:
        yield server


def fresh(run_dir: Path) -> Path:
    """Make sure `run_dir` holds no earlier output; returns where earlier output went (or run_dir)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = run_dir.with_name(f"{run_dir.name}.prev-{stamp}")
        n = 1
        while target.exists():
            target = run_dir.with_name(f"{run_dir.name}.prev-{stamp}-{n}")
            n += 1
        run_dir.rename(target)
        print(f"experiments: {run_dir} held an earlier run; moved it to {target}", file=sys.stderr)
        return target
    return run_dir


def backend_labels(
    case: str, backend: str, simulated: bool, time_scale: float, hardware: str, replicas: int, info: dict[str, Any]
) -> dict[str, Any]:
    """The results contract's description of where a run's models ran (DESIGN.md)."""
    return {
        "case": case,
        "backend": backend,
        "simulated": simulated,
        "time_scale": time_scale,
        "hardware": hardware,
        "replicas": replicas,
        **({"sim": info} if info else {}),
    }


def sim_mark(m: dict[str, Any]) -> str:
    """The label a simulated figure carries in every table (and the clock, when it was virtual)."""
    if m.get("clock") == "virtual":
        return " (SIMULATED, virtual clock)"
    return " (SIMULATED)" if m.get("simulated") else ""


def hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of a run directory's output files."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(run_dir).glob("output*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


@dataclass
class Table:
    """One results table: a title, a header, string cells and notes under it."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> str:
        """`out.csv` and `out.md`; returns the Markdown."""
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.header)
            w.writerows(self.rows)
        text = self.markdown()
        out.with_suffix(".md").write_text(text)
        return text


def write_table(out: Path, title: str, header: list[str], rows: list[list[str]], notes: Sequence[str] = ()) -> str:
    """A table as `out.csv` and `out.md` (title, table, notes); returns the Markdown."""
    return Table(out.name, title, header, rows, list(notes)).write(out)
