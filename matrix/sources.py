"""Input rows: JSONL (plain, .gz or .zst), Parquet, Hugging Face `datasets`, or any iterable of dicts.

Every row comes out as a `SourceRow` with a stable task id and its location, so that a malformed
line becomes an error row naming its line number instead of stopping the run, and a partitioned
run (data parallelism) gives each group a disjoint, deterministic share of the rows.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceRow:
    index: int
    task_id: str
    row: dict[str, Any] | None
    location: str
    error: str | None = None


def _task_id(row: dict[str, Any], index: int, id_field: str | None) -> str:
    if id_field and id_field in row and row[id_field] is not None:
        return str(row[id_field])
    return str(index)


RAW_KEEP = 65536


def _raw(line: bytes) -> dict[str, Any]:
    """What an error row keeps of a bad line: its text (undecodable bytes replaced), cut at 64 KiB."""
    text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return {"raw_line": text[:RAW_KEEP], "raw_bytes": len(line)}


def _open_binary(path: Path) -> Any:
    """A binary reader of `path`, decompressing `.gz` and `.zst` (DCLM's shard format) on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError as exc:
            raise ValueError(f"reading {path} needs the zstandard package (pip install zstandard)") from exc
        import io

        raw = open(path, "rb")  # noqa: SIM115 (closed by the wrapper below)
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    with _open_binary(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path.name}:{line_no}"
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, _raw(raw), f"line is not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield where, _raw(raw), f"malformed JSON: {exc}"
                continue
            if not isinstance(value, dict):
                yield where, _raw(raw), f"expected a JSON object, got {type(value).__name__}"
                continue
            yield where, value, None


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(f"reading {path} needs pyarrow (pip install pyarrow)") from exc
    n = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            n += 1
            yield f"{path.name}:row {n}", row, None


def _hf(name: str, split: str) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    try:
        import datasets
    except ImportError as exc:
        raise ValueError(f"reading dataset {name!r} needs the `datasets` package") from exc
    for n, row in enumerate(datasets.load_dataset(name, split=split), start=1):
        yield f"{name}[{split}]:{n}", dict(row), None


def read_rows(
    source: str | Path | Iterable[dict[str, Any]],
    *,
    id_field: str | None = "id",
    partition: int = 0,
    num_partitions: int = 1,
    split: str = "train",
    limit: int | None = None,
) -> Iterator[SourceRow]:
    """Yield the rows of `source` that belong to `partition` of `num_partitions` (row index mod n).

    `source` is a path (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`, `.json` lines, `.parquet`), `hf://NAME` for a
    Hugging Face dataset, or an iterable of dicts. Task ids come from `id_field` when the row has it,
    else from the row's position. `limit` counts rows across all partitions.
    """
    if not 0 <= partition < num_partitions:
        raise ValueError(f"partition must be in [0, {num_partitions}), got {partition}")
    entries: Iterable[tuple[str, dict[str, Any] | None, str | None]]
    if isinstance(source, str | Path):
        text = str(source)
        if text.startswith("hf://"):
            entries = _hf(text[5:], split)
        else:
            path = Path(source)
            if not path.exists():
                raise ValueError(f"input file {path} does not exist")
            if path.suffix == ".parquet":
                entries = _parquet(path)
            elif path.suffix in (".jsonl", ".json", ".gz", ".zst", ".ndjson"):
                entries = _jsonl(path)
            else:
                raise ValueError(f"unsupported input {path}: use .jsonl, .jsonl.gz, .jsonl.zst, .parquet or hf://NAME")
    else:
        entries = ((f"row {i + 1}", dict(r), None) for i, r in enumerate(source))

    for index, (where, row, error) in enumerate(entries):
        if limit is not None and index >= limit:
            return
        if index % num_partitions != partition:
            continue
        # A bad line's id is its location, which no real row's id can collide with.
        task_id = _task_id(row, index, id_field) if row is not None and error is None else where
        yield SourceRow(index=index, task_id=task_id, row=row, location=where, error=error)
