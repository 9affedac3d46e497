"""Coral's hf:// input is streamed: only the questions asked for are read, from a local dataset folder here."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.cases import coral


def test_hf_questions_are_streamed_up_to_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    records = [
        {"question_id": 70 + i, "question": f"q{i}?", "options": ["1", "2", "3"], "answer": "B", "category": "math"}
        for i in range(40)
    ]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "mmlu"))
    taken = []
    real = datasets.IterableDataset.__iter__

    def counting(self: object) -> object:
        for row in real(self):  # type: ignore[arg-type]
            taken.append(row)
            yield row

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", counting)
    rows = coral.load_questions(f"hf://{tmp_path / 'mmlu'}", limit=5)
    assert [r["id"] for r in rows] == ["70", "71", "72", "73", "74"] and rows[0]["answer"] == "B"
    assert len(taken) <= 6  # streamed: not the whole split
    assert coral.question_of(rows[4]).options == ("1", "2", "3")
