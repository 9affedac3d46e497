"""W&B logging of finished run directories: offline by default, never blocking a run.

Each run directory (`config.json`, `metrics.json`, `timeseries.json`, `output*.jsonl`) becomes one
W&B run: its config; its per-second time series as history (tasks done and in flight, queue depths,
completion tokens, and derived from them tokens/s, plus end-to-end latency p50/p99 of the tasks that
finished in the last 10 s, from the output rows); its final metrics and quality as the summary; a
sample of output rows as a table; tags for case, system, backend, simulated and hardware.

Offline mode writes under `<run dir>/wandb/` (upload later with `wandb sync <run dir>/wandb/offline-run-*`).
Online mode needs a key: without one the run is logged offline instead, and that is said once. A
logging failure is reported and never fails the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments import rundirs

MODES = ("offline", "online", "disabled")
LATENCY_WINDOW_S = 10.0
SAMPLE_ROWS = 20
SAMPLE_CHARS = 300
_said: set[str] = set()


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(f"wandb: {text}", file=sys.stderr)


def resolve_mode(configured: str | None) -> str:
    """WANDB_MODE wins over the config; online without an API key falls back to offline (said once)."""
    mode = (os.environ.get("WANDB_MODE") or configured or "offline").lower()
    if mode in ("dryrun",):
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"wandb.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _netrc_has_key():
        _say_once("online mode asked for but no API key (WANDB_API_KEY or ~/.netrc); logging offline instead")
        mode = "offline"
    return mode


def _netrc_has_key() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _flat(prefix: str, value: Any, out: dict[str, float | int | str]) -> None:
    if isinstance(value, bool):
        out[prefix] = int(value)
    elif isinstance(value, int | float | str):
        out[prefix] = value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}/{k}" if prefix else str(k), v, out)


def summary_of(metrics: Mapping[str, Any]) -> dict[str, float | int | str]:
    """Scalar metrics, nested keys joined with '/', lists left out (they live in the run directory)."""
    out: dict[str, float | int | str] = {}
    _flat("", metrics, out)
    return out


def tags_of(metrics: Mapping[str, Any]) -> list[str]:
    tags = [str(metrics.get(k)) for k in ("case", "system", "backend") if metrics.get(k)]
    tags.append("simulated" if metrics.get("simulated") else "real")
    if metrics.get("hardware"):
        tags.append(str(metrics["hardware"])[:64])
    return tags


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def history(
    series: Sequence[Any],
    outputs: Sequence[Mapping[str, Any]],
    time_scale: float = 1.0,
    window: float = LATENCY_WINDOW_S,
) -> list[dict[str, float]]:
    """The per-second rows W&B gets: the series' numbers, tokens/s over each interval, and the end-to-end
    latency p50/p99 (seconds) of the tasks that finished within the last `window` seconds."""
    done: list[tuple[float, float]] = []  # (finish time since start, latency), in the series' clock
    stamps = [(float(r["created"]), float(r["finished"])) for r in outputs
              if isinstance(r.get("created"), int | float) and isinstance(r.get("finished"), int | float)]  # fmt: skip
    if stamps:
        t0 = min(c for c, _ in stamps)
        done = sorted(((f - t0) * time_scale, (f - c) * time_scale) for c, f in stamps if f >= c)
    out: list[dict[str, float]] = []
    prev_t, prev_tok = 0.0, None
    for row in series:
        if not isinstance(row, Mapping):
            continue
        item = {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        t, tok = item.get("t"), item.get("completion_tokens", item.get("llm_completion_tokens"))
        if t is not None and tok is not None:
            if prev_tok is not None and t > prev_t:
                item["tokens_per_second"] = max(tok - prev_tok, 0.0) / (t - prev_t)
            prev_t, prev_tok = float(t), float(tok)
        if t is not None and done:
            recent = sorted(lat for f, lat in done if t - window < f <= t)
            if recent:
                item["latency_p50_s"] = recent[min(len(recent) - 1, math.ceil(0.5 * len(recent)) - 1)]
                item["latency_p99_s"] = recent[min(len(recent) - 1, math.ceil(0.99 * len(recent)) - 1)]
        out.append(item)
    return out


def sample_rows(outputs: Sequence[Mapping[str, Any]], n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """A few output rows, flattened for a W&B table: id, status, error, turns, tokens, the last turn's text."""
    out = []
    for r in outputs[:n]:
        turns = [t for t in r.get("turns") or [] if isinstance(t, Mapping)]
        tokens = sum(int((t.get("usage") or {}).get("completion_tokens") or 0) for t in turns)
        text = next((_text(t.get("content")) for t in reversed(turns) if _text(t.get("content"))), "")
        out.append({"task_id": str(r.get("task_id")), "trial": int(r.get("trial") or 0), "status": str(r.get("status")),
                    "error": str(r.get("error") or ""), "turns": len(turns), "completion_tokens": tokens,
                    "last_text": text[:SAMPLE_CHARS]})  # fmt: skip
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        for key in ("content", "text", "answer", "question"):
            if isinstance(content.get(key), str):
                return str(content[key])
        return json.dumps(content)[:SAMPLE_CHARS] if content else ""
    return ""


def log_run_dir(run_dir: Path, *, mode: str = "offline", project: str = "matrix-harness", entity: str | None = None,
                extra_config: Mapping[str, Any] | None = None, group: str | None = None) -> Path | None:  # fmt: skip
    """Log one finished run directory to W&B; returns the local W&B run folder (None if disabled or failed)."""
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        _say_once("not installed (pip install -e '.[wandb]'); runs are not logged to W&B")
        return None
    metrics = _read(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        _say_once(f"{run_dir}: no readable metrics.json; not logged")
        return None
    config = {"run_dir": str(run_dir), **(_read(run_dir / "config.json") or {}), **dict(extra_config or {})}
    series = _read(run_dir / "timeseries.json")
    try:
        run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,  # type: ignore[arg-type]
            dir=str(run_dir),
            name=f"{metrics.get('system')}-{run_dir.name}",
            group=group or run_dir.name,
            job_type=str(metrics.get("system")),
            config=config,
            tags=tags_of(metrics),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True),
        )
        rows = series.get("seconds") if isinstance(series, dict) else series
        outputs = list(rundirs.iter_rows(run_dir))
        for row in history(rows if isinstance(rows, list) else [], outputs, float(metrics.get("time_scale") or 1.0)):
            run.log(row)
        sample = sample_rows(outputs)
        if sample:
            run.log({"output_sample": wandb.Table(columns=list(sample[0]), data=[list(r.values()) for r in sample])})
        run.summary.update(summary_of(metrics))
        folder = Path(run.dir).parent
        run.finish()
        return folder
    except Exception as exc:
        _say_once(f"logging {run_dir} failed: {type(exc).__name__}: {exc}")
        return None


def run_dirs_of(run_root: Path, run_id: str) -> list[Path]:
    """The run directories one experiments.run invocation wrote: <root>/<case>/<system>/<run_id>[-...]."""
    return sorted(
        p
        for p in run_root.glob(f"*/*/{run_id}*")
        if (p.name == run_id or p.name.startswith(run_id + "-")) and (p / "metrics.json").exists()
    )


def log_runs(
    dirs: Iterable[Path], wandb_cfg: Mapping[str, Any] | None, extra_config: Mapping[str, Any], group: str | None = None
) -> list[Path]:
    """Log each run directory (one W&B run each, grouped under `group`, e.g. one launch's run id)."""
    cfg = dict(wandb_cfg or {})
    mode = resolve_mode(cfg.get("mode"))
    out = []
    for d in dirs:
        folder = log_run_dir(d, mode=mode, project=str(cfg.get("project") or "matrix-harness"),
                             entity=cfg.get("entity"), extra_config=extra_config, group=group)  # fmt: skip
        if folder is not None:
            out.append(folder)
    if out:
        where = "under each run directory's wandb/ (upload: wandb sync <dir>)" if mode == "offline" else "online"
        print(f"wandb: {len(out)} run(s) logged {mode}, {where}", file=sys.stderr)
    return out


def log_driver_runs(root: Path, run_id: str, driver: str) -> list[Path]:
    """What an experiment driver's command line calls at its end: log the run directories it wrote under
    `root` with run id `run_id` (and its sweep suffixes), mode from WANDB_MODE (offline by default)."""
    return log_runs(run_dirs_of(root, run_id), None, {"driver": driver}, group=run_id)
