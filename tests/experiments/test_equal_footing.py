"""Equal footing, per system pair: the two systems of a comparison time the same window, retry the
same way and sample the same way (coral: matrix vs coral-controller; nr: matrix vs ray-data; tau2:
matrix vs tau2-threads).

What is compared is what each system actually uses. The system modules (`experiments/systems/`)
run with their launch stubbed, which captures the config each one builds for a job, and from that
config come the objects each system's own code builds for its model calls: the P2P roles' clients
after `setup`, the controller's client, a Ray Data pool actor, tau2's runner with its `_Spread`.
A change to one side only fails here. The windows both systems time are checked on the real runs of
the pair tests (`test_pairs.py`, `check_window` in conftest.py), which also check that the two sides
send byte-identical requests; so do the case tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from experiments.cases import get_case
from experiments.systems import Job, get_system
from matrix.admission import task_seed
from matrix.agent import Agent
from matrix.llm.backends.base import Pool
from matrix.llm.client import LLMClient
from matrix.runtime.config import RunConfig
from matrix.sources import read_rows
from tests.experiments.conftest import compose_cfg
from tests.llm.fake_openai import Behaviour, FakeServer, serve_fake_in_thread

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "results" / "reference"
EMPTY_REPLY = {
    "id": "cmpl-empty",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
}

# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """One OpenAI-compatible server that every pool of the job points at (nothing is sent unless a test does)."""
    with serve_fake_in_thread(FakeServer()) as (server,):
        yield server


def job_for(case_name: str, system: str, url: str, run_dir: Path, *overrides: str) -> Job:
    """The Job the entry point would give `system`, on pools of one replica each, at `url`."""
    cfg = compose_cfg(f"case={case_name}", f"system={system}", "backend=sim", "progress=false", *overrides)
    case = get_case(cfg.case)
    pools = {
        s.name: Pool(s.name, [url], s.sim_model or s.model, "sim", simulated=True, hardware="test")
        for s in case.pool_specs()
    }
    settings = case.settings(pools)
    return Job(case, cfg.system, pools, settings, case.inputs(settings), run_dir, progress=False)


def capture_p2p(monkeypatch: pytest.MonkeyPatch, job: Job) -> RunConfig:
    """The RunConfig `experiments.systems.matrix` builds for `job` (Ray, the run and services stubbed)."""
    import matrix.ray_init
    import matrix.runtime.ray_p2p

    got: dict[str, RunConfig] = {}

    def run_ray(cfg: RunConfig) -> dict[str, Any]:
        got["cfg"] = cfg
        return {}

    monkeypatch.setattr(matrix.ray_init, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(matrix.runtime.ray_p2p, "run_ray", run_ray)
    monkeypatch.setattr(job.case, "p2p_services", lambda settings: contextlib.nullcontext(dict))
    get_system("matrix").run(job, {})
    return got["cfg"]


def capture_baseline(monkeypatch: pytest.MonkeyPatch, job: Job, module: Any, function: str) -> Any:
    """The config the baseline's system module hands to `module.function` for `job` (the run stubbed)."""
    import matrix.ray_init

    got: list[Any] = []
    monkeypatch.setattr(matrix.ray_init, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(module, function, lambda *args: got.append(args[-1]) or {})
    get_system(str(job.system_cfg.name)).run(job, {})
    return got[0]


async def _set_up(cfg: RunConfig) -> dict[str, Agent]:
    agents = {}
    for spec in cfg.roles:
        if "urls" in spec.config:  # a role that calls a model
            agent = spec.build()
            await agent.setup()
            agents[spec.role] = agent
    return agents


def with_p2p_roles(cfg: RunConfig, check: Any) -> Any:
    """`check(agents)` on the P2P runtime's model-calling roles, set up as an agent actor sets them up."""

    async def main() -> Any:
        agents = await _set_up(cfg)
        try:
            out = check(agents)
            return await out if asyncio.iscoroutine(out) else out
        finally:
            for agent in agents.values():
                await agent.close()

    return asyncio.run(main())


def client_policy(client: LLMClient) -> dict[str, Any]:
    """What decides how a client waits and retries: the retry policy, the timeouts, the per-replica bound."""
    return {
        "retry": client.retry,
        "timeout_s": client.timeout.total,
        "connect_timeout_s": client.timeout.connect,
        "max_concurrency_per_replica": sorted({e.max_concurrency for e in client.endpoints}),
        "urls": sorted(e.base_url for e in client.endpoints),
        "model": client.model,
    }


# --------------------------------------------------------------------------------- coral: P2P / controller


def controller_client(monkeypatch: pytest.MonkeyPatch, cfg: Any, run_dir: Path) -> LLMClient:
    """The client `run_controller_async` opens for `cfg` (run on no rows: nothing is sent)."""
    import baselines.coral_controller as controller

    made: list[LLMClient] = []

    class Recording(LLMClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(controller, "LLMClient", Recording)
    asyncio.run(controller.run_controller_async([], dataclasses.replace(cfg, run_dir=run_dir, progress=False)))
    return made[0]


def test_coral_pair_uses_one_client_policy_and_the_same_sampling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_server: FakeServer
) -> None:
    import baselines.coral_controller as controller

    p2p = capture_p2p(monkeypatch, job_for("coral", "matrix", fake_server.url, tmp_path / "p2p"))
    ctl_job = job_for("coral", "coral-controller", fake_server.url, tmp_path / "ctl")
    ctl = capture_baseline(monkeypatch, ctl_job, controller, "run_controller")
    ctl_client = controller_client(monkeypatch, ctl, tmp_path / "ctl")

    policies = with_p2p_roles(p2p, lambda agents: {role: client_policy(a.llm) for role, a in agents.items()})
    assert set(policies) == {"teacher", "student", "extractor"}
    for role, policy in policies.items():
        assert policy == client_policy(ctl_client), role
    # Sampling: both run the protocol from the same settings (dialogue and extractor sampling, turns)
    # and seed every task from the same base.
    for spec in p2p.roles:
        assert spec.config["settings"] == ctl.settings.to_dict(), spec.role
    assert p2p.seed == ctl.seed


# --------------------------------------------------------------------------------- nr: P2P / Ray Data


def test_nr_pair_uses_one_client_policy_and_the_same_sampling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_server: FakeServer
) -> None:
    import baselines.ray_data_batch as ray_data

    p2p = capture_p2p(monkeypatch, job_for("nr", "matrix", fake_server.url, tmp_path / "p2p"))
    batch_job = job_for("nr", "ray-data", fake_server.url, tmp_path / "rd")
    batch = capture_baseline(monkeypatch, batch_job, ray_data, "run_batch")
    worker = ray_data.NRBatchWorker(**ray_data.worker_kwargs(batch))  # what every pool actor builds
    try:
        policies = with_p2p_roles(p2p, lambda agents: {role: client_policy(a.llm) for role, a in agents.items()})
        assert policies["filter"] == client_policy(worker.small)
        assert policies["score"] == policies["question"] == client_policy(worker.large)
    finally:
        worker.loop.close()
    # Sampling: the same stage settings (prompts' sampling, thresholds) and the same per-document seeds.
    for spec in p2p.roles:
        assert spec.config["settings"] == batch.settings.to_dict(), spec.role
    records = ray_data.plan_records(batch_job.inputs, set(), ray_data.AdmissionCounts(), id_field=batch.id_field,
                                    limit=batch.limit)  # fmt: skip
    rows = list(read_rows(p2p.source, id_field=p2p.id_field, limit=p2p.limit))
    assert len(records) == len(rows) > 0
    assert [r["seed"] for r in records] == [task_seed(p2p.seed, r.task_id, 0) for r in rows]


# --------------------------------------------------------------------------------- tau2: P2P / threads


def threads_runner(monkeypatch: pytest.MonkeyPatch, run_threads: Any, cfg: Any, run_dir: Path) -> SimpleNamespace:
    """What `run_threads` hands tau2's `run_tasks` for `cfg`: its arguments, and the completion function
    (the `_Spread`) every litellm call of the runner goes through (run_tasks itself stubbed)."""
    import tau2.run as tau2_run
    import tau2.utils.llm_utils as llm_utils

    seen = SimpleNamespace()

    def run_tasks(**kwargs: Any) -> Any:
        seen.kwargs, seen.completion = kwargs, llm_utils.completion
        return SimpleNamespace(simulations=[])

    monkeypatch.setattr(tau2_run, "run_tasks", run_tasks)
    run_threads(dataclasses.replace(cfg, run_dir=run_dir))
    return seen


def test_tau2_pair_uses_one_retry_policy_and_the_same_sampling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_server: FakeServer
) -> None:
    pytest.importorskip("tau2")
    import baselines.tau2_threads as threads
    from matrix.cases import tau2

    overrides = ("case.limit=2",)
    p2p = capture_p2p(monkeypatch, job_for("tau2", "matrix", fake_server.url, tmp_path / "p2p", *overrides))
    base_job = job_for("tau2", "tau2-threads", fake_server.url, tmp_path / "threads", *overrides)
    run_threads = threads.run_threads
    base = capture_baseline(monkeypatch, base_job, threads, "run_threads")
    runner = threads_runner(monkeypatch, run_threads, base, tmp_path / "threads")
    spread, kwargs = runner.completion, runner.kwargs
    assert isinstance(spread, threads._Spread)

    def p2p_side(agents: dict[str, Any]) -> dict[str, Any]:
        return {
            role: {"policy": client_policy(a.llm), "empty_retries": a.retries, "settings": a.settings}
            for role, a in agents.items()
        }

    roles = with_p2p_roles(p2p, p2p_side)
    assert set(roles) == {"user", "assistant"}
    for role, side in roles.items():
        # Retries: failed calls under the same RetryPolicy and timeout, empty replies asked again as often.
        assert spread.retry == side["policy"]["retry"], role
        assert spread.timeout_s == side["policy"]["timeout_s"], role
        assert sorted(spread.urls) == side["policy"]["urls"], role
        args = kwargs[f"llm_args_{'agent' if role == 'assistant' else 'user'}"]
        assert args["num_retries"] == side["empty_retries"] == 3, role  # tau2's generate counts empty replies
        assert kwargs[f"llm_{'agent' if role == 'assistant' else 'user'}"] == f"openai/{side['policy']['model']}"
        # Sampling: the same fields, the same run seed (trial seeds derive from it), the same stop rules.
        settings: tau2.Tau2Settings = side["settings"]
        assert {k: args[k] for k in settings.llm_args()} == settings.llm_args(), role
        assert not {k for k in args if k not in settings.llm_args()} - {"api_key", "num_retries"}, role
        assert (kwargs["domain"], kwargs["seed"], kwargs["max_steps"], kwargs["max_errors"]) == (
            settings.domain, settings.seed, settings.max_steps, settings.max_errors)  # fmt: skip
    for spec in p2p.roles:
        assert not spec.config.get("extra_body"), spec.role  # nothing the runner would not send
    assert kwargs["num_trials"] == p2p.num_trials


def test_tau2_pair_retries_the_same_failures_and_empty_replies_the_same_number_of_times(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_server: FakeServer
) -> None:
    """Both sides against one scripted server: two 503s then an answer, then replies that stay empty."""
    pytest.importorskip("tau2")
    import tau2.utils.llm_utils as llm_utils
    from tau2.data_model.message import SystemMessage

    import baselines.tau2_threads as threads
    from matrix.cases import tau2
    from matrix.message import Message

    p2p = capture_p2p(monkeypatch, job_for("tau2", "matrix", fake_server.url, tmp_path / "p2p", "case.limit=1"))
    base_job = job_for("tau2", "tau2-threads", fake_server.url, tmp_path / "threads", "case.limit=1")
    run_threads = threads.run_threads
    base = capture_baseline(monkeypatch, base_job, threads, "run_threads")
    runner = threads_runner(monkeypatch, run_threads, base, tmp_path / "threads")
    task_id = base_job.inputs[0].id
    failing = [Behaviour(status=503), Behaviour(status=503), Behaviour()]

    async def p2p_side(agents: dict[str, Any]) -> tuple[int, int]:
        fake_server.script = deque(failing)
        fake_server.bodies.clear()
        await agents["assistant"].llm.chat([{"role": "user", "content": "hi"}], role="assistant")
        after_failures = len(fake_server.bodies)
        fake_server.default = Behaviour(body=EMPTY_REPLY)
        fake_server.bodies.clear()
        msg = await agents["assistant"]._respond(Message(task_id, tau2.WORKFLOW, {"id": task_id}), [])
        assert msg.route["termination"] == "agent_error", msg.route
        fake_server.default = Behaviour()
        return after_failures, len(fake_server.bodies)

    p2p_counts = with_p2p_roles(p2p, p2p_side)

    fake_server.script = deque(failing)
    fake_server.bodies.clear()
    runner.completion(model="openai/m", messages=[{"role": "user", "content": "hi"}], **runner.kwargs["llm_args_agent"])
    after_failures = len(fake_server.bodies)
    fake_server.default = Behaviour(body=EMPTY_REPLY)
    fake_server.bodies.clear()
    original, llm_utils.completion = llm_utils.completion, runner.completion
    try:
        reply = llm_utils.generate(
            runner.kwargs["llm_agent"],
            [SystemMessage(role="system", content="policy")],
            **runner.kwargs["llm_args_agent"],
        )
    finally:
        llm_utils.completion = original
        fake_server.default = Behaviour()
    assert not reply.content and not reply.tool_calls
    assert (after_failures, len(fake_server.bodies)) == p2p_counts == (3, 4)


# ------------------------------------------------------------------------------------------ windows


# ------------------------------------------------------------------------------- what the results say


def test_the_docs_count_the_reference_runs_there_are() -> None:
    runs = len(list(REFERENCE.glob("*/*/*/metrics.json")))
    readme = re.findall(r"`results/reference/` \((\d+) reference runs", (REPO / "README.md").read_text())
    reproduce = re.findall(r"\((\d+) runs: the Coral", (REPO / "REPRODUCE.md").read_text())
    assert readme and reproduce and {int(n) for n in readme + reproduce} == {runs}


def test_the_overhead_benchmarks_reference_figure_says_it_is_quoted_not_measured() -> None:
    from experiments.bench.overhead import reference_block

    ref = json.loads((REPO / "results" / "bench" / "overhead.json").read_text())["reference"]
    assert ref == reference_block() and ref["measured"] is False and ref["source"].startswith("quoted")


def test_sim_pair_tables_say_their_quality_is_equal_by_construction(tmp_path: Path) -> None:
    from experiments import tables

    made = {t.name: "\n".join(t.notes) for t in tables.make_tables([REFERENCE], tmp_path, write=False).tables}
    for name in ("table1_coral", "table9_nr", "table10_tau2", "table10_tau2_layout"):
        assert "equal in both columns by construction" in made[name], name
    for name in ("table9_nr_small_cpu", "table10_tau2_small_cpu"):  # real models: a measurement on each side
        assert "by construction" not in made[name], name
