"""Run metrics: counters and mergeable histograms, a per-second time series, Prometheus text.

Each process (an agent actor, the sink, admission) keeps its own `Metrics`; the driver merges
their snapshots. Histograms have fixed log-spaced buckets so that merging is a sum, and quantiles
are read from the merged buckets.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Seconds from 10 microseconds to about 3 hours, 4 buckets per factor of ten; bytes reuse the same
# scale (1e-5 .. 1e4 times 1e6 would be wasteful), so bytes get their own bounds.
_SECONDS = [10 ** (e / 4) for e in range(-20, 17)]
_BYTES = [float(2**e) for e in range(4, 31)]


@dataclass
class Histogram:
    bounds: list[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0
    max: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    @classmethod
    def seconds(cls) -> Histogram:
        return cls(list(_SECONDS))

    @classmethod
    def bytes(cls) -> Histogram:
        return cls(list(_BYTES))

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different buckets")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.n += other.n
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (NaN when empty)."""
        if self.n == 0:
            return math.nan
        target = q * self.n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= target and c:
                return min(self.bounds[i], self.max) if i < len(self.bounds) else self.max
        return self.max

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "count": self.n,
            "mean": self.mean(),
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "max": self.max,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": self.bounds, "counts": self.counts, "total": self.total, "n": self.n, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(list(d["bounds"]), list(d["counts"]), float(d["total"]), int(d["n"]), float(d["max"]))


#: The label a counter's key is exported under, where it is not the role (see `to_prometheus`).
LABEL_NAMES = {"llm_errors": "reason", "llm_failures": "reason"}


class Metrics:
    """Counters and histograms keyed by (name, label); plain data in `snapshot()`."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[str, Histogram]] = defaultdict(dict)

    def inc(self, name: str, label: str = "", value: float = 1.0) -> None:
        self.counters[name][label] += value

    def observe(self, name: str, value: float, label: str = "", *, kind: str = "seconds") -> None:
        h = self.histograms[name].get(label)
        if h is None:
            h = Histogram.bytes() if kind == "bytes" else Histogram.seconds()
            self.histograms[name][label] = h
        h.observe(value)

    def snapshot(self) -> dict[str, Any]:
        return {
            "counters": {k: dict(v) for k, v in self.counters.items()},
            "histograms": {k: {lbl: h.to_dict() for lbl, h in v.items()} for k, v in self.histograms.items()},
        }

    def merge_snapshot(self, snap: dict[str, Any]) -> None:
        """Add a `snapshot()`. An agent actor's snapshot also carries its process's LLM client counts
        (`llm_calls`, see `matrix.llm.client.ClientStats.to_dict`); they become the counters
        `llm_requests`, `llm_retries`, `llm_errors` and `llm_failures` (the last two by reason), so that
        a run's live Prometheus text has them."""
        calls = snap.get("llm_calls")
        if isinstance(calls, Mapping):
            for key in ("requests", "retries"):
                self.counters[f"llm_{key}"][""] += float(calls.get(key, 0))
            for key, name in (("errors_by_reason", "llm_errors"), ("failures_by_reason", "llm_failures")):
                for reason, n in dict(calls.get(key) or {}).items():
                    self.counters[name][str(reason)] += float(n)
        for name, labels in snap.get("counters", {}).items():
            for label, value in labels.items():
                self.counters[name][label] += value
        for name, labels in snap.get("histograms", {}).items():
            for label, d in labels.items():
                h = Histogram.from_dict(d)
                if label in self.histograms[name]:
                    self.histograms[name][label].merge(h)
                else:
                    self.histograms[name][label] = h

    def counter(self, name: str, label: str | None = None) -> float:
        values = self.counters.get(name, {})
        return float(values.get(label, 0.0)) if label is not None else float(sum(values.values()))

    def histogram(self, name: str, label: str | None = None) -> Histogram | None:
        labels = self.histograms.get(name, {})
        if label is not None:
            return labels.get(label)
        merged: Histogram | None = None
        for h in labels.values():
            if merged is None:
                merged = Histogram(list(h.bounds))
            merged.merge(h)
        return merged

    def to_prometheus(self, prefix: str = "matrix_", label_name: str = "role") -> str:
        """Prometheus text exposition format (counters and cumulative histogram buckets)."""
        lines: list[str] = []
        for name, counts in sorted(self.counters.items()):
            metric = prefix + name
            key = LABEL_NAMES.get(name, label_name)
            lines.append(f"# TYPE {metric} counter")
            for label, value in sorted(counts.items()):
                sel = f'{{{key}="{_escape(label)}"}}' if label else ""
                lines.append(f"{metric}{sel} {value:g}")
        for name, hists in sorted(self.histograms.items()):
            metric = prefix + name
            lines.append(f"# TYPE {metric} histogram")
            for label, h in sorted(hists.items()):
                base = f'{label_name}="{label}",' if label else ""
                cumulative = 0
                for bound, count in zip([*h.bounds, math.inf], h.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if math.isinf(bound) else f"{bound:.6g}"
                    lines.append(f'{metric}_bucket{{{base}le="{le}"}} {cumulative}')
                sel = f"{{{base.rstrip(',')}}}" if base else ""
                lines.append(f"{metric}_sum{sel} {h.total:.6g}")
                lines.append(f"{metric}_count{sel} {h.n}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# ------------------------------------------------------------------------ live scrape targets

MONITOR_DIR_ENV = "MATRIX_MONITOR_DIR"


def monitor_dir() -> Path:
    """Where a running `matrix monitor` keeps its state: $MATRIX_MONITOR_DIR, else a per-user folder
    under the system's temporary directory (the same for every process of this user on this machine)."""
    env = os.environ.get(MONITOR_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / f"matrix-monitor-{os.getuid()}"


def announce_target(job: str, address: str, labels: Mapping[str, str] | None = None) -> Path | None:
    """Tell a running `matrix monitor` to scrape `http://address/metrics` as `job` (Prometheus file
    service discovery: one JSON file per target in the monitor's `targets/` folder). Without a
    monitor, or when the file cannot be written, nothing happens and None is returned: monitoring
    never stops what it watches. Returns the file to pass to `withdraw_target`."""
    folder = monitor_dir() / "targets"
    if not folder.is_dir():
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{job}-{address}-{os.getpid()}") + ".json"
    doc = [{"targets": [address], "labels": {str(k): str(v) for k, v in (labels or {}).items()}}]
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, folder / name)
    except OSError:
        return None
    return folder / name


def withdraw_target(path: Path | None) -> None:
    """Undo `announce_target` (the target stops being scraped)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


class TimeSeries:
    """Per-second samples of a few gauges and counters (tokens, in-flight tasks, queue depths)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def sample(self, t: float, **values: float) -> None:
        self.rows.append({"t": round(t, 3), **values})
