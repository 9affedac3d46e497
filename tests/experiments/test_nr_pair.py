"""NaturalReasoning matched runs: P2P on Ray and the Ray Data batch pipeline on the same pools and
documents (slow: Ray, model servers, Ray Data actors).

On the sim backend replies depend only on the request and its seed, and both systems send the same
requests with the same seeds, so they must keep and drop exactly the same documents; on the real
small model both outputs must pass the same schema check and every document must be accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments import nr as exp
from matrix.cases import natural_reasoning as nr
from matrix.cases.nr_docs import generate_documents
from tests.experiments import fake_serve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def check_schema(rows: list[dict[str, Any]]) -> None:
    """What every NaturalReasoning output row must look like, whichever system wrote it."""
    for r in rows:
        assert {"task_id", "status", "row", "turns", "usage", "error"} <= set(r), sorted(r)
        if r["status"] == "error":
            assert r["error"]
            continue
        stages = [t["role"] for t in r["turns"]]
        assert stages == list(nr.STAGES[: len(stages)]) and stages, stages
        metas = [t["meta"] for t in r["turns"]]
        assert all(m["keep"] for m in metas[:-1]), "only the last stage may drop a document"
        assert nr.outcome_of(r) in nr.OUTCOMES
        if nr.outcome_of(r) == nr.SUCCESS:
            assert nr.qa_of(r) and nr.qa_of(r)["boxed_answer"]


def test_sim_pair_makes_identical_decisions_and_tables(tmp_path: Path) -> None:
    docs = generate_documents(400, seed=7)
    docs.insert(5, {"id": "no-text", "body": "a row without its text"})
    with exp.start_pools("sim", small_replicas=1, large_replicas=1, time_scale=20.0) as pools:
        p2p = exp.run_p2p(docs, pools, tmp_path / "p2p", partitions=2, per_partition=40,
                          settings=nr.NRSettings(), progress=False)  # fmt: skip
        batch = exp.run_batch(docs, pools, tmp_path / "batch", batch_size=20, parallelism=2,
                              settings=nr.NRSettings(), progress=False)  # fmt: skip
    rows_p, rows_b = exp.read_rows(tmp_path / "p2p"), exp.read_rows(tmp_path / "batch")
    check_schema(rows_p)
    check_schema(rows_b)
    dp, db = nr.decisions(rows_p), nr.decisions(rows_b)
    assert set(dp) == {str(d["id"]) for d in docs} and dp == db
    assert dp["no-text"] == (None, None)  # counted as failed in both, not silently dropped
    for rows in (rows_p, rows_b):
        bad = next(r for r in rows if r["task_id"] == "no-text")
        assert "missing 'text'" in bad["error"] and "row 6" in bad["error"], bad["error"]  # names its location
    assert p2p["tasks_failed"] == batch["tasks_failed"] == 1
    assert p2p["tokens_generated"] == batch["tokens_generated"] > 0
    assert p2p["quality"]["counts"] == batch["quality"]["counts"]
    assert p2p["quality"]["counts"][nr.CLASSIFIER] > 0.7 * 400  # the funnel's big drop happens
    res = exp.write_tables([p2p], [batch], tmp_path / "tables")
    assert "SIMULATED" in res["texts"][2] and (tmp_path / "tables" / "table7_nr.md").exists()


def test_real_small_model_runs_both_systems(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    docs = generate_documents(10, seed=3)
    with exp.start_pools("vllm-cpu") as pools:
        p2p = exp.run_p2p(docs, pools, tmp_path / "p2p", partitions=1, per_partition=8,
                          settings=exp.SMALL_MODEL_SETTINGS, progress=False)  # fmt: skip
        batch = exp.run_batch(docs, pools, tmp_path / "batch", batch_size=5, parallelism=2,
                              settings=exp.SMALL_MODEL_SETTINGS, progress=False)  # fmt: skip
    for m, d in ((p2p, tmp_path / "p2p"), (batch, tmp_path / "batch")):
        rows = exp.read_rows(d)
        check_schema(rows)
        assert len(rows) == 10 and m["quality"]["documents"] == 10 and m["simulated"] is False
        assert m["tokens_generated"] > 0  # the classifier ran on the real engine


def test_gpu_backends_deploy_two_serve_applications(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend=vllm|sglang: the filter's and the large model's pools, each its own Serve application."""
    calls = fake_serve.install(monkeypatch).calls
    with exp.start_pools("vllm", small_replicas=32, large_replicas=56) as pools:
        assert pools.small_urls == ["http://127.0.0.1:9/nr-filter/v1"] and pools.backend == "vllm"
        assert pools.large_urls == ["http://127.0.0.1:9/nr-large/v1"] and not pools.simulated
        assert (pools.small_model, pools.large_model) == (exp.GPU_SMALL_MODEL, exp.GPU_LARGE_MODEL)
        assert "32 x" in pools.hardware and "56 x" in pools.hardware
    assert calls == [
        {"model": "meta-llama/Llama-3.2-3B-Instruct", "app_name": "nr-filter", "min_replicas": 32, "max_replicas": 32},
        {"model": "meta-llama/Llama-3.3-70B-Instruct", "app_name": "nr-large", "min_replicas": 56, "max_replicas": 56,
         "tensor_parallel_size": 4},
        {"stopped": "meta-llama/Llama-3.3-70B-Instruct"},
        {"stopped": "meta-llama/Llama-3.2-3B-Instruct"},
    ]  # fmt: skip
    calls.clear()
    with exp.start_pools(
        "sglang", large_model="m/large", small_model="m/small", small_serve={"max_ongoing_requests": 8},
        large_serve={"tensor_parallel_size": 8},
    ):  # fmt: skip
        pass
    assert calls[0]["model"] == "m/small" and calls[0]["max_ongoing_requests"] == 8
    assert calls[1]["model"] == "m/large" and calls[1]["tensor_parallel_size"] == 8
    assert [c for c in calls if "stopped" in c] == [{"stopped": "m/large"}, {"stopped": "m/small"}]
    with (
        pytest.raises(ValueError, match="backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got 'tgi'"),
        exp.start_pools("tgi"),
    ):
        pass
