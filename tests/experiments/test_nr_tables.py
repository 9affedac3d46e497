"""NaturalReasoning Tables 7, 8 and 9 from run metrics alone (fast: no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments import nr as exp
from matrix.cases import nr


def metrics(system: str, tps: float, setting: tuple[int, int, int], *, simulated: bool = True) -> dict[str, Any]:
    counts = {nr.ENGLISH: 37, nr.CLASSIFIER: 902, nr.SCORE: 4, nr.NO_BOXED: 2, nr.SUCCESS: 55}
    quality = {
        "documents": 1001, "decided": 1000, "failed": 1, "counts": counts,
        "percent": {k: v / 10 for k, v in counts.items()}, "questions": 55,
    }  # fmt: skip
    return {
        "system": system, "simulated": simulated, "time_scale": 1.0, "measured_seconds": 3725.0,
        "tokens_per_second": tps, "tokens_generated": int(tps * 3725), "concurrency": setting[0] * setting[1],
        "parallelism": list(setting), "quality": quality, "hardware": "SIMULATED test",
    }  # fmt: skip


def test_tables_put_the_paper_beside_ours_and_mark_simulated_figures(tmp_path: Path) -> None:
    t8 = [metrics(exp.P2P, 100.0 * (i + 1), s) for i, s in enumerate(exp.TWIN_T8.values())]
    batch = [metrics(exp.BATCH, 150.0, (10, 50, 1)), metrics(exp.BATCH, 200.0, (20, 25, 1))]
    res = exp.write_tables(t8, batch, tmp_path)
    assert res["p2p"]["tokens_per_second"] == 600.0 and res["batch"]["tokens_per_second"] == 200.0
    t7, t8_text, t9 = res["texts"]
    assert "| filtered_by_classifier | 902 | 90.20* [88.20, 91.89] | 90.24 |" in t7 and "SIMULATED" in t7  # Wilson 95%
    assert "| (20, 700, 1) | (4, 125, 1) | 200.0 (SIMULATED) | 2.00 | 1.61 |" in t8_text
    assert "| speedup (tokens/s) (SIMULATED) | 1.0x | 3.00x | 1.0x | 2.1x |" in t9
    assert "1:02:05 (SIMULATED)" in t9 and "| 25,000,000 |" in t9
    assert (tmp_path / "table9_nr.csv").exists() and "Every run" in (tmp_path / "table9_nr.md").read_text()
    real = [{**m, "simulated": False} for m in t8]
    assert "SIMULATED" not in exp.table8(real, tmp_path / "t8real")


def test_table8_marks_settings_that_were_not_run(tmp_path: Path) -> None:
    text = exp.table8([metrics(exp.P2P, 100.0, (1, 500, 1))], tmp_path / "t8")
    assert "| (240, 1, 1) | (12, 1, 1) | not run |" in text and "| 1.00 | 1.00 |" in text


def test_tables_from_run_directories(tmp_path: Path) -> None:
    from experiments.rundirs import discover

    for name, m in (("p", metrics(exp.P2P, 300.0, (4, 125, 1))), ("b", metrics(exp.BATCH, 100.0, (10, 50, 1)))):
        d = tmp_path / "natural_reasoning" / m["system"] / f"twin-{name}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
    found, problems = discover([tmp_path], rows=False)
    assert not problems
    runs = {r.metrics["system"]: r.metrics for r in found}
    res = exp.write_tables([runs[exp.P2P]], [runs[exp.BATCH]], tmp_path / "tables")
    assert "3.00x" in (tmp_path / "tables" / "table9_nr.md").read_text() and "3.00x" in res["texts"][2]


def test_simulated_time_is_taken_from_the_metrics_as_they_are(tmp_path: Path) -> None:
    # build_metrics already reports measured_seconds and tokens/s in simulated seconds
    m = {**metrics(exp.P2P, 200.0, (1, 500, 1)), "time_scale": 0.5, "measured_seconds": 60.0}
    text = exp.table9(m, {**m, "system": exp.BATCH, "tokens_per_second": 100.0}, tmp_path / "t9")
    assert "| runtime | 0:01:00 (SIMULATED) | 0:01:00 (SIMULATED) |" in text and "200.0 (SIMULATED)" in text
