"""The dashboard against the real thing (issue #21): a real Prometheus (`matrix monitor start`) scrapes a
real short run (Ray transport, two SIMULATED replicas and one dead one, two prompts too long for the
model) and every panel's PromQL goes through Prometheus's HTTP API. A query that errs, or returns no
series without being on the known-empty list (with its reason), fails the test; so does a known-empty
query that now returns series.

With MONITOR_FIGURE=PATH the run is longer (4,000 tasks) and the dashboard's data is drawn there: that is how
results/figures/monitor_dashboard.png is made.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None and not os.environ.get("CI"),
        reason="no prometheus binary (Debian: apt-get install prometheus; .ci/run installs it, so CI runs this)",
    ),
]


FIGURE = os.environ.get("MONITOR_FIGURE")
TASKS = 4000 if FIGURE else 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def monitor_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Set before Ray starts, so that the replicas' actors announce themselves to this test's monitor only."""
    folder = tmp_path_factory.mktemp("monitor")
    before = os.environ.get("MATRIX_MONITOR_DIR")
    os.environ["MATRIX_MONITOR_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("MATRIX_MONITOR_DIR", None)
    else:
        os.environ["MATRIX_MONITOR_DIR"] = before


def test_every_panel_query_returns_series_from_a_real_run(monitor_dir: Path, local_ray: None, tmp_path: Path) -> None:
    assert PROMETHEUS is not None, "CI must install Debian's prometheus package (.ci/run)"
    import ray

    import experiments.bench.inflight  # noqa: F401  (registers the inflight-llm workflow)
    from experiments.monitor.__main__ import main as monitor
    from experiments.monitor.dashboard import evaluate, expected_empty, load_dashboard, problems_of
    from experiments.monitor.figure import draw
    from matrix.agent import RoleSpec
    from matrix.llm.agent import LLMAgent
    from matrix.llm.sim.profile import load_profile
    from matrix.llm.sim.replicas import start_sim_replicas
    from matrix.runtime.config import RunConfig
    from matrix.runtime.ray_p2p import run_ray

    session = ray._private.worker.global_worker.node.get_session_dir_path()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    assert monitor(["start", f"--port={port}", f"--ray-session={session}", "--scrape-interval=1s"]) == 0
    try:
        # a short context, so that the two oversized prompts fail (HTTP 400): errors and failures by reason
        profile = dataclasses.replace(load_profile("a100-llama31-8b"), max_model_len=2048)
        with start_sim_replicas(2, profile, time_scale=10, model="m") as replicas:
            dead = f"http://127.0.0.1:{free_port()}/v1"  # a replica that is down: retries by reason
            agent = {"urls": [*replicas, dead], "model": "m", "sampling": {"max_tokens": 64}}
            # first, so that their failures are in the exporter's text before the run ends (it updates every 5 s)
            rows = [{"id": f"long-{i}", "prompt": "word " * 5000} for i in range(2)]
            rows += [{"id": f"ok-{i}", "prompt": f"say something about {i}"} for i in range(TASKS)]
            cfg = RunConfig(
                workflow="inflight-llm",
                roles=[RoleSpec("writer", LLMAgent, agent), RoleSpec("critic", LLMAgent, agent)],
                source=rows,
                run_dir=tmp_path / "run",
                max_concurrent_tasks=32,
                workflow_modules=["experiments.bench.inflight"],
                progress=False,
                prometheus_port=free_port(),
            )
            start = time.time()
            metrics = run_ray(cfg)
            time.sleep(2.0)  # the replicas' last samples
            end = time.time()
            dashboard = load_dashboard()
            results = evaluate(url, dashboard, start - 5, end)
            if FIGURE:
                title = (
                    f"matrix-harness dashboard data: a {TASKS}-task run on the Ray transport, "
                    "2 SIMULATED replicas (a100-llama31-8b profile, time scale 10) and a dead one"
                )
                draw(url, dashboard, start - 5, end, Path(FIGURE), empty_notes=expected_empty(), title=title)
    finally:
        assert monitor(["stop"]) == 0
    assert metrics["tasks_finished"] == TASKS and metrics["tasks_failed"] == 2, metrics
    assert metrics["llm_calls"]["retries"] > 0
    problems = problems_of(results, expected_empty())
    assert not problems, "dashboard queries that fail against a real run:\n" + "\n".join(problems)
    assert not (monitor_dir / "monitor.json").exists() and not list((monitor_dir / "targets").glob("replicas-*"))
