"""Input rows: JSONL (plain, .gz or .zst), Parquet, Hugging Face `datasets`, or any iterable of dicts.

Every row comes out as a `SourceRow` with a stable task id and its location, so that a bad line
becomes an error row naming its line number instead of stopping the run, and a partitioned run (data
parallelism) gives each group a disjoint, deterministic share of the rows.

What a JSONL line can be, and what becomes of it (line numbers count every line, blank ones too):

- a JSON object: a row;
- blank (empty or only whitespace): not a row, skipped silently;
- the last line without a final newline: read like any other (a row if it parses, else an error);
- not JSON, JSON that is not an object (a list, a string, a number, null), JSON nested too deeply to
  parse, bytes that are not UTF-8, or a string escape that is not Unicode (a lone UTF-16 surrogate
  such as "\\ud800", which no UTF-8 output can hold): an error row, holding the line's text (cut at
  64 KiB, undecodable bytes replaced) so that it can be fixed and run again. Nothing is guessed:
  a line is not decoded with replacement characters and then run as if it were the input;
- longer than `max_line_bytes` (default 64 MiB): an error row, and the line is skipped without being
  held in memory; the rows after it are read as usual;
- a UTF-8 byte order mark at the start of the file is ignored.

A row whose id field (`id_field`) is longer than `MAX_ID_CHARS` characters becomes an error row: the
id travels in every message and is kept in the sink's ledger. Duplicate ids are admission's business
(`matrix.admission`): the second becomes an error row naming the first's location.

Every source is read as a stream: JSONL (plain, .gz, .zst) a line at a time, Parquet in batches of
`PARQUET_BATCH_ROWS` rows, `hf://` datasets with `streaming=True` (see `hf_stream`), so that a
DCLM-sized corpus never has to fit in memory; admission pulls the next row only when a task slot frees.

A compressed file that ends early or is corrupt yields the rows read so far and then one error row
at the next line saying so (a truncated .zst is detected too, which zstandard's own stream reader
does not report). An unreadable Parquet file is refused naming the file.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


@dataclass(frozen=True)
class SourceRow:
    index: int
    task_id: str
    row: dict[str, Any] | None
    location: str
    error: str | None = None


RAW_KEEP = 65536  # characters of a bad line that its error row keeps
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_ID_CHARS = 4096
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time from a Parquet file (a row group is read in slices)
_READ_CHUNK = 1 << 20
# A \u escape of a UTF-16 surrogate; only lines with one need the (slower) check for unpaired ones.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")

Entry = tuple[str, dict[str, Any] | None, str | None]


def _task_id(row: dict[str, Any], index: int, id_field: str | None) -> str:
    if id_field and id_field in row and row[id_field] is not None:
        return str(row[id_field])
    return str(index)


def _raw(line: bytes, size: int | None = None) -> dict[str, Any]:
    """What an error row keeps of a bad line: its text (undecodable bytes replaced) cut at 64 KiB, and
    its length in bytes without the line break (`size`, when the line was not read whole)."""
    if size is None:
        size = len(line) - (2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0)
    text = line[: min(size, RAW_KEEP * 4)].decode("utf-8", errors="replace")
    return {"raw_line": text[:RAW_KEEP], "raw_bytes": size}


class _ZstdReader(io.RawIOBase):
    """A .zst file decompressed frame after frame; EOFError when the file ends inside a frame."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            out.append(self._obj.decompress(data))
            self._in_frame = True
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            self._obj = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._eof:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                self._eof = True
                if self._in_frame:
                    raise EOFError("the zstd stream ends in the middle of a frame (file truncated?)")
                break
            self._pending = self._feed(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_binary(path: Path) -> Any:
    """A binary reader of `path`, decompressing `.gz` and `.zst` (DCLM's shard format) on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        try:
            import zstandard  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"reading {path} needs the zstandard package (pip install zstandard)") from exc
        return io.BufferedReader(_ZstdReader(open(path, "rb")), buffer_size=_READ_CHUNK)
    return open(path, "rb")


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged file raises: gzip's and zlib's errors, EOF inside a frame, zstd's."""
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


def _lines(fh: Any, max_bytes: int) -> Iterator[tuple[bytes, int, bool]]:
    """(line, size, whether it is over `max_bytes`) for each line; an over-long line comes back cut
    at `max_bytes` while the rest of it is read and dropped, its size without the line break."""
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line, len(line), False
            continue
        size = len(line)
        while True:
            rest = fh.readline(_READ_CHUNK)
            size += len(rest)
            if rest.endswith(b"\n"):
                size -= 2 if rest.endswith(b"\r\n") else 1
                break
            if not rest:
                break
        yield line[:max_bytes], size, True


def _unpaired_surrogate(value: Any) -> str | None:
    """The first string in `value` (keys included) that holds an unpaired surrogate, if any."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{v[max(0, exc.start - 20) : exc.start]!r} then \\u{ord(v[exc.start]):04x}"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _parse_line(raw: bytes, first: bool) -> tuple[dict[str, Any] | None, str | None]:
    """The object on one JSONL line, or why the line is not one."""
    if first and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"line is not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        value = json.loads(text)
    except RecursionError:
        return None, "malformed JSON: nested too deeply to parse"
    except ValueError as exc:
        return None, f"malformed JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    if _SURROGATE_ESCAPE.search(raw):
        where = _unpaired_surrogate(value)
        if where is not None:
            return None, f"a string holds an unpaired UTF-16 surrogate escape, which is not Unicode (at {where})"
    return value, None


def _jsonl(path: Path, max_line_bytes: int) -> Iterator[Entry]:
    line_no = 0
    with _open_binary(path) as fh:  # a file that cannot be opened is refused (the error names it)
        try:
            for raw, size, too_long in _lines(fh, max_line_bytes):
                line_no += 1
                where = f"{path.name}:{line_no}"
                if too_long:
                    reason = f"line is {size} bytes, over the limit of {max_line_bytes} (max_line_bytes)"
                    yield where, _raw(raw, size), reason
                    continue
                if not raw.strip():
                    continue
                value, error = _parse_line(raw, line_no == 1)
                if error is not None:
                    yield where, _raw(raw), error
                    continue
                yield where, value, None
        except _read_errors() as exc:
            reason = f"cannot read on after line {line_no}: {type(exc).__name__}: {exc} (truncated or corrupt?)"
            yield f"{path.name}:{line_no + 1}", {}, reason


def _parquet(path: Path) -> Iterator[Entry]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(f"reading {path} needs pyarrow (pip install pyarrow)") from exc
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS)
    except Exception as exc:  # pyarrow's errors are ArrowInvalid, OSError, ...: all mean "unreadable"
        raise ValueError(f"{path} is not a readable Parquet file: {type(exc).__name__}: {exc}") from exc
    n = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield f"{path.name}:row {n}", row, None
    except (OSError, ValueError) as exc:  # a damaged row group after good ones
        yield f"{path.name}:row {n + 1}", {}, f"cannot read on after row {n}: {type(exc).__name__}: {exc}"


HF_EXTRA = "hf"


def need_datasets(what: str) -> Any:
    """The `datasets` package, or a one-line error naming `what` needs it and the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"{what} needs the `datasets` package: pip install 'matrix-harness[{HF_EXTRA}]' (the {HF_EXTRA} extra)"
        ) from None
    return datasets


def hf_stream(name: str, split: str = "train") -> Iterator[dict[str, Any]]:
    """The rows of a Hugging Face dataset one at a time, never the whole split in memory.

    `name` is a hub dataset (`datasets.load_dataset(name, split=split, streaming=True)`: shards are
    fetched and decoded as they are read), a local folder of data files (JSONL, Parquet, ...: the same
    call, offline), or a folder written by `Dataset.save_to_disk` (memory-mapped Arrow, iterated as an
    `IterableDataset`)."""
    datasets = need_datasets(f"reading hf://{name}")
    local = Path(name)
    if (local / "state.json").is_file() and (local / "dataset_info.json").is_file():
        saved = datasets.load_from_disk(str(local))
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise ValueError(f"hf://{name} has no split {split!r}; it has {sorted(saved)}")
            saved = saved[split]
        stream = saved.to_iterable_dataset()
    else:
        stream = datasets.load_dataset(name, split=split, streaming=True)
    for row in stream:
        yield dict(row)


def _hf(name: str, split: str) -> Iterator[Entry]:
    for n, row in enumerate(hf_stream(name, split), start=1):
        yield f"{name}[{split}]:{n}", row, None


def _iterable(source: Iterable[Any]) -> Iterator[Entry]:
    for i, r in enumerate(source):
        where = f"row {i + 1}"
        if isinstance(r, Mapping):
            yield where, dict(r), None
        else:
            yield where, {"raw_repr": repr(r)[:RAW_KEEP]}, f"expected a mapping, got {type(r).__name__}"


def read_rows(
    source: str | Path | Iterable[dict[str, Any]],
    *,
    id_field: str | None = "id",
    partition: int = 0,
    num_partitions: int = 1,
    split: str = "train",
    limit: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[SourceRow]:
    """Yield the rows of `source` that belong to `partition` of `num_partitions` (row index mod n).

    `source` is a path (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`, `.json` lines, `.parquet`), `hf://NAME` for a
    Hugging Face dataset, or an iterable of dicts. Task ids come from `id_field` when the row has it,
    else from the row's position. `limit` counts rows across all partitions. A JSONL line longer than
    `max_line_bytes` (default `MAX_LINE_BYTES`) becomes an error row. See the module doc for what
    else becomes an error row.
    """
    if not 0 <= partition < num_partitions:
        raise ValueError(f"partition must be in [0, {num_partitions}), got {partition}")
    line_limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    if line_limit < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {line_limit}")
    entries: Iterable[Entry]
    if isinstance(source, str | Path):
        text = str(source)
        if text.startswith("hf://"):
            entries = _hf(text[5:], split)
        else:
            path = Path(source)
            if not path.exists():
                raise ValueError(f"input file {path} does not exist")
            if path.is_dir():
                raise ValueError(f"input {path} is a directory, not a file")
            if path.suffix == ".parquet":
                entries = _parquet(path)
            elif path.suffix in (".jsonl", ".json", ".gz", ".zst", ".ndjson"):
                entries = _jsonl(path, line_limit)
            else:
                raise ValueError(f"unsupported input {path}: use .jsonl, .jsonl.gz, .jsonl.zst, .parquet or hf://NAME")
    else:
        entries = _iterable(source)

    for index, (where, row, error) in enumerate(entries):
        if limit is not None and index >= limit:
            return
        if index % num_partitions != partition:
            continue
        task_id = where  # a bad line's id is its location ("in.jsonl:7")
        if row is not None and error is None:
            task_id = _task_id(row, index, id_field)
            if len(task_id) > MAX_ID_CHARS:
                error = f"{id_field!r} is {len(task_id)} characters long, over the limit of {MAX_ID_CHARS}"
                task_id = where
        yield SourceRow(index=index, task_id=task_id, row=row, location=where, error=error)
