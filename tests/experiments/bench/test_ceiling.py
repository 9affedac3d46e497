"""The single-process ceiling benchmark (experiments/bench/ceiling.py), run tiny against its instant server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench import ceiling
from matrix.cli import main

FAST_PATHS = ("fair_matrix", "legacy_aiohttp", "pooled", "controller_loop")


def test_tiny_run_writes_positive_charges_for_what_it_measured(tmp_path: Path) -> None:
    out = tmp_path / "ceiling.json"
    argv = ["bench", "ceiling", "--paths", ",".join(FAST_PATHS), "--concurrency", "1,4", "--repeats", "2"]
    assert main([*argv, "--scale", "0.01", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())

    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu_model"]
    assert len(doc["load_average_before"]) == 3 and doc["date"]
    fair = ceiling.fair_matrix_installed(ceiling.fair_matrix_dir())
    for path in FAST_PATHS:
        entry = doc["paths"][path]
        if path == "fair_matrix" and not fair:
            assert entry["status"] == "skipped" and "not installed" in entry["reason"]
            continue
        assert entry["status"] == "measured" and entry["what"]
        assert [p["concurrency"] for p in entry["points"]] == [1, 4]
        for p in entry["points"]:
            cpu = p["cpu_s_per_request"]
            assert p["repeats"] == 2 and p["failed"] == 0
            assert 0 < cpu["min"] <= cpu["mean"] <= cpu["max"] < 1.0
            assert p["wall_s_per_request"]["mean"] > 0 and p["requests_per_s"]["mean"] > 0

    charges = doc["charges"]
    assert doc["charges_concurrency"] == 4 and set(doc["charges_by_concurrency"]) == {"1", "4"}
    for key in ("controller_legacy_aiohttp", "controller_pooled", "controller_loop_overhead"):
        assert charges[key] is not None and charges[key] > 0, key
    assert charges["controller_legacy_aiohttp"] > charges["controller_loop_overhead"]
    assert (charges["controller_fair_matrix"] is not None) == fair
    for key in ("tau2_litellm_thread", "p2p_hop", "p2p_hop_no_llm", "controller_fair_matrix_http"):
        assert charges[key] is None, key  # not measured in this run, and says so
    rewrite = charges["tau2_rewrite"]
    assert rewrite is None or rewrite["b_per_simulation"] > 0
    assert set(doc["charges_meaning"]) >= {k for k in charges if k != "tau2_rewrite"}


def test_pooled_cpu_is_the_client_process_only() -> None:
    """With a server that waits 50 ms before each reply, the client's CPU per request stays far below the
    wait: only the client process's own CPU is counted, not the server's and not the time spent waiting."""
    delay = 0.05
    doc = ceiling.run_ceiling(
        concurrencies=(4,), repeats=1, paths=("pooled",), requests=lambda p, c: 16, server_delay_s=delay,
        progress=lambda line: None,
    )  # fmt: skip
    point = doc["paths"]["pooled"]["points"][0]
    assert point["failed"] == 0
    assert point["wall_s_per_request"]["mean"] * 4 >= 0.9 * delay  # the server did wait
    assert 0 < point["cpu_s_per_request"]["mean"] < 0.2 * delay
    assert point["cpu_utilisation"] < 0.5


def test_unknown_path_is_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        ceiling.run_ceiling(paths=("pooled", "nope"), progress=lambda line: None)


@pytest.mark.slow
def test_p2p_and_tau2_paths_tiny() -> None:
    doc = ceiling.run_ceiling(
        concurrencies=(2,), repeats=2, paths=("tau2_litellm_thread", "p2p", "p2p_no_llm"),
        requests=lambda p, c: 4, progress=lambda line: None,
    )  # fmt: skip
    tau2 = doc["paths"]["tau2_litellm_thread"]["points"][0]
    assert tau2["failed"] == 0 and tau2["cpu_s_per_request"]["mean"] > 0
    for path in ("p2p", "p2p_no_llm"):
        point = doc["paths"][path]["points"][0]
        assert point["failed"] == 0 and point["hops_in_run"] > 0
        assert point["agent_cpu_s_per_hop"]["mean"] > 0
        assert {"teacher", "student", "extractor", "matcher"} <= set(point["by_role"])
    coral = doc["paths"]["p2p"]["points"][0]
    assert coral["hops_in_run"] == 6 * 8  # 8 conversations, each agreeing after two dialogue turns
    assert coral["llm_requests_in_run"] == 4 * 8
    assert doc["charges"]["p2p_hop_llm"] > 0 and doc["charges"]["tau2_litellm_thread"] > 0
