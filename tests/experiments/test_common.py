"""A measurement starts in an empty run directory; earlier output is moved aside, never deleted."""

from __future__ import annotations

from pathlib import Path

from experiments.common import fresh


def test_earlier_output_is_moved_aside(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert fresh(d) == d and not d.exists()  # nothing there: nothing to do
    d.mkdir()
    (d / "output.jsonl").write_text("{}\n")
    moved = fresh(d)
    assert not d.exists() and (moved / "output.jsonl").read_text() == "{}\n" and moved.name.startswith("run.prev-")
    d.mkdir()
    (d / "output.jsonl").write_text("2\n")
    assert fresh(d) != moved  # a second move in the same second does not overwrite the first
