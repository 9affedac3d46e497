"""One async OpenAI-compatible client per process.

Every agent reaches every model through this client, whatever serves it (vLLM or SGLang replicas
on Ray Serve, vLLM on CPU, the simulated engine, an external API):

- pooled HTTP connections (one aiohttp session, keep-alive) instead of a client per request;
- at most `max_concurrency` requests in flight per replica, waiting callers queue here, not in
  the server;
- least-outstanding-requests balancing over replicas, optionally sticky by a task key;
- retries with exponential backoff and full jitter on 429, 5xx, timeouts (a hung server), dropped
  or cut-off connections, unparseable replies and replies that are not completions, honouring
  `Retry-After`; never on 4xx input errors, which raise at once;
- every failed attempt counted by reason (`matrix.llm.errors`), per client (`stats()`) and per
  process (`process_stats()`, which is how a runtime can collect them from its workers);
- usage accounting per role from the server's `usage` field;
- request bodies (tools, tool_choice, response_format, vendor extras) go to the server unchanged
  and the response comes back as the server's JSON, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from matrix import clock
from matrix.llm.balancer import Balancer, Endpoint
from matrix.llm.errors import LLMError, LLMRequestError, LLMUnavailableError, http_reason
from matrix.llm.usage import UsageLedger

# 408 Request Timeout and 425 Too Early are transient too; 429 is back-pressure.
RETRYABLE_4XX = frozenset({408, 425, 429})
# Routes whose 200 reply must be a completion (a non-empty list of choices) to count as an answer.
COMPLETION_PATHS = frozenset({"/chat/completions", "/completions"})
MAX_REPLY_BYTES = 256 * 1024 * 1024
# The seed of clients made without one (None: each client draws its own). The virtual clock sets it so
# that a virtual run's replica choices, and with them its timings, repeat exactly.
DEFAULT_SEED: int | None = None
INPROC = "inproc://"  # simulated replicas in this event loop (matrix.llm.sim.inproc), no socket


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_4XX


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(max_delay, base * 2**k))."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        wait = rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


@dataclass(frozen=True)
class ClientStats:
    """Counters of one client (or, from `process_stats()`, of every client in the process).

    `errors_by_reason` counts every failed attempt, retried or not; `failures_by_reason` counts the
    requests that finally failed, by the reason of their last attempt.
    """

    requests: int
    retries: int
    failures: int
    outstanding: int
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    failures_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The counters as a run's metrics hold them (`llm_calls`); `outstanding` is left out."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "failures": self.failures,
            "errors_by_reason": dict(self.errors_by_reason),
            "failures_by_reason": dict(self.failures_by_reason),
        }

    def since(self, before: ClientStats) -> ClientStats:
        """What was counted after `before` was taken (both from the same client or process)."""

        def minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

        return ClientStats(
            requests=self.requests - before.requests,
            retries=self.retries - before.retries,
            failures=self.failures - before.failures,
            outstanding=self.outstanding,
            errors_by_reason=minus(self.errors_by_reason, before.errors_by_reason),
            failures_by_reason=minus(self.failures_by_reason, before.failures_by_reason),
        )


def add_call_counts(counts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several `ClientStats.to_dict()` (one per actor process of a run)."""
    out: dict[str, Any] = {"requests": 0, "retries": 0, "failures": 0, "errors_by_reason": {}, "failures_by_reason": {}}
    for c in counts:
        for k in ("requests", "retries", "failures"):
            out[k] += int(c.get(k, 0))
        for k in ("errors_by_reason", "failures_by_reason"):
            for reason, n in c.get(k, {}).items():
                out[k][reason] = out[k].get(reason, 0) + int(n)
    return out


@dataclass
class _Counts:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    failures_by_reason: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + 1

    def failure(self, reason: str) -> None:
        self.failures += 1
        self.failures_by_reason[reason] = self.failures_by_reason.get(reason, 0) + 1

    def snapshot(self, outstanding: int) -> ClientStats:
        return ClientStats(
            requests=self.requests,
            retries=self.retries,
            failures=self.failures,
            outstanding=outstanding,
            errors_by_reason=dict(self.errors_by_reason),
            failures_by_reason=dict(self.failures_by_reason),
        )


# Every client of this process adds to these too (an actor's clients come and go with its roles).
_PROCESS = _Counts()


def process_stats() -> ClientStats:
    """The counters of every LLMClient this process has created (`outstanding` is not tracked: 0)."""
    return _PROCESS.snapshot(0)


class _Retryable(Exception):
    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None, *, reason: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.reason = reason


def _transport_reason(exc: BaseException) -> str:
    """The reason for a failure below HTTP: checked in this order since aiohttp's timeouts are also
    connection errors."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated"
    return "connection"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        parsed = json.loads(text)
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            text = str(err.get("message") or err)
        elif isinstance(err, str):
            text = err
    return text[:500]


def _completion_problem(reply: Mapping[str, Any], raw: bytes) -> str | None:
    """Why a 200 reply is not a completion (None when it is one): `choices` must be a non-empty
    list of objects. Some gateways answer 200 with an `error` object; its message is kept."""
    choices = reply.get("choices")
    if isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices):
        return None
    if "error" in reply:
        return f"error in a 200 reply: {_error_text(raw)}"
    if choices is None:
        return f"no 'choices' in the reply (keys: {sorted(map(str, reply))[:10]})"
    return f"'choices' must be a non-empty list of objects, got {json.dumps(choices)[:200]}"


def message_text(response: Mapping[str, Any]) -> str:
    """The assistant text of a chat completion (empty when the reply is only tool calls)."""
    choices = response.get("choices") or []
    if not choices:
        return ""
    return str((choices[0].get("message") or {}).get("content") or "")


class LLMClient:
    """Async client for one or more replicas of an OpenAI-compatible service.

    Use it as `async with LLMClient([...]) as llm:` or call `await llm.close()`; it must be used
    from one event loop.
    """

    def __init__(
        self,
        endpoints: Sequence[str | Endpoint],
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 256,
        timeout: float = 1800.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if seed is None:
            seed = DEFAULT_SEED
        eps = [
            e if isinstance(e, Endpoint) else Endpoint(_normalise_url(e), max_concurrency=max_concurrency)
            for e in endpoints
        ]
        self.balancer = Balancer(eps, rng=random.Random(seed))
        self.model = model
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self.retry = retry or RetryPolicy()
        self.usage = UsageLedger()
        self._rng = random.Random(seed)
        self.max_reply_bytes = max_reply_bytes
        self._session: aiohttp.ClientSession | None = None
        self._counts = _Counts()

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.balancer.endpoints

    def stats(self) -> ClientStats:
        return self._counts.snapshot(sum(e.outstanding for e in self.endpoints))

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for(self, url: str) -> Any:
        """aiohttp for http(s) replicas; for `inproc://` ones the in-process session (no socket)."""
        if url.startswith(INPROC):
            from matrix.llm.sim.inproc import InprocSession

            return InprocSession()
        return self._http()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            total = sum(e.max_concurrency for e in self.endpoints)
            connector = aiohttp.TCPConnector(limit=total, limit_per_host=0, keepalive_timeout=60)
            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._session = aiohttp.ClientSession(connector=connector, headers=headers, timeout=self.timeout)
        return self._session

    # -- public calls -------------------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        role: str = "default",
        sticky_key: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """POST /chat/completions and return the server's JSON unchanged.

        `params` are OpenAI request fields (model, temperature, max_tokens, tools, ...), passed
        through as given; `model` defaults to the client's.
        """
        body = self._body({"messages": list(messages), **params})
        if body.get("stream"):
            raise ValueError("chat() is non-streaming; use chat_stream() for stream=True")
        return await self.post("/chat/completions", body, role=role, sticky_key=sticky_key)

    async def completion(
        self, prompt: str, *, role: str = "default", sticky_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """POST /completions (the plain text route) and return the server's JSON unchanged."""
        body = self._body({"prompt": prompt, **params})
        return await self.post("/completions", body, role=role, sticky_key=sticky_key)

    async def post(
        self, path: str, body: Mapping[str, Any], *, role: str = "default", sticky_key: str | None = None
    ) -> dict[str, Any]:
        """Send one JSON request with retries; record usage for `role`.

        A 200 reply on a completion route (`COMPLETION_PATHS`) must carry a non-empty `choices` list,
        else it counts as a failed attempt (`bad_reply`) like unparseable JSON does.
        """
        payload = json.dumps(body).encode()
        tried: set[str] = set()
        last: _Retryable | None = None
        self._count_request()
        with self._refusals_counted(role):
            for attempt in range(self.retry.max_retries + 1):
                endpoint = self.balancer.pick(sticky_key=sticky_key, exclude=tried)
                try:
                    result = await self._post_once(endpoint, path, payload, completion=path in COMPLETION_PATHS)
                except _Retryable as exc:
                    last = exc
                    await self._back_off(exc, endpoint, tried, attempt, role)
                    continue
                self.usage.record(role, result.get("usage"))
                return result
        raise self._out_of_attempts(path, last, endpoint, role)

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        role: str = "default",
        sticky_key: str | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a chat completion: yields each SSE chunk (parsed JSON) as the server sends it.

        Usage is requested with `stream_options.include_usage` (unless the caller set it) and
        recorded from the final chunk. A failure before the first chunk is retried like `post`;
        once chunks have been yielded, a failure raises, since the caller has seen partial output.
        """
        body = self._body({"messages": list(messages), **params, "stream": True})
        body.setdefault("stream_options", {"include_usage": True})
        payload = json.dumps(body).encode()
        tried: set[str] = set()
        last: _Retryable | None = None
        self._count_request()
        with self._refusals_counted(role):
            for attempt in range(self.retry.max_retries + 1):
                endpoint = self.balancer.pick(sticky_key=sticky_key, exclude=tried)
                yielded = False
                usage: dict[str, Any] | None = None
                try:
                    async for chunk in self._stream_once(endpoint, "/chat/completions", payload):
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        yielded = True
                        yield chunk
                except _Retryable as exc:
                    if yielded:
                        self._count_fatal(exc.reason, role)
                        raise LLMUnavailableError(
                            f"stream broke after partial output ({exc.reason}): {exc}",
                            endpoint=endpoint.base_url,
                            status=exc.status,
                            attempts=attempt + 1,
                            reason=exc.reason,
                        ) from exc
                    last = exc
                    await self._back_off(exc, endpoint, tried, attempt, role)
                    continue
                self.usage.record(role, usage)
                return
        raise self._out_of_attempts("/chat/completions (stream)", last, endpoint, role)

    # -- internals ---------------------------------------------------------------------------

    def _count_request(self) -> None:
        self._counts.requests += 1
        _PROCESS.requests += 1

    def _count_error(self, reason: str) -> None:
        self._counts.error(reason)
        _PROCESS.error(reason)

    def _count_failure(self, reason: str, role: str) -> None:
        self._counts.failure(reason)
        _PROCESS.failure(reason)
        self.usage.record_failure(role)

    def _count_fatal(self, reason: str, role: str) -> None:
        """A failure no retry follows: one error and one failed request."""
        self._count_error(reason)
        self._count_failure(reason, role)

    @contextlib.contextmanager
    def _refusals_counted(self, role: str) -> Iterator[None]:
        """A request the server refused (`LLMRequestError`, never retried) is counted, then raised as it came."""
        try:
            yield
        except LLMRequestError as exc:
            self._count_fatal(exc.reason, role)
            raise

    def _out_of_attempts(
        self, what: str, last: _Retryable | None, endpoint: Endpoint, role: str
    ) -> LLMUnavailableError:
        """Every attempt failed with a retryable error (`last` the latest): count the failure, return what to raise."""
        assert last is not None
        self._count_failure(last.reason, role)
        attempts = self.retry.max_retries + 1
        return LLMUnavailableError(
            f"{what} failed after {attempts} attempts (last: {last.reason}): {last}",
            endpoint=endpoint.base_url,
            status=last.status,
            attempts=attempts,
            reason=last.reason,
        )

    async def _back_off(self, exc: _Retryable, endpoint: Endpoint, tried: set[str], attempt: int, role: str) -> None:
        """After a retryable failure: count it, prefer another replica next, wait with jitter."""
        self._count_error(exc.reason)
        tried.add(endpoint.base_url)
        if len(tried) == len(self.endpoints):
            tried.clear()
        if attempt < self.retry.max_retries:
            self._counts.retries += 1
            _PROCESS.retries += 1
            self.usage.record_retry(role)
            await asyncio.sleep(self.retry.delay(attempt, self._rng, exc.retry_after))

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        if "model" not in body:
            if self.model is None:
                raise ValueError("no model given: pass model=... to the call or to LLMClient(model=...)")
            body["model"] = self.model
        return body

    async def _read_body(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        """The whole reply body, refusing one over `max_reply_bytes` without holding it in memory."""
        limit = self.max_reply_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise _Retryable(
                f"reply from {url} is {resp.content_length} bytes, over the limit of {limit}", reason="too_large"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise _Retryable(f"reply from {url} exceeds the limit of {limit} bytes", reason="too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _post_once(self, endpoint: Endpoint, path: str, payload: bytes, *, completion: bool) -> dict[str, Any]:
        url = endpoint.base_url + path
        # Outstanding counts queued and running requests, so balancing sees the real backlog.
        endpoint.outstanding += 1
        try:
            async with endpoint.slots, self._session_for(url).post(url, data=payload) as resp:
                raw = await self._read_body(resp, url)
                self._check_status(endpoint, url, resp.status, resp.headers, raw)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            endpoint.mark_failure(clock.now())
            raise self._transport_failure(exc, url) from exc
        finally:
            endpoint.outstanding -= 1
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _Retryable(f"unparseable JSON from {url}: {raw[:200]!r}", reason="bad_json") from exc
        if not isinstance(parsed, dict):
            raise _Retryable(f"reply from {url} is not a JSON object: {raw[:200]!r}", reason="bad_reply")
        problem = _completion_problem(parsed, raw) if completion else None
        if problem is not None:
            raise _Retryable(f"reply from {url} is not a completion: {problem}", reason="bad_reply")
        endpoint.mark_success()
        return parsed

    async def _stream_once(self, endpoint: Endpoint, path: str, payload: bytes) -> AsyncIterator[dict[str, Any]]:
        url = endpoint.base_url + path
        endpoint.outstanding += 1
        try:
            async with endpoint.slots, self._session_for(url).post(url, data=payload) as resp:
                if resp.status != 200:
                    self._check_status(endpoint, url, resp.status, resp.headers, await self._read_body(resp, url))
                async for raw_line in resp.content:
                    line = raw_line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except (ValueError, RecursionError) as exc:
                        raise _Retryable(
                            f"unparseable SSE chunk from {url}: {data[:200]!r}", reason="bad_json"
                        ) from exc
                    if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
                        raise _Retryable(f"error event from {url}: {_error_text(data)}", reason="bad_reply")
                    yield chunk
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            endpoint.mark_failure(clock.now())
            raise self._transport_failure(exc, url) from exc
        finally:
            endpoint.outstanding -= 1
        endpoint.mark_success()

    def _transport_failure(self, exc: BaseException, url: str) -> _Retryable:
        reason = _transport_reason(exc)
        if reason == "timeout":
            limits = f"total {self.timeout.total:g} s, connect {self.timeout.connect:g} s"
            detail = f": {type(exc).__name__}: {exc}" if str(exc) else ""
            return _Retryable(f"timed out waiting for {url} ({limits}){detail}", reason=reason)
        return _Retryable(f"{type(exc).__name__} from {url}: {exc}", reason=reason)

    def _check_status(self, endpoint: Endpoint, url: str, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        if status == 200:
            return
        detail = _error_text(raw)
        if is_retryable_status(status):
            if status >= 500:
                endpoint.mark_failure(clock.now())
            reason = http_reason(status)
            raise _Retryable(f"HTTP {status} from {url}: {detail}", status, _retry_after(headers), reason=reason)
        raise LLMRequestError(f"HTTP {status} from {url}: {detail}", endpoint=endpoint.base_url, status=status)


def _normalise_url(url: str) -> str:
    if not url.startswith(("http://", "https://", INPROC)):
        raise ValueError(f"endpoint URL must start with http://, https:// or {INPROC}, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def client_from_env(prefix: str = "MATRIX_LLM", **kwargs: Any) -> LLMClient:
    """Build a client from `<prefix>_URLS` (comma-separated), `<prefix>_MODEL` and `<prefix>_API_KEY`."""
    urls = os.environ.get(f"{prefix}_URLS", "")
    if not urls.strip():
        raise LLMError(f"environment variable {prefix}_URLS is not set (comma-separated base URLs)")
    return LLMClient(
        [u.strip() for u in urls.split(",") if u.strip()],
        model=os.environ.get(f"{prefix}_MODEL") or kwargs.pop("model", None),
        api_key=os.environ.get(f"{prefix}_API_KEY") or kwargs.pop("api_key", None),
        **kwargs,
    )
