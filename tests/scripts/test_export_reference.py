"""Reference runs: the small files of a run directory, its latency breakdown derived, its rows left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_export_keeps_small_files_derives_the_breakdown_and_skips_earlier_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    d = runs / "coral" / "matrix" / "twin"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"case": "coral", "system": "matrix", "tokens_per_second": 5.0}))
    (d / "timeseries.json").write_text(json.dumps([{"t": 1.0, "completion_tokens": 5}], indent=2))
    row = {"task_id": "a", "created": 0.0, "finished": 4.0,
           "hops": [{"sent": 0.0, "started": 1.0, "finished": 3.0}]}  # fmt: skip
    (d / "output.jsonl").write_text(json.dumps(row) + "\n")
    old = runs / "coral" / "matrix" / "twin.prev-20261124-234212"
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    out = tmp_path / "reference"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "export_reference.py"), str(runs), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    dest = out / "coral" / "matrix" / "twin"
    assert sorted(p.name for p in dest.iterdir()) == ["latency_breakdown.json", "metrics.json", "timeseries.json"]
    assert not (out / "coral" / "matrix" / "twin.prev-20261124-234212").exists()
    shares = json.loads((dest / "latency_breakdown.json").read_text())["share_percent"]
    assert shares["agent_processing"]["p50"] == 50.0 and shares["queuing"]["p50"] == 25.0
    assert json.loads((dest / "timeseries.json").read_text()) == [{"t": 1.0, "completion_tokens": 5}]
    assert (dest / "timeseries.json").read_text().count("\n") == 3  # one line per second
