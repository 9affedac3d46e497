"""Paper tables regenerated from run directories alone: the committed reference runs, bad runs named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import paper, tables

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "results" / "reference"
COMMITTED = REPO / "results" / "tables"


def test_paper_values_come_from_the_data_file_with_their_source() -> None:
    assert paper.value("T1", "tokens_per_second", "baseline") == "18917"
    assert paper.number("T10", "tokens_per_second") == 41003
    assert paper.source("T9") == "paper v2 Table 9"
    with pytest.raises(KeyError, match="T1 metric 'nope'"):
        paper.value("T1", "nope")
    with pytest.raises(KeyError, match="T7 'success' has no baseline value"):
        paper.number("T7", "success", "baseline")
    for row in paper.rows():
        assert row["source"], row  # every number says where it was read


def test_reference_runs_regenerate_the_committed_tables(tmp_path: Path) -> None:
    res = tables.make_tables([REFERENCE], tmp_path, bench=REPO / "results" / "bench")
    assert res.problems == []
    names = {t.name for t in res.tables}
    for want in ("table1_coral", "table2_overhead", "table4_overhead", "table7_nr", "table8_nr", "table9_nr",
                 "table10_tau2", "table6_faults"):  # fmt: skip
        assert want in names
    for t in res.tables:
        for suffix in (".md", ".csv"):
            made = (tmp_path / t.name).with_suffix(suffix).read_text()
            committed = (COMMITTED / t.name).with_suffix(suffix)
            assert committed.exists(), f"{committed.name} is not committed (run make tables)"
            assert made == committed.read_text(), f"{committed.name} differs from what the reference runs give"
    t1 = (tmp_path / "table1_coral.md").read_text()
    assert "(SIMULATED)" in t1 and "agreement correctness [95% CI]" in t1 and "| 6.8x |" in t1
    t6 = (tmp_path / "table6_faults.md").read_text()
    assert "| lost trajectories | 0 of 5000 | 0 of 5000 | 0 | 4080 of 200k |" in t6 and "SIMULATED" in t6
    assert "no fault-injection runs" not in (tmp_path / "index.md").read_text()


def _copy(names: list[str], dest: Path) -> None:
    for name in names:
        shutil.copytree(REFERENCE / name, dest / name)


def test_a_corrupt_or_missing_file_is_named_and_the_other_runs_still_make_tables(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _copy(["tau2", "coral"], runs)
    (runs / "tau2" / "matrix" / "twin-c100" / "metrics.json").write_text('{"system": "matr')
    (runs / "coral" / "matrix" / "twin-c200" / "timeseries.json").unlink()
    (runs / "coral" / "matrix" / "twin" / "timeseries.json").write_text("[{]")
    out = tmp_path / "tables"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tables.py"), str(runs), "--out", str(out), "--bench",
         str(tmp_path / "no-bench"), "--figures", str(tmp_path / "figures")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    bad = str(runs / "tau2" / "matrix" / "twin-c100" / "metrics.json")
    assert f"problem: {bad}: corrupt JSON" in proc.stderr
    assert f"problem: {runs / 'coral' / 'matrix' / 'twin' / 'timeseries.json'}: corrupt JSON" in proc.stderr
    index = (out / "index.md").read_text()
    assert "`runs/tau2/matrix/twin-c100/metrics.json`: corrupt JSON" in index  # relative to where it ran
    # the other tau2 runs have no matrix run at the same experiment any more: table 10 of "twin" is not made,
    # but the layout and small-cpu pairs still are, and Coral (its timeseries aside) is whole
    made = sorted(p.stem for p in out.glob("*.md"))
    assert "table10_tau2" not in made and "table10_tau2_layout" in made and "table1_coral" in made
    assert "tau2/twin: no table (systems present: tau2-threads" in proc.stderr
    strict = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tables.py"), str(runs), "--out", str(out), "--strict",
         "--figures", str(tmp_path / "figures")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert strict.returncode == 1


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tables.py"), str(tmp_path), "--out", str(tmp_path / "t"),
         "--figures", str(tmp_path / "f")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and f"no run directories under {tmp_path}" in proc.stderr


def test_fault_runs_make_table6(tmp_path: Path) -> None:
    d = tmp_path / "coral" / "matrix" / "chaos"
    d.mkdir(parents=True)
    fault_free = {
        "tokens_per_second": 100.0,
        "measured_seconds": 114.0,
        "tasks": 5000,
        "lost": 0,
        "duplicate_rows": 0,
        "agreement_correctness": 0.47,
        "run_dir": str(d / "fault_free"),
    }
    chaos = {
        "fault_free": fault_free,
        "targets": ["agent"],
        "interval_seconds": 5.0,
        "kills": 30,
        "restarts": 30,
        "mean_restart_seconds": 1.84,
        "lost": 0,
        "duplicate_rows": 0,
        "failed_rows": 0,
        "tasks_replayed": 412,
        "tokens_per_second": 95.0,
        "throughput_change_percent": -5.0,
        "trajectories_differing_from_fault_free": 0,
    }
    metrics = {"case": "coral", "system": "matrix", "simulated": True, "tokens_per_second": 999.0,
               "measured_seconds": 120.0, "tasks_lost": 0, "quality": {"agreement_correctness": {"value": 0.4712}},
               "chaos": chaos}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    res = tables.make_tables([tmp_path], tmp_path / "t", write=False)
    t6 = next(t for t in res.tables if t.name == "table6_faults")
    rows = {r[0]: r[1:] for r in t6.rows}
    assert rows["lost trajectories"] == ["0 of 5000", "0 of 5000", "0", "4080 of 200k"]
    assert rows["kill interval"][1] == "5 s (agent)" and rows["kills / restarts"][1] == "30 / 30"
    assert rows["tokens/s (SIMULATED)"][:2] == ["100.0", "95.0"]  # the chaos block's, counted from the rows
    assert rows["throughput change"][1] == "-5.0%" and rows["tasks replayed"][1] == "412"
    assert rows["agreement correctness"][:2] == ["0.4700", "0.4712"]
    assert "SIMULATED" in t6.title and any("counted from the output files" in n for n in t6.notes)
