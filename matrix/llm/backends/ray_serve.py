"""`vllm` and `sglang`: model replicas on Ray Serve behind one OpenAI-compatible route per model.

This is how the paper served its models: each model is a Serve application at `/<app name>` (the
Matrix repository's layout), with autoscaling between `min_replicas` and `max_replicas`, a hard cap
of `max_ongoing_requests` per replica and an autoscaler setpoint at 80% of it, and an HTTP proxy on
every node (`proxy_location="EveryNode"`) so that agents on any node reach a local proxy.

- `vllm` uses Ray's own integration, `ray.serve.llm` (`LLMConfig` + `build_openai_app`): an
  OpenAI ingress deployment in front of `LLMServer` replicas that each run a vLLM engine. The same
  path serves on CPU with `accelerator_config={"kind": "cpu"}` (measured at 93-98% of the plain
  vLLM server's throughput), which is how the tests exercise it without a GPU.
- `sglang` runs `python -m sglang.launch_server` as a child process of each Serve replica (on the
  replica's GPUs, found through `CUDA_VISIBLE_DEVICES`) and relays HTTP to it, streaming included;
  Serve health-checks each replica through the child's `/health`. This mirrors the Matrix
  repository, which launches `sglang.launch_server` per replica, and keeps SGLang's full OpenAI
  surface (every sampling parameter, usage in streams, tool parsers). Ray 2.60 also ships an
  experimental in-process `SGLangServer` for `ray.serve.llm` (internal module, early development;
  it forwards only temperature/top_p/max_tokens/stop and strips the completion text);
  `mode="serve-llm"` selects it.

The config builders (`vllm_llm_config`, `sglang_command`, ...) return plain data and need neither
Ray nor an engine installed, so that tests and dry runs can check what would be deployed. A backend
that needs GPUs refuses, before anything heavy starts, on a cluster without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from matrix.llm.backends._process import free_port, stop_process, wait_healthy
from matrix.llm.backends.base import Backend, BackendError, Pool, PoolSpec, Server
from matrix.llm.backends.model_defaults import ModelServingSpec, serving_spec
from matrix.llm.backends.openai_api import ModelsProbeError, list_models

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from starlette.requests import Request
    from starlette.responses import Response

logger = logging.getLogger(__name__)

# The paper's main model; a bare `start()` serves it like the Coral runs did.
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
_SMOLLM2_NAMES = frozenset({"smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"})

# Ray 2.60's experimental in-process SGLang server for `ray.serve.llm` (an internal module).
RAY_SGLANG_SERVER_CLS = "ray.llm._internal.serve.engines.sglang:SGLangServer"

# SGLang names the tool-call parsers differently from vLLM.
_SGLANG_TOOL_PARSERS = {"llama3_json": "llama3", "openai": "gpt-oss", "hermes": "qwen25"}

# Headers that describe one HTTP hop, not the message; the relay does not forward them upstream.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
)


# ---------------------------------------------------------------------------------------------
# Pure config builders (no Ray, no engine).
# ---------------------------------------------------------------------------------------------


def app_name_for(model: str) -> str:
    """A Serve application name (and route) for `model`: its last path part, URL-safe."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", model.rstrip("/").rsplit("/", 1)[-1]).strip("-")
    return name or "llm"


def serve_deployment_config(spec: ModelServingSpec) -> dict[str, Any]:
    """Replica count, autoscaling and the per-replica request cap, as `@serve.deployment` takes them."""
    low, high = spec.replica_bounds
    return {
        "max_ongoing_requests": spec.max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": spec.autoscaling_target,
        },
    }


def vllm_engine_kwargs(spec: ModelServingSpec) -> dict[str, Any]:
    """vLLM engine arguments (the `vllm serve` flags, snake_case) for one replica."""
    kwargs: dict[str, Any] = {"tensor_parallel_size": spec.tensor_parallel_size, "dtype": spec.dtype}
    if spec.pipeline_parallel_size > 1:
        kwargs["pipeline_parallel_size"] = spec.pipeline_parallel_size
    if spec.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = spec.enable_prefix_caching
    if spec.max_model_len is not None:
        kwargs["max_model_len"] = spec.max_model_len
    if spec.gpu_memory_utilization is not None and spec.accelerator == "gpu":
        kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
    if spec.enforce_eager:
        kwargs["enforce_eager"] = True
    if spec.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if spec.enable_auto_tool_choice:
        if not spec.tool_call_parser:
            raise ValueError(f"enable_auto_tool_choice needs a tool_call_parser for {spec.model}")
        kwargs["enable_auto_tool_choice"] = True
        kwargs["tool_call_parser"] = spec.tool_call_parser
    kwargs.update(spec.extra_engine_kwargs)
    return kwargs


def vllm_llm_config(
    spec: ModelServingSpec,
    *,
    placement_group_config: Mapping[str, Any] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `ray.serve.llm.LLMConfig` for `spec`, as plain data.

    On CPU the engine runs under `accelerator_config={"kind": "cpu"}` and the replica actor
    reserves no CPU of its own beyond the engine's bundle, so that one replica fits a 2-core
    machine next to the ingress and the proxy.
    """
    deployment = serve_deployment_config(spec)
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model, "model_source": spec.weights},
        "deployment_config": deployment,
        "engine_kwargs": vllm_engine_kwargs(spec),
    }
    if spec.accelerator == "cpu":
        config["accelerator_config"] = {"kind": "cpu"}
        deployment["ray_actor_options"] = {"num_cpus": 0}
    elif spec.accelerator_type:
        config["accelerator_type"] = spec.accelerator_type
    if placement_group_config:
        config["placement_group_config"] = dict(placement_group_config)
    env = {**spec.env, **(runtime_env or {}).get("env_vars", {})}
    if env or runtime_env:
        config["runtime_env"] = {**(runtime_env or {}), "env_vars": env}
    return config


def ingress_deployment_config(spec: ModelServingSpec, replicas: int | None = None) -> dict[str, Any]:
    """Options for the OpenAI ingress in front of the model replicas.

    Ray's default is one ingress replica whatever the model's size; here the ingress gets one
    replica per model replica (up to `max_replicas`) so it does not become the bottleneck at paper scale.
    On CPU it reserves no CPU, so that the engine keeps the machine's cores.
    """
    _, high = spec.replica_bounds
    count = replicas if replicas is not None else max(1, high)
    options: dict[str, Any] = {"autoscaling_config": {"min_replicas": count, "max_replicas": count}}
    if spec.accelerator == "cpu":
        options["ray_actor_options"] = {"num_cpus": 0}
    return options


def sglang_command(
    spec: ModelServingSpec,
    port: int,
    *,
    host: str = "127.0.0.1",
    python: str = sys.executable,
) -> list[str]:
    """The `sglang.launch_server` command line for one replica of `spec` listening on `host:port`."""
    cmd = [
        python,
        "-m",
        "sglang.launch_server",
        "--model-path",
        spec.weights,
        "--served-model-name",
        spec.model,
        "--host",
        host,
        "--port",
        str(port),
        "--tp",
        str(spec.tensor_parallel_size),
        "--max-running-requests",
        str(spec.max_ongoing_requests),
    ]
    if spec.pipeline_parallel_size > 1:
        cmd += ["--pp-size", str(spec.pipeline_parallel_size)]
    if spec.max_model_len is not None:
        cmd += ["--context-length", str(spec.max_model_len)]
    mem = spec.mem_fraction_static if spec.mem_fraction_static is not None else spec.gpu_memory_utilization
    if mem is not None:
        cmd += ["--mem-fraction-static", str(mem)]
    if spec.dtype != "auto":
        cmd += ["--dtype", spec.dtype]
    if spec.enable_prefix_caching is False:
        cmd.append("--disable-radix-cache")
    if spec.trust_remote_code:
        cmd.append("--trust-remote-code")
    if spec.enable_auto_tool_choice and spec.tool_call_parser:
        cmd += ["--tool-call-parser", _SGLANG_TOOL_PARSERS.get(spec.tool_call_parser, spec.tool_call_parser)]
    for key, value in spec.extra_engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False and value is not None:
            cmd += [flag, str(value)]
    return cmd


def sglang_deployment_options(spec: ModelServingSpec, *, name: str | None = None) -> dict[str, Any]:
    """`@serve.deployment` options for the SGLang relay: the replica holds the engine's GPUs."""
    actor: dict[str, Any] = {"num_cpus": 1, "num_gpus": spec.devices_per_replica}
    if spec.accelerator_type:
        actor["accelerator_type"] = spec.accelerator_type
    return {
        "name": name or f"SglangReplica:{app_name_for(spec.model)}",
        **serve_deployment_config(spec),
        "ray_actor_options": actor,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": 30,
    }


def sglang_llm_config(spec: ModelServingSpec) -> dict[str, Any]:
    """An `LLMConfig` for Ray 2.60's experimental in-process SGLang server (`mode="serve-llm"`)."""
    engine: dict[str, Any] = {
        "model_path": spec.weights,
        "tp_size": spec.tensor_parallel_size,
        "max_running_requests": spec.max_ongoing_requests,
    }
    if spec.pipeline_parallel_size > 1:
        engine["pp_size"] = spec.pipeline_parallel_size
    if spec.max_model_len is not None:
        engine["context_length"] = spec.max_model_len
    mem = spec.mem_fraction_static if spec.mem_fraction_static is not None else spec.gpu_memory_utilization
    if mem is not None:
        engine["mem_fraction_static"] = mem
    if spec.dtype != "auto":
        engine["dtype"] = spec.dtype
    if spec.enable_prefix_caching is False:
        engine["disable_radix_cache"] = True
    if spec.trust_remote_code:
        engine["trust_remote_code"] = True
    engine.update(spec.extra_engine_kwargs)
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model, "model_source": spec.weights},
        "deployment_config": serve_deployment_config(spec),
        "server_cls": RAY_SGLANG_SERVER_CLS,
        "engine_kwargs": engine,
    }
    if spec.accelerator_type:
        config["accelerator_type"] = spec.accelerator_type
    if spec.env:
        config["runtime_env"] = {"env_vars": dict(spec.env)}
    return config


# ---------------------------------------------------------------------------------------------
# Requirements, checked before anything heavy starts.
# ---------------------------------------------------------------------------------------------


def local_gpu_count() -> int:
    """NVIDIA GPUs this process could use: `CUDA_VISIBLE_DEVICES` if set, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def cluster_gpu_count() -> int:
    """GPUs in the Ray cluster this process is connected to (0 when not connected)."""
    import ray

    if not ray.is_initialized():
        return 0
    return int(ray.cluster_resources().get("GPU", 0))


def require_gpus(backend: str, spec: ModelServingSpec, available: int, where: str) -> None:
    """Refuse a GPU deployment that cannot be placed, naming what it needs and the alternatives."""
    if spec.accelerator != "gpu":
        return
    needed = spec.devices_per_replica
    if available >= needed:
        return
    have = "no GPU" if available == 0 else f"only {available} GPU(s)"
    raise BackendError(
        f"backend {backend!r} serves {spec.model} on NVIDIA GPUs ({needed} per replica: "
        f"tensor_parallel_size={spec.tensor_parallel_size}, "
        f"pipeline_parallel_size={spec.pipeline_parallel_size}) but {where} has {have}. "
        f"Run it on a GPU node or cluster with pip install 'matrix-harness[{backend}]', or serve on "
        "CPU with backend 'vllm-cpu' (or backend 'vllm' with accelerator='cpu')."
    )


def require_engine(backend: str) -> None:
    """Refuse early, with the install command, when this process lacks the engine's packages."""
    if backend == "sglang":
        if importlib.util.find_spec("sglang") is None:
            raise BackendError(
                "backend 'sglang' needs the sglang package, which is not installed here: "
                "pip install 'matrix-harness[sglang]' on a GPU node"
            )
        return
    if importlib.util.find_spec("vllm") is None:
        raise BackendError(
            "backend 'vllm' needs the vllm package, which is not installed here: pip install "
            "'matrix-harness[vllm]' on a GPU node, or 'matrix-harness[cpu]' for the CPU engine"
        )
    try:
        import ray.serve.llm  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"backend 'vllm' needs ray.serve.llm, which failed to import ({exc}); "
            f"pip install {exc.name or 'the missing module'}"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Building applications (needs Ray initialised: Serve LLM reads the job's runtime env).
# ---------------------------------------------------------------------------------------------


def _require_ray() -> None:
    import ray

    if not ray.is_initialized():
        raise BackendError(
            "building a Serve application needs Ray: call ray.init(...) first (building one "
            "otherwise starts a Ray cluster on the machine's public address as a side effect)"
        )


def build_vllm_app(
    spec_or_config: ModelServingSpec | Mapping[str, Any],
    *,
    ingress: Mapping[str, Any] | None = None,
) -> Application:
    """The Serve LLM OpenAI application for one model; built, not run."""
    _require_ray()
    from ray.serve.llm import build_openai_app

    if isinstance(spec_or_config, ModelServingSpec):
        config = vllm_llm_config(spec_or_config)
        ingress = ingress if ingress is not None else ingress_deployment_config(spec_or_config)
    else:
        config = dict(spec_or_config)
    args: dict[str, Any] = {"llm_configs": [config]}
    if ingress:
        args["ingress_deployment_config"] = dict(ingress)
    return build_openai_app(args)


def build_sglang_app(
    spec: ModelServingSpec,
    *,
    mode: Literal["process", "serve-llm"] = "process",
    command: Sequence[str] | None = None,
    startup_timeout: float = 1800.0,
) -> Application:
    """The Serve application for SGLang replicas; built, not run.

    `command` replaces the `sglang.launch_server` command line (`{port}` is filled in); it exists so
    that the relay can be tested with a stand-in OpenAI server where SGLang cannot run.
    """
    _require_ray()
    from ray import serve

    if mode == "serve-llm":
        from ray.serve.llm import build_openai_app

        args = {"llm_configs": [sglang_llm_config(spec)]}
        return build_openai_app({**args, "ingress_deployment_config": ingress_deployment_config(spec)})
    if mode != "process":
        raise BackendError(f"backend 'sglang': mode must be 'process' or 'serve-llm', got {mode!r}")
    options = sglang_deployment_options(spec)
    deployment = serve.deployment(**options)(SglangReplica)
    return deployment.bind(spec.to_dict(), command=list(command) if command else None, startup_timeout=startup_timeout)


class SglangReplica:
    """One Serve replica: an SGLang server as a child process, and an HTTP relay to it.

    The child listens on 127.0.0.1 only; all traffic comes through Serve's proxy, so Serve's
    routing, request cap and autoscaling apply to SGLang exactly as to vLLM. Serve's periodic
    `check_health` fails when the child died or its `/health` fails, and Serve then replaces the
    replica.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        command: Sequence[str] | None = None,
        startup_timeout: float = 1800.0,
    ) -> None:
        self._spec = ModelServingSpec(**dict(spec))
        self._port = free_port("127.0.0.1")
        if command:
            cmd = [part.replace("{port}", str(self._port)) for part in command]
        else:
            cmd = sglang_command(self._spec, self._port)
        log_dir = Path(tempfile.gettempdir()) / "matrix-sglang"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{app_name_for(self._spec.model)}-{os.getpid()}-{self._port}.log"
        env = {**os.environ, **self._spec.env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __del__
        self._proc: subprocess.Popen[bytes] = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._session: Any = None
        try:
            wait_healthy(
                f"http://127.0.0.1:{self._port}/health",
                timeout=startup_timeout,
                proc=self._proc,
                name=f"sglang server for {self._spec.model}",
                log_path=self.log_path,
                interval=1.0,
            )
        except BaseException:
            self._shutdown()
            raise

    async def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def __call__(self, request: Request) -> Response:
        """Relay one HTTP request to the child, streaming server-sent events as they come."""
        import aiohttp
        from starlette.responses import JSONResponse, Response, StreamingResponse

        path = request.url.path
        root = str(request.scope.get("root_path", "") or "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        url = f"http://127.0.0.1:{self._port}{path}"
        if request.url.query:
            url += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.body()
        session = await self._client()
        try:
            upstream = await session.request(request.method, url, data=body, headers=headers)
        except aiohttp.ClientError as exc:
            return JSONResponse(
                {"error": {"message": f"sglang server unreachable: {exc}", "type": "ServiceUnavailable"}},
                status_code=503,
            )
        content_type = upstream.headers.get("Content-Type", "")
        if content_type.startswith("text/event-stream"):

            async def relay() -> Any:
                try:
                    async for chunk in upstream.content.iter_any():
                        yield chunk
                finally:
                    upstream.release()

            return StreamingResponse(relay(), status_code=upstream.status, media_type=content_type)
        try:
            data = await upstream.read()
        finally:
            upstream.release()
        return Response(data, status_code=upstream.status, media_type=content_type or None)

    async def check_health(self) -> None:
        """Serve's liveness probe: the child is running and its `/health` answers 200."""
        code = self._proc.poll()
        if code is not None:
            raise RuntimeError(f"sglang server exited with code {code}; log: {self.log_path}")
        import aiohttp

        session = await self._client()
        try:
            async with session.get(
                f"http://127.0.0.1:{self._port}/health", timeout=aiohttp.ClientTimeout(total=20)
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"sglang server /health answered HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise RuntimeError(f"sglang server /health unreachable: {exc}") from exc

    def _shutdown(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            stop_process(proc, grace=20.0)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __del__(self) -> None:
        self._shutdown()


# ---------------------------------------------------------------------------------------------
# Deploying and waiting for health.
# ---------------------------------------------------------------------------------------------


def wait_until_serving(
    base_url: str,
    model: str,
    *,
    timeout: float,
    interval: float = 1.0,
    app_status: Callable[[], tuple[str, str]] | None = None,
) -> float:
    """Poll `GET {base_url}/models` until it lists `model`; return the seconds it took.

    `app_status`, when given, returns Serve's (status, message) for the application. The wait then
    also needs the application RUNNING: Serve LLM's ingress lists its models as soon as the
    ingress itself is up, minutes before the engine replicas can answer. A failed deployment ends
    the wait at once, with Serve's reason.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no answer yet"
    while True:
        running = True
        if app_status is not None:
            status, message = app_status()
            if status == "DEPLOY_FAILED":
                raise BackendError(f"Serve could not deploy the application behind {base_url}: {message}")
            running = status == "RUNNING"
            last = f"Serve application {status}" + (f" ({message})" if message else "")
        try:
            models = list_models(base_url, timeout=min(10.0, max(1.0, timeout)))
        except ModelsProbeError as exc:
            last = f"{exc}; {last}" if app_status is not None else str(exc)
        else:
            if model not in models:
                last = f"{base_url}/models lists {models}, not {model!r} yet"
            elif running:
                return time.monotonic() - start
        if time.monotonic() + interval > deadline:
            raise BackendError(
                f"{model} did not become healthy at {base_url}/models within {timeout:.0f}s (last: {last})"
            )
        time.sleep(interval)


@dataclass
class Deployment:
    """A Serve application this process deployed, and what to undo when it stops."""

    name: str
    route_prefix: str
    base_url: str
    proxy_url: str
    started_serve: bool
    seconds_to_healthy: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _serve_client() -> Any:
    # Ray has no public call for "is Serve running, and on which port"; the controller client
    # answers both.
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False)


def _app_status(name: str) -> tuple[str, str]:
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return "NOT_REGISTERED", ""
    messages = [app.message] + [d.message for d in app.deployments.values() if d.message]
    return str(app.status.value if hasattr(app.status, "value") else app.status), "; ".join(m for m in messages if m)


def deploy(
    app: Application,
    *,
    name: str,
    model: str,
    route_prefix: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 1800.0,
    request_timeout_s: float | None = 3600.0,
) -> Deployment:
    """Run `app` on Serve at `route_prefix` and wait until its proxy lists `model`.

    Serve is started when it is not running yet, with an HTTP proxy on every node bound to
    `host:port` (port 0 picks a free one); a Serve that is already running keeps its own HTTP
    settings, and the returned URL says where it listens. An application already deployed under
    `name` is never replaced. If the deployment fails or times out, it is deleted again.
    """
    import ray
    from ray import serve
    from ray.serve.api import RunTarget

    route_prefix = route_prefix or f"/{name}"
    if not route_prefix.startswith("/"):
        raise BackendError(f"route_prefix must start with '/', got {route_prefix!r}")
    client = _serve_client()
    started_serve = client is None
    if started_serve:
        http: dict[str, Any] = {"host": host, "port": port or free_port(host)}
        if request_timeout_s is not None:
            http["request_timeout_s"] = request_timeout_s
        serve.start(proxy_location="EveryNode", http_options=http)
        client = _serve_client()
    elif name in serve.status().applications:
        raise BackendError(
            f"a Serve application named {name!r} is already running; pass another app_name (deploying would replace it)"
        )
    http_host, http_port = client.http_config.host, client.http_config.port
    if not started_serve and port and port != http_port:
        logger.warning("Serve already listens on port %s; ignoring the requested port %s", http_port, port)
    if http_host in ("0.0.0.0", "::", ""):
        http_host = ray.util.get_node_ip_address()
    proxy_url = f"http://{http_host}:{http_port}"
    base_url = proxy_url + route_prefix.rstrip("/") + "/v1"
    deployment = Deployment(
        name=name,
        route_prefix=route_prefix,
        base_url=base_url,
        proxy_url=proxy_url,
        started_serve=started_serve,
    )
    logger.info("deploying %s at %s", name, base_url)
    try:
        serve.run_many(
            [RunTarget(target=app, name=name, route_prefix=route_prefix)],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        deployment.seconds_to_healthy = wait_until_serving(
            base_url, model, timeout=timeout, app_status=lambda: _app_status(name)
        )
    except BaseException:
        with contextlib.suppress(Exception):
            undeploy(deployment)
        raise
    return deployment


def _port_open(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0


def _wait_port_closed(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _port_open(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _kill_serve_system_actors() -> None:
    """Kill Serve's controller and proxies, for a Serve this process started and shut down."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == "serve" and str(actor.get("name", "")).startswith(
            ("SERVE_CONTROLLER_ACTOR", "SERVE_PROXY_ACTOR")
        ):
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(actor["name"], namespace="serve"))


def undeploy(deployment: Deployment, *, wait_s: float = 60.0) -> None:
    """Delete what `deploy` created: the application, and Serve itself if `deploy` started it.

    When Serve goes, this returns only once its proxy's port is closed. `serve.shutdown` can return
    while the proxies are still exiting (its graceful shutdown gives up after 30 s on a busy
    machine); after `wait_s` the leftover Serve actors, which this process started, are killed.
    """
    from ray import serve

    with contextlib.suppress(Exception):
        serve.delete(deployment.name)
    if not deployment.started_serve:
        return
    serve.shutdown()
    if _wait_port_closed(deployment.proxy_url, wait_s):
        return
    logger.warning("Serve's proxy at %s outlived serve.shutdown(); killing it", deployment.proxy_url)
    _kill_serve_system_actors()
    if not _wait_port_closed(deployment.proxy_url, 30.0):
        logger.warning("Serve's proxy at %s still accepts connections after being killed", deployment.proxy_url)


# ---------------------------------------------------------------------------------------------
# The backends.
# ---------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def _resolve_source(spec: ModelServingSpec) -> ModelServingSpec:
    """Point the embedded SmolLM2 model at its local checkpoint (converted offline on first use)."""
    if spec.source is not None or spec.model.lower() not in _SMOLLM2_NAMES:
        return spec
    from matrix.llm import models

    try:
        path = models.smollm2_checkpoint()
    except Exception as exc:
        raise BackendError(f"preparing the {spec.model} checkpoint failed: {exc}") from exc
    return ModelServingSpec(**{**spec.to_dict(), "source": str(path)})


class _RayServeBackend(Backend):
    """Shared start/stop for the Serve backends; subclasses say how to build the application."""

    engine: ClassVar[str]

    def _check_accelerator(self, spec: ModelServingSpec) -> None:
        """Engine-specific refusals (e.g. SGLang has no CPU path here)."""

    def _build(self, spec: ModelServingSpec, options: dict[str, Any]) -> Application:
        raise NotImplementedError

    def start(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = DEFAULT_MODEL,
        address: str | None = None,
        app_name: str | None = None,
        route_prefix: str | None = None,
        timeout: float = 1800.0,
        request_timeout_s: float | None = 3600.0,
        ray_init_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Server:
        """Deploy `model` with its serving defaults (`options` override them) and wait until healthy.

        Uses the Ray cluster this process is connected to, else `address` (or `RAY_ADDRESS`), else
        starts a local one (on 127.0.0.1 when `host` is loopback). Whatever this call started, the
        returned server's `stop()` stops: the application, Serve, Ray.
        """
        import ray

        build_options = {k: options.pop(k) for k in self._build_option_names() if k in options}
        try:
            spec = serving_spec(model, **options)
        except ValueError as exc:
            raise BackendError(f"backend {self.name!r}: {exc}") from None
        self._check_accelerator(spec)

        address = address or os.environ.get("RAY_ADDRESS") or None
        connected = ray.is_initialized()
        if spec.accelerator == "gpu" and not connected and address is None:
            require_gpus(self.name, spec, local_gpu_count(), "this machine")
        require_engine(self.engine)

        started_ray = False
        if not connected:
            init: dict[str, Any] = {"include_dashboard": False}
            if address is not None:
                init["address"] = address
            elif _is_loopback(host):
                from matrix.ray_init import local_only

                local_only()
                init["_node_ip_address"] = "127.0.0.1"
                init["address"] = "local"  # a private instance, never one that `ray start` left here
            init.update(ray_init_kwargs or {})
            ray.init(**init)
            started_ray = True
        try:
            if spec.accelerator == "gpu":
                require_gpus(self.name, spec, cluster_gpu_count(), "the Ray cluster")
            spec = _resolve_source(spec)
            name = app_name or app_name_for(spec.model)
            app = self._build(spec, build_options)
            deployment = deploy(
                app,
                name=name,
                model=spec.model,
                route_prefix=route_prefix,
                host=host,
                port=port,
                timeout=timeout,
                request_timeout_s=request_timeout_s,
            )
        except BaseException:
            if started_ray:
                ray.shutdown()
            raise

        def stop() -> None:
            try:
                undeploy(deployment)
            finally:
                if started_ray:
                    ray.shutdown()

        info: dict[str, Any] = {
            "engine": self.engine,
            "app_name": deployment.name,
            "route_prefix": deployment.route_prefix,
            "proxy_url": deployment.proxy_url,
            "seconds_to_healthy": round(deployment.seconds_to_healthy, 1),
            "started_ray": started_ray,
            "started_serve": deployment.started_serve,
            "spec": spec.to_dict(),
            **build_options,
        }
        return Server(backend=self.name, base_url=deployment.base_url, model=spec.model, info=info, _stop=stop)

    def _build_option_names(self) -> tuple[str, ...]:
        return ()

    def start_pool(self, spec: PoolSpec, *, serve: dict[str, Any] | None = None, **options: Any) -> tuple[Pool, Any]:
        """`spec.replicas` replicas of `spec.model` as one Serve application on the cluster this process
        is on (a local Ray on 127.0.0.1 otherwise). The spec's serving options, then `serve` (the
        backend config's, for every pool) override the model's defaults; tool calling is switched on
        for a pool that needs it."""
        overrides: dict[str, Any] = {**spec.serve, **(serve or {})}
        if spec.tools:
            overrides.setdefault("enable_auto_tool_choice", True)
        overrides.setdefault("app_name", f"{spec.name}-{app_name_for(spec.model)}")
        from matrix.ray_init import ensure_ray

        ensure_ray()
        n = int(spec.replicas)
        server = self.start(model=spec.model, min_replicas=n, max_replicas=n, **overrides, **options)
        pool = Pool(
            name=spec.name,
            urls=[server.base_url],
            model=server.model,
            backend=self.name,
            hardware=f"{n} x {self.name} replica(s) of {server.model} on Ray Serve",
            info={"replicas": n, "app_name": server.info.get("app_name")},
        )
        return pool, server.stop


class VllmServeBackend(_RayServeBackend):
    """vLLM replicas through `ray.serve.llm` (GPU, or CPU with `accelerator="cpu"`)."""

    name = "vllm"
    engine = "vllm"

    def _build_option_names(self) -> tuple[str, ...]:
        return ("placement_group_config", "ingress_replicas")

    def _build(self, spec: ModelServingSpec, options: dict[str, Any]) -> Application:
        config = vllm_llm_config(spec, placement_group_config=options.get("placement_group_config"))
        ingress = ingress_deployment_config(spec, options.get("ingress_replicas"))
        return build_vllm_app(config, ingress=ingress)


class SglangServeBackend(_RayServeBackend):
    """SGLang replicas on Ray Serve: `sglang.launch_server` per replica behind a relay (GPU only)."""

    name = "sglang"
    engine = "sglang"

    def _build_option_names(self) -> tuple[str, ...]:
        return ("mode", "command", "startup_timeout")

    def _check_accelerator(self, spec: ModelServingSpec) -> None:
        if spec.accelerator != "gpu":
            raise BackendError(
                f"backend 'sglang' serves on GPUs only, but {spec.model} is set to accelerator="
                f"{spec.accelerator!r}; pass accelerator='gpu' on a GPU cluster, or use backend "
                "'vllm' / 'vllm-cpu' on CPU"
            )

    def _build(self, spec: ModelServingSpec, options: dict[str, Any]) -> Application:
        return build_sglang_app(
            spec,
            mode=options.get("mode", "process"),
            command=options.get("command"),
            startup_timeout=options.get("startup_timeout", 1800.0),
        )


__all__ = [
    "DEFAULT_MODEL",
    "RAY_SGLANG_SERVER_CLS",
    "Deployment",
    "SglangReplica",
    "SglangServeBackend",
    "VllmServeBackend",
    "app_name_for",
    "build_sglang_app",
    "build_vllm_app",
    "cluster_gpu_count",
    "deploy",
    "ingress_deployment_config",
    "local_gpu_count",
    "require_engine",
    "require_gpus",
    "serve_deployment_config",
    "sglang_command",
    "sglang_deployment_options",
    "sglang_llm_config",
    "undeploy",
    "vllm_engine_kwargs",
    "vllm_llm_config",
    "wait_until_serving",
]
