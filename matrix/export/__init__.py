"""`matrix export`: a run directory's output rows as data that people train and evaluate on.

`output.jsonl` is the runtime's own record of each task (every role's turn, hops, usage, route
state). Exporting turns each finished row into one or more records in OpenAI chat format (`messages`,
`tools`, `metadata`), through the view that the row's case registers (`matrix.export.views`):
Coral gives each agent's view of the dialogue, tau2 the assistant's and the user simulator's,
NaturalReasoning one question-and-solution record. Formats: chat (JSONL), parquet, and hf (a
`datasets.Dataset` saved to disk, pushed to the hub when asked). See `export_run` for the filters and
the summary line that accounts for every row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from matrix.export.rows import RunInfo, open_run, read_lines
from matrix.export.run import ExportSummary, export_run
from matrix.export.views import COMMON_FIELDS, Field, LeftOut, Record, View, register_view, view_for
from matrix.export.writers import FORMATS


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    summary = export_run(
        args.run_dir,
        args.out,
        fmt=args.format,
        where=args.where or (),
        dedupe=not args.keep_duplicates,
        push_to_hub=args.push_to_hub,
        views=args.views or (),
        say=_stderr,
    )
    print(summary.line(), flush=True)
    return 0


def register_cli(sub: Any) -> None:
    """Add `matrix export` to the `matrix` command's subparsers (entry point group matrix.commands)."""
    p = sub.add_parser(
        "export",
        help="a run directory's rows as training data: chat JSONL, a Hugging Face dataset, or Parquet",
        description="Each finished row becomes records in OpenAI chat format (messages, tools, metadata); "
        "error rows, torn lines and rows with nothing to train on are left out and counted by reason.",
    )
    p.add_argument("run_dir", type=Path, help="run directory (or one of its output*.jsonl files)")
    p.add_argument("--format", choices=FORMATS, default="chat", help="chat (JSONL, default), hf or parquet")
    p.add_argument("--out", type=Path, required=True, help="output file (chat, parquet) or directory (hf)")
    p.add_argument(
        "--where",
        action="append",
        metavar="EXPR",
        help="keep records whose metadata matches, e.g. 'reward == 1', 'correct == true' (repeatable: all must hold)",
    )
    p.add_argument("--keep-duplicates", action="store_true", help="keep records whose messages repeat exactly")
    p.add_argument("--push-to-hub", metavar="REPO", help="with --format hf: also push to this hub repo (HF_TOKEN)")
    p.add_argument("--views", action="append", metavar="MODULE", help="import MODULE first (a case's export views)")
    p.set_defaults(func=cmd_export)


__all__ = [
    "COMMON_FIELDS",
    "FORMATS",
    "ExportSummary",
    "Field",
    "LeftOut",
    "Record",
    "RunInfo",
    "View",
    "export_run",
    "open_run",
    "read_lines",
    "register_cli",
    "register_view",
    "view_for",
]
