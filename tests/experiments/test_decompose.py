"""The paper's speedups as chains of measured factors (experiments/decompose.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments import decompose, rundirs, tables
from experiments.rundirs import Run


def run(system: str, concurrency: int, variant: str | None, tps: float, tag: str) -> Run:
    metrics = {"system": system, "concurrency": concurrency, "tokens_per_second": tps, "simulated": True,
               "clock": "virtual", **({"variant": variant} if variant else {})}  # fmt: skip
    name = f"paper-{tag}" + (f"-v{variant}" if variant else "")
    return Run(Path("results/runs/coral") / system / name, "coral", system, name, metrics)


CORAL = [
    run("coral-controller", 5000, None, 100.0, "w5000"),
    run("coral-controller", 5000, "nocpu", 150.0, "w5000"),
    run("matrix", 5000, "nocpu", 160.0, "c5000"),
    run("matrix", 12400, "nocpu", 240.0, "c12400"),
    run("matrix", 12400, None, 230.0, "c12400"),
]


def test_the_factors_telescope_to_the_measured_speedup() -> None:
    d = decompose.decompose("coral", CORAL)
    assert d is not None and d["complete"]
    assert [round(s["value"], 4) for s in d["steps"]] == [1.5, round(160 / 150, 4), 1.5, round(230 / 240, 4)]
    assert d["product"] == pytest.approx(230.0 / 100.0)  # the chain's ends
    assert d["paper_factor"] == pytest.approx(129833 / 18917)
    assert d["unexplained"] == pytest.approx(d["paper_factor"] / 2.3)
    assert d["needed"]["would_have_to_be"] == pytest.approx(1.5 * d["paper_factor"] / 2.3)
    assert d["steps"][0]["from"] == "paper-w5000" and d["steps"][0]["to"] == "paper-w5000-vnocpu"


def test_the_middle_half_rate_is_the_steady_part_of_the_series() -> None:
    r = run("matrix", 10, None, 1.0, "c10")
    # nothing for 10 s (the ramp), 100 tokens/s for 10 s, then a slow tail
    r.timeseries = [{"t": t, "completion_tokens": 0 if t <= 10 else min(1000, 100 * (t - 10))} for t in range(1, 21)]
    r.timeseries += [{"t": 30, "completion_tokens": 1100}]
    assert decompose.middle_rate(r) == pytest.approx(100.0)
    assert math.isnan(decompose.middle_rate(run("matrix", 10, None, 1.0, "c10")))


def test_a_missing_run_is_named_and_the_product_is_incomplete() -> None:
    d = decompose.decompose("coral", CORAL[:3] + CORAL[4:])
    assert d is not None and not d["complete"] and math.isnan(d["product"])
    assert any("missing: Matrix at 12,400 (50 per GPU)" in s["to"] for s in d["steps"])
    t = decompose.table("coral", CORAL[:3] + CORAL[4:])
    assert t is not None and "missing" in t.markdown()


def test_the_paper_tables_take_plain_runs_and_add_the_decomposition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rundirs.best([r for r in CORAL if r.system == "matrix"]).metrics.get("variant") is None
    monkeypatch.setitem(tables.BUILDERS, "coral", lambda runs, suffix: [])  # the pair table needs full metrics
    made = tables.tables_for("coral", "paper", CORAL)
    assert tables.tables_for("coral", "twin", CORAL) == []
    names = [t.name for t in made]
    assert "decomposition_coral_paper" in names
    md = next(t for t in made if t.name == "decomposition_coral_paper").markdown()
    assert "SIMULATED" in md and "2.30x" in md and "6.86x" in md
    assert decompose.figure("coral", CORAL, tmp_path / "d.png") == tmp_path / "d.png"
    assert (tmp_path / "d.png").stat().st_size > 1000
