"""Every case through `backend=openai` against a local stand-in OpenAI-compatible server (slow).

The stand-in is a sim replica process on 127.0.0.1 (an OpenAI-compatible HTTP server playing the
case's behaviour, fast-forwarded); the entry point only checks it (GET /models with the key) and
sends requests. The key comes from the environment and must appear in no file the run writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments import run
from matrix.llm.backends import get_backend
from tests.experiments.conftest import compose_cfg

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

KEY = "sk-local-stand-in-0123456789"
BEHAVIOURS = {
    "coral": "matrix.cases.coral.sim:CoralBehaviour",
    "nr": "matrix.cases.nr.sim:NRBehaviour",
    "tau2": "matrix.cases.tau2.sim:Tau2Behaviour",
}
CASE_ARGS = {
    "coral": ("case.limit=6", "case.max_turns=4", "system.concurrency=6"),
    "nr": ("case.limit=12", "system.concurrency=6"),
    "tau2": ("case.domain=mock", "case.limit=2", "case.tool_servers=1", "case.sessions_per_server=2",
             "system.concurrency=2"),
}  # fmt: skip


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[Any]:
    case = request.param
    config = {"domain": "mock"} if case == "tau2" else None
    with get_backend("sim").start(behaviour=BEHAVIOURS[case], behaviour_config=config, time_scale=50.0) as server:
        yield case, server


@pytest.mark.parametrize("stand_in", ["coral", "nr", "tau2"], indirect=True)
def test_every_case_runs_against_an_external_endpoint(
    stand_in: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_pools: Any
) -> None:
    case, server = stand_in
    if case == "tau2":
        pytest.importorskip("tau2")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = compose_cfg(f"case={case}", "backend=openai", f"backend.base_url={server.base_url}",
                      f"backend.model={server.model}", f"run_root={tmp_path}", "run_id=api", "progress=false",
                      *CASE_ARGS[case])  # fmt: skip
    m = run.run_job(cfg)
    assert m["backend"] == "openai" and m["simulated"] is False and "external API at" in m["hardware"]
    assert m["tasks_finished"] + m["tasks_failed"] == m["tasks_admitted"] > 0 and m["tokens_generated"] > 0
    assert m["tasks_lost"] == 0
    for path in Path(m["run_dir"]).rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
