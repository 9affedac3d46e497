"""Input readers: compressed JSONL (DCLM ships .jsonl.zst shards) keeps bad lines as located error rows."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
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


# -- hostile input: every kind of bad line is an error row at its line; every other row comes out once --

GOOD = [b'{"id": "g1", "x": 1}', b'{"id": "g2", "x": 2}', b'{"id": "g3", "x": 3}']


def rows_of(path: Path, **kw: object) -> tuple[list[str], dict[str, str]]:
    """The ids of the good rows, and {location: error} of the bad ones."""
    rows = list(read_rows(path, **kw))  # type: ignore[arg-type]
    good = [r.task_id for r in rows if r.error is None]
    assert len(good) == len(set(good))
    bad = {r.location: r.error for r in rows if r.error}
    for r in rows:
        if r.error:
            assert r.task_id == r.location and r.row is not None
    return good, bad  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{oops", "malformed JSON"),
        (b'{"id": "t", "text": "cut off', "malformed JSON"),
        (b"\xff\xfe{}", "line is not UTF-8 (invalid start byte at byte 0)"),
        (b'{"id": "latin1", "text": "caf\xe9"}', "line is not UTF-8 (invalid continuation byte at byte 29)"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"a string"', "expected a JSON object, got str"),
        (b"42", "expected a JSON object, got int"),
        (b"null", "expected a JSON object, got NoneType"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"id": "s", "text": "ok \\ud800 then"}', "unpaired UTF-16 surrogate"),
        (b'{"id": "s2", "\\udfff": 1}', "unpaired UTF-16 surrogate"),
        (b'{"id": "' + b"i" * 5000 + b'"}', "'id' is 5000 characters long, over the limit of 4096"),
    ],
    ids=[
        "not_json",
        "truncated_json",
        "not_utf8",
        "latin1",
        "list",
        "string",
        "number",
        "null",
        "deep",
        "lone_surrogate",
        "surrogate_key",
        "huge_id",
    ],
)
def test_a_bad_line_is_an_error_row_at_its_line_and_the_rest_is_read(tmp_path: Path, line: bytes, error: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], line, GOOD[1], GOOD[2]]) + b"\n")
    good, bad = rows_of(path)
    assert good == ["g1", "g2", "g3"]
    assert list(bad) == ["in.jsonl:2"] and error in bad["in.jsonl:2"], bad
    row = next(r for r in read_rows(path) if r.error)
    assert row.row is not None
    if "raw_line" in row.row:  # the line did not parse: its text is kept
        assert row.row["raw_bytes"] == len(line) and row.row["raw_line"][:4] == line[:4].decode(errors="replace")
    else:  # it parsed (a row with a bad id): the row is kept
        assert row.row == json.loads(line)


def test_a_paired_surrogate_escape_is_a_character_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "e", "text": "smile \\ud83d\\ude00"}\n')
    (row,) = list(read_rows(path))
    assert row.error is None and row.row == {"id": "e", "text": "smile \U0001f600"}


def test_blank_lines_are_skipped_but_counted_and_a_last_line_needs_no_newline(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], b"", b"   \t", b"\r", GOOD[1], b"{bad"]) + b"\n" + GOOD[2])
    rows = list(read_rows(path))
    assert [(r.task_id, r.location, r.error is None) for r in rows] == [
        ("g1", "in.jsonl:1", True),
        ("g2", "in.jsonl:5", True),
        ("in.jsonl:6", "in.jsonl:6", False),
        ("g3", "in.jsonl:7", True),
    ]


def test_a_truncated_last_line_is_an_error_row_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], GOOD[1], b'{"id": "g3", "x"']))  # no newline, cut mid-object
    good, bad = rows_of(path)
    assert good == ["g1", "g2"] and list(bad) == ["in.jsonl:3"] and "malformed JSON" in bad["in.jsonl:3"]


def test_a_byte_order_mark_at_the_start_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(GOOD) + b"\n")
    good, bad = rows_of(path)
    assert good == ["g1", "g2", "g3"] and bad == {}


def test_a_multi_megabyte_field_is_read_whole(tmp_path: Path) -> None:
    text = "word " * 1_000_000  # 5 MB
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], json.dumps({"id": "big", "text": text}).encode(), GOOD[1]]) + b"\n")
    rows = {r.task_id: r for r in read_rows(path)}
    assert set(rows) == {"g1", "big", "g2"} and rows["big"].error is None
    assert rows["big"].row is not None and rows["big"].row["text"] == text


def test_a_line_over_the_limit_is_refused_without_holding_it_and_the_next_rows_are_read(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "in.jsonl"
    huge = b'{"id": "huge", "text": "' + b"x" * 24_000_000 + b'"}'
    path.write_bytes(b"\n".join([GOOD[0], huge, GOOD[1], GOOD[2]]) + b"\n")
    tracemalloc.start()
    try:
        rows = list(read_rows(path, max_line_bytes=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.task_id for r in rows if r.error is None] == ["g1", "g2", "g3"]
    (bad,) = [r for r in rows if r.error]
    assert bad.location == "in.jsonl:2"
    assert bad.error == f"line is {len(huge)} bytes, over the limit of 1000000 (max_line_bytes)"
    assert bad.row is not None and bad.row["raw_bytes"] == len(huge) and bad.row["raw_line"].startswith('{"id": "huge"')
    assert peak < 8_000_000, f"reading held {peak} bytes at once for a 24 MB line"


def test_a_line_exactly_at_the_limit_is_a_row(tmp_path: Path) -> None:
    line = b'{"id": "edge", "pad": "' + b"p" * 100 + b'"}'
    path = tmp_path / "in.jsonl"
    path.write_bytes(line + b"\n" + line.replace(b"edge", b"edg2") + b"x\n")
    rows = list(read_rows(path, max_line_bytes=len(line)))
    assert rows[0].task_id == "edge" and rows[0].error is None
    assert rows[1].error is not None and "over the limit" in rows[1].error and rows[1].location == "in.jsonl:2"


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_truncated_compressed_file_yields_its_rows_then_an_error_row(tmp_path: Path, suffix: str) -> None:
    data = b"".join(b'{"id": "r%d", "pad": "%s"}\n' % (i, b"abc" * (i % 50)) for i in range(20_000))
    if suffix.endswith(".gz"):
        packed = gzip.compress(data)
    else:
        zstandard = pytest.importorskip("zstandard")
        packed = zstandard.ZstdCompressor().compress(data)
    whole = tmp_path / f"whole{suffix}"
    whole.write_bytes(packed)
    assert len(list(read_rows(whole))) == 20_000 and all(r.error is None for r in read_rows(whole))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(packed[: len(packed) // 2])
    rows = list(read_rows(cut))
    good = [r for r in rows if r.error is None]
    assert 0 < len(good) < 20_000 and [r.task_id for r in good] == [f"r{i}" for i in range(len(good))]
    last = rows[-1]
    assert last.error is not None and "truncated or corrupt" in last.error
    assert last.location == f"cut{suffix}:{len(good) + 1}" and len(rows) == len(good) + 1


def test_a_corrupt_gzip_file_is_an_error_row_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(b"this is not gzip\n")
    (row,) = list(read_rows(path))
    assert row.location == "in.jsonl.gz:1" and row.error is not None and "BadGzipFile" in row.error


def test_items_of_an_iterable_that_are_not_mappings_are_error_rows() -> None:
    rows = list(read_rows([{"id": "a"}, ["not", "a", "dict"], "text", {"id": "b"}]))
    assert [(r.task_id, r.error) for r in rows] == [
        ("a", None),
        ("row 2", "expected a mapping, got list"),
        ("row 3", "expected a mapping, got str"),
        ("b", None),
    ]
    assert rows[1].row == {"raw_repr": "['not', 'a', 'dict']"}


def test_an_unreadable_parquet_file_is_refused_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"broken\.parquet is not a readable Parquet file"):
        list(read_rows(path))


def test_missing_inputs_and_bad_limits_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nothere\.jsonl does not exist"):
        list(read_rows(tmp_path / "nothere.jsonl"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        list(read_rows(tmp_path / "dir.jsonl"))
    with pytest.raises(ValueError, match="max_line_bytes must be >= 1"):
        list(read_rows([{"id": 1}], max_line_bytes=0))


# -- streaming: hf:// is streamed, and admission holds at most its bound of rows whatever the source --


def _docs(n: int) -> list[dict[str, object]]:
    return [{"id": f"d{i}", "x": i, "text": "word " * 20} for i in range(n)]


def _write_source(tmp_path: Path, kind: str, rows: list[dict[str, object]]) -> str:
    """`rows` as a .jsonl.zst file, a Parquet file, or a local folder read through hf://."""
    if kind == "zst":
        zstandard = pytest.importorskip("zstandard")
        path = tmp_path / "docs.jsonl.zst"
        with open(path, "wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as w:
            for r in rows:
                w.write(json.dumps(r).encode() + b"\n")
        return str(path)
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "docs.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10_000)
        return str(path)
    pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"hf://{folder}"


def test_hf_sources_stream_and_name_the_extra_when_datasets_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    source = _write_source(tmp_path, "hf", _docs(30))
    calls: list[dict[str, object]] = []
    real = datasets.load_dataset

    def spy(*args: object, **kw: object) -> object:
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    rows = list(read_rows(source, limit=7))
    assert [r.task_id for r in rows] == [f"d{i}" for i in range(7)] and calls[0]["streaming"] is True
    datasets.Dataset.from_list(_docs(12)).save_to_disk(str(tmp_path / "saved"))  # a save_to_disk folder
    assert [r.task_id for r in read_rows(f"hf://{tmp_path / 'saved'}")][-1] == "d11"
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    with pytest.raises(ValueError, match=r"^reading hf://x needs the `datasets` package: .*\[hf\]"):
        list(read_rows("hf://x"))


@pytest.mark.parametrize("kind", ["zst", "parquet", "hf"])
def test_admission_holds_at_most_its_bound_of_rows_from_a_streamed_source(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows read from the source but not yet written by the sink never exceed the concurrency bound
    (plus the one row admission reads before it waits for a slot): counted, not timed."""
    import asyncio

    import matrix.bench.dummy  # noqa: F401  (registers the echo workflow)
    import matrix.runtime.local as local
    from matrix.agent import RoleSpec
    from matrix.bench.dummy import Echo
    from matrix.runtime.config import RunConfig
    from matrix.sink import SinkWriter

    n, bound = 3000, 8
    source = _write_source(tmp_path, kind, _docs(n))
    count = {"read": 0, "written": 0, "held": 0}
    real_read, real_accept = local.read_rows, SinkWriter.accept

    def counting_read(*args: object, **kw: object) -> Iterator[object]:
        for row in real_read(*args, **kw):  # type: ignore[arg-type]
            count["read"] += 1
            yield row

    def counting_accept(self: SinkWriter, message: object) -> bool:
        ok = real_accept(self, message)  # type: ignore[arg-type]
        count["written"] += ok
        return ok

    async def before_step(role: str, msg: object) -> None:
        count["held"] = max(count["held"], count["read"] - count["written"])

    monkeypatch.setattr(local, "read_rows", counting_read)
    monkeypatch.setattr(SinkWriter, "accept", counting_accept)
    cfg = RunConfig(workflow="echo", roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)], source=source,
                    run_dir=tmp_path / "run", max_concurrent_tasks=bound, progress=False)  # fmt: skip
    metrics = asyncio.run(local.run_local_async(cfg, before_step=before_step))
    assert metrics["tasks_finished"] == count["read"] == count["written"] == n
    assert 1 <= count["held"] <= bound + 1, count


def test_the_stream_benchmark_measures_a_small_run_and_keeps_each_sources_entry(tmp_path: Path) -> None:
    import argparse

    from experiments.bench import stream

    out = tmp_path / "stream.json"
    for source in ("zst", "parquet"):
        args = argparse.Namespace(rows=1500, concurrency=50, source=source, text_chars=64, sleep=0.0, out=out)
        assert stream.main(args) == 0
    doc = json.loads(out.read_text())
    assert set(doc["runs"]) == {"zst", "parquet"}
    run = doc["runs"]["zst"]
    assert run["tasks_finished"] == 1500 and run["peak_in_flight"] <= 50 and run["rss_peak_mb"] >= run["rss_before_mb"]
    assert run["within_limit"] is True and run["simulated"] is False
