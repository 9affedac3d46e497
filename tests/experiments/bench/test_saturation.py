"""Saturation of a sim replica for a run's own request mix (virtual time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench import saturation as sat
from matrix.cli import main as cli_main
from matrix.llm.sim.loadgen import RequestSpec


def write_run(run: Path, rows: int, prompt: int, completion: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "output.jsonl", "w") as fh:
        for i in range(rows):
            turns = [
                {"role": "teacher", "usage": {"prompt_tokens": prompt, "completion_tokens": completion}},
                {"role": "extractor", "usage": {"prompt_tokens": prompt + completion, "completion_tokens": 3}},
                {"role": "matcher", "usage": {"prompt_tokens": 0, "completion_tokens": 0}},  # a rule, no call
            ]
            fh.write(json.dumps({"task_id": str(i), "turns": turns}) + "\n")
    (run / "metrics.json").write_text(json.dumps({"sim": {"profile": "a100-llama31-8b"}, "replicas": 1}))


def test_requests_from_run_reads_every_llm_call_and_skips_rule_turns(tmp_path: Path) -> None:
    write_run(tmp_path, 3, 200, 50)
    specs = sat.requests_from_run(tmp_path)
    assert specs == [RequestSpec(200, 50), RequestSpec(250, 3)] * 3


def test_bad_rows_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "output.jsonl"
    f.write_text('{"task_id": "a", "turns": [{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}]}\n'
                 '{"task_id": "b", "turns": [{"role": "x"}]}\n')  # fmt: skip
    with pytest.raises(sat.WorkloadError, match=r"output.jsonl:2: turn 0 of row 'b' has no 'usage'"):
        sat.requests_from_run(f)
    f.write_text("not json\n")
    with pytest.raises(sat.WorkloadError, match=r"output.jsonl:1: not JSON"):
        sat.requests_from_run(f)
    with pytest.raises(sat.WorkloadError, match="no run output"):
        sat.requests_from_run(tmp_path / "missing")


def test_long_prompts_saturate_lower_than_short_ones() -> None:
    short = sat.saturation("a100-llama31-8b", [RequestSpec(288, 128)] * 1200, concurrencies=(64, 128, 256))
    long = sat.saturation("a100-llama31-8b", [RequestSpec(4000, 128)] * 1200, concurrencies=(64, 128, 256))
    assert short["simulated"] and short["points"][0]["concurrency"] == 64
    assert long["replica_saturation_tokens_per_s"] < 0.8 * short["replica_saturation_tokens_per_s"]
    best = max(p["output_tokens_per_s"] for p in short["points"])
    assert short["replica_saturation_tokens_per_s"] == best


def test_replicas_split_the_mix_and_too_few_requests_is_an_error() -> None:
    doc = sat.saturation("a100-llama31-8b", [RequestSpec(300, 100)] * 600, concurrencies=(32, 64, 128), replicas=2)
    assert [p["concurrency"] for p in doc["points"]] == [32, 64]  # 300 per replica: 128 clients skipped
    with pytest.raises(sat.WorkloadError, match="too few"):
        sat.saturation("a100-llama31-8b", [RequestSpec(300, 100)] * 10, concurrencies=(32,))


def test_cli_takes_the_profile_from_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "run", 200, 500, 100)
    out = tmp_path / "sat.json"
    assert cli_main(["bench", "saturation", str(tmp_path / "run"), "--concurrency", "16,32", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["profile"] == "a100-llama31-8b" and doc["requests"] == 400 and len(doc["points"]) == 2
    assert "SIMULATED" in capsys.readouterr().out
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "output.jsonl").write_text("")
    assert cli_main(["bench", "saturation", str(tmp_path / "bare")]) == 2
