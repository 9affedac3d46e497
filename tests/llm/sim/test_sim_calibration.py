"""The calibration: every published row is accounted for, and the fitted ones are close."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from matrix.llm.sim.calibration import (
    SCENARIOS,
    calibrate,
    compare_with_published,
    format_comparison,
    format_table,
    load_published,
)

ROOT = Path(__file__).resolve().parents[3]


def test_packaged_data_is_the_reference_copy() -> None:
    shared = ROOT.parent / "shared" / "paper" / "serving_calibration.csv"
    packaged = ROOT / "matrix" / "llm" / "sim" / "data" / "serving_calibration.csv"
    if shared.exists():
        assert packaged.read_text() == shared.read_text()
    assert all(row.source for row in load_published())


def test_every_published_row_has_exactly_one_scenario() -> None:
    rows = load_published()
    for scenario in SCENARIOS:
        assert sum(scenario.matches(r) for r in rows) == 1, scenario.key
    for row in rows:
        assert sum(s.matches(row) for s in SCENARIOS) <= 1, row
    covered = [r for r in rows if any(s.matches(r) for s in SCENARIOS)]
    assert len(covered) == len(rows), [r for r in rows if r not in covered]


def test_fitted_points_are_within_twenty_percent() -> None:
    for profile in ("a100-llama31-8b", "h100-llama31-8b"):
        lines = calibrate(profile, fitted_only=True, fast=True)
        assert lines, profile
        for ln in lines:
            assert abs(ln.rel_error) < 0.2, ln
    text = format_table(lines)
    assert "SIMULATED" in text and "fitted" in text


def test_decode_floor_is_respected() -> None:
    for profile, key in (("a100-llama31-8b", "floor-a100"), ("h100-llama31-8b", "floor-h100")):
        lines = calibrate(profile, only={key})
        assert len(lines) == 1 and lines[0].status == "bound ok"


def test_http_sweep_comparison() -> None:
    point = {
        "concurrency": 4,
        "requests": 16,
        "failed": 0,
        "prompt_tokens": 16 * 290,
        "output_tokens": 16 * 128,
        "output_tokens_per_s": 540.0,
        "ttft_p50_ms": 30.0,
        "itl_p50_ms": 7.2,
    }
    record = compare_with_published("h100-llama31-8b", [point])
    assert record["simulated"] is True and record["points"][0]["concurrency"] == 4
    model = record["points"][0]["model_virtual_time"]
    assert 400 < model["output_tokens_per_s"] < 700
    assert record["points"][0]["published_same_concurrency"]  # InferenceBench at 4
    json.dumps(record)
    assert "simulated" in format_comparison(record)


def test_script_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fit.json"
    argv = sys.argv
    sys.argv = ["calibrate_sim.py", "--profile", "a100-llama31-8b", "--json", str(out)]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(ROOT / "scripts" / "calibrate_sim.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "a100-llama31-8b" in printed and "published" in printed
    doc = json.loads(out.read_text())
    assert doc["simulated"] is True and {ln["status"] for ln in doc["lines"]} >= {"fitted", "shown"}
