"""Copy the small files of run directories into results/reference/ (committed), so that a fresh clone
can regenerate the tables, plots and report without running anything.

    python scripts/export_reference.py                 # every run under results/runs
    python scripts/export_reference.py results/runs/coral --out results/reference

Kept per run: config.json, metrics.json, timeseries.json, metrics.prom, and latency_breakdown.json
(derived here from the output rows' hops, since the rows themselves, often tens of MB, stay out of
git). Earlier runs moved aside (`*.prev-*`) are not exported. A run whose metrics.json is unreadable
is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import rundirs  # noqa: E402

KEEP = ("config.json", "metrics.json", "timeseries.json", "metrics.prom")


def export(run: rundirs.Run, out_root: Path) -> Path:
    dest = out_root / run.case / run.system / run.run_id
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEEP:
        if (run.path / name).exists():
            shutil.copy2(run.path / name, dest / name)
    if run.timeseries is not None:  # one line per second, not one per value: a third of the size
        lines = ",\n".join(json.dumps(row, separators=(",", ":")) for row in run.timeseries)
        (dest / "timeseries.json").write_text(f"[\n{lines}\n]\n")
    if run.breakdown:
        (dest / "latency_breakdown.json").write_text(json.dumps(run.breakdown, indent=2) + "\n")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/export_reference.py", description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", type=Path, default=[ROOT / "results" / "runs"])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "reference")
    args = p.parse_args(argv)
    runs, problems = rundirs.discover(args.roots)
    for problem in problems:
        print(f"export_reference: problem: {problem}", file=sys.stderr)
    total = 0
    for run in runs:
        dest = export(run, args.out)
        size = sum(f.stat().st_size for f in dest.iterdir())
        total += size
        print(f"{run.label}: {size / 1024:.0f} KiB -> {dest}")
    print(f"export_reference: {len(runs)} runs, {total / 1024 / 1024:.1f} MiB in {args.out}")
    return 0 if runs else 2


if __name__ == "__main__":
    raise SystemExit(main())
