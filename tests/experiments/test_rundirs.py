"""Reading run directories back: discovery, experiments, bad files named, latency breakdown, throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import rundirs


def _run(root: Path, case: str, system: str, run_id: str, tps: float = 100.0, **extra: object) -> Path:
    d = root / case / system / run_id
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"case": case, "system": system, "tokens_per_second": tps, **extra}))
    return d


@pytest.mark.parametrize(
    ("run_id", "experiment"),
    [("twin", "twin"), ("twin-c300", "twin"), ("twin-w20-b25", "twin"), ("twin-p12-t36-a1", "twin"),
     ("efficiency-c300-q2400", "efficiency"), ("small-cpu", "small-cpu"), ("sweep-c8-n1", "sweep"),
     ("my-new-run", "my-new-run"), ("c300", "c300"), ("paper-c5000-vnocpu", "paper"),
     ("paper-w5000-vnocpu-r2", "paper")],
)  # fmt: skip
def test_experiment_is_the_run_id_without_its_sweep_suffix(run_id: str, experiment: str) -> None:
    assert rundirs.experiment_of(run_id) == experiment


def test_discover_groups_runs_and_names_every_bad_file(tmp_path: Path) -> None:
    _run(tmp_path, "coral", "matrix", "twin-c100", 200.0, concurrency=100)
    _run(tmp_path, "coral", "matrix", "twin-c300", 300.0, concurrency=300)
    _run(tmp_path, "coral", "coral-controller", "twin-w50", 150.0, concurrency=50)
    _run(tmp_path, "coral", "matrix", "twin.prev-20261124-234212", 999.0)  # moved aside: not a run of now
    bad = _run(tmp_path, "coral", "coral-controller", "twin-w100")
    (bad / "metrics.json").write_text('{"tokens_per_second": 12')  # cut off mid-write
    gone = tmp_path / "coral" / "matrix" / "twin-c200"
    gone.mkdir()
    (gone / "timeseries.json").write_text("[]")
    series = _run(tmp_path, "coral", "matrix", "twin-c400", 250.0, concurrency=400)
    (series / "timeseries.json").write_text("[{")
    runs, problems = rundirs.discover([tmp_path, tmp_path / "nowhere"])
    assert sorted(r.run_id for r in runs) == ["twin-c100", "twin-c300", "twin-c400", "twin-w50"]
    said = {str(p.path.relative_to(tmp_path)): p.what for p in problems}
    assert said["coral/coral-controller/twin-w100/metrics.json"].startswith("corrupt JSON")
    assert said["coral/matrix/twin-c200/metrics.json"] == "missing"
    assert said["coral/matrix/twin-c400/timeseries.json"].startswith("corrupt JSON")
    assert said["nowhere"] == "no such directory"
    groups = rundirs.experiments(runs)
    assert list(groups) == [("coral", "twin")]
    best = {s: rundirs.best(rs).run_id for s, rs in rundirs.by_system(groups[("coral", "twin")]).items()}
    assert best == {"matrix": "twin-c300", "coral-controller": "twin-w50"}
    # a case folder or a single run directory works as a root too
    assert len(rundirs.run_paths(tmp_path / "coral")) == 6
    assert rundirs.run_paths(series) == [series]


def test_output_lines_that_are_not_json_are_reported_not_parsed(tmp_path: Path) -> None:
    d = _run(tmp_path, "coral", "matrix", "r")
    (d / "output.jsonl").write_text('{"task_id": "a"}\n[1, 2]\n{"task_id": "b", "tur\n')
    problems: list[rundirs.Problem] = []
    assert [r["task_id"] for r in rundirs.iter_rows(d, problems)] == ["a"]
    assert [p.what.split(":")[0] for p in problems] == ["line 2", "line 3"]


def test_latency_breakdown_splits_each_task_into_shares() -> None:
    # created at 0, first hop sent at 1 (initialization 1), waits 1 then works 6, transits 2 to the sink at 10
    row = {"created": 0.0, "finished": 10.0, "hops": [
        {"sent": 1.0, "started": 1.5, "finished": 4.5}, {"sent": 4.5, "started": 5.0, "finished": 8.0}]}  # fmt: skip
    b = rundirs.latency_breakdown([row, {"created": 0.0, "finished": 5.0, "hops": []}, {"bad": 1}])
    assert b is not None and b["tasks"] == 1
    shares = {k: v["p50"] for k, v in b["share_percent"].items()}
    assert shares == pytest.approx({"agent_processing": 60.0, "queuing": 10.0, "initialization": 10.0, "other": 20.0})
    assert rundirs.latency_breakdown([]) is None


def test_prometheus_histograms_and_throughput_series(tmp_path: Path) -> None:
    text = "\n".join([
        "# TYPE matrix_hop_bytes histogram",
        'matrix_hop_bytes_bucket{role="a",le="512"} 3', 'matrix_hop_bytes_bucket{role="a",le="1024"} 5',
        'matrix_hop_bytes_bucket{role="a",le="+Inf"} 6', 'matrix_hop_bytes_sum{role="a"} 4000',
        'matrix_hop_bytes_count{role="a"} 6',
    ])  # fmt: skip
    h = rundirs.parse_prom_histograms(text)
    assert rundirs.bucket_counts(h["matrix_hop_bytes"]["a"]) == [(512.0, 3), (1024.0, 2), (float("inf"), 1)]
    d = _run(tmp_path, "coral", "matrix", "r")
    series = [
        {"t": 1.0, "completion_tokens": 100},
        {"t": 2.0, "completion_tokens": 300},
        {"t": 4.0, "completion_tokens": 300},
    ]
    (d / "timeseries.json").write_text(json.dumps(series))
    (d / "metrics.prom").write_text(text)
    run = rundirs.load_run(d, [])
    assert run is not None and run.histograms == h
    assert rundirs.throughput_series(run) == [(1.0, 100.0), (2.0, 200.0), (4.0, 0.0)]
    # a run at time scale 10 (the sim backend): simulated seconds, like its metrics' tokens/s
    run.metrics["time_scale"] = 10.0
    assert rundirs.throughput_series(run) == [(10.0, 10.0), (20.0, 20.0), (40.0, 0.0)]
