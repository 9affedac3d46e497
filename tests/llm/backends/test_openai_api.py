"""The `openai` backend: endpoint and key resolution, and its health check against a local fake API.

`FakeOpenAI` (below) is also the stand-in engine for the Ray Serve relay tests: it runs in a thread
here, and as a child process (`python test_openai_api.py --port N`) behind a Serve replica there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import pytest
from aiohttp import web

from matrix.llm.backends import BackendError, get_backend
from matrix.llm.backends.openai_api import DEFAULT_BASE_URL, OpenAIBackend, list_models


def _build_app(fake: FakeOpenAI) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        if fake.api_key and request.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        fake.models_calls += 1
        if fake.models_calls <= fake.fail_first:
            return web.json_response({"error": {"message": "warming up"}}, status=fake.fail_status)
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in fake.models]
        return web.json_response({"object": "list", "data": data})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        words = ["Hello", " from", " fake"]
        usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        for i, word in enumerate(words):
            delta = {"content": word, **({"role": "assistant"} if i == 0 else {})}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.05)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/not-openai/models", health)
    app.router.add_post("/v1/chat/completions", chat)
    return app


class FakeOpenAI:
    """An OpenAI-compatible API on 127.0.0.1 in a background thread; stopped on exit.

    `fail_first` makes the first N `GET /v1/models` answer `fail_status` (a server still warming
    up); `api_key` makes it demand that bearer token.
    """

    def __init__(
        self,
        models: tuple[str, ...] = ("fake-model",),
        *,
        api_key: str | None = None,
        fail_first: int = 0,
        fail_status: int = 503,
    ) -> None:
        self.models = models
        self.api_key = api_key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.models_calls = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _start(self) -> None:
        self._runner = web.AppRunner(_build_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return monkeypatch


def test_registry_returns_the_openai_backend() -> None:
    assert isinstance(get_backend("openai"), OpenAIBackend)


def test_base_url_comes_from_argument_then_env_then_default(no_openai_env: pytest.MonkeyPatch) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "sk-test")
    backend = OpenAIBackend()
    server = backend.start(model="gpt-x", check=False)
    assert server.base_url == DEFAULT_BASE_URL
    no_openai_env.setenv("OPENAI_BASE_URL", "https://proxy.example/v1/")
    assert backend.start(model="gpt-x", check=False).base_url == "https://proxy.example/v1"
    explicit = backend.start(base_url="http://10.0.0.1:9000/v1", model="gpt-x", check=False)
    assert explicit.base_url == "http://10.0.0.1:9000/v1"
    assert explicit.backend == "openai" and explicit.model == "gpt-x"


def test_missing_key_names_the_variable(no_openai_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="MY_GEMINI_KEY"):
        OpenAIBackend().start(model="m", api_key_env="MY_GEMINI_KEY", check=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend().start(model="m", check=False)


def test_health_check_uses_the_key_and_never_exposes_it(no_openai_env: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-123"
    no_openai_env.setenv("TEST_KEY", secret)
    with FakeOpenAI(("served-model",), api_key=secret) as fake:
        server = OpenAIBackend().start(base_url=fake.base_url, api_key_env="TEST_KEY")
        assert server.model == "served-model"  # the only listed model
        assert server.info["api_key_env"] == "TEST_KEY"
        assert server.info["models"] == ["served-model"]
        assert secret not in repr(server) and secret not in json.dumps(server.info)
        server.stop()
        server.stop()  # nothing to stop, twice
        no_openai_env.setenv("TEST_KEY", "sk-wrong")
        with pytest.raises(BackendError, match="401") as err:
            OpenAIBackend().start(base_url=fake.base_url, model="served-model", api_key_env="TEST_KEY")
        assert "sk-wrong" not in str(err.value)


def test_model_is_required_when_several_are_listed(no_openai_env: pytest.MonkeyPatch) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "k")
    with FakeOpenAI(("a", "b")) as fake:
        with pytest.raises(BackendError, match="needs model="):
            OpenAIBackend().start(base_url=fake.base_url)
        assert OpenAIBackend().start(base_url=fake.base_url, model="b").model == "b"


def test_unreachable_url_is_named(no_openai_env: pytest.MonkeyPatch) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "k")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(BackendError, match=f"{url}/models"):
        OpenAIBackend().start(base_url=url, model="m", timeout=2)


def test_list_models_reports_status_and_bad_bodies() -> None:
    with FakeOpenAI(("m",), fail_first=1, fail_status=503) as fake:
        with pytest.raises(BackendError, match="HTTP 503"):
            list_models(fake.base_url)
        assert list_models(fake.base_url) == ["m"]
        with pytest.raises(BackendError, match="not return an OpenAI model list"):
            list_models(f"http://127.0.0.1:{fake.port}/not-openai")
        with pytest.raises(BackendError, match="HTTP 404"):
            list_models(f"http://127.0.0.1:{fake.port}")
    with pytest.raises(BackendError, match="could not reach"):
        list_models(f"http://127.0.0.1:{closed_port()}/v1", timeout=2)


def test_unknown_options_and_bad_urls_are_refused(no_openai_env: pytest.MonkeyPatch) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "k")
    with pytest.raises(BackendError, match="unknown option"):
        OpenAIBackend().start(model="m", check=False, temprature=0.2)
    with pytest.raises(BackendError, match="http"):
        OpenAIBackend().start(base_url="api.openai.com/v1", model="m", check=False)


def main() -> None:
    """Serve the fake API on a given port until killed (the stand-in engine behind a Serve relay)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args()
    fake = FakeOpenAI((args.model,))
    web.run_app(_build_app(fake), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
