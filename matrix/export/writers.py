"""The three output formats, each written to a temporary name and moved into place when complete, so
that a failed export never leaves a partial file under the name asked for.

- chat: JSONL, one record per line: `messages` (OpenAI chat messages), `tools` (when the view offered
  any, OpenAI function schemas) and `metadata`, nested values kept nested.
- parquet: the same records with a fixed schema: `messages` as a list of structs (role, content,
  tool_calls, tool_call_id), `tools` as a JSON string, `metadata` as a struct whose `json` fields are
  JSON strings (so that every row has the same types whatever the values).
- hf: that Parquet table as a `datasets.Dataset` saved with `save_to_disk` (and pushed when asked).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matrix.export.views import Field, Record
from matrix.sources import need_datasets

FORMATS = ("chat", "hf", "parquet")
BATCH = 1024


class Writer:
    """Writes records to `path` (via a temporary sibling); `close(ok)` moves it into place or drops it."""

    def __init__(self, path: Path, fields: Sequence[Field]) -> None:
        self.path = path
        self.fields = list(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.written = 0

    def write(self, record: Record) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self, ok: bool) -> None:
        try:
            self._finish()
        finally:
            if ok:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)


class ChatWriter(Writer):
    def __init__(self, path: Path, fields: Sequence[Field]) -> None:
        super().__init__(path, fields)
        self._fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in _finish

    def write(self, record: Record) -> None:
        out = {"messages": record["messages"]}
        if record.get("tools"):
            out["tools"] = record["tools"]
        out["metadata"] = record["metadata"]
        self._fh.write(json.dumps(out, ensure_ascii=False) + "\n")
        self.written += 1

    def _finish(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def arrow_schema(fields: Sequence[Field]) -> Any:
    import pyarrow as pa

    kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "json": pa.string()}
    call = pa.struct([("id", pa.string()), ("type", pa.string()),
                      ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])  # fmt: skip
    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(call)),
                         ("tool_call_id", pa.string())])  # fmt: skip
    meta = pa.struct([(f.name, kinds[f.kind]) for f in fields])
    return pa.schema([("messages", pa.list_(message)), ("tools", pa.string()), ("metadata", meta)])


def _typed(f: Field, value: Any) -> Any:
    if value is None:
        return None
    try:
        if f.kind == "json":
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        if f.kind == "str":
            return str(value)
        if f.kind == "int":
            return int(value)
        if f.kind == "float":
            return float(value)
        return bool(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata field {f.name!r} ({f.kind}) cannot hold {value!r}: {exc}") from exc


def tabular(record: Record, fields: Sequence[Field]) -> dict[str, Any]:
    """A record with the fixed types of `arrow_schema`."""
    messages = []
    for m in record["messages"]:
        content = m.get("content")
        messages.append(
            {
                "role": m["role"],
                "content": content if content is None or isinstance(content, str) else json.dumps(content),
                "tool_calls": m.get("tool_calls"),
                "tool_call_id": m.get("tool_call_id"),
            }
        )
    meta = record["metadata"]
    tools = record.get("tools")
    return {
        "messages": messages,
        "tools": json.dumps(tools, ensure_ascii=False) if tools else None,
        "metadata": {f.name: _typed(f, meta.get(f.name)) for f in fields},
    }


class ParquetWriter(Writer):
    def __init__(self, path: Path, fields: Sequence[Field]) -> None:
        super().__init__(path, fields)
        self._open(self.tmp)

    def _open(self, target: Path) -> None:
        import pyarrow.parquet as pq

        self.schema = arrow_schema(self.fields)
        self._pq: Any = pq.ParquetWriter(target, self.schema)
        self._batch: list[dict[str, Any]] = []

    def write(self, record: Record) -> None:
        self._batch.append(tabular(record, self.fields))
        self.written += 1
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._batch:
            self._pq.write_table(pa.Table.from_pylist(self._batch, schema=self.schema))
            self._batch = []

    def _finish(self) -> None:
        if self._pq is not None:
            self._flush()
            self._pq.close()
            self._pq = None


class HFWriter(ParquetWriter):
    """Parquet under a scratch directory, then `datasets.Dataset.from_parquet(...).save_to_disk(path)`."""

    def __init__(self, path: Path, fields: Sequence[Field], push_to_hub: str | None = None) -> None:
        self.datasets = need_datasets("matrix export --format hf")
        self.push_to_hub = push_to_hub
        Writer.__init__(self, path, fields)
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.scratch-", dir=path.parent))
        self.parquet = self.scratch / "records.parquet"
        self._open(self.parquet)

    def close(self, ok: bool) -> None:
        try:
            self._finish()
            if ok:
                was_off = self.datasets.are_progress_bars_disabled()
                self.datasets.disable_progress_bars()  # the export prints its own summary
                try:
                    ds = self.datasets.Dataset.from_parquet(str(self.parquet), cache_dir=str(self.scratch / "cache"))
                    ds.save_to_disk(str(self.tmp))
                finally:
                    if not was_off:
                        self.datasets.enable_progress_bars()
                if self.path.is_dir():
                    shutil.rmtree(self.path)
                os.replace(self.tmp, self.path)
                if self.push_to_hub:
                    ds.push_to_hub(self.push_to_hub, token=os.environ.get("HF_TOKEN"))
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


def check_out(fmt: str, path: Path) -> None:
    """Refuse an output path that would replace something that is not an earlier export of this format."""
    if fmt != "hf" and path.is_dir():
        raise ValueError(f"--out {path} is a directory; --format {fmt} writes one file: give a file path")
    if fmt == "hf" and path.exists():
        saved = (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
        if not path.is_dir() or (any(path.iterdir()) and not saved):
            raise ValueError(f"--out {path} exists and is not a saved dataset; remove it or choose another path")


def open_writer(fmt: str, path: Path, fields: Sequence[Field], push_to_hub: str | None = None) -> Writer:
    if fmt == "chat":
        return ChatWriter(path, fields)
    if fmt == "parquet":
        return ParquetWriter(path, fields)
    if fmt == "hf":
        return HFWriter(path, fields, push_to_hub)
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
