"""Make the HTML report of run directories (and a W&B Report when W&B is online).

    python scripts/report.py [ROOTS...] [--case C] [--experiment E] [--out DIR] [--title T] [--no-wandb]

Roots default to results/runs when it holds runs, else results/reference. The report is
<out>/report.html (default results/report/), with every figure also under <out>/plots/. Exit
status 0 when a report was written (files it could not read are listed at its top), 2 when no run
was found. The W&B Report goes to $WANDB_PROJECT (default matrix-harness) under $WANDB_ENTITY.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import report, rundirs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "roots",
        nargs="*",
        type=Path,
        help="runs roots or run directories (default: results/runs, else results/reference)",
    )
    ap.add_argument("--case", help="only this case (coral, natural_reasoning, tau2)")
    ap.add_argument("--experiment", help="only this experiment (run id without its sweep suffix, e.g. twin)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "report", help="output folder")
    ap.add_argument("--title", default=report.DEFAULT_TITLE)
    ap.add_argument("--no-wandb", action="store_true", help="do not make a W&B Report")
    args = ap.parse_args(argv)
    roots = args.roots or rundirs.default_roots(REPO)
    try:
        path = report.make_report(
            roots, args.out, case=args.case, experiment=args.experiment, title=args.title, wandb=not args.no_wandb
        )
    except report.NoRunsError as exc:
        print(f"report: {exc}; nothing written", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
