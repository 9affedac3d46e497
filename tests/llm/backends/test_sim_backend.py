"""Backend `sim`: a child process on 127.0.0.1 that stop() really ends; bad names fail before starting."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest

from matrix.llm.backends import get_backend
from matrix.llm.backends import sim as sim_backend
from matrix.llm.sim.behaviour import UnknownBehaviourError
from matrix.llm.sim.profile import UnknownProfileError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_start_serve_stop() -> None:
    backend = get_backend("sim")
    assert backend.simulated
    server = backend.start(host="127.0.0.1", port=0, profile="h100-llama31-8b", time_scale=50.0)
    pid = int(server.info["pid"])
    try:
        assert server.simulated and server.backend == "sim"
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.info["profile"] == "h100-llama31-8b" and server.info["time_scale"] == 50.0
        assert server.model == "meta-llama/Llama-3.1-8B-Instruct"
        with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as client:
            r = client.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": "hello"}], max_tokens=8
            )
        assert r.system_fingerprint == "matrix-sim/h100-llama31-8b"
        assert _alive(pid)
    finally:
        server.stop()
    assert not _alive(pid)


def test_unknown_profile_fails_before_any_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started for a bad profile")

    monkeypatch.setattr(sim_backend, "start_server_process", no_process)
    with pytest.raises(UnknownProfileError) as err:
        sim_backend.SimBackend().start(profile="h100-llama99")
    assert "h100-llama99" in str(err.value) and "h100-llama31-8b" in str(err.value)
    with pytest.raises(UnknownBehaviourError, match="'oracle'"):
        sim_backend.SimBackend().start(behaviour="oracle")
    with pytest.raises(ValueError, match="time_scale"):
        sim_backend.SimBackend().start(time_scale=0)


def test_server_command_line_rejects_an_unknown_profile() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "matrix.llm.sim.server", "--profile", "nope", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "'nope'" in proc.stderr and "a100-llama31-8b" in proc.stderr
