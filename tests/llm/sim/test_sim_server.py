"""The simulated server through the official `openai` client, on 127.0.0.1, in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from matrix.llm.sim.engine import SimEngine
from matrix.llm.sim.server import start_server

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Served:
    url: str
    engine: SimEngine
    client: openai.OpenAI

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")


@contextlib.contextmanager
def serve_in_thread(time_scale: float) -> Iterator[tuple[Served, asyncio.AbstractEventLoop]]:
    """One replica on 127.0.0.1, on its own event loop thread; stopped (and checked) on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sim-server", daemon=True)
    thread.start()

    async def up() -> tuple[SimEngine, Any, str]:
        engine = SimEngine("h100-llama31-8b", time_scale=time_scale)
        runner, url = await start_server(engine, host="127.0.0.1", port=0)
        return engine, runner, url

    engine, runner, url = asyncio.run_coroutine_threadsafe(up(), loop).result(timeout=30)
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    try:
        yield Served(url, engine, client), loop
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    assert not engine.healthy  # the app started the engine, so its cleanup stopped it


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve_in_thread(100.0) as (server, _):
        yield server


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_chat_completion_with_usage_and_simulated_labels(served: Served) -> None:
    raw = served.client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Explain TCP in two sentences."), max_tokens=40, seed=3
    )
    assert raw.headers["x-matrix-simulated"] == "true"
    r = raw.parse()
    assert r.system_fingerprint == "matrix-sim/h100-llama31-8b"
    assert r.model == MODEL and len(r.choices) == 1
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert r.usage is not None and r.usage.prompt_tokens > 10
    assert 1 <= r.usage.completion_tokens <= 40
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    extra = r.model_extra or {}
    assert extra["simulated"] is True
    timing = extra["sim_timing"]
    assert timing["unit"] == "simulated seconds" and timing["time_scale"] == 100
    assert 0 < timing["ttft_s"] <= timing["e2e_s"]


def test_streaming_matches_non_streaming_and_reports_usage(served: Served) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": user("Write a haiku."), "max_tokens": 60, "seed": 7}
    whole = served.client.chat.completions.create(**kwargs)
    chunks = list(served.client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])
    assert all((c.model_extra or {}).get("simulated") is True for c in chunks)
    assert "sim_timing" in (chunks[-1].model_extra or {})


def test_streaming_without_usage(served: Served) -> None:
    chunks = list(served.client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=5, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_tokens_stop_and_ignore_eos(served: Served) -> None:
    cut = served.client.chat.completions.create(model=MODEL, messages=user("long please"), max_tokens=3)
    assert cut.usage.completion_tokens <= 3  # type: ignore[union-attr]
    full = served.client.chat.completions.create(
        model=MODEL, messages=user("again"), max_tokens=50, extra_body={"ignore_eos": True}
    )
    assert full.usage.completion_tokens == 50 and full.choices[0].finish_reason == "length"  # type: ignore[union-attr]
    word = (full.choices[0].message.content or "").split()[3]
    stopped = served.client.chat.completions.create(
        model=MODEL, messages=user("again"), max_tokens=50, stop=[word], extra_body={"ignore_eos": True}
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in (stopped.choices[0].message.content or "")


def test_forced_tool_call_plain_and_streamed(served: Served) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    kwargs: dict[str, Any] = {"model": MODEL, "messages": user("weather?"), "tools": tools, "tool_choice": "required"}
    r = served.client.chat.completions.create(**kwargs)
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {}  # type: ignore[union-attr]
    chunks = list(served.client.chat.completions.create(stream=True, **kwargs))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id == call.id  # type: ignore[union-attr]
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_completions_and_models(served: Served) -> None:
    r = served.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert r.choices[0].text and r.usage is not None and r.usage.completion_tokens <= 8
    assert (r.model_extra or {})["simulated"] is True
    streamed = list(served.client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=4, stream=True))
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    models = served.client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert (models.data[0].model_extra or {})["simulated"] is True


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": MODEL}, "messages", "messages is required"),
        ({"model": MODEL, "messages": "hello"}, "messages", "non-empty list"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "'wizard'"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "5"),
        ({"model": MODEL, "messages": user("x"), "max_tokens": -5}, "max_tokens", "-5"),
        ({"model": MODEL, "messages": user("x"), "max_tokens": "ten"}, "max_tokens", "'ten'"),
        ({"model": MODEL, "messages": user("x"), "n": 2}, "n", "n must be 1"),
        ({"model": MODEL, "messages": user("x"), "temperature": 7}, "temperature", "7"),
        ({"model": MODEL, "messages": user("x"), "stream": "yes"}, "stream", "'yes'"),
        ({"model": MODEL, "messages": user("x"), "stream_options": {"include_usage": True}}, "stream_options", ""),
        ({"model": "gpt-5", "messages": user("x")}, "model", "'gpt-5'"),
        ({"model": MODEL, "messages": user("x"), "max_tokens": 200_000}, "max_tokens", "maximum context length"),
        ({"model": MODEL, "messages": user("x"), "stop": [1]}, "stop", "[1]"),
    ],
)
def test_malformed_requests_get_400_naming_the_field(
    served: Served, body: dict[str, Any], param: str, needle: str
) -> None:
    r = httpx.post(served.url + "/chat/completions", json=body)
    assert r.status_code == 400 and r.headers["x-matrix-simulated"] == "true"
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert needle in error["message"]


def test_openai_client_sees_a_bad_request_error(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        served.client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=-5)
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "max_tokens"
    assert "-5" in err.value.body["message"]


def test_bad_json_and_unknown_paths(served: Served) -> None:
    r = httpx.post(served.url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["x-matrix-simulated"] == "true"
    assert "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(served.url + "/chat/completions", json=[1, 2])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    r = httpx.get(served.url + "/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("Not Found")
    assert r.headers["x-matrix-simulated"] == "true"


def test_health_and_metrics(served: Served) -> None:
    served.client.chat.completions.create(model=MODEL, messages=user("count me"), max_tokens=5)
    health = httpx.get(served.root + "/health")
    assert health.status_code == 200 and health.json()["simulated"] is True
    assert health.json()["profile"] == "h100-llama31-8b"
    text = httpx.get(served.root + "/metrics").text
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    # our names, and vLLM's for the series vLLM has too (a vLLM dashboard reads a sim replica, issue #21)
    assert samples and all(ln.startswith(("matrix_sim_", "vllm:")) for ln in samples)
    assert all('simulated="true"' in ln for ln in samples)
    for name in (
        "matrix_sim_requests_running",
        "matrix_sim_requests_waiting",
        "matrix_sim_kv_cache_usage_ratio",
        "matrix_sim_generation_tokens_total",
        "matrix_sim_prompt_tokens_total",
        "matrix_sim_time_to_first_token_seconds_bucket",
        "matrix_sim_inter_token_latency_seconds_count",
        "matrix_sim_wall_lag_seconds",
        "matrix_sim_http_requests_total",
    ):
        assert name in text, name
    assert 'status="finished"' in text


def test_client_disconnect_aborts_the_request(served: Served) -> None:
    before = served.engine._m_requests.get(status="aborted")
    body = {"model": MODEL, "messages": user("go on"), "max_tokens": 20000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", served.url + "/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
    deadline = time.monotonic() + 5
    while served.engine._m_requests.get(status="aborted") == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served.engine._m_requests.get(status="aborted") == before + 1


def test_engine_failure_mid_stream_reaches_the_client_as_an_error() -> None:
    with serve_in_thread(10.0) as (server, loop):
        stream = server.client.chat.completions.create(
            model=MODEL, messages=user("go"), max_tokens=5000, stream=True, extra_body={"ignore_eos": True}
        )
        with pytest.raises(openai.APIError, match="stopped"):
            for i, _ in enumerate(stream):
                if i == 3:
                    asyncio.run_coroutine_threadsafe(server.engine.stop(), loop).result(timeout=10)
        health = httpx.get(server.root + "/health")
        assert health.status_code == 503
