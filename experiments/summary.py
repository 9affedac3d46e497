"""What a multirun printed at its end: each system's best tokens/s, the ratio, and its spread.

Registered as a Hydra callback (`hydra.callbacks.summary` in conf/config.yaml). It reads the run
directories the launch wrote (`metrics.json` only), so it works for jobs that ran elsewhere too.
With repeats (`repeat=0,1,2`), each system's runs at one point give a mean and a range, and the
ratio's range is the ratio of the extremes; when the two ranges overlap, the systems are reported
as equal within the spread, whatever the ratio of the means says.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def launch_runs(run_root: Path, run_id: str, case: str = "*") -> list[dict[str, Any]]:
    """metrics.json of every run directory named `<run_id>-...` under run_root/<case>/<system>/
    (not the earlier runs moved aside as `.prev-*`)."""
    out = []
    for path in sorted(Path(run_root).glob(f"{case}/*/{run_id}-*/metrics.json")):
        if ".prev-" in path.parent.name:
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"summary: skipping {path}: {exc}", file=sys.stderr)
            continue
        m["run_dir"] = str(path.parent)
        out.append(m)
    return out


def summarize(runs: list[dict[str, Any]]) -> list[str]:
    """Lines: per system and point, tokens/s (mean and range over repeats); then the best pair's ratio."""
    lines = []
    complete = []
    for m in runs:
        stopped = m.get("stopped")
        if stopped:  # a run stopped early (signal, drain) measured only part of its work
            reason = stopped.get("reason") if isinstance(stopped, dict) else stopped
            lines.append(f"  left out: {m.get('run_dir')} stopped early ({reason})")
        else:
            complete.append(m)
    runs = complete
    if not runs:
        return [*lines, "summary: no finished runs"]
    groups: dict[tuple[str, Any], list[float]] = defaultdict(list)
    for m in runs:
        groups[(str(m.get("system")), m.get("concurrency"))].append(float(m.get("tokens_per_second") or 0.0))
    sim = any(m.get("simulated") for m in runs)
    unit = "tokens per simulated s (SIMULATED)" if sim else "tokens/s"
    best: dict[str, tuple[float, float, float, Any]] = {}
    for (system, point), values in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        mean = statistics.fmean(values)
        lo, hi = min(values), max(values)
        spread = f" (range {lo:,.1f}-{hi:,.1f} over {len(values)} runs)" if len(values) > 1 else ""
        lines.append(f"  {system} at concurrency {point}: {mean:,.1f} {unit}{spread}")
        if system not in best or mean > best[system][0]:
            best[system] = (mean, lo, hi, point)
    if len(best) == 2:
        (a, (ma, la, ha, _)), (b, (mb, lb, hb, _)) = sorted(best.items(), key=lambda kv: kv[0] != "matrix")
        if mb > 0 and lb > 0:
            ratio = ma / mb
            low, high = la / hb, ha / lb
            repeated = len(groups[(a, best[a][3])]) > 1 and len(groups[(b, best[b][3])]) > 1
            text = f"  {a} / {b}: {ratio:.2f}x"
            if repeated:
                text += f" (range {low:.2f}x-{high:.2f}x)"
                if low <= 1.0 <= high:
                    text += f": equal within the run-to-run spread; this machine cannot tell {a} and {b} apart"
            lines.append(text)
    return lines


def _stop_pools() -> None:
    """Stop the model pools the launch's jobs shared, while Ray is still up (not at interpreter exit)."""
    from experiments.pools import SHARED

    try:
        SHARED.stop()
    except Exception as exc:  # the runs are written; a failed stop must not hide the summary
        print(f"summary: stopping the model pools failed: {exc}", file=sys.stderr)


class Summary(Callback):
    """Hydra callback: after a run, stop the shared pools; after a multirun, also print `summarize`."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_pools()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import os

        _stop_pools()

        run_id = str(config.get("run_id") or os.environ.get("MATRIX_LAUNCH_ID", ""))
        if not run_id:
            return
        case = str(config.case.name) if config.get("case") else "*"
        runs = launch_runs(Path(str(config.get("run_root", "results/runs"))), run_id, case)
        print(f"summary of the runs {run_id}-*:", file=sys.stderr)
        print("\n".join(summarize(runs)), file=sys.stderr, flush=True)
