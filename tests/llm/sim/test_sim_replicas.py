"""Many simulated replicas as Ray actors on a local, loopback-only Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
import pytest

from matrix.llm.sim.profile import UnknownProfileError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    previous = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from matrix.runtime.ray_p2p import local_only

    local_only()
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = previous


@pytest.mark.slow
def test_replicas_serve_on_loopback_and_stop(local_ray: None) -> None:
    from matrix.llm.sim.replicas import start_sim_replicas

    with pytest.raises(UnknownProfileError):
        start_sim_replicas(1, "no-such-gpu")
    replicas = start_sim_replicas(2, "a100-llama31-8b", time_scale=50.0)
    try:
        assert len(replicas) == 2 and len(set(replicas)) == 2
        for url in replicas:
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            with openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30) as client:
                r = client.chat.completions.create(
                    model="meta-llama/Llama-3.1-8B-Instruct",
                    messages=[{"role": "user", "content": "hello"}],
                    max_tokens=6,
                )
            assert r.system_fingerprint == "matrix-sim/a100-llama31-8b"
            assert (r.model_extra or {})["simulated"] is True
        states = ray.get([a.snapshot.remote() for a in replicas.actors])
        assert {s["base_url"] for s in states} == set(replicas)
    finally:
        replicas.stop()
    assert replicas.actors == []
