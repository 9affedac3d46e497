"""Simulated replicas inside the caller's event loop, reached with no sockets (the virtual clock's servers).

`start_inproc_replicas` starts `n` `SimEngine`s in the running loop and registers each under a URL
`inproc://<name>-<i>/v1`. `LLMClient` sees that scheme and sends its requests through
`InprocSession` instead of aiohttp: the request body goes, as the same JSON bytes, to the same
handler the HTTP server runs (`matrix.llm.sim.server.chat_completions` behind its error
middleware), so validation, the behaviour model, token counting, prefix caching, the engine's
scheduling and the reply envelope are the server's own code; only the socket is gone.

On an ordinary loop the engines run in real time like the HTTP replicas; on a `looptime` loop
(`experiments/virtual.py`) their steps are virtual time, so a run of hours takes as long as its
Python work. Streaming is not offered in-process (no case uses it); such a request gets a 400.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from matrix.llm.sim.behaviour import BehaviourModel, get_behaviour
from matrix.llm.sim.engine import SimEngine
from matrix.llm.sim.server import (
    HTTP_COUNTER_KEY,
    SIMULATED_HEADER,
    RequestError,
    _errors,
    build_app,
    chat_completions,
    completions,
)

SCHEME = "inproc://"
_REPLICAS: dict[str, InprocReplica] = {}
_ROUTES = {"/chat/completions": chat_completions, "/completions": completions}


@dataclass
class _Resource:
    canonical: str


@dataclass
class _Route:
    resource: _Resource


@dataclass
class _MatchInfo:
    route: _Route


class _Request:
    """What the server's handlers read from a request: app, method, path, body, route."""

    def __init__(self, app: web.Application, path: str, body: bytes) -> None:
        self.app = app
        self.method = "POST"
        self.path = "/v1" + path
        self._body = body
        self.match_info = _MatchInfo(_Route(_Resource(self.path)))

    async def read(self) -> bytes:
        return self._body


class InprocReplica:
    """One engine and the server application around it, registered under its URL."""

    def __init__(self, url: str, engine: SimEngine, model: str | None) -> None:
        self.url = url
        self.engine = engine
        self.app = build_app(engine, model)

    async def handle(self, path: str, body: bytes) -> tuple[int, bytes]:
        handler = _ROUTES.get(path)
        if handler is None:
            resp: web.StreamResponse = RequestError(f"no route POST /v1{path} in-process", None, status=404).response()
            self.app[HTTP_COUNTER_KEY].inc(endpoint="unmatched", status="404")
        else:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("stream"):
                resp = RequestError("stream=true is not offered by in-process replicas", "stream").response()
            else:
                resp = await _errors(_Request(self.app, path, body), handler)  # type: ignore[arg-type]
        assert isinstance(resp, web.Response)
        return resp.status, bytes(resp.body or b"")  # type: ignore[arg-type]


def replica(url: str) -> InprocReplica:
    rep = _REPLICAS.get(_key(url))
    if rep is None:
        raise aiohttp.ClientConnectionError(f"no in-process replica at {url} (running: {sorted(_REPLICAS) or 'none'})")
    return rep


def _key(url: str) -> str:
    rest = url[len(SCHEME) :] if url.startswith(SCHEME) else url
    return rest.split("/", 1)[0]


async def start_inproc_replicas(
    name: str,
    n: int,
    profile: str,
    *,
    behaviour: str | BehaviourModel = "generic",
    behaviour_config: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> list[str]:
    """Start `n` engines in the running loop; their base URLs (`inproc://<name>-<i>/v1`)."""
    if n < 1:
        raise ValueError(f"replicas must be >= 1, got {n!r} for pool {name!r}")
    urls = []
    for i in range(n):
        key = f"{name}-{i}"
        if key in _REPLICAS:
            raise ValueError(f"an in-process replica {key!r} is already running; stop it first")
        beh = get_behaviour(behaviour, **dict(behaviour_config or {})) if isinstance(behaviour, str) else behaviour
        engine = SimEngine(profile, time_scale=1.0, behaviour=beh, model_name=model)
        await engine.start()
        url = f"{SCHEME}{key}/v1"
        _REPLICAS[key] = InprocReplica(url, engine, model)
        urls.append(url)
    return urls


async def stop_inproc_replicas(urls: list[str] | None = None) -> None:
    """Stop the given replicas (all when None) and forget them."""
    keys = list(_REPLICAS) if urls is None else [_key(u) for u in urls]
    for key in keys:
        rep = _REPLICAS.pop(key, None)
        if rep is not None:
            await rep.engine.stop()


def running() -> dict[str, InprocReplica]:
    return dict(_REPLICAS)


# ----------------------------------------------------------------------------------- client side


class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), n):
            yield self._body[i : i + n]


class _Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.headers = {"Content-Type": "application/json", SIMULATED_HEADER: "true"}
        self.content_length = len(body)
        self.content = _Content(body)


class _Post:
    def __init__(self, url: str, data: bytes) -> None:
        self._url = url
        self._data = data

    async def __aenter__(self) -> _Response:
        rep = replica(self._url)
        path = self._url.split("/v1", 1)[1] if "/v1" in self._url else ""
        status, body = await rep.handle(path, self._data)
        return _Response(status, body)

    async def __aexit__(self, *exc: object) -> None:
        return None


class InprocSession:
    """The part of `aiohttp.ClientSession` that `LLMClient` uses, for `inproc://` replicas."""

    closed = False

    def post(self, url: str, *, data: bytes) -> _Post:
        return _Post(url, data)

    async def close(self) -> None:
        return None
