"""W&B logging of finished run directories: offline by default, never blocking a run.

Each run directory (`config.json`, `metrics.json`, `timeseries.json`) becomes one W&B run: its
config, its per-second time series as history, its final metrics as the summary, and tags for case,
system, backend, simulated and hardware. Offline mode writes under `<run dir>/wandb/` (upload later
with `wandb sync <run dir>/wandb/offline-run-*`). Online mode needs a key: without one the run is
logged offline instead, and that is said once. A logging failure is reported and never fails the run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")
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
        if isinstance(rows, list):
            for row in rows:
                if isinstance(row, Mapping):
                    run.log({k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)})
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
