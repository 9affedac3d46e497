"""The streaming benchmark: a million generated rows through admission on the local transport, with
the process's resident memory measured while they pass.

The rows are written first, as a DCLM-like `.jsonl.zst` shard (or Parquet, or a local folder read
through `hf://`), one at a time, so that the input never sits in memory. Then a trivial workflow (one
role, `Echo`, no LLM; each step sleeps `sleep_s`, 10 ms, so that the bound is reached) runs over them
on the in-process transport with `max_concurrent_tasks` in flight, the sink writing every row to a
scratch run directory. A sampler thread reads the resident set size (psutil) every 50 ms; the growth
is the peak over the run minus the size just before it (imports done, agents not yet set up).

What grows with the number of rows is the run's bookkeeping, not the rows: the sink's done-ledger
and admission's seen ids (one entry per task, for resume and de-duplication) and the latency samples
the sink keeps (at most 200,000). The JSON says how many tasks were in flight at most, so that rows
held and per-task bookkeeping are told apart. For an `hf://` source the first streamed row is read
before the baseline, since `datasets` spends a few hundred MB on its first read whatever the size of
the data (both sizes are in the JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from experiments.bench.memory import MemorySampler
from matrix.bench.dummy import Echo
from matrix.workflow import Sequential, register_workflow

WORKFLOW = register_workflow(Sequential("stream-echo", ["a"])).name
SOURCES = ("zst", "parquet", "hf", "jsonl")
LIMIT_MB = 500.0
MB = 1024 * 1024


def _row(i: int, text_chars: int, sleep_s: float) -> dict[str, Any]:
    words = ("stream", "every", "row", "once", "through", "admission", "and", "the", "sink")
    text = " ".join(words[(i + k) % len(words)] for k in range(text_chars // 6))[:text_chars]
    return {"id": f"doc-{i}", "x": i, "sleep": sleep_s, "url": f"https://example.org/{i}", "text": text}


def generate(folder: Path, kind: str, rows: int, text_chars: int, sleep_s: float = 0.0) -> str:
    """Write `rows` generated documents as `kind`; returns the source string `read_rows` takes."""
    if kind in ("zst", "jsonl", "hf"):
        target = folder / ("docs.jsonl.zst" if kind == "zst" else "docs.jsonl")
        if kind == "hf":
            (folder / "hf").mkdir()
            target = folder / "hf" / "data.jsonl"
        with open(target, "wb") as raw:
            sink: Any = raw
            if kind == "zst":
                import zstandard

                sink = zstandard.ZstdCompressor(level=3).stream_writer(raw)
            for i in range(rows):
                sink.write(json.dumps(_row(i, text_chars, sleep_s)).encode() + b"\n")
            if kind == "zst":
                sink.close()
        return f"hf://{folder / 'hf'}" if kind == "hf" else str(target)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "docs.parquet"
    schema = pa.schema(
        [("id", pa.string()), ("x", pa.int64()), ("sleep", pa.float64()), ("url", pa.string()), ("text", pa.string())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 50_000):
            batch = [_row(i, text_chars, sleep_s) for i in range(start, min(rows, start + 50_000))]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return str(path)


class RssSampler(MemorySampler):
    """The peak resident set size of this one process (not Ray's), sampled on a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(interval)
        self._proc = psutil.Process()
        self.peak_bytes = self._proc.memory_info().rss

    def ray_rss(self) -> int:  # type: ignore[override]
        return int(self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.peak_bytes = max(self.peak_bytes, self.ray_rss())


def run_stream(
    rows: int = 1_000_000,
    concurrency: int = 1000,
    source: str = "zst",
    text_chars: int = 256,
    sleep_s: float = 0.01,
    scratch: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate, run, measure; the scratch folder (input and output) is removed afterwards."""
    from matrix.agent import RoleSpec
    from matrix.runtime.config import RunConfig
    from matrix.runtime.local import run_local

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    folder = Path(tempfile.mkdtemp(prefix="matrix-bench-stream-", dir=scratch))
    try:
        t0 = time.monotonic()
        src = generate(folder, source, rows, text_chars, sleep_s)
        generate_s = time.monotonic() - t0
        input_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        cfg = RunConfig(
            workflow=WORKFLOW,
            roles=[RoleSpec("a", Echo)],
            source=src,
            run_dir=folder / "run",
            max_concurrent_tasks=concurrency,
            progress=progress,
            flush_every=1024,
            workflow_modules=[__name__],
        )
        warm = psutil.Process().memory_info().rss
        if source == "hf":  # datasets' first streamed row costs a few hundred MB of its own, once: not rows
            from matrix.sources import hf_stream

            next(iter(hf_stream(src[len("hf://") :])))
        gc.collect()
        before = psutil.Process().memory_info().rss
        t0 = time.monotonic()
        with RssSampler() as rss:
            metrics = run_local(cfg)
        run_s = time.monotonic() - t0
        after = psutil.Process().memory_info().rss
        output_bytes = (folder / "run" / "output.jsonl").stat().st_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    growth = (rss.peak_bytes - before) / MB
    return {
        "benchmark": "stream",
        "what": "generated rows through admission on the local transport (one Echo role, no LLM)",
        "rows": rows,
        "source": source,
        "text_chars": text_chars,
        "step_sleep_seconds": sleep_s,
        "max_concurrent_tasks": concurrency,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "generate_seconds": round(generate_s, 2),
        "run_seconds": round(run_s, 2),
        "rows_per_second": round(rows / run_s, 1) if run_s > 0 else None,
        "tasks_finished": metrics.get("tasks_finished"),
        "tasks_failed": metrics.get("tasks_failed"),
        "tasks_lost": metrics.get("tasks_lost"),
        "peak_in_flight": metrics.get("peak_in_flight"),
        "rss_before_warm_up_mb": round(warm / MB, 1),
        "rss_before_mb": round(before / MB, 1),
        "rss_peak_mb": round(rss.peak_bytes / MB, 1),
        "rss_after_mb": round(after / MB, 1),
        "rss_growth_mb": round(growth, 1),
        "rss_growth_bytes_per_row": round((rss.peak_bytes - before) / rows, 1) if rows else None,
        "limit_mb": LIMIT_MB,
        "within_limit": growth <= LIMIT_MB,
        "simulated": False,
        "measured": "resident set size (psutil) sampled every 50 ms; growth = peak during the run - size before it",
    }


def summary(doc: dict[str, Any]) -> str:
    return (
        f"matrix bench stream: {doc['rows']:,} rows ({doc['source']}, {doc['input_bytes'] / MB:,.0f} MiB) in "
        f"{doc['run_seconds']:,.1f} s ({doc['rows_per_second']:,.0f} rows/s), {doc['tasks_finished']:,} finished, "
        f"at most {doc['peak_in_flight']} in flight; resident memory {doc['rss_before_mb']:,.0f} -> peak "
        f"{doc['rss_peak_mb']:,.0f} MiB: +{doc['rss_growth_mb']:,.0f} MiB "
        f"({doc['rss_growth_bytes_per_row']:,.0f} bytes per row; limit {doc['limit_mb']:,.0f} MiB: "
        f"{'within' if doc['within_limit'] else 'OVER'})"
    )


def main(args: argparse.Namespace) -> int:
    """`matrix bench stream`: the run, its entry in the JSON (one per source), one line; 1 if a row was
    lost or the growth is over the limit."""
    from matrix.runtime.report import write_json

    doc = run_stream(
        rows=args.rows, concurrency=args.concurrency, source=args.source, text_chars=args.text_chars, sleep_s=args.sleep
    )
    out = args.out or Path("results/bench/stream.json")
    runs: dict[str, Any] = {}
    if out.is_file():
        runs = dict(json.loads(out.read_text()).get("runs") or {})
    runs[doc["source"]] = doc
    write_json(out, {"benchmark": "stream", "limit_mb": LIMIT_MB, "runs": runs})
    print(summary(doc))
    print(f"wrote {out} (runs: {', '.join(sorted(runs))})")
    ok = doc["tasks_finished"] == doc["rows"] and not doc["tasks_lost"] and doc["within_limit"]
    return 0 if ok else 1
