"""A scriptable OpenAI-compatible server on 127.0.0.1 for client tests.

Each incoming request takes its behaviour from the first of `rules` whose marker appears in its
messages, else pops the next one from `script`, else uses `default`: a status code, a delay, a
dropped connection, a hang (never answers), a body cut off mid-way, malformed JSON, or any body.
Every request body is recorded.

`QuickLLMAgent` is the stock `LLMAgent` with a client that gives up quickly (config `timeout` and
`max_retries`), for runs against servers that hang: the stock agent's client waits 30 minutes.

`serve_fake` runs servers in the caller's event loop; `serve_fake_in_thread` runs them in a thread
of their own, for tests whose code under test blocks (a Ray run). Either way they stop when the
block ends, and requests still hanging or sleeping are let go first so that stopping is quick.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from matrix.llm.agent import LLMAgent
from matrix.llm.client import LLMClient, RetryPolicy


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    drop: bool = False
    hang: bool = False  # accept the request and never answer (until the server stops)
    truncate: bool = False  # announce a full body, send part of it, close the connection
    malformed: bool = False
    retry_after: str | None = None
    body: dict[str, Any] | None = None
    raw: bytes | None = None  # a 200 reply with exactly these bytes


@dataclass
class FakeServer:
    name: str = "fake"
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Behaviour)
    rules: list[tuple[str, Behaviour]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    url: str = ""
    _released: asyncio.Event | None = None

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        text = f"reply from {self.name}"
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }

    def count(self, marker: str) -> int:
        """How many requests carried `marker` in their messages."""
        return sum(marker in json.dumps(b.get("messages", b.get("prompt", ""))) for b in self.bodies)

    def release(self) -> None:
        """Let every hanging or sleeping request go (called when the server stops)."""
        self._release_event().set()

    def _release_event(self) -> asyncio.Event:
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    def _behaviour(self, body: dict[str, Any]) -> Behaviour:
        if self.rules:
            text = json.dumps(body.get("messages", body.get("prompt", "")))
            for marker, behaviour in self.rules:
                if marker in text:
                    return behaviour
        return self.script.popleft() if self.script else self.default

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: forever), ending early when the server stops."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._release_event().wait(), seconds)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        b = self._behaviour(body)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if b.hang:
                await self._sleep(None)
                return web.json_response({"error": {"message": "released at shutdown"}}, status=503)
            if b.delay:
                await self._sleep(b.delay)
            if b.drop:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if b.truncate:
                full = json.dumps(self.reply(body)).encode()
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = len(full)
                await resp.prepare(request)
                await resp.write(full[: len(full) // 2])
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("cut off on purpose")
            if b.malformed:
                return web.Response(status=200, text="{not json", content_type="application/json")
            if b.raw is not None:
                return web.Response(status=200, body=b.raw, content_type="application/json")
            if b.status != 200:
                headers = {"Retry-After": b.retry_after} if b.retry_after else {}
                err = {"error": {"message": f"scripted {b.status}", "type": "invalid_request_error"}}
                return web.json_response(err, status=b.status, headers=headers)
            payload = b.body if b.body is not None else self.reply(body)
            if body.get("stream"):
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                for piece in ["reply ", "from ", self.name]:
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
                await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                await resp.write_eof()
                return resp
            return web.json_response(payload)
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def serve_fake(*servers: FakeServer) -> AsyncIterator[tuple[FakeServer, ...]]:
    runners = []
    try:
        for s in servers:
            s._released = asyncio.Event()  # belongs to this loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", s.handle)
            app.router.add_post("/v1/completions", s.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            s.url = f"http://127.0.0.1:{port}/v1"
            runners.append(runner)
        yield servers
    finally:
        for s in servers:
            s.release()
        for r in runners:
            await r.cleanup()


@contextmanager
def serve_fake_in_thread(*servers: FakeServer, start_timeout: float = 30.0) -> Iterator[tuple[FakeServer, ...]]:
    """`serve_fake` on an event loop in a background thread; the servers stop when the block ends."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with serve_fake(*servers):
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test thread below
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fake-openai", daemon=True)
    thread.start()
    try:
        if not ready.wait(start_timeout) or failed:
            raise RuntimeError(f"fake OpenAI servers did not start: {failed!r}")
        yield servers
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        if not thread.is_alive():
            loop.close()


class QuickLLMAgent(LLMAgent):
    """`LLMAgent` whose client has a short timeout (config `timeout`, s) and few fast retries
    (config `max_retries`). It lives here, not in a test module, so that Ray workers can import it."""

    async def setup(self) -> None:
        self.llm = LLMClient(
            list(self.config["urls"]),
            model=self.config.get("model"),
            timeout=float(self.config.get("timeout", 2.0)),
            retry=RetryPolicy(max_retries=int(self.config.get("max_retries", 1)), base_delay=0.05, max_delay=0.2),
        )

    async def close(self) -> None:
        await self.llm.close()
