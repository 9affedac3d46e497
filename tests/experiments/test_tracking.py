"""W&B logging of run directories: offline by default, online only with a key, never failing a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import tracking


def _run_dir(tmp_path: Path, name: str = "r1-n0") -> Path:
    d = tmp_path / "coral" / "matrix" / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"case": "coral", "system": "matrix", "backend": "sim",
        "simulated": True, "hardware": "SIMULATED 2 x a100", "tokens_per_second": 123.5,
        "latency_seconds": {"p50": 0.5}, "tokens_by_role": [1, 2]}))  # fmt: skip
    (d / "config.json").write_text(json.dumps({"concurrency": 8}))
    (d / "timeseries.json").write_text(json.dumps([{"t": 1.0, "tasks_done": 3}, {"t": 2.0, "tasks_done": 7}]))
    return d


def test_mode_defaults_to_offline_and_online_needs_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert tracking.resolve_mode(None) == "offline"
    assert tracking.resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match=r"wandb\.mode must be one of offline, online, disabled, got 'sometimes'"):
        tracking.resolve_mode(None)


def test_summary_flattens_scalars_and_tags_say_what_ran() -> None:
    s = tracking.summary_of({"a": 1, "b": {"c": 2.5, "d": True}, "e": [1, 2]})
    assert s == {"a": 1, "b/c": 2.5, "b/d": 1}
    assert tracking.tags_of({"case": "coral", "system": "matrix", "backend": "sim", "simulated": True}) == [
        "coral", "matrix", "sim", "simulated"]  # fmt: skip


def test_offline_run_lands_in_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    d = _run_dir(tmp_path)
    _run_dir(tmp_path, "r1-n0-c8")
    _run_dir(tmp_path, "r1-n01")  # another job's run: not this one's
    assert [p.name for p in tracking.run_dirs_of(tmp_path, "r1-n0")] == ["r1-n0", "r1-n0-c8"]
    folder = tracking.log_run_dir(d, mode="offline", extra_config={"slurm_job_id": "42"})
    assert folder is not None and folder.parent == d / "wandb"
    data = next(folder.glob("*.wandb")).read_bytes()
    for needle in (b"tokens_per_second", b"latency_seconds/p50", b"tasks_done", b"simulated", b"slurm_job_id"):
        assert needle in data, needle


def test_unreadable_run_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("wandb")
    d = tmp_path / "broken"
    d.mkdir()
    (d / "metrics.json").write_text("{not json")
    assert tracking.log_run_dir(d, mode="offline") is None
    assert "no readable metrics.json" in capsys.readouterr().err
    assert tracking.log_run_dir(d, mode="disabled") is None


def test_history_adds_tokens_per_second_and_recent_latency_quantiles() -> None:
    series = [{"t": 1.0, "completion_tokens": 0, "tasks_in_flight": 4, "note": "x"},
              {"t": 2.0, "completion_tokens": 50}, {"t": 4.0, "completion_tokens": 250}]  # fmt: skip
    # four tasks created at 100 (the run's start); they finish 1, 2, 2 and 4 seconds in
    outputs = [{"created": 100.0, "finished": 100.0 + f} for f in (1.0, 2.0, 2.0, 4.0)]
    h = tracking.history(series, outputs, window=1.5)
    assert "note" not in h[0] and "tokens_per_second" not in h[0] and h[0]["tasks_in_flight"] == 4
    assert h[1]["tokens_per_second"] == 50.0 and h[2]["tokens_per_second"] == 100.0
    assert (h[0]["latency_p50_s"], h[1]["latency_p50_s"], h[1]["latency_p99_s"]) == (1.0, 2.0, 2.0)
    assert h[2]["latency_p50_s"] == 4.0  # only the task that finished within the last 1.5 s
    # a sim run at time scale 10: the series is in simulated seconds, so are the rows' latencies
    sim_series = [{**row, "t": 10 * row["t"]} for row in series]
    scaled = tracking.history(sim_series, outputs, time_scale=10.0, window=15.0)
    assert [s["latency_p50_s"] for s in scaled] == [10.0, 20.0, 40.0]


def test_sample_rows_flatten_output_for_a_table() -> None:
    rows = [{"task_id": "q1", "trial": 1, "status": "done", "turns": [
        {"role": "teacher", "content": "Let us think.", "usage": {"completion_tokens": 7}},
        {"role": "student", "content": {"content": "The answer is (B)."}, "usage": {"completion_tokens": 5}}]},
        {"task_id": "q2", "status": "error", "error": "LLM 500", "turns": []}] * 15  # fmt: skip
    sample = tracking.sample_rows(rows)
    assert len(sample) == tracking.SAMPLE_ROWS
    assert sample[0] == {"task_id": "q1", "trial": 1, "status": "done", "error": "", "turns": 2,
                         "completion_tokens": 12, "last_text": "The answer is (B)."}  # fmt: skip
    assert sample[1]["error"] == "LLM 500" and sample[1]["last_text"] == ""
