"""Tau2 matched runs through the experiment driver: P2P on Ray (with the tool-pool actor and tool
servers in their sandbox) and tau2's threaded runner on the same simulated replicas (slow).

Both systems send byte-identical requests (tests/cases/test_tau2.py shows it request by request), so
on the sim backend they must produce the same trajectories: same rewards, same tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tau2")

from experiments import tau2 as exp
from matrix.cases import tau2 as case
from tests.experiments import fake_serve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def test_sim_pair_on_ray_gives_identical_trajectories_and_table10(tmp_path: Path) -> None:
    settings = case.Tau2Settings(domain="telecom")
    tasks = case.load_tasks("telecom")[::23][:5]
    with exp.start_models("sim", replicas=1, time_scale=20.0, behaviour_config={"domain": "telecom"}) as models:
        p2p = exp.run_p2p(
            models, tmp_path / "p2p", settings=settings, tasks=tasks, trials=2, concurrency=6, tool_servers=1,
            sessions_per_server=8,
        )  # fmt: skip
        threads = exp.run_threads(models, tmp_path / "threads", settings=settings, tasks=tasks, trials=2, threads=6)
    assert p2p["trajectories"] == threads["trajectories"] == 10
    assert p2p["tasks_failed"] == threads["tasks_failed"] == 0
    assert p2p["tokens_generated"] == threads["tokens_generated"] > 0
    assert p2p["simulated"] and p2p["case"] == "tau2" and p2p["system"] == "matrix"
    pool = p2p["tool_pool"]
    assert pool["acquired"] == pool["released"] > 0 and pool["active"] == 0 and pool["peak"] <= 8

    def rewards(d: Path) -> dict[tuple[str, int], float | None]:
        rows = [json.loads(line) for line in (d / "output.jsonl").read_text().splitlines()]
        return {(r["task_id"], r["trial"]): case.reward_of(r) for r in rows}

    assert rewards(tmp_path / "p2p") == rewards(tmp_path / "threads")
    assert exp.rescore_run(tmp_path / "p2p") == 0  # tau2's evaluator, run again on the output, agrees
    assert p2p["quality"]["average_reward"] == threads["quality"]["average_reward"]
    text = exp.table10(threads, p2p, tmp_path / "table10")
    assert "(SIMULATED)" in text and "15.4x" in text and "0.5918" in text
    assert (tmp_path / "table10.csv").exists()


def test_gpu_backends_deploy_gpt_oss_with_tool_calling_on_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend=vllm|sglang: one Serve application of the paper's gpt-oss-120b, tool calling on."""
    calls = fake_serve.install(monkeypatch).calls
    with exp.start_models("vllm", replicas=16) as models:
        assert models.urls == ["http://127.0.0.1:9/tau2/v1"] and models.model == "openai/gpt-oss-120b"
        assert models.backend == "vllm" and not models.simulated and "16 x vllm" in models.hardware
    assert calls == [
        {"model": "openai/gpt-oss-120b", "app_name": "tau2", "min_replicas": 16, "max_replicas": 16,
         "tool_call_parser": "openai", "enable_auto_tool_choice": True},
        {"stopped": "openai/gpt-oss-120b"},
    ]  # fmt: skip
    calls.clear()
    with exp.start_models("sglang", replicas=2, model="m/other", serve={"tool_call_parser": "hermes"}):
        pass
    assert calls[0]["model"] == "m/other" and calls[0]["tool_call_parser"] == "hermes"
    assert calls[0]["enable_auto_tool_choice"] is True and calls[-1] == {"stopped": "m/other"}
    with (
        pytest.raises(ValueError, match="backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got 'tgi'"),
        exp.start_models("tgi"),
    ):
        pass
