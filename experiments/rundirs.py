"""Reading run directories back: what tables, plots, reports and W&B logging are made from.

A run directory is `<root>/<case>/<system>/<run id>/` as the experiment drivers write it
(`metrics.json`, `config.json`, `timeseries.json`, `metrics.prom`, `output*.jsonl`; DESIGN.md's
results contract). Runs of one experiment share a run id up to a sweep suffix (`twin-w50`,
`twin-c300`, `twin-p4-t125-a1`, `twin-w20-b25`, `sweep-n3` are all experiment `twin`/`sweep`);
tables pair the systems of one experiment, each at its best point.

Nothing here raises on a bad directory: every missing or unreadable file becomes a `Problem` naming
the file, and the run goes on without it (a run without a readable `metrics.json` is left out of
everything, the others still make their tables).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Suffixes the entry point appends to an experiment's run id: the point (c, w, w-b, p-t-a), a repeat (r).
_SWEEP = re.compile(r"-(?:c\d+(?:-q\d+)?|w\d+(?:-b\d+)?|p\d+-t\d+-a\d+|n\d+|r\d+|v[a-z0-9]+)$")
_PREV = re.compile(r"\.prev-\d{8}-\d{6}(?:-\d+)?$")
RUN_FILES = ("metrics.json", "config.json", "timeseries.json", "metrics.prom")


def experiment_of(run_id: str) -> str:
    """`twin-w20-b25` -> `twin`; `small-cpu` -> `small-cpu`; `sweep-c8-n1` -> `sweep`."""
    name = run_id
    while True:
        stripped = _SWEEP.sub("", name)
        if stripped == name or not stripped:
            return name
        name = stripped


@dataclass
class Problem:
    """A file that could not be used, and why (reported by name; the run goes on without it)."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class Run:
    """One run directory, read back."""

    path: Path
    case: str
    system: str
    run_id: str
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    timeseries: list[dict[str, Any]] | None = None
    histograms: dict[str, dict[str, list[tuple[float, int]]]] = field(default_factory=dict)
    breakdown: dict[str, Any] | None = None

    @property
    def experiment(self) -> str:
        return experiment_of(self.run_id)

    @property
    def simulated(self) -> bool:
        return bool(self.metrics.get("simulated"))

    @property
    def label(self) -> str:
        return f"{self.case}/{self.system}/{self.run_id}"

    @property
    def concurrency(self) -> int | None:
        c = self.metrics.get("concurrency", self.config.get("concurrency"))
        return int(c) if isinstance(c, int | float) else None

    @property
    def tokens_per_second(self) -> float:
        v = self.metrics.get("tokens_per_second")
        return float(v) if isinstance(v, int | float) else math.nan


def _json(path: Path, problems: list[Problem], *, required: bool) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            problems.append(Problem(path, "missing"))
        return None
    except OSError as exc:
        problems.append(Problem(path, f"unreadable ({exc})"))
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(Problem(path, f"corrupt JSON ({exc})"))
        return None


_BUCKET = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_prom_histograms(text: str) -> dict[str, dict[str, list[tuple[float, int]]]]:
    """Histogram buckets of a Prometheus text file: {metric: {role label: [(upper bound, cumulative count)]}}."""
    out: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line.strip())
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        le = labels.pop("le", None)
        if le is None:
            raise ValueError(f"bucket without le: {line!r}")
        bound = math.inf if le == "+Inf" else float(le)
        role = labels.get("role", "")
        out.setdefault(m["name"], {}).setdefault(role, []).append((bound, int(float(m["value"]))))
    return out


def bucket_counts(cumulative: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    """Per-bucket counts (upper bound, count) from cumulative Prometheus buckets."""
    out, prev = [], 0
    for bound, total in sorted(cumulative, key=lambda b: b[0]):
        out.append((bound, total - prev))
        prev = total
    return out


def iter_rows(run_dir: Path, problems: list[Problem] | None = None) -> Iterator[dict[str, Any]]:
    """The output rows of a run directory; a line that is not a JSON object is reported, not parsed as data."""
    for path in sorted(Path(run_dir).glob("output*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    if problems is not None:
                        problems.append(Problem(path, f"line {n}: not JSON ({exc.msg})"))
                    continue
                if isinstance(row, dict):
                    yield row
                elif problems is not None:
                    problems.append(Problem(path, f"line {n}: not a JSON object"))


def latency_breakdown(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Where each task's end-to-end time went (paper Table 2), from the hops its row carries.

    Per task: agent processing = sum of hop step times (started..finished), queuing = sum of waits
    in an agent's queue (sent..started), initialization = from the task's creation to its first hop
    being sent, other = the rest (transit between agents and the sink). Each is a share of the
    task's end-to-end time; the p50/p99 over tasks are returned in percent, as the paper reports.
    """
    shares: dict[str, list[float]] = {"agent_processing": [], "queuing": [], "initialization": [], "other": []}
    seconds: dict[str, float] = dict.fromkeys(shares, 0.0)
    for row in rows:
        hops = row.get("hops") or []
        try:
            created, finished = float(row["created"]), float(row["finished"])
            steps = sum(float(h["finished"]) - float(h["started"]) for h in hops)
            waits = sum(float(h["started"]) - float(h["sent"]) for h in hops)
            init = float(hops[0]["sent"]) - created if hops else 0.0
        except (KeyError, TypeError, ValueError):
            continue
        e2e = finished - created
        if not hops or e2e <= 0:
            continue
        parts = {"agent_processing": steps, "queuing": waits, "initialization": max(init, 0.0)}
        parts["other"] = max(e2e - sum(parts.values()), 0.0)
        for k, v in parts.items():
            shares[k].append(100.0 * v / e2e)
            seconds[k] += v
    n = len(shares["agent_processing"])
    if not n:
        return None

    def q(values: list[float], p: float) -> float:
        s = sorted(values)
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {
        "tasks": n,
        "share_percent": {k: {"p50": q(v, 0.5), "p99": q(v, 0.99), "mean": sum(v) / n} for k, v in shares.items()},
        "seconds_total": seconds,
        "source": "output rows' hops (created, sent, started, finished)",
    }


def load_run(path: Path, problems: list[Problem], *, rows: bool = True) -> Run | None:
    """One run directory; None (and a Problem) when its metrics.json cannot be read."""
    path = Path(path)
    metrics = _json(path / "metrics.json", problems, required=True)
    if not isinstance(metrics, dict):
        if metrics is not None:
            problems.append(Problem(path / "metrics.json", "not a JSON object"))
        return None
    config = _json(path / "config.json", problems, required=False)
    series = _json(path / "timeseries.json", problems, required=False)
    if series is not None and not isinstance(series, list):
        series = series.get("seconds") if isinstance(series, dict) else None
        if not isinstance(series, list):
            problems.append(Problem(path / "timeseries.json", "not a list of per-second rows"))
            series = None
    histograms: dict[str, dict[str, list[tuple[float, int]]]] = {}
    prom = path / "metrics.prom"
    if prom.exists():
        try:
            histograms = parse_prom_histograms(prom.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            problems.append(Problem(prom, f"unreadable ({exc})"))
    breakdown = _json(path / "latency_breakdown.json", problems, required=False)
    if breakdown is None and rows and any(path.glob("output*.jsonl")):
        breakdown = latency_breakdown(iter_rows(path, problems))
    system = str(metrics.get("system") or path.parent.name)
    case = str(metrics.get("case") or path.parent.parent.name)
    return Run(
        path=path,
        case=case,
        system=system,
        run_id=path.name,
        metrics=metrics,
        config=config if isinstance(config, dict) else {},
        timeseries=series,
        histograms=histograms,
        breakdown=breakdown if isinstance(breakdown, dict) else None,
    )


def _is_run_dir(p: Path) -> bool:
    return any((p / f).exists() for f in RUN_FILES) or any(p.glob("output*.jsonl"))


def run_paths(root: Path, depth: int = 3) -> list[Path]:
    """Run directories at or under `root` (a runs root, a case or system folder, or one run directory), at most
    `depth` levels down; earlier runs moved aside (`.prev-*`) and hidden folders are left out."""
    root = Path(root)
    if _is_run_dir(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    out: list[Path] = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and not _PREV.search(p.name) and p.name != "wandb":
            out += run_paths(p, depth - 1)
    return out


def default_roots(repo: Path) -> list[Path]:
    """`<repo>/results/runs` when it holds runs (a fresh clone has none), else the committed `results/reference`."""
    runs = Path(repo) / "results" / "runs"
    if runs.is_dir() and run_paths(runs):
        return [runs]
    return [Path(repo) / "results" / "reference"]


def discover(roots: Iterable[Path], *, rows: bool = True) -> tuple[list[Run], list[Problem]]:
    """Every run under `roots` (each a runs root or one run directory), and every problem met."""
    runs: list[Run] = []
    problems: list[Problem] = []
    for root in roots:
        if not Path(root).exists():
            problems.append(Problem(Path(root), "no such directory"))
            continue
        for p in run_paths(Path(root)):
            run = load_run(p, problems, rows=rows)
            if run is not None:
                runs.append(run)
    return runs, problems


def experiments(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs grouped by (case, experiment), each group's runs in a stable order."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.case, r.experiment), []).append(r)
    for group in out.values():
        group.sort(key=lambda r: (r.system, r.concurrency or 0, r.run_id))
    return dict(sorted(out.items()))


def by_system(runs: Iterable[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.system, []).append(r)
    return out


def best(runs: Sequence[Run]) -> Run:
    """The run with the most tokens/s (a sweep's best point; the paper takes each system at its best).

    Variants of a point (`variant=`, e.g. a decomposition step with no CPU charged) are not
    candidates while a plain run is there: they are not the system as it runs.
    """
    plain = [r for r in runs if not r.metrics.get("variant")]
    return max(plain or runs, key=lambda r: r.tokens_per_second if not math.isnan(r.tokens_per_second) else -1.0)


def throughput_series(run: Run) -> list[tuple[float, float]]:
    """(seconds since start, completion tokens/s over the preceding sample interval) from the time series.

    The series is sampled in wall seconds; a run at time scale k (the sim backend) gets simulated
    seconds, k times the wall ones, like its metrics' `measured_seconds` and `tokens_per_second`.
    """
    rows = run.timeseries or []
    try:
        scale = float(run.metrics.get("time_scale") or 1.0)
    except (TypeError, ValueError):
        scale = 1.0
    scale = scale if scale > 0 else 1.0
    out: list[tuple[float, float]] = []
    prev_t, prev_tok = 0.0, 0.0
    for row in rows:
        try:
            t = float(row["t"])
            tok = float(row.get("completion_tokens", row.get("llm_completion_tokens", 0.0)))
        except (KeyError, TypeError, ValueError):
            continue
        dt = t - prev_t
        if dt > 0:
            out.append((t * scale, max(tok - prev_tok, 0.0) / (dt * scale)))
        prev_t, prev_tok = t, tok
    return out
