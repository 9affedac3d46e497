"""Input readers: compressed JSONL (DCLM ships .jsonl.zst shards) keeps bad lines as located error rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from matrix.sources import read_rows

LINES = b'{"id": "a", "text": "one"}\nnot json\n\xff\xfe{"id": 3}\n{"id": "b", "text": "two"}\n'


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_rows_and_located_errors(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"docs{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(LINES))
    elif suffix.endswith(".zst"):
        zstandard = pytest.importorskip("zstandard")
        with open(path, "wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as w:  # no content size
            w.write(LINES)
    else:
        path.write_bytes(LINES)
    rows = list(read_rows(path))
    assert [r.task_id for r in rows if r.error is None] == ["a", "b"]
    bad = {r.location: r.error for r in rows if r.error}
    assert set(bad) == {f"{path.name}:2", f"{path.name}:3"}
    assert "malformed JSON" in bad[f"{path.name}:2"] and "not UTF-8" in bad[f"{path.name}:3"]


def test_partitions_split_rows_disjointly(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"id": "{i}"}}\n' for i in range(10)))
    parts = [[r.task_id for r in read_rows(path, partition=p, num_partitions=3)] for p in range(3)]
    assert sorted(t for part in parts for t in part) == sorted(str(i) for i in range(10)) and parts[0] == [
        "0",
        "3",
        "6",
        "9",
    ]
