"""OpenAI-compatible HTTP front end of the simulated engine (aiohttp).

    python -m matrix.llm.sim.server --profile a100-llama31-8b --port 8001 --time-scale 10

Endpoints: `POST /v1/chat/completions` (streaming or not), `POST /v1/completions`, `GET /v1/models`,
`GET /health`, `GET /metrics` (Prometheus text). A request is validated the way vLLM's server
would (400 with an OpenAI-style error naming the field), its prompt tokens are counted by the
tokenizer approximation, the behaviour model writes the reply, and the engine decides when each
token leaves. Nothing here can be mistaken for a real model: every response has the header
`X-Matrix-Simulated: true`, a `system_fingerprint` of `matrix-sim/<profile>`, `"simulated": true`
and the request's simulated timings in `sim_timing`; every metric has `simulated="true"`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web

from matrix.llm.sim.behaviour import BehaviourModel, Reply, apply_limits, get_behaviour, request_digest
from matrix.llm.sim.engine import EngineStoppedError, SimEngine, SimRequest, SimTiming
from matrix.llm.sim.metrics import VLLM_ALIASES, Counter
from matrix.llm.sim.profile import DEFAULT_PROFILE, load_profile
from matrix.llm.sim.tokens import chat_prefix_chain, count_chat_tokens, count_prompt_tokens, split_text
from matrix.metrics import announce_target, withdraw_target

SIMULATED_HEADER = "X-Matrix-Simulated"
ENGINE_KEY = web.AppKey("engine", SimEngine)
MODEL_KEY = web.AppKey("model", str)
HTTP_COUNTER_KEY = web.AppKey("http_counter", Counter)
FINISH_COUNTER_KEY = web.AppKey("finish_counter", Counter)
_ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_BODY_BYTES = 64 * 1024 * 1024

log = logging.getLogger("matrix.llm.sim")


class RequestError(Exception):
    """A client error, answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def response(self) -> web.Response:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status)


# ----------------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _opt_int(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        raise RequestError(f"{name} must be an integer >= {minimum}, got {value!r}", name)
    return int(value)


def _opt_number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not lo <= value <= hi:
        raise RequestError(f"{name} must be a number between {lo:g} and {hi:g}, got {value!r}", name)
    return float(value)


def _opt_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}", name)
    return value


def _stop_list(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise RequestError(f"stop must be a string or a list of strings, got {stop!r}", "stop")


def _check_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "messages" not in body:
        raise RequestError("messages is required: a non-empty list of chat messages", "messages")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages must be a non-empty list, got {messages!r}"[:300], "messages")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object, got {msg!r}"[:300], where)
        role = msg.get("role")
        if role not in _ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(_ROLES)}, got {role!r}", f"{where}.role")
        content = msg.get("content")
        ok = (
            content is None
            or isinstance(content, str)
            or (isinstance(content, list) and all(isinstance(p, dict) for p in content))
        )
        if not ok:
            raise RequestError(
                f"{where}.content must be a string, a list of content parts or null, got {content!r}"[:300],
                f"{where}.content",
            )
        if content is None and role != "assistant":
            raise RequestError(f"{where}.content is required for role {role!r}", f"{where}.content")
    return messages


def _check_tools(body: Mapping[str, Any]) -> list[Any] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise RequestError(f"tools must be a list, got {tools!r}"[:300], "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}", f"tools[{i}]")
    choice = body.get("tool_choice")
    if (
        choice is not None
        and choice not in ("none", "auto", "required")
        and not (isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str))
    ):
        raise RequestError(
            f"tool_choice must be none, auto, required or a named function, got {choice!r}", "tool_choice"
        )
    return tools


@dataclass
class Parsed:
    """What the server needs from a request after validation."""

    stream: bool
    include_usage: bool
    max_tokens: int | None
    stop: list[str]
    ignore_eos: bool
    seed: int
    prompt_tokens: int
    model: str
    view: Mapping[str, Any] = field(default_factory=dict)


def _common(body: Mapping[str, Any], app: web.Application, prompt_tokens: int) -> Parsed:
    engine = app[ENGINE_KEY]
    served = app[MODEL_KEY]
    model = body.get("model", served)
    if not isinstance(model, str) or model != served:
        raise RequestError(
            f"model {model!r} is not served here; this simulated replica serves {served!r}",
            "model",
            code="model_not_found",
        )
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise RequestError(f"n must be 1: the simulated engine returns one choice per request, got {n!r}", "n")
    if body.get("best_of") not in (None, 1):
        raise RequestError(f"best_of must be 1 in the simulated engine, got {body.get('best_of')!r}", "best_of")
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        raise RequestError("logprobs are not available from the simulated engine", "logprobs")
    if body.get("echo") not in (None, False):
        raise RequestError("echo is not supported by the simulated engine", "echo")
    stream = _opt_bool(body, "stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise RequestError("stream_options can only be set when stream is true", "stream_options")
        if not isinstance(opts, dict):
            raise RequestError(f"stream_options must be an object, got {opts!r}", "stream_options")
        include_usage = _opt_bool(opts, "include_usage")
    max_tokens = _opt_int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_completion_tokens", 1)
    _opt_number(body, "temperature", 0.0, 2.0)
    _opt_number(body, "top_p", 0.0, 1.0)
    _opt_number(body, "presence_penalty", -2.0, 2.0)
    _opt_number(body, "frequency_penalty", -2.0, 2.0)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(f"seed must be an integer, got {seed!r}", "seed")
    limit = engine.profile.max_model_len
    if prompt_tokens >= limit:
        raise RequestError(
            f"This model's maximum context length is {limit} tokens, but the prompt has {prompt_tokens} "
            "tokens (simulated count). Please reduce the length of the prompt.",
            "messages" if "messages" in body else "prompt",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > limit:
        raise RequestError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the "
            "completion). Please reduce the length of the prompt or completion.",
            "max_tokens",
        )
    return Parsed(
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        stop=_stop_list(body),
        ignore_eos=_opt_bool(body, "ignore_eos"),
        seed=int(seed or 0),
        prompt_tokens=prompt_tokens,
        model=served,
        view=MappingProxyType(dict(body)),
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", None) from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}", None)
    return body


# ----------------------------------------------------------------------------------- generation


def _make_reply(app: web.Application, parsed: Parsed) -> Reply:
    engine = app[ENGINE_KEY]
    limit = parsed.max_tokens
    if limit is None:
        limit = engine.profile.max_model_len - parsed.prompt_tokens
    try:
        reply = engine.behaviour.reply(parsed.view, seed=parsed.seed)
    except Exception as exc:
        name = getattr(engine.behaviour, "name", type(engine.behaviour).__name__)
        log.exception("behaviour %s failed", name)
        raise RequestError(f"behaviour model {name!r} failed: {exc!r}", None, status=500) from exc
    return apply_limits(
        reply,
        max_tokens=limit,
        stop=parsed.stop,
        ignore_eos=parsed.ignore_eos,
        seed=request_digest(parsed.view, parsed.seed),
    )


def _usage(parsed: Parsed, reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": parsed.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": parsed.prompt_tokens + reply.completion_tokens,
    }


def _sim_timing(app: web.Application, timing: SimTiming) -> dict[str, Any]:
    engine = app[ENGINE_KEY]
    return {**timing.as_dict(), "profile": engine.profile.name, "gpu": engine.profile.gpu}


def _envelope(app: web.Application, rid: str, kind: str, parsed: Parsed) -> dict[str, Any]:
    return {
        "id": rid,
        "object": kind,
        "created": int(time.time()),
        "model": parsed.model,
        "system_fingerprint": f"matrix-sim/{app[ENGINE_KEY].profile.name}",
        "simulated": True,
    }


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [dict(c) for c in reply.tool_calls]


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    request: web.Request,
    app: web.Application,
    sim: SimRequest,
    parsed: Parsed,
    reply: Reply,
    rid: str,
    chat: bool,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    base = _envelope(app, rid, "chat.completion.chunk" if chat else "text_completion", parsed)
    if parsed.include_usage:
        base["usage"] = None
    pieces = split_text(reply.content or "", reply.completion_tokens) if not reply.tool_calls else []

    def chunk(delta_or_text: Any, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        if chat:
            choice = {"index": 0, "delta": delta_or_text, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta_or_text, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    sent = 0
    try:
        await resp.prepare(request)
        if chat:
            await resp.write(_sse(chunk({"role": "assistant", "content": ""})))
        async for batch in sim.updates():
            out = bytearray()
            for _ in batch:
                if reply.tool_calls:
                    if sent == 0:
                        calls = [
                            {
                                "index": i,
                                "id": c.get("id"),
                                "type": "function",
                                "function": {"name": c["function"]["name"], "arguments": ""},
                            }
                            for i, c in enumerate(reply.tool_calls)
                        ]
                        out += _sse(chunk({"tool_calls": calls}))
                elif pieces[sent]:
                    out += _sse(chunk({"content": pieces[sent]} if chat else pieces[sent]))
                sent += 1
            if out:
                await resp.write(bytes(out))
        timing = _sim_timing(app, sim.timing())
        tail = bytearray()
        if reply.tool_calls:
            args = [
                {"index": i, "function": {"arguments": c["function"].get("arguments", "")}}
                for i, c in enumerate(reply.tool_calls)
            ]
            tail += _sse(chunk({"tool_calls": args}))
        tail += _sse(chunk({} if chat else "", reply.finish_reason, sim_timing=timing))
        if parsed.include_usage:
            tail += _sse({**base, "choices": [], "usage": _usage(parsed, reply), "sim_timing": timing})
        tail += b"data: [DONE]\n\n"
        await resp.write(bytes(tail))
        await resp.write_eof()
    except EngineStoppedError as exc:
        # headers are gone: report in the stream, as OpenAI does, so the client raises an APIError
        error = {"message": str(exc), "type": "server_error", "param": None, "code": None}
        with contextlib.suppress(ConnectionResetError):
            await resp.write(_sse({"error": error}) + b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp
    except (ConnectionResetError, asyncio.CancelledError):
        sim.abort()
        raise
    app[FINISH_COUNTER_KEY].inc(finish_reason=reply.finish_reason)
    return resp


async def _generate(
    request: web.Request, parsed: Parsed, chat: bool, prefix: Sequence[tuple[str, int]] = ()
) -> web.StreamResponse:
    app = request.app
    engine = app[ENGINE_KEY]
    reply = _make_reply(app, parsed)
    rid = ("chatcmpl-sim-" if chat else "cmpl-sim-") + uuid.uuid4().hex[:24]
    try:
        sim = engine.submit(parsed.prompt_tokens, reply.completion_tokens, request_id=rid, prefix=prefix)
    except EngineStoppedError as exc:
        raise RequestError(str(exc), None, status=503) from None
    except ValueError as exc:  # the core's own limits (KV capacity)
        raise RequestError(str(exc), "max_tokens") from None
    if parsed.stream:
        return await _stream(request, app, sim, parsed, reply, rid, chat)
    try:
        timing = await sim.wait()
    except asyncio.CancelledError:
        sim.abort()
        raise
    except EngineStoppedError as exc:
        raise RequestError(str(exc), None, status=503) from None
    body = _envelope(app, rid, "chat.completion" if chat else "text_completion", parsed)
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        if reply.tool_calls:
            message["tool_calls"] = _tool_calls(reply)
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }
    else:
        choice = {
            "index": 0,
            "text": reply.content or "",
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }
    body["choices"] = [choice]
    body["usage"] = _usage(parsed, reply)
    body["sim_timing"] = _sim_timing(app, timing)
    app[FINISH_COUNTER_KEY].inc(finish_reason=reply.finish_reason)
    return web.json_response(body)


# ----------------------------------------------------------------------------------- handlers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    messages = _check_messages(body)
    tools = _check_tools(body)
    parsed = _common(body, request.app, count_chat_tokens(messages, tools))
    caching = request.app[ENGINE_KEY].profile.enable_prefix_caching
    prefix = chat_prefix_chain(messages, tools) if caching else ()
    return await _generate(request, parsed, chat=True, prefix=prefix)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt)):
        tokens = count_prompt_tokens(prompt)
    else:
        raise RequestError(
            f"prompt must be a string, a list of token ids, or a list holding one of those, got {prompt!r}"[:300],
            "prompt",
        )
    parsed = _common(body, request.app, tokens)
    return await _generate(request, parsed, chat=False)


async def models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    card = {
        "id": request.app[MODEL_KEY],
        "object": "model",
        "created": 0,
        "owned_by": "matrix-sim",
        "root": engine.profile.model,
        "max_model_len": engine.profile.max_model_len,
        "simulated": True,
        "profile": engine.profile.name,
    }
    return web.json_response({"object": "list", "data": [card]})


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    state = engine.snapshot()
    state["status"] = "ok" if engine.healthy else "engine stopped"
    return web.json_response(state, status=200 if engine.healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    text = engine.metrics.render() + engine.metrics.render_aliases(VLLM_ALIASES, {"model_name": engine.model_name})
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
    )


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """OpenAI-style JSON errors for everything, and a count of responses by endpoint and status."""
    try:
        resp = await handler(request)
    except RequestError as exc:
        resp = exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = RequestError(f"{exc.reason}: {request.method} {request.path}", None, status=exc.status).response()
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        resp = RequestError(f"internal error in the simulated server: {exc!r}", None, status=500).response()
    route = request.match_info.route.resource
    endpoint = route.canonical if route is not None else "unmatched"
    request.app[HTTP_COUNTER_KEY].inc(endpoint=endpoint, status=str(resp.status))
    return resp


async def _mark_simulated(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATED_HEADER] = "true"


def build_app(engine: SimEngine, model_name: str | None = None) -> web.Application:
    """The aiohttp application for one engine; it starts the engine if needed and stops what it started."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app[MODEL_KEY] = model_name or engine.model_name
    registry = engine.metrics
    existing = registry.get("matrix_sim_http_requests_total")
    app[HTTP_COUNTER_KEY] = (
        existing
        if isinstance(existing, Counter)
        else registry.counter("http_requests_total", "HTTP responses by endpoint and status.")
    )
    existing = registry.get("matrix_sim_request_success_total")
    app[FINISH_COUNTER_KEY] = (
        existing
        if isinstance(existing, Counter)
        else registry.counter("request_success_total", "Completed requests by finish reason.")
    )
    app.on_response_prepare.append(_mark_simulated)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        started_here = not engine.healthy
        if started_here:
            await engine.start()
        yield
        if started_here:
            await engine.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


# ----------------------------------------------------------------------------------- running


async def start_server(
    engine: SimEngine, *, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None
) -> tuple[web.AppRunner, str]:
    """Serve `engine` on host:port in the running loop; returns (runner, base URL).

    `await runner.cleanup()` stops the server (and the engine, if the app started it).
    """
    app = build_app(engine, model_name)
    announced: list[Path] = []

    async def withdraw(_app: web.Application) -> None:
        for target in announced:
            withdraw_target(target)

    app.on_cleanup.append(withdraw)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    # A running `matrix monitor` scrapes every replica that announces itself (nothing happens without one).
    target = announce_target(
        "replicas", f"{host}:{bound}", {"backend": "sim", "model_name": engine.model_name, "simulated": "true"}
    )
    if target is not None:
        announced.append(target)
    return runner, f"http://{host}:{bound}/v1"


async def serve(
    *,
    profile: str,
    host: str,
    port: int,
    time_scale: float,
    behaviour: BehaviourModel,
    model: str | None,
) -> None:
    """Run one replica until SIGINT/SIGTERM; prints the base URL on stdout once it accepts requests."""
    engine = SimEngine(profile, time_scale=time_scale, behaviour=behaviour, model_name=model)
    runner, url = await start_server(engine, host=host, port=port, model_name=model)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(url, flush=True)
    print(
        f"matrix-sim: SIMULATED replica ({engine.profile.name}, {engine.profile.gpu}) serving "
        f"{engine.model_name!r} at {url}, time scale {time_scale:g}, behaviour "
        f"{getattr(behaviour, 'name', type(behaviour).__name__)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags, for reuse by other command lines."""
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"profile name or YAML path (default {DEFAULT_PROFILE})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--behaviour", default="generic", help="behaviour model name or 'module:factory'")
    parser.add_argument("--behaviour-config", default=None, help="JSON object of keyword arguments for the behaviour")
    parser.add_argument("--model", default=None, help="served model name (default: the profile's model)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matrix.llm.sim.server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        load_profile(args.profile)
        config = json.loads(args.behaviour_config) if args.behaviour_config else {}
        if not isinstance(config, dict):
            raise ValueError(f"--behaviour-config must be a JSON object, got {args.behaviour_config!r}")
        behaviour = get_behaviour(args.behaviour, **config)
        if not args.time_scale > 0:
            raise ValueError(f"--time-scale must be > 0, got {args.time_scale}")
    except ValueError as exc:
        print(f"matrix-sim: error: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                profile=args.profile,
                host=args.host,
                port=args.port,
                time_scale=args.time_scale,
                behaviour=behaviour,
                model=args.model,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
