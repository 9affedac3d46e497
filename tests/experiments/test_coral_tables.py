"""Table 1 and backend efficiency from run data alone (fast: no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments import coral as pair


def metrics(system: str, tps: float, simulated: bool = True) -> dict[str, Any]:
    ac = {"value": 0.5, "k": 10, "n": 20, "ci95": [0.3, 0.7]}
    return {
        "system": system, "simulated": simulated, "measured_seconds": 3725.0, "concurrency": 100,
        "trajectories": 20, "tokens_generated": 40000, "tokens_per_second": tps,
        "quality": {"agreement_correctness": ac}, "replicas": 2, "sim": {"profile": "p"}, "time_scale": 1.0,
    }  # fmt: skip


def test_table1_marks_simulated_figures_and_puts_the_paper_beside_ours(tmp_path: Path) -> None:
    pair_metrics = {pair.P2P: metrics(pair.P2P, 300.0), pair.CONTROLLER: metrics(pair.CONTROLLER, 100.0)}
    text = pair.write_table(pair_metrics, tmp_path / "t1", title="T")
    assert "| speedup (tokens/s) (SIMULATED) | 1.0x | 3.00x | 1.0x | 6.8x |" in text
    assert "1:02:05" in text and "0.500 [0.300, 0.700]" in text and "0.4732" in text
    real = {k: {**v, "simulated": False} for k, v in pair_metrics.items()}
    assert "SIMULATED" not in pair.write_table(real, tmp_path / "t2", title="T")


def test_steady_state_rate_ignores_ramp_up_and_tail(tmp_path: Path) -> None:
    rows = [
        {"t": float(t), "tasks_in_flight": 10 if 5 <= t <= 25 else 3, "completion_tokens": 100.0 * t} for t in range(40)
    ]
    (tmp_path / "timeseries.json").write_text(json.dumps(rows))
    assert pair.steady_tokens_per_second(tmp_path, 10) == pytest.approx(100.0)
    assert pair.steady_tokens_per_second(tmp_path, 11) is None  # never at the bound


def test_backend_efficiency_against_the_serving_benchmark(tmp_path: Path) -> None:
    bench = tmp_path / "serving_sim.json"
    points = [{"output_tokens_per_s": 500.0}, {"output_tokens_per_s": 1000.0}]
    bench.write_text(json.dumps({"runs": {"p": {"points": points}}}))
    eff = pair.backend_efficiency(metrics(pair.P2P, 1800.0), bench=bench)
    assert eff["replica_saturation_tokens_per_s"] == 1000.0 and eff["fraction_of_saturation"] == pytest.approx(0.9)
    assert eff["source"].startswith("short-prompt")  # no run output to take the mix from
    assert pair.backend_efficiency(metrics(pair.P2P, 1800.0, simulated=False), bench=bench) == {}


def test_backend_efficiency_uses_the_runs_own_request_mix(tmp_path: Path) -> None:
    bench = tmp_path / "serving_sim.json"
    bench.write_text(json.dumps({"runs": {"a100-llama31-8b": {"points": [{"output_tokens_per_s": 3000.0}]}}}))
    run = tmp_path / "run"
    run.mkdir()
    turn = {"usage": {"prompt_tokens": 3000, "completion_tokens": 300}}
    (run / "output.jsonl").write_text("".join(json.dumps({"turns": [turn]}) + "\n" for _ in range(1200)))
    m = {**metrics(pair.P2P, 1500.0), "sim": {"profile": "a100-llama31-8b"}}
    eff = pair.backend_efficiency(m, run, bench=bench)
    assert eff["source"].startswith("the run's own request mix")
    sat = eff["replica_saturation_tokens_per_s"]
    assert sat < 3000.0  # long prompts saturate below the short-prompt figure
    assert eff["fraction_of_saturation"] == pytest.approx(1500.0 / (2 * sat))
    assert eff["short_prompt_fraction"] == pytest.approx(1500.0 / 6000.0)


def test_table_from_run_directories_takes_each_systems_best(tmp_path: Path) -> None:
    dirs = {}
    for name, system, tps in (("p1", pair.P2P, 200.0), ("p2", pair.P2P, 250.0), ("c1", pair.CONTROLLER, 240.0)):
        d = dirs[name] = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({**metrics(system, tps), "concurrency": int(tps)}))
    out = tmp_path / "t1"
    best = {pair.P2P: pair.best_of([dirs["p1"], dirs["p2"]]), pair.CONTROLLER: pair.best_of([dirs["c1"]])}
    text = pair.write_table(best, out, title="T")
    assert "| 1.0x | 1.04x |" in text
    assert pair.sweep_lines([dirs["p1"]]) == [f"- matrix at concurrency 200: 200.0 tokens/s ({dirs['p1']})"]
    (dirs["c1"] / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"c1: cannot read metrics\.json"):
        pair.best_of([dirs["c1"]])
