"""A scriptable OpenAI-compatible server on 127.0.0.1 for client tests.

Each incoming request pops the next behaviour from `script` (or uses `default`): a status code, a
delay, a dropped connection, malformed JSON. Every request body is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    drop: bool = False
    malformed: bool = False
    retry_after: str | None = None
    body: dict[str, Any] | None = None


@dataclass
class FakeServer:
    name: str = "fake"
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Behaviour)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    url: str = ""

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        text = f"reply from {self.name}"
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        b = self.script.popleft() if self.script else self.default
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if b.delay:
                await asyncio.sleep(b.delay)
            if b.drop:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if b.malformed:
                return web.Response(status=200, text="{not json", content_type="application/json")
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
async def serve_fake(*servers: FakeServer):  # type: ignore[no-untyped-def]
    runners = []
    try:
        for s in servers:
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
        for r in runners:
            await r.cleanup()
