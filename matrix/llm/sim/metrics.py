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

    def render(self, const: LabelKey, name: str | None = None) -> list[str]:
        """The samples, under `name` when given (an alias such as vLLM's name for the same series)."""
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

    def render(self, const: LabelKey, name: str | None = None) -> list[str]:
        values = self.values or {(): 0.0}
        return [f"{name or self.name}{_labels(const + key)} {_num(v)}" for key, v in values.items()]


class Gauge(_Metric):
    """A value read at scrape time from a callback (the engine's live state)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def render(self, const: LabelKey, name: str | None = None) -> list[str]:
        return [f"{name or self.name}{_labels(const)} {_num(float(self.read()))}"]


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

    def render(self, const: LabelKey, name: str | None = None) -> list[str]:
        name = name or self.name
        lines = []
        running = 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            lines.append(f"{name}_bucket{_labels((*const, ('le', _num(bound))))} {running}")
        lines.append(f"{name}_sum{_labels(const)} {_num(self.sum)}")
        lines.append(f"{name}_count{_labels(const)} {self.count}")
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

    def render_aliases(self, aliases: Mapping[str, str], labels: Mapping[str, str]) -> str:
        """The metrics named in `aliases` (our name -> another name) again under the other name, with
        `labels` added to the constant ones, e.g. vLLM's names so that a dashboard written for vLLM
        reads a simulated replica too (the `simulated="true"` label still marks every sample)."""
        const = tuple(sorted({**dict(self.const), **labels}.items()))
        lines: list[str] = []
        for ours, theirs in aliases.items():
            metric = self._metrics.get(ours)
            if metric is None:
                continue
            lines += [f"# HELP {theirs} {metric.help}", f"# TYPE {theirs} {metric.kind}"]
            lines += metric.render(const, theirs)
        return "\n".join(lines) + "\n"


#: The sim's series that vLLM (v1 engine) exports too, under vLLM's names: a vLLM dashboard panel
#: (running and waiting requests, KV-cache use, tokens, finished requests, latencies) reads a sim
#: replica unchanged. vLLM's `kv_cache_usage_perc` is a fraction (0-1), as ours is.
VLLM_ALIASES: dict[str, str] = {
    "matrix_sim_requests_running": "vllm:num_requests_running",
    "matrix_sim_requests_waiting": "vllm:num_requests_waiting",
    "matrix_sim_kv_cache_usage_ratio": "vllm:kv_cache_usage_perc",
    "matrix_sim_prompt_tokens_total": "vllm:prompt_tokens_total",
    "matrix_sim_generation_tokens_total": "vllm:generation_tokens_total",
    "matrix_sim_preemptions_total": "vllm:num_preemptions_total",
    "matrix_sim_time_to_first_token_seconds": "vllm:time_to_first_token_seconds",
    "matrix_sim_inter_token_latency_seconds": "vllm:inter_token_latency_seconds",
    "matrix_sim_e2e_request_latency_seconds": "vllm:e2e_request_latency_seconds",
}
