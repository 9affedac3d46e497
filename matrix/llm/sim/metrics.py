"""Minimal Prometheus text-format metrics for the simulated engine.

Per-token observations happen hundreds of times per simulated step, so these are plain counters
and bucket arrays with no locks (one event loop owns them). Every sample carries the registry's
constant labels, which always include `simulated="true"`: a scrape can never be mistaken for a
real GPU's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self, const: LabelKey) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self, const: LabelKey) -> list[str]:
        values = self.values or {(): 0.0}
        return [f"{self.name}{_labels(const + key)} {_num(v)}" for key, v in values.items()]


class Gauge(_Metric):
    """A value read at scrape time from a callback (the engine's live state)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def render(self, const: LabelKey) -> list[str]:
        return [f"{self.name}{_labels(const)} {_num(float(self.read()))}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, const: LabelKey) -> list[str]:
        lines = []
        running = 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            lines.append(f"{self.name}_bucket{_labels((*const, ('le', _num(bound))))} {running}")
        lines.append(f"{self.name}_sum{_labels(const)} {_num(self.sum)}")
        lines.append(f"{self.name}_count{_labels(const)} {self.count}")
        return lines


LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    320.0,
    640.0,
)


class Registry:
    """Named metrics rendered together; names must start with `prefix`."""

    def __init__(self, const_labels: Mapping[str, str], prefix: str = "matrix_sim_") -> None:
        if const_labels.get("simulated") != "true":
            raise ValueError('simulated metrics must carry the label simulated="true"')
        self.const: LabelKey = tuple(sorted(const_labels.items()))
        self.prefix = prefix
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if not metric.name.startswith(self.prefix):
            raise ValueError(f"metric {metric.name!r} must start with {self.prefix!r}")
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def get(self, full_name: str) -> _Metric | None:
        return self._metrics.get(full_name)

    def counter(self, name: str, help_text: str) -> Counter:
        return self._add(Counter(self.prefix + name, help_text))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> Gauge:
        return self._add(Gauge(self.prefix + name, help_text, read))  # type: ignore[return-value]

    def histogram(self, name: str, help_text: str, buckets: Iterable[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(self.prefix + name, help_text, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.header()
            lines += metric.render(self.const)
        return "\n".join(lines) + "\n"
