"""The Matrix paper's published numbers, read from `paper_tables.csv` beside this module.

The file holds every table of arXiv 2511.21686 (v2) in long form: `table, row, metric, baseline,
matrix, unit, note, source`; `source` names where each number was read. Tables made from our runs
put these values beside ours; nothing here is measured.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

PATH = Path(__file__).with_name("paper_tables.csv")
SIDES = ("baseline", "matrix")


@cache
def rows() -> tuple[dict[str, str], ...]:
    with open(PATH, newline="", encoding="utf-8") as fh:
        return tuple(csv.DictReader(fh))


def entry(table: str, metric: str, row: str | None = None) -> dict[str, str]:
    """The row of `table` (e.g. "T1") for `metric`; KeyError naming both when the file has none."""
    for r in rows():
        if r["table"] == table and r["metric"] == metric and (row is None or r["row"] == row):
            return r
    raise KeyError(f"{PATH.name} has no {table} metric {metric!r}" + (f" in row {row!r}" if row else ""))


def value(table: str, metric: str, side: str = "matrix") -> str:
    """The published value as written in the paper ('' where the paper gives none for that side)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return entry(table, metric)[side]


def number(table: str, metric: str, side: str = "matrix") -> float:
    text = value(table, metric, side)
    if not text:
        raise KeyError(f"{PATH.name}: {table} {metric!r} has no {side} value")
    return float(text)


def source(table: str) -> str:
    """Where a table's numbers come from, e.g. 'paper v2 Table 1'."""
    found = sorted({r["source"] for r in rows() if r["table"] == table})
    if not found:
        raise KeyError(f"{PATH.name} has no table {table!r}")
    return "; ".join(found)
