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
                 "table10_tau2"):  # fmt: skip
        assert want in names
    for t in res.tables:
        for suffix in (".md", ".csv"):
            made = (tmp_path / t.name).with_suffix(suffix).read_text()
            committed = (COMMITTED / t.name).with_suffix(suffix)
            assert committed.exists(), f"{committed.name} is not committed (run make tables)"
            assert made == committed.read_text(), f"{committed.name} differs from what the reference runs give"
    t1 = (tmp_path / "table1_coral.md").read_text()
    assert "(SIMULATED)" in t1 and "agreement correctness [95% CI]" in t1 and "| 6.8x |" in t1
    assert "Table 6: no fault-injection runs" in (tmp_path / "index.md").read_text()


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
         str(tmp_path / "no-bench")],
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
        [sys.executable, str(REPO / "scripts" / "make_tables.py"), str(runs), "--out", str(out), "--strict"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert strict.returncode == 1


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tables.py"), str(tmp_path), "--out", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and f"no run directories under {tmp_path}" in proc.stderr


def test_fault_runs_make_table6(tmp_path: Path) -> None:
    d = tmp_path / "coral" / "matrix" / "chaos"
    d.mkdir(parents=True)
    fault_free = {"tokens_per_second": 100.0, "measured_seconds": 114.0}
    metrics = {"case": "coral", "system": "matrix", "tokens_per_second": 95.0, "measured_seconds": 120.0,
               "tasks_lost": 0, "chaos": {"fault_free": fault_free}}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    res = tables.make_tables([tmp_path], tmp_path / "t", write=False)
    t6 = next(t for t in res.tables if t.name == "table6_faults")
    assert t6.rows[1][:3] == ["lost trajectories", "0", "0"] and t6.rows[1][4] == "4080"
    assert t6.rows[2][1:3] == ["100.0", "95.0"]
