"""The single-process ceiling, measured: the CPU each scheduler spends per LLM request (issue #19, item 3).

Virtual time charges nothing for a scheduler's own CPU, and that CPU is what the paper blames for
the central controller. This benchmark measures it on this machine, against a local server that
answers at once, so that the virtual clock can charge it: a single process is one serial CPU, and
each P2P actor is one CPU of its own.

Every path runs in a client process of its own (`python -m experiments.bench.ceiling client ...`);
its CPU is that process's user + system time (`resource.getrusage(RUSAGE_SELF)`, every thread
included) over a batch of requests, never the server's: the server is another process.

- `fair_matrix`, `fair_matrix_http`: the Coral reference's `use_matrix` request path, through the
  real package (PyPI `fair-matrix` 0.2.6): `matrix.client.query_llm.make_request(url="",
  endpoint_cache=..., app_name, multiplexed_model_id=<conversation id>, ...)`, as
  collaborative-reasoner's `utils/chat_utils.generate_next_turn_candidates` calls it. The endpoint
  cache is a callable returning the endpoint in the form fair-matrix's app metadata gives it. For a
  gRPC app (`use_grpc`, how fair-matrix deploys Llama-3.1-8B for the paper's Coral runs) that is
  `host:port`, and query_llm opens a new `grpc.aio` channel per request, here to an instant server
  of fair-matrix's own `OpenaiService` proto; for an HTTP app (fair-matrix's default, which
  collaborative-reasoner's README deploy command leaves on) it is `http://host:port/<app>/v1`, and
  query_llm opens a new `openai.AsyncOpenAI` client per request, here to the instant HTTP server.
  Neither is a Ray Serve proxy; the client's work is the same. fair-matrix's import package is
  also called `matrix`, so it can never share an environment with ours: it lives in a side
  directory (`--install-fair-matrix`) that only its own processes see.
- `legacy_aiohttp`: the reference's path without fair-matrix: a new `aiohttp.ClientSession` per
  request, JSON posted with a 600 s `asyncio.wait_for`, the reply read with `response.json()`.
- `pooled`: our `matrix.llm.client.LLMClient` (one pooled session, keep-alive), as the P2P roles
  and our controller use it.
- `tau2_litellm_thread`: tau2's own agent call (`tau2.agent.llm_agent.LLMAgent.generate_next_message`,
  i.e. tau2's `generate` -> synchronous `litellm.completion` with the telecom tools and policy) from
  a `ThreadPoolExecutor`, as tau2's runner makes it.
- `controller_loop`: our Coral central controller (`baselines.coral_controller`) end to end against
  the same server, which answers extraction calls with a letter so that conversations agree after
  two dialogue turns (4 LLM calls each): the controller's whole CPU per LLM request, loop included.
- `p2p`: the Coral case on the Ray P2P runtime against the same server; CPU of every agent actor
  process (per hop, per role), of admission and sink (per task) and of the driver.
- `p2p_no_llm`: the same hops with the dummy Coral-shaped agents (no LLM): the transport alone.

The results rewrite of tau2's runner (a whole-file JSON rewrite per simulation) is not re-measured
here: its fit save(N) = a + b*N comes from `results/bench/tau2_results_rewrite.json`
(`scripts/bench_tau2_rewrite.py`, same machine).

Top-level imports are the standard library only: the fair-matrix client process runs this module
with fair-matrix's `matrix` package first on its path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import gc
import itertools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CLIENT_PATHS = ("fair_matrix", "fair_matrix_http", "legacy_aiohttp", "pooled", "tau2_litellm_thread", "controller_loop")
RAY_PATHS = ("p2p", "p2p_no_llm")
FAIR_MATRIX_PATHS = ("fair_matrix", "fair_matrix_http")
FRESH_CLIENT_PATHS = ("fair_matrix", "fair_matrix_http", "legacy_aiohttp")  # a new client or channel per request
ALL_PATHS = CLIENT_PATHS + RAY_PATHS
DEFAULT_CONCURRENCY = (1, 64, 512)
DEFAULT_OUT = Path("results/bench/process_ceiling.json")
REWRITE_FIT = Path("results/bench/tau2_results_rewrite.json")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
APP_NAME = "8B"  # the route prefix fair-matrix's HTTP app metadata puts before /v1
REPLY_CHARS = 1600  # a Coral dialogue turn of about 400 tokens (matrix.bench.dummy's default)
SHORT_REPLY = "The correct answer is (B)."  # for requests with max_tokens <= SHORT_MAX_TOKENS (extraction)
SHORT_MAX_TOKENS = 64
AsyncCall = tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]  # (one request, close)
MARK = "CEILING-POINT "  # prefix of a client process's result lines on stdout
IDLE_SECONDS = 0.5  # P2P: the agents' CPU with nothing to do is read for this long before each run
SAMPLE_SECONDS = 0.2  # P2P: how often the driver reads the agents' hop counters and the processes' CPU

FAIR_MATRIX_VERSION = "0.2.6"
# fair-matrix and what its query_llm imports that this environment lacks or has at another major
# version (it pins openai~=1.90 and httpx~=0.28); installed with --no-deps into the side directory.
FAIR_MATRIX_SIDE = (
    f"fair-matrix=={FAIR_MATRIX_VERSION}",
    "openai==1.109.1",
    "httpx==0.28.1",
    "grpcio==1.70.0",
    "fire==0.7.1",
    "portalocker==4.4.2",
    "termcolor==3.3.0",
)
FAIR_MATRIX_DIR = Path(".venv/side") / f"fair-matrix-{FAIR_MATRIX_VERSION}"

CHARGE_MEANING = {
    "controller_fair_matrix": "CPU seconds of the single controller process per LLM request when its requests go "
    "through fair-matrix's query_llm to a gRPC app (the Coral reference's use_matrix path in the paper's setting, "
    "where fair-matrix deploys Llama-3.1-8B with use_grpc): controller_loop_overhead + the fair_matrix client's CPU "
    "per request",
    "controller_fair_matrix_http": "the same to an HTTP app (fair-matrix's default, which collaborative-reasoner's "
    "README deploy command leaves on): controller_loop_overhead + the fair_matrix_http client's CPU per request",
    "controller_legacy_aiohttp": "the same with the reference's legacy path (a new aiohttp session per request): "
    "controller_loop_overhead + the legacy_aiohttp client's CPU per request",
    "controller_pooled": "our controller (baselines.coral_controller, pooled LLMClient) measured end to end: its "
    "process's CPU seconds per LLM request, loop, prompts, parsing and output included",
    "controller_loop_overhead": "controller_pooled minus the pooled client alone: the controller's own work per "
    "LLM request (prompt building, parsing, matching, output rows), added to the other request paths; it stands in "
    "for the reference controller's own loop, which is not measured here",
    "tau2_litellm_thread": "CPU seconds of tau2's runner process per LLM call: tau2's agent generate (synchronous "
    "litellm.completion with the telecom tools) from a thread pool",
    "tau2_rewrite": "tau2's per-simulation results rewrite: seconds for the save after N simulations are "
    "max(0, a + b_per_simulation * N) (a least-squares fit of wall times of a single-threaded, CPU-bound JSON load + "
    "dump at N = 100..1519; its intercept a is a fitting artefact and can be negative), on the runner's one process",
    "p2p_hop": "CPU seconds of the agent actor process per hop (one Coral step: receive, the role's LLM call "
    "or rule, workflow, send to the next peer), mean over all hops of the real Coral roles",
    "p2p_hop_llm": "the same per LLM hop (teacher, student, extractor), the matcher's rule hops left out",
    "p2p_hop_no_llm": "CPU seconds of an agent actor per hop with dummy agents (no LLM call): the transport and "
    "step bookkeeping alone",
    "p2p_driver_and_admission_per_task": "CPU seconds of the driver, admission and sink processes per finished "
    "task (not per hop): the parts of the P2P runtime outside the agents",
}


# ----------------------------------------------------------------------------------- small helpers


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far, every thread included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def machine_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, min, max and sample standard deviation of the repeats."""
    vals = [float(v) for v in values]
    return {
        "mean": statistics.fmean(vals),
        "min": min(vals),
        "max": max(vals),
        "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def emit(record: dict[str, Any]) -> None:
    print(MARK + json.dumps(record), flush=True)


# ------------------------------------------------------------------------------- the instant server


class _InstantHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive server that answers any POST at once with a canned chat completion.

    Requests with `"max_tokens": n` at most SHORT_MAX_TOKENS get the short reply (a letter, as an
    extraction), all others the long one. `delay` seconds pass before each reply (tests use it to
    show that a client's measured CPU does not include waiting).
    """

    _MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')

    def __init__(self, long_reply: bytes, short_reply: bytes, delay: float) -> None:
        self.long_reply = long_reply
        self.short_reply = short_reply
        self.delay = delay
        self.buf = bytearray()
        self.transport: Any = None  # an asyncio.Transport (uvloop's does not subclass it)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._send(self._response(411, b'{"error": "send a Content-Length"}', close=True), True)
                return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            close = headers.get("connection", "").lower() == "close"
            method = lines[0].split(" ", 1)[0]
            if method != "POST":
                payload = b'{"object": "list", "data": [{"id": "%s", "object": "model"}]}' % MODEL.encode()
            else:
                m = self._MAX_TOKENS.search(body)
                short = m is not None and int(m.group(1)) <= SHORT_MAX_TOKENS
                payload = self.short_reply if short else self.long_reply
            resp = self._response(200, payload, close)
            if self.delay > 0:
                asyncio.get_running_loop().call_later(self.delay, self._send, resp, close)
            else:
                self._send(resp, close)

    @staticmethod
    def _response(status: int, payload: bytes, close: bool) -> bytes:
        reason = {200: "OK", 411: "Length Required"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        return head.encode() + payload

    def _send(self, resp: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(resp)
        if close:
            self.transport.close()


def completion_body(text: str, prompt_tokens: int) -> bytes:
    """An OpenAI chat completion carrying `text` (about 4 characters a token)."""
    completion_tokens = max(1, len(text) // 4)
    return json.dumps(
        {
            "id": "chatcmpl-ceiling",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


def serve(spec: dict[str, Any]) -> None:
    """The server process: bind 127.0.0.1 on a free port, print 'ready <port>', answer until killed."""
    if spec.get("kind") == "grpc":
        asyncio.run(_serve_grpc(spec))
        return
    long_reply = completion_body(spec["reply_text"], 1200)
    short_reply = completion_body(SHORT_REPLY, 600)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _InstantHTTP(long_reply, short_reply, float(spec.get("delay_s", 0.0))),
            "127.0.0.1",
            0,
            backlog=4096,
        )
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop  # the server should not be what limits a client's rate

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def _serve_grpc(spec: dict[str, Any]) -> None:
    """fair-matrix's OpenaiService over gRPC (the service its Ray Serve gRPC apps expose), answering at once.

    Runs with fair-matrix's side directory first on the path (its generated `openai_pb2` modules)."""
    import grpc
    from matrix.app_server.llm import openai_pb2, openai_pb2_grpc  # fair-matrix's

    def response(text: str, prompt_tokens: int) -> Any:
        completion_tokens = max(1, len(text) // 4)
        return openai_pb2.ChatCompletionResponse(
            id="chatcmpl-ceiling", object="chat.completion", created=1_700_000_000, model=MODEL,
            choices=[
                openai_pb2.ChatCompletionResponseChoice(
                    index=0, finish_reason="stop",
                    message=openai_pb2.CompletionMessage(role="assistant", content=text),
                )
            ],
            usage=openai_pb2.Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )  # fmt: skip

    long_reply, short_reply = response(spec["reply_text"], 1200), response(SHORT_REPLY, 600)
    delay = float(spec.get("delay_s", 0.0))

    class Instant(openai_pb2_grpc.OpenaiServiceServicer):
        async def CreateChatCompletion(self, request: Any, context: Any) -> Any:  # the proto's name
            if delay > 0:
                await asyncio.sleep(delay)
            return short_reply if 0 < request.max_tokens <= SHORT_MAX_TOKENS else long_reply

    server = grpc.aio.server()
    openai_pb2_grpc.add_OpenaiServiceServicer_to_server(Instant(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"ready {port}", flush=True)
    await server.wait_for_termination()


@contextmanager
def instant_server(
    reply_text: str,
    delay_s: float = 0.0,
    *,
    kind: str = "http",
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[int]:
    """Start a server process (`kind` http or grpc); yields its port on 127.0.0.1; stops it (by PID) after."""
    with tempfile.TemporaryDirectory(prefix="ceiling-server-") as tmp:
        spec_path = Path(tmp) / "server.json"
        spec_path.write_text(json.dumps({"reply_text": reply_text, "delay_s": delay_s, "kind": kind}))
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "experiments.bench.ceiling", "serve", str(spec_path)],
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp, env=env,
            )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready = _read_ready(proc, timeout)
            if ready is None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
                raise RuntimeError(
                    f"the instant {kind} server did not start within {timeout:g} s (exit code {proc.poll()}):\n{tail}"
                )
            yield ready
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read_ready(proc: subprocess.Popen[str], timeout: float) -> int | None:
    """The port from the server's 'ready <port>' line, or None if it exited or did not say so in time."""
    found: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready "):
                found.append(int(line.split()[1]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else None


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ client measurements


def _requests_for(spec: dict[str, Any], concurrency: int) -> int:
    """Requests per measured batch of this process's path (spec['path']) at `concurrency`."""
    return int(spec["requests"][spec["path"]][str(concurrency)])


def _repeats(spec: dict[str, Any]) -> int:
    return int(spec["repeats"][spec["path"]])


@contextmanager
def measured(path: str, concurrency: int, repeat: int, requests: int) -> Iterator[dict[str, Any]]:
    """Time one batch: CPU (user + system, this process) and wall around the block; emits one result line.
    The block sets `failed` (and may add fields) in the dict it gets."""
    gc.collect()
    record: dict[str, Any] = {"path": path, "concurrency": concurrency, "repeat": repeat, "requests": requests}
    record["failed"] = 0
    u0, s0 = cpu_seconds()
    t0 = time.perf_counter()
    yield record
    wall = time.perf_counter() - t0
    u1, s1 = cpu_seconds()
    record.update(cpu_s=(u1 - u0) + (s1 - s0), user_s=u1 - u0, sys_s=s1 - s0, wall_s=wall)
    record["python_threads"] = threading.active_count()
    emit(record)


async def _closed_loop(call: Callable[[], Awaitable[bool]], concurrency: int, n: int) -> int:
    """Run `n` calls with `concurrency` in flight (each worker starts the next as one ends); returns failures."""
    remaining = n
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if not await call():
                failures += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(concurrency, n)):
            tg.create_task(worker())
    return failures


def _warm_up_size(concurrency: int, n: int, fresh_client: bool = False) -> int:
    """Requests before the measured batches: enough to fill a connection pool at `concurrency`, or a
    few where every request makes its own client (nothing is kept from one request to the next)."""
    return min(n, 8 if fresh_client else max(concurrency, 8))


def _run_async_path(path: str, spec: dict[str, Any], make: Callable[[], Awaitable[AsyncCall]]) -> None:
    """An asyncio path: one event loop for the whole process, as the reference controller has; per
    concurrency one warm-up batch, then `repeats` measured batches."""

    async def main() -> None:
        call, close = await make()
        try:
            for c in spec["concurrency"]:
                n = _requests_for(spec, c)
                await _closed_loop(call, c, _warm_up_size(c, n, fresh_client=path in FRESH_CLIENT_PATHS))
                for r in range(_repeats(spec)):
                    with measured(path, c, r, n) as rec:
                        rec["failed"] = await _closed_loop(call, c, n)
        finally:
            await close()

    asyncio.run(main())


async def _nothing() -> None:
    return None


def client_fair_matrix(spec: dict[str, Any]) -> None:
    """The Coral reference's use_matrix call, through fair-matrix's query_llm (gRPC or HTTP app)."""
    import logging

    from matrix.client import query_llm  # fair-matrix's `matrix` (the side directory is first on the path)

    logging.getLogger("query_llm").setLevel(logging.WARNING)
    # what fair-matrix's app metadata gives as an endpoint: "host:grpc_port", or "http://host:port/<app>/v1"
    endpoint = spec["grpc_target"] if spec["path"] == "fair_matrix" else spec["url"].rstrip("/") + f"/{APP_NAME}/v1"
    messages = spec["messages"]
    counter = iter(range(10**9))

    async def endpoints(force_update: bool = False) -> list[str]:
        return [endpoint]  # fair-matrix's EndpointCache between refreshes: the cached list of the app's endpoints

    async def call() -> bool:
        result = await query_llm.make_request(
            url="",
            model=MODEL,
            app_name=APP_NAME,
            data={"messages": messages},
            temperature=0.2,
            timeout_secs=600,
            endpoint_cache=endpoints,
            max_tokens=1024,
            multiplexed_model_id=f"conv-{next(counter) % 5000}",
        )
        return "text" in result["response"]

    async def make() -> AsyncCall:
        return call, _nothing

    _run_async_path(spec["path"], spec, make)


def client_legacy_aiohttp(spec: dict[str, Any]) -> None:
    """The reference's legacy call: a new aiohttp session per request, JSON in, `response.json()` out."""
    import aiohttp

    url = spec["url"].rstrip("/") + "/v1/chat/completions"
    messages = spec["messages"]
    counter = iter(range(10**9))
    timeout_s = 600

    async def post_once(session: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str]) -> bool:
        response = await session.post(url, headers=headers, json=body)
        if response.status != 200:
            return False
        reply = await response.json()
        return bool(reply.get("choices"))

    async def call() -> bool:
        body = {"model": MODEL, "messages": messages, "temperature": 0.2, "max_tokens": 1024}
        headers = {"Content-Type": "application/json", "serve_multiplexed_model_id": f"conv-{next(counter) % 5000}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            for _ in range(3):  # the reference tries up to 3 times
                try:
                    if await asyncio.wait_for(post_once(session, body, headers), timeout_s):
                        return True
                except Exception:
                    continue
        return False

    async def make() -> AsyncCall:
        return call, _nothing

    _run_async_path("legacy_aiohttp", spec, make)


def client_pooled(spec: dict[str, Any]) -> None:
    """Our pooled client, the call a Coral dialogue role makes."""
    from matrix.llm.client import LLMClient

    messages = spec["messages"]
    counter = iter(range(10**9))

    async def make() -> AsyncCall:
        llm = LLMClient([spec["url"]], model=MODEL, max_concurrency=max(256, *spec["concurrency"]))

        async def call() -> bool:
            i = next(counter)
            reply = await llm.chat(
                messages, role="teacher", sticky_key=f"conv-{i % 5000}", seed=i, temperature=0.2, top_p=0.9,
                max_tokens=1024,
            )  # fmt: skip
            return bool(reply.get("choices"))

        return call, llm.close

    _run_async_path("pooled", spec, make)


def client_tau2(spec: dict[str, Any]) -> None:
    """tau2's agent call (its `generate`, synchronous litellm) from a thread pool, as its runner makes it."""
    from concurrent.futures import ThreadPoolExecutor

    from loguru import logger

    from matrix.cases import tau2 as case

    registry = case.import_tau2()  # offline (litellm's bundled cost map), before tau2's modules load
    logger.remove()
    from tau2.agent.llm_agent import LLMAgent as Tau2LLMAgent
    from tau2.data_model.message import AssistantMessage, UserMessage

    env = registry.get_env_constructor("telecom")()
    args = {**case.Tau2Settings().llm_args(), "api_key": "EMPTY", "api_base": spec["url"].rstrip("/") + "/v1"}
    # the Tool objects themselves: tau2's generate rebuilds their schemas on every call, as in its runner
    agent = Tau2LLMAgent(tools=env.get_tools(), domain_policy=env.get_policy(), llm=f"openai/{MODEL}", llm_args=args)
    first, second = spec["tau2_user_turns"]
    history = [
        AssistantMessage(role="assistant", content="Hi! How can I help you today?"),
        UserMessage(role="user", content=first),
        AssistantMessage(role="assistant", content=spec["reply_text"]),
    ]

    def one() -> bool:
        state = agent.get_init_state(list(history))
        reply, _ = agent.generate_next_message(UserMessage(role="user", content=second), state)
        return bool(reply.content)

    def batch(pool: ThreadPoolExecutor, threads: int, n: int) -> int:
        lock = threading.Lock()
        left, failed = [n], [0]

        def worker() -> None:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                try:
                    ok = one()
                except Exception:
                    ok = False
                if not ok:
                    with lock:
                        failed[0] += 1

        for f in [pool.submit(worker) for _ in range(threads)]:
            f.result()
        return failed[0]

    for c in spec["concurrency"]:
        n = _requests_for(spec, c)
        # one pool per concurrency, as tau2's run_tasks keeps one for the run; the warm-up starts its threads
        with ThreadPoolExecutor(max_workers=c) as pool:
            batch(pool, c, min(n, 8))
            for r in range(_repeats(spec)):
                with measured("tau2_litellm_thread", c, r, n) as rec:
                    rec["failed"] = batch(pool, c, n)


def client_controller_loop(spec: dict[str, Any]) -> None:
    """Our Coral central controller end to end; CPU per LLM request of its whole process."""
    from baselines.coral_controller import ControllerConfig, run_controller_async
    from matrix.cases.coral import generated_questions

    def run(rows: list[dict[str, Any]], window: int, run_dir: Path) -> dict[str, Any]:
        cfg = ControllerConfig(
            urls=[spec["url"]], model=MODEL, window=window, run_dir=run_dir, progress=False,
            max_concurrency=max(256, window),
        )  # fmt: skip
        return asyncio.run(run_controller_async(rows, cfg))

    with tempfile.TemporaryDirectory(prefix="ceiling-controller-") as tmp:
        for c in spec["concurrency"]:
            conversations = _requests_for(spec, c)
            rows = generated_questions(conversations, seed=1)
            run(rows[: _warm_up_size(c, conversations)], c, Path(tmp) / f"warm-{c}")
            for r in range(_repeats(spec)):
                # requests is set after the run, from the client's count (4 per conversation when all agree)
                with measured("controller_loop", c, r, 0) as rec:
                    m = run(rows, c, Path(tmp) / f"c{c}-r{r}")  # a fresh run directory: nothing to resume
                    rec["requests"] = int(m["llm_client"]["requests"])
                    rec["conversations"] = conversations
                    rec["failed"] = int(m["llm_client"]["failures"]) + int(m.get("tasks_failed", 0))


CLIENTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fair_matrix": client_fair_matrix,
    "fair_matrix_http": client_fair_matrix,
    "legacy_aiohttp": client_legacy_aiohttp,
    "pooled": client_pooled,
    "tau2_litellm_thread": client_tau2,
    "controller_loop": client_controller_loop,
}


# -------------------------------------------------------------------------------------- P2P on Ray


def _proc_cpu(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each process so far: the sum of its threads' on-CPU time in nanoseconds
    (/proc/<pid>/task/*/schedstat), which is finer than the 10 ms ticks of /proc/<pid>/stat; a
    process that is gone is left out."""
    out: dict[int, float] = {}
    for pid in pids:
        total, seen = 0, False
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
                seen = True
            except (OSError, ValueError, IndexError):
                continue
        if seen:
            out[pid] = total / 1e9
    return out


def _cluster_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def client_p2p(spec: dict[str, Any]) -> None:
    """Coral (or the dummy Coral-shaped agents) on the Ray P2P runtime; CPU per hop of each process kind.

    One run per concurrency with `repeats` x n tasks (building a deployment costs seconds here, a
    run of n tasks about one): a sampler thread reads every agent's hop counter and every process's
    CPU time as the run goes, and the run is cut into `repeats` windows of equal hops, one result
    line each (the first and last windows hold the ramp-up and the drain).
    """
    import ray

    from matrix.runtime.ray_p2p import ensure_ray

    ensure_ray()  # one Ray for every P2P path of this process (starting it costs seconds here)
    with tempfile.TemporaryDirectory(prefix="ceiling-p2p-") as tmp:
        for path in spec["paths"]:
            for c in spec["concurrency"]:
                _p2p_point({**spec, "path": path}, c, Path(tmp) / f"{path}-c{c}")
    ray.shutdown()


class _P2PRun:
    """One deployment's processes and the samples taken while it ran."""

    def __init__(self, dep: Any) -> None:
        import ray

        self.ray = ray
        self.agents: dict[str, Any] = dict(dep.all_agents())
        self.agent_pid = {name: int(ray.get(h.stats.remote())["pid"]) for name, h in self.agents.items()}
        pid_calls = [h.__ray_call__.remote(_own_pid) for h in [*dep.admissions.values(), *dep.sinks.values()]]
        self.other_pids = sorted({int(p) for p in ray.get(pid_calls, timeout=60)})
        known = {*self.agent_pid.values(), *self.other_pids}
        self.system_pids = [p for p in _cluster_pids() if p not in known]
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def idle_rate(self, seconds: float) -> float:
        """CPU seconds per second of all agents together while nothing runs."""
        pids = list(self.agent_pid.values())
        before = _proc_cpu(pids)
        time.sleep(seconds)
        after = _proc_cpu(pids)
        return sum(after.get(p, 0.0) - before.get(p, 0.0) for p in pids) / seconds

    def sample(self) -> None:
        snaps = self.ray.get([h.stats.remote() for h in self.agents.values()])
        hops: dict[str, float] = {}
        for name, snap in zip(self.agents, snaps, strict=True):
            hops[name] = float(sum(snap["counters"].get("hops", {}).values()))
            hops[name + "/llm"] = float((snap.get("llm_calls") or {}).get("requests", 0))
        user, system = cpu_seconds()
        cpu = _proc_cpu([*self.agent_pid.values(), *self.other_pids, *self.system_pids])
        self.samples.append({"t": time.perf_counter(), "hops": hops, "driver": user + system, "cpu": cpu})

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def __enter__(self) -> _P2PRun:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def hops(self, s: dict[str, Any]) -> float:
        return sum(s["hops"][a] for a in self.agents)

    def windows(self, k: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The samples cut into `k` consecutive windows of about equal hops (fewer if the run was too short)."""
        first, last = self.samples[0], self.samples[-1]
        total = self.hops(last) - self.hops(first)
        cuts = [first]
        for i in range(1, k):
            target = self.hops(first) + total * i / k
            nxt = next((s for s in self.samples if self.hops(s) >= target), last)
            if nxt is not cuts[-1] and nxt is not last:
                cuts.append(nxt)
        cuts.append(last)
        return [(a, b) for a, b in itertools.pairwise(cuts) if self.hops(b) > self.hops(a)]


def _own_pid(_actor: Any) -> int:
    return os.getpid()


def _used(a: dict[str, Any], b: dict[str, Any], pids: Sequence[int]) -> float:
    return sum(b["cpu"].get(p, a["cpu"].get(p, 0.0)) - a["cpu"].get(p, 0.0) for p in pids)


def _p2p_point(spec: dict[str, Any], c: int, run_dir: Path) -> None:
    from matrix.runtime.ray_p2p import RayRun

    n = _requests_for(spec, c) * _repeats(spec)
    dep = RayRun(_p2p_config(spec, spec["path"] == "p2p_no_llm", n, c, run_dir))
    try:
        run = _P2PRun(dep)
        idle = run.idle_rate(IDLE_SECONDS)
        with run:
            m = dep.run()
    finally:
        dep.shutdown()
    failed = int(m["tasks_failed"]) + int(m.get("tasks_lost", 0))
    for r, (a, b) in enumerate(run.windows(_repeats(spec))):
        by_role: dict[str, dict[str, float]] = {}
        for name in run.agents:
            entry = by_role.setdefault(name.rsplit("-", 1)[0], {"hops": 0.0, "cpu_s": 0.0, "llm_requests": 0.0})
            entry["hops"] += b["hops"][name] - a["hops"][name]
            entry["llm_requests"] += b["hops"][name + "/llm"] - a["hops"][name + "/llm"]
            entry["cpu_s"] += _used(a, b, [run.agent_pid[name]])
        emit(
            {
                "path": spec["path"],
                "concurrency": c,
                "repeat": r,
                "tasks_in_run": n,
                "tasks_finished_in_run": int(m["tasks_finished"]),
                "failed": failed if r == 0 else 0,
                "hops": sum(e["hops"] for e in by_role.values()),
                "llm_requests": sum(e["llm_requests"] for e in by_role.values()),
                "agents_cpu_s": _used(a, b, list(run.agent_pid.values())),
                "by_role": by_role,
                "admission_sink_cpu_s": _used(a, b, run.other_pids),
                "ray_system_cpu_s": _used(a, b, run.system_pids),
                "driver_cpu_s": b["driver"] - a["driver"],
                "agents_idle_cpu_per_s": idle,
                "wall_s": b["t"] - a["t"],
            }
        )


def _p2p_config(spec: dict[str, Any], dummy: bool, tasks: int, concurrency: int, run_dir: Path) -> Any:
    from matrix.runtime.config import RunConfig

    if dummy:
        from matrix.bench.dummy import coral_dummy_roles

        roles, source, workflow, module = (
            coral_dummy_roles(1),
            [{"id": i} for i in range(tasks)],
            "coral-dummy",
            "matrix.bench.dummy",
        )
    else:
        from matrix.cases.coral import WORKFLOW, CoralDeployment, generated_questions

        roles = CoralDeployment(urls=[spec["url"]], model=MODEL, max_concurrency=max(256, concurrency)).roles()
        source, workflow, module = generated_questions(tasks, seed=1), WORKFLOW, "matrix.cases.coral"
    return RunConfig(
        workflow=workflow, roles=roles, source=source, run_dir=run_dir, max_concurrent_tasks=concurrency,
        progress=False, workflow_modules=[module],
    )  # fmt: skip


# ------------------------------------------------------------------------------------- orchestration


def fair_matrix_dir(given: Path | None = None) -> Path:
    return Path(given) if given is not None else _project_root() / FAIR_MATRIX_DIR


def fair_matrix_installed(side: Path) -> bool:
    return (side / "matrix" / "client" / "query_llm.py").is_file() and any(side.glob("fair_matrix-*.dist-info"))


def install_fair_matrix(side: Path) -> int:
    """pip install --no-deps --target <side> fair-matrix and the few packages its client needs at its versions."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(side), *FAIR_MATRIX_SIDE]
    print("matrix bench ceiling: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def _run_client(
    path: str, spec: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run one client process on `spec`; its result lines (stderr goes to a log whose tail a failure shows)."""
    spec_path = workdir / f"{path}.json"
    spec_path.write_text(json.dumps({**spec, "path": path}))
    log = workdir / f"{path}.log"
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.bench.ceiling", "client", str(spec_path)],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=workdir, env=env, check=False,
        )  # fmt: skip
    points = [json.loads(line[len(MARK) :]) for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the {path} client process exited with {proc.returncode}; its stderr ends:\n{tail}")
    return points


def _aggregate_requests(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in sorted({p["concurrency"] for p in points}):
        ps = [p for p in points if p["concurrency"] == c]
        cpu = [p["cpu_s"] / p["requests"] for p in ps]
        out.append(
            {
                "concurrency": c,
                "requests_per_repeat": ps[0]["requests"],
                "repeats": len(ps),
                "failed": sum(p["failed"] for p in ps),
                "cpu_s_per_request": summary(cpu),
                "cpu_us_per_request": round(1e6 * statistics.fmean(cpu), 1),
                "user_s_per_request": statistics.fmean(p["user_s"] / p["requests"] for p in ps),
                "sys_s_per_request": statistics.fmean(p["sys_s"] / p["requests"] for p in ps),
                "wall_s_per_request": summary([p["wall_s"] / p["requests"] for p in ps]),
                "requests_per_s": summary([p["requests"] / p["wall_s"] for p in ps]),
                "cpu_utilisation": statistics.fmean(p["cpu_s"] / p["wall_s"] for p in ps),
                "python_threads": max(p.get("python_threads", 1) for p in ps),
            }
        )
    return out


def _aggregate_p2p(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in sorted({p["concurrency"] for p in points}):
        ps = [p for p in points if p["concurrency"] == c]
        roles = sorted({r for p in ps for r in p["by_role"]})
        by_role = {}
        for role in roles:
            per = [p["by_role"][role]["cpu_s"] / p["by_role"][role]["hops"] for p in ps if p["by_role"][role]["hops"]]
            by_role[role] = {
                "cpu_s_per_hop": summary(per),
                "cpu_us_per_hop": round(1e6 * statistics.fmean(per), 1),
                "hops_in_run": sum(p["by_role"][role]["hops"] for p in ps),
                "llm_requests_in_run": sum(p["by_role"][role]["llm_requests"] for p in ps),
            }
        llm_roles = [r for r in roles if ps[0]["by_role"][r]["llm_requests"] > 0]
        hop = [p["agents_cpu_s"] / p["hops"] for p in ps]
        llm_hop = (
            [
                sum(p["by_role"][r]["cpu_s"] for r in llm_roles) / sum(p["by_role"][r]["hops"] for r in llm_roles)
                for p in ps
            ]
            if llm_roles
            else []
        )
        tasks = ps[0]["tasks_in_run"]
        out.append(
            {
                "concurrency": c,
                "tasks_in_run": tasks,
                "hops_in_run": sum(p["hops"] for p in ps),
                "llm_requests_in_run": sum(p["llm_requests"] for p in ps),
                "windows": len(ps),
                "failed": ps[0]["failed"],
                "agent_cpu_s_per_hop": summary(hop),
                "agent_cpu_us_per_hop": round(1e6 * statistics.fmean(hop), 1),
                "agent_cpu_s_per_llm_hop": summary(llm_hop) if llm_hop else None,
                "by_role": by_role,
                "admission_sink_cpu_s_per_task": sum(p["admission_sink_cpu_s"] for p in ps) / tasks,
                "driver_cpu_s_per_task": sum(p["driver_cpu_s"] for p in ps) / tasks,
                "driver_cpu_s_per_hop": sum(p["driver_cpu_s"] for p in ps) / sum(p["hops"] for p in ps),
                "ray_system_cpu_s_per_hop": sum(p["ray_system_cpu_s"] for p in ps) / sum(p["hops"] for p in ps),
                "agents_idle_cpu_per_s": ps[0]["agents_idle_cpu_per_s"],
                "wall_s": sum(p["wall_s"] for p in ps),
                "hops_per_s": summary([p["hops"] / p["wall_s"] for p in ps]),
            }
        )
    return out


def coral_request_messages() -> list[dict[str, str]]:
    """A mid-conversation Coral dialogue request: system prompt, the opening, two turns of REPLY_CHARS."""
    from matrix.bench.dummy import canned_text
    from matrix.cases.coral import dialogue_messages, generated_questions, question_of

    q = question_of(generated_questions(1, seed=1)[0])
    said = [("teacher", canned_text(REPLY_CHARS, 1)), ("student", canned_text(REPLY_CHARS, 2))]
    return dialogue_messages(q, said)


def _rewrite_fit() -> dict[str, Any] | None:
    path = _project_root() / REWRITE_FIT
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    fit = doc.get("fit_save_seconds") or {}
    return {
        "a": fit.get("a"),
        "b_per_simulation": fit.get("b_per_simulation"),
        "source": str(REWRITE_FIT),
        "bytes_per_simulation": doc.get("bytes_per_simulation"),
        "what": doc.get("what"),
    }


def _point_at(points: list[dict[str, Any]] | None, c: int) -> dict[str, Any] | None:
    return next((p for p in points or [] if p["concurrency"] == c), None)


def charges_at(paths: dict[str, Any], c: int) -> dict[str, Any]:
    """The charges the virtual clock reads, from the points measured at concurrency `c` (None where not measured)."""

    def per_request(path: str) -> float | None:
        p = _point_at(paths.get(path, {}).get("points"), c)
        return p["cpu_s_per_request"]["mean"] if p else None

    pooled, loop = per_request("pooled"), per_request("controller_loop")
    overhead = loop - pooled if loop is not None and pooled is not None else None

    def controller(path: str) -> float | None:
        v = per_request(path)
        return v + overhead if v is not None and overhead is not None else None

    p2p = _point_at(paths.get("p2p", {}).get("points"), c)
    dummy = _point_at(paths.get("p2p_no_llm", {}).get("points"), c)
    return {
        "controller_fair_matrix": controller("fair_matrix"),
        "controller_fair_matrix_http": controller("fair_matrix_http"),
        "controller_legacy_aiohttp": controller("legacy_aiohttp"),
        "controller_pooled": loop,
        "controller_loop_overhead": overhead,
        "tau2_litellm_thread": per_request("tau2_litellm_thread"),
        "p2p_hop": p2p["agent_cpu_s_per_hop"]["mean"] if p2p else None,
        "p2p_hop_llm": p2p["agent_cpu_s_per_llm_hop"]["mean"] if p2p and p2p["agent_cpu_s_per_llm_hop"] else None,
        "p2p_hop_no_llm": dummy["agent_cpu_s_per_hop"]["mean"] if dummy else None,
        "p2p_driver_and_admission_per_task": (
            p2p["admission_sink_cpu_s_per_task"] + p2p["driver_cpu_s_per_task"] if p2p else None
        ),
    }


_FM_CALL = (
    "fair-matrix {v} matrix.client.query_llm.make_request(url='', endpoint_cache=<async callable: [endpoint]>, "
    "app_name='8B', data={{'messages': ...}}, temperature=0.2, timeout_secs=600, max_tokens=1024, "
    "multiplexed_model_id=<conversation id>): the call collaborative-reasoner's generate_next_turn_candidates makes "
    "with use_matrix. fair-matrix from a side directory (--no-deps, with its pins openai 1.109.1, httpx 0.28.1, "
    "grpcio 1.70.0). "
)
WHAT = {
    "fair_matrix": _FM_CALL + "gRPC app (use_grpc true, as fair-matrix's agents README deploys Llama-3.1-8B for the "
    "paper's Coral runs): endpoint '127.0.0.1:<port>', one new grpc.aio.insecure_channel per request (as fair-matrix "
    "does), against an instant server of fair-matrix's own OpenaiService proto (a separate process) in place of the "
    "Ray Serve gRPC proxy",
    "fair_matrix_http": _FM_CALL + "HTTP app (use_grpc false, fair-matrix's default, which collaborative-reasoner's "
    "README deploy command leaves on): endpoint 'http://127.0.0.1:<port>/8B/v1', one new openai.AsyncOpenAI client "
    "per request (as fair-matrix does), against the instant OpenAI-compatible server in place of the Ray Serve HTTP "
    "proxy",
    "legacy_aiohttp": "collaborative-reasoner's non-matrix path re-implemented: per request a new ClientSession "
    "(600 s total timeout), session.post(json=body, headers incl. serve_multiplexed_model_id) under "
    "asyncio.wait_for(600), reply read with response.json(), up to 3 tries",
    "pooled": "matrix.llm.client.LLMClient.chat (one pooled aiohttp session, keep-alive, max_concurrency >= "
    "concurrency), the call of a Coral dialogue role",
    "tau2_litellm_thread": "tau2.agent.llm_agent.LLMAgent.generate_next_message (tau2's generate -> synchronous "
    "litellm.completion, telecom tools and policy, openai/<model> at the server) from a ThreadPoolExecutor with "
    "<concurrency> threads",
    "controller_loop": "baselines.coral_controller.run_controller_async end to end (window = concurrency, pooled "
    "client, output rows written); extraction replies name (B), so every conversation agrees after 2 dialogue turns: "
    "4 LLM calls each. CPU per LLM request of the whole process",
    "p2p": "the Coral case (matrix.cases.coral roles: teacher, student, extractor, matcher, one actor each) on the Ray "
    "P2P runtime (RayRun), max_concurrent_tasks = concurrency, one run of repeats x n conversations cut into windows "
    "of equal hops; CPU of each process from /proc/<pid>/task/*/schedstat, hops from each agent's counters, sampled "
    f"every {SAMPLE_SECONDS:g} s by the driver (so the driver's figure includes that sampling); each conversation is "
    "6 hops (4 LLM calls)",
    "p2p_no_llm": "the same with matrix.bench.dummy's coral-dummy agents (canned 1,600-character turns, no LLM): the "
    "hop without the request",
}


def run_ceiling(
    *,
    concurrencies: Sequence[int] = DEFAULT_CONCURRENCY,
    repeats: int = 3,
    paths: Sequence[str] = ALL_PATHS,
    requests: Callable[[str, int], int] | None = None,
    fair_matrix: Path | None = None,
    server_delay_s: float = 0.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every path in `paths` at each concurrency; returns the document (see module docstring)."""
    from matrix.bench.dummy import canned_text

    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        raise ValueError(f"unknown ceiling path(s) {unknown}; choose from {', '.join(ALL_PATHS)}")
    count = requests or default_requests
    side = fair_matrix_dir(fair_matrix)
    reply_text = canned_text(REPLY_CHARS, 3)
    messages = coral_request_messages()
    started = _dt.datetime.now(_dt.UTC)
    doc: dict[str, Any] = {
        "benchmark": "process_ceiling",
        "issue": "#19 item 3: the single-process ceiling, measured for real",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "load_average_before": load_average(),
        "measured": "CPU seconds (user + system, every thread) of the client process alone per LLM request, from "
        "resource.getrusage(RUSAGE_SELF) around each batch (P2P: each Ray actor process's threads' on-CPU time from "
        "/proc/<pid>/task/*/schedstat, and the driver's getrusage); wall seconds beside it. The server is another "
        "process and is not counted.",
        "load_note": "the machine is shared with other CPU-heavy work while this runs (load averages before and "
        "after): CPU times count only the measured processes' own time, but contention for caches and cores can "
        "raise them somewhat, and it lowers every wall-clock figure (wall_s, requests_per_s, hops_per_s)",
        "server": {
            "kind": "instant OpenAI-compatible HTTP/1.1 server (asyncio protocol, uvloop), a separate process bound "
            "to 127.0.0.1, keep-alive; answers every POST at once",
            "reply_chars": REPLY_CHARS,
            "reply_completion_tokens": REPLY_CHARS // 4,
            "short_reply": SHORT_REPLY,
            "short_reply_when": f"max_tokens <= {SHORT_MAX_TOKENS} (Coral's extraction calls)",
            "delay_s": server_delay_s,
        },
        "request": {
            "what": "a mid-conversation Coral dialogue request: Coral's system prompt, the opening (question and "
            "lettered choices) and two earlier turns of 1,600 characters",
            "messages": len(messages),
            "json_bytes": len(json.dumps(messages)),
        },
        "settings": {
            "concurrency": list(concurrencies),
            "repeats": repeats,
            "repeats_capped": {p: n for p, n in REPEATS_CAP.items() if p in paths and n < repeats},
            "paths": list(paths),
        },
        "paths": {},
    }
    fair_ok = fair_matrix_installed(side)
    any_ray = any(p in RAY_PATHS for p in paths)
    side_env = {**os.environ, "PYTHONPATH": str(side)}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ceiling-")))
        port = stack.enter_context(instant_server(reply_text, server_delay_s))
        grpc_port = None
        if "fair_matrix" in paths and fair_ok:
            grpc_port = stack.enter_context(instant_server(reply_text, server_delay_s, kind="grpc", env=side_env))
        base = {
            "url": f"http://127.0.0.1:{port}",
            "grpc_target": f"127.0.0.1:{grpc_port}",
            "messages": messages,
            "reply_text": reply_text,
            "concurrency": list(concurrencies),
            "tau2_user_turns": [
                "Hi, my phone has no mobile data since this morning and I need it fixed today.",
                "I restarted it twice and it still shows no data. What should I try next?",
            ],
        }
        # one client process per path; the P2P paths share one (and its Ray)
        groups = [[p] for p in paths if p not in RAY_PATHS] + ([[p for p in paths if p in RAY_PATHS]] * any_ray)
        for group in groups:
            entries = {p: {"what": WHAT[p].format(v=FAIR_MATRIX_VERSION)} for p in group}
            env = None
            if group[0] in FAIR_MATRIX_PATHS:
                if not fair_ok:
                    reason = f"fair-matrix {FAIR_MATRIX_VERSION} is not installed at {side}"
                    progress(
                        f"{group[0]}: skipped, {reason} (matrix bench ceiling --install-fair-matrix puts it there)"
                    )
                    doc["paths"][group[0]] = {**entries[group[0]], "status": "skipped", "reason": reason}
                    continue
                env = side_env
            spec = {
                **base,
                "path": group[0],
                "paths": group,
                "requests": {p: {str(c): count(p, c) for c in concurrencies} for p in group},
                "repeats": {p: min(repeats, REPEATS_CAP.get(p, repeats)) for p in group},
            }
            progress(f"measuring {', '.join(group)} at {', '.join(map(str, concurrencies))} in flight ...")
            t0 = time.monotonic()
            points = _run_client(group[0], spec, workdir, env)
            seconds = time.monotonic() - t0
            for p in group:
                mine = [x for x in points if x["path"] == p]
                agg = _aggregate_p2p(mine) if p in RAY_PATHS else _aggregate_requests(mine)
                doc["paths"][p] = {**entries[p], "status": "measured", "points": agg, "process_seconds": seconds}
                progress(format_path(p, agg))
    doc["load_average_after"] = load_average()
    top = max(concurrencies)
    doc["charges_concurrency"] = top
    doc["charges"] = {**charges_at(doc["paths"], top), "tau2_rewrite": _rewrite_fit()}
    doc["charges_meaning"] = {
        **CHARGE_MEANING,
        "all": f"seconds of one CPU of this machine ({doc['machine']['cores']} cores, {doc['machine']['cpu_model']}) "
        f"per LLM request (controllers, tau2) or per hop (P2P), measured at {top} requests in flight; "
        "charges_by_concurrency has the other concurrencies. None: that path was not measured.",
    }
    doc["charges_by_concurrency"] = {str(c): charges_at(doc["paths"], c) for c in concurrencies}
    return doc


# Per measured batch: (at concurrency 1, multiple of the concurrency above it). Requests, except
# controller_loop (conversations, 4 requests each) and the P2P paths (tasks per window). Sized so
# that the whole benchmark takes about 3 minutes here: fair_matrix_http costs ~25 ms of CPU a
# request and tau2 ~8 ms, the others well under 1 ms.
BATCH = {
    "fair_matrix": (300, 4),
    "fair_matrix_http": (16, 1),
    "legacy_aiohttp": (300, 4),
    "pooled": (300, 4),
    "tau2_litellm_thread": (50, 1),
    "controller_loop": (32, 1),
    "p2p": (16, 1),
    "p2p_no_llm": (16, 1),
}


# fair_matrix_http spends ~25 ms of CPU a request, flat in concurrency (a new client each time): two batches
REPEATS_CAP = {"fair_matrix_http": 2}


def default_requests(path: str, concurrency: int) -> int:
    """Requests (controller: conversations; P2P: tasks per window) per measured batch, at least the concurrency."""
    low, factor = BATCH[path]
    return low if concurrency == 1 else max(low, factor * concurrency)


def format_path(path: str, points: list[dict[str, Any]]) -> str:
    parts = []
    for p in points:
        if "cpu_s_per_request" in p:
            s = p["cpu_s_per_request"]
            parts.append(
                f"c={p['concurrency']}: {1e6 * s['mean']:.0f} us/request ({1e6 * s['min']:.0f}-{1e6 * s['max']:.0f}), "
                f"{p['requests_per_s']['mean']:.0f} req/s"
            )
        else:
            s = p["agent_cpu_s_per_hop"]
            parts.append(
                f"c={p['concurrency']}: {1e6 * s['mean']:.0f} us/hop ({1e6 * s['min']:.0f}-{1e6 * s['max']:.0f}), "
                f"{p['hops_per_s']['mean']:.0f} hops/s"
            )
    return f"{path}: " + "; ".join(parts)


def format_charges(doc: dict[str, Any]) -> str:
    lines = [f"charges (CPU seconds of one core, at {doc['charges_concurrency']} in flight):"]
    for key, value in doc["charges"].items():
        if isinstance(value, dict):
            lines.append(f"  {key}: a={value.get('a')}, b_per_simulation={value.get('b_per_simulation')}")
        else:
            lines.append(f"  {key}: {'not measured' if value is None else f'{1e6 * value:.0f} us'}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """`matrix bench ceiling`."""
    from matrix.runtime.report import write_json

    side = fair_matrix_dir(args.fair_matrix_dir)
    if args.install_fair_matrix and not fair_matrix_installed(side):
        rc = install_fair_matrix(side)
        if rc != 0:
            print(f"matrix bench ceiling: installing fair-matrix into {side} failed (pip exit {rc})", file=sys.stderr)
            return rc
    paths = [p.strip() for p in args.paths.split(",") if p.strip()] if args.paths else list(ALL_PATHS)
    concurrency = list(args.concurrency or DEFAULT_CONCURRENCY)
    out = args.out or DEFAULT_OUT
    scale = float(args.scale)
    if scale <= 0 or args.repeats < 1:
        print(f"matrix bench ceiling: need --scale > 0 and --repeats >= 1, got {args.scale} and {args.repeats}",
              file=sys.stderr)  # fmt: skip
        return 2

    def requests(path: str, c: int) -> int:
        return max(c, round(default_requests(path, c) * scale), 4)

    try:
        doc = run_ceiling(
            concurrencies=concurrency, repeats=args.repeats, paths=paths, requests=requests, fair_matrix=side,
            progress=lambda line: print(line, flush=True),
        )  # fmt: skip
    except ValueError as e:
        print(f"matrix bench ceiling: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a client or server process failed; the message has its log's tail
        print(f"matrix bench ceiling: {e}", file=sys.stderr)
        return 1
    write_json(out, doc)
    print(format_charges(doc))
    print(f"wrote {out}")
    failed = sum(
        p.get("failed", 0) for entry in doc["paths"].values() for p in entry.get("points", []) if isinstance(p, dict)
    )
    if failed:
        print(f"matrix bench ceiling: {failed} requests or tasks failed (see 'failed' in {out})", file=sys.stderr)
    return 1 if failed else 0


def _entry(argv: list[str]) -> int:
    """The server and client processes: `serve SPEC` or `client SPEC` (SPEC a JSON file)."""
    if len(argv) != 2 or argv[0] not in ("serve", "client"):
        print("usage: python -m experiments.bench.ceiling {serve|client} SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    if argv[0] == "serve":
        serve(spec)
        return 0
    path = spec["path"]
    if path in RAY_PATHS:
        client_p2p(spec)
    else:
        CLIENTS[path](spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(_entry(sys.argv[1:]))
