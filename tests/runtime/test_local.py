from __future__ import annotations

import json
from pathlib import Path

import pytest

import matrix.bench.dummy  # noqa: F401  (registers the workflows)
from matrix.agent import Agent, RoleSpec
from matrix.bench.dummy import Echo, coral_dummy_roles
from matrix.message import Message
from matrix.runtime.config import RunConfig
from matrix.runtime.local import run_local


def write_rows(path: Path, rows: list[dict], extra_lines: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    with open(path, "wb") as fh:
        for r in rows:
            fh.write(json.dumps(r).encode() + b"\n")
        for line in extra_lines:
            fh.write(line + b"\n")
    return path


def read_output(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "output.jsonl").read_text().splitlines()]


def echo_cfg(tmp_path: Path, source: object, **kw: object) -> RunConfig:
    return RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)],
        source=source,  # type: ignore[arg-type]
        run_dir=tmp_path / "run",
        progress=False,
        **kw,  # type: ignore[arg-type]
    )


def test_malformed_row_becomes_error_row_with_line_number_and_run_completes(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", [{"id": i, "x": i} for i in range(5)], [b"{oops", b"\xff\xfe not utf8"])
    m = run_local(echo_cfg(tmp_path, src))
    rows = read_output(tmp_path / "run")
    assert m["tasks_finished"] == 5 and m["tasks_bad_input"] == 2 and m["tasks_lost"] == 0
    errors = sorted(r["error"] for r in rows if r["status"] == "error")
    assert "in.jsonl:6" in errors[0] and "malformed JSON" in errors[0]
    assert "in.jsonl:7" in errors[1] and "UTF-8" in errors[1]
    raw = sorted(r["row"]["raw_line"] for r in rows if r["status"] == "error")
    assert raw[0] == "{oops" and "not utf8" in raw[1]
    ok = next(r for r in rows if r["task_id"] == "3")
    assert [t["content"] for t in ok["turns"]] == ["a:3", "b:3"]


def test_step_error_is_an_error_row_not_a_retry(tmp_path: Path) -> None:
    rows = [{"id": i, "x": i, "fail_at": "b" if i == 2 else None} for i in range(4)]
    m = run_local(echo_cfg(tmp_path, rows))
    out = {r["task_id"]: r for r in read_output(tmp_path / "run")}
    assert out["2"]["status"] == "error" and "asked to fail at b" in out["2"]["error"]
    assert m["tasks_failed"] == 1 and m["tasks_finished"] == 3 and m["tasks_replayed"] == 0


def test_duplicate_task_ids_are_reported_not_dropped(tmp_path: Path) -> None:
    rows = [{"id": "x", "x": 1}, {"id": "y", "x": 2}, {"id": "x", "x": 3}]
    run_local(echo_cfg(tmp_path, rows))
    out = read_output(tmp_path / "run")
    assert len(out) == 3
    dup = next(r for r in out if r["status"] == "error")
    assert "duplicate task id 'x'" in dup["error"] and dup["row"]["x"] == 3


class Gauge(Agent):
    """Records the most tasks ever inside its step at once."""

    current = 0
    peak = 0

    async def step(self, message: Message) -> Message:
        import asyncio

        Gauge.current += 1
        Gauge.peak = max(Gauge.peak, Gauge.current)
        await asyncio.sleep(0.002)
        Gauge.current -= 1
        return message


@pytest.mark.parametrize("bound", [1, 7, 50])
def test_admission_never_exceeds_its_bound(tmp_path: Path, bound: int) -> None:
    Gauge.peak = 0
    cfg = RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Gauge), RoleSpec("b", Gauge)],
        source=[{"id": i} for i in range(200)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=bound,
        progress=False,
    )
    m = run_local(cfg)
    assert m["tasks_finished"] == 200
    assert m["peak_in_flight"] <= bound and Gauge.peak <= bound
    if bound > 1:
        assert Gauge.peak > 1  # it really ran tasks concurrently


def test_trials_partitions_and_resume(tmp_path: Path) -> None:
    rows = [{"id": i, "x": i} for i in range(30)]
    cfg = echo_cfg(tmp_path, rows, num_trials=2, num_partitions=3)
    m = run_local(cfg)
    assert m["tasks_finished"] == 60
    keys = []
    for p in range(3):
        keys += [(r["task_id"], r["trial"]) for r in map(json.loads, cfg.output_path(p).read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 60
    # A second run over the same directory finds everything done.
    m2 = run_local(cfg)
    assert m2["tasks_admitted"] == 0 and m2["tasks_resumed"] == 60


def test_coral_dummy_local_shape(tmp_path: Path) -> None:
    cfg = RunConfig(
        workflow="coral-dummy",
        roles=coral_dummy_roles(),
        source=[{"id": i} for i in range(60)],
        run_dir=tmp_path / "run",
        progress=False,
    )
    m = run_local(cfg)
    assert m["tasks_finished"] == 60
    hops_per_task = m["messages"] / 60
    assert 6 <= hops_per_task <= 12
    rows = read_output(tmp_path / "run")
    assert {t["role"] for t in rows[0]["turns"]} == {"teacher", "student", "extractor", "matcher"}


def test_metrics_files_and_prometheus_text(tmp_path: Path) -> None:
    import urllib.request

    from matrix.runtime.report import PrometheusExporter

    run_local(echo_cfg(tmp_path, [{"id": i, "x": i} for i in range(20)]))
    prom = (tmp_path / "run" / "metrics.prom").read_text()
    assert 'matrix_hops{role="a"} 20' in prom and "matrix_step_seconds_bucket" in prom
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("tasks_finished", "tokens_per_second", "messages_per_second", "versions", "latency_seconds"):
        assert key in metrics
    exporter = PrometheusExporter("127.0.0.1", 0)
    try:
        exporter.update(prom)
        with urllib.request.urlopen(exporter.url, timeout=5) as resp:
            assert resp.read().decode() == prom
    finally:
        exporter.stop()
