"""Regenerate every paper table we reproduce from run directories (Markdown + CSV), paper values beside ours.

    python scripts/make_tables.py                      # results/runs if it holds runs, else results/reference
    python scripts/make_tables.py results/runs /scratch/runs --out /tmp/tables --main twin
    python scripts/make_tables.py --strict ...         # exit 1 when any run directory had a problem

Runs are grouped by case and experiment (the run id up to its sweep suffix: twin-w50, twin-c300 -> twin);
each system is taken at its best tokens/s. A missing or corrupt file is named on stderr and in
<out>/index.md; the other runs still make their tables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import rundirs, tables  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/make_tables.py", description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", type=Path, help="runs roots (<case>/<system>/<run id>/) or run directories")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "tables", help="where the tables go")
    p.add_argument("--bench", type=Path, default=ROOT / "results" / "bench",
                   help="benchmark JSON folder (Table 4 from overhead.json)")  # fmt: skip
    p.add_argument("--figures", type=Path, default=ROOT / "results" / "figures",
                   help="the main experiment's figures go here (PNG); --figures '' for none")  # fmt: skip
    p.add_argument("--main", default="twin", help="the experiment whose tables get the plain names (default twin)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any run directory had a problem")
    args = p.parse_args(argv)
    roots = args.roots or rundirs.default_roots(ROOT)
    figures = args.figures if str(args.figures) not in ("", ".") else None
    res = tables.make_tables(roots, args.out, bench=args.bench, main=args.main, figures=figures)
    for problem in res.problems:
        print(f"make_tables: problem: {problem}", file=sys.stderr)
    for note in res.skipped:
        print(f"make_tables: skipped: {note}", file=sys.stderr)
    if not res.runs:
        print(f"make_tables: no run directories under {', '.join(map(str, roots))}", file=sys.stderr)
        return 2
    print(f"make_tables: {len(res.tables)} tables from {len(res.runs)} runs in {args.out} (see index.md there)")
    for t in res.tables:
        print(f"  {t.name}: {t.title}")
    for fig in res.figures:
        print(f"  {fig.path}")
    return 1 if (args.strict and res.problems) else 0


if __name__ == "__main__":
    raise SystemExit(main())
