"""The virtual clock (`clock=virtual`): the same files as real time, in simulated seconds, checked against
real-time runs of the same systems on the same inputs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from experiments import run
from experiments.cases.base import ConfigError
from matrix.clock import SerialCpu
from tests.experiments.conftest import compose_cfg

SMALL = ("case=coral", "backend=sim", "scale=twin", "case.limit=24", "case.length_scale=4", "progress=false")


def virtual(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    cfg = compose_cfg(*SMALL, "clock=virtual", f"run_root={tmp_path}", "run_id=v", *overrides)
    return run.run_job(cfg)


def rows(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lines = (Path(m["run_dir"]) / "output.jsonl").read_text().splitlines()
    return {r["task_id"]: r for r in map(json.loads, lines)}


def without_times(row: dict[str, Any]) -> dict[str, Any]:
    """A row apart from its timestamps (creation, finish, hop times), which depend on the clock, and the
    names of the actors that ran its hops (placement: `teacher-0` on Ray, `local` in one process)."""
    out = {k: v for k, v in row.items() if k not in ("created", "finished", "hops")}
    out["hops"] = [h["role"] for h in row.get("hops", [])]
    return out


def test_a_virtual_run_writes_the_results_contract_labelled_simulated(tmp_path: Path) -> None:
    m = virtual(tmp_path, "system=matrix", "system.concurrency=8", "clock.charge_cpu=false")
    assert m["clock"] == "virtual" and m["simulated"] is True
    assert m["tasks_finished"] == 24 and m["tasks_failed"] == 0
    assert m["tokens_per_second"] > 0
    assert "virtual clock" in run.summary_line(m)
    assert "variant" not in m
    nocpu = virtual(tmp_path, "system=matrix", "system.concurrency=8", "clock.charge_cpu=false", "variant=nocpu")
    assert nocpu["variant"] == "nocpu" and nocpu["run_dir"].endswith("v-c8-vnocpu")
    assert m["host_seconds"] < m["wall_seconds"]  # simulated seconds run faster than real ones
    config = json.loads((Path(m["run_dir"]) / "config.json").read_text())
    assert config["clock"] == "virtual" and config["virtual_clock"]["library"] == "looptime"
    assert all(u.startswith("inproc://") for u in config["pools"]["dialogue"]["urls"])
    # deterministic rows: a second run of the same job writes the same trajectories
    again = virtual(tmp_path / "again", "system=matrix", "system.concurrency=8", "clock.charge_cpu=false")
    assert {k: without_times(r) for k, r in rows(m).items()} == {k: without_times(r) for k, r in rows(again).items()}
    assert again["tokens_per_second"] == m["tokens_per_second"]  # replica choices are seeded too


def test_cpu_charges_bound_a_single_process_but_not_separate_actors(tmp_path: Path) -> None:
    charges = tmp_path / "ceiling.json"
    charges.write_text(json.dumps({"charges": {"controller_fair_matrix": 0.5, "p2p_hop": 0.5}}))
    free = virtual(tmp_path / "free", "system=coral-controller", "system.concurrency=24", "clock.charge_cpu=false")
    taxed = virtual(tmp_path / "taxed", "system=coral-controller", "system.concurrency=24", f"clock.charges={charges}")
    cpu = taxed["virtual_clock"]["cpus"]["controller"]
    assert cpu["charges"] == taxed["llm_client"]["requests"]  # every request paid once, on one CPU
    assert cpu["busy_s"] == pytest.approx(0.5 * cpu["charges"])
    assert cpu["queued_s"] > 0  # requests queued for it
    # one CPU cannot be busy longer than the run: the process is CPU-bound beyond the models' time
    assert free["wall_seconds"] < cpu["busy_s"] <= taxed["wall_seconds"]
    p2p = virtual(tmp_path / "p2p", "system=matrix", "system.concurrency=24", f"clock.charges={charges}")
    busy = [c["busy_s"] for c in p2p["virtual_clock"]["cpus"].values()]
    assert len(busy) > 1 and sum(busy) > p2p["wall_seconds"]  # actors' CPUs work side by side
    assert {k: without_times(r) for k, r in rows(free).items()} == {k: without_times(r) for k, r in rows(taxed).items()}


def test_serial_cpu_queues_holders_on_the_loop_clock() -> None:
    import looptime

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        one = SerialCpu("one")
        t0 = loop.time()
        await asyncio.gather(*(one.charge(1.0) for _ in range(3)))
        serial = loop.time() - t0
        t0 = loop.time()
        await asyncio.gather(*(SerialCpu(f"c{i}").charge(1.0) for i in range(3)))
        return serial, loop.time() - t0

    loop = looptime.new_event_loop(start=0.0)
    try:
        serial, parallel = loop.run_until_complete(main())
    finally:
        loop.close()
    assert serial == pytest.approx(3.0) and parallel == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (("backend=vllm-cpu",), "backend=vllm-cpu"),
        (("case.models.dialogue.replicas=5000",), "clock.max_replicas=4096"),
        (("backend.profile=no-such-gpu",), "no-such-gpu"),
        (("clock.charges=/nonexistent/ceiling.json",), "clock.charges='/nonexistent/ceiling.json'"),
        (("system.concurrency=0",), "system.concurrency must be >= 1"),
        (("variant=No-Good",), "variant must be lower-case letters and digits"),
    ],
)
def test_a_layout_that_cannot_run_is_refused_naming_the_key(
    tmp_path: Path, overrides: tuple[str, ...], named: str
) -> None:
    with pytest.raises(Exception) as info:
        virtual(tmp_path, "system=matrix", *overrides)
    assert named in str(info.value)
    assert isinstance(info.value, ConfigError | KeyError | ValueError)
    assert not (tmp_path / "coral").exists()  # nothing ran


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray", "shared_pools")
@pytest.mark.parametrize(
    ("system", "point"), [("matrix", "system.concurrency=12"), ("coral-controller", "system.concurrency=12")]
)
def test_virtual_matches_real_time_on_the_same_inputs(tmp_path: Path, system: str, point: str) -> None:
    """The system's own code on both clocks: identical rows apart from timestamps, tokens/s within 10%
    (as far as another test's load on the host leaves the real run a reference: tests/host.py)."""
    from experiments.pools import SHARED
    from tests.experiments.virtual.conftest import late_share
    from tests.host import CpuStall, assert_model_near_real

    real_point = (*SMALL, f"system={system}", point, "backend.time_scale=2", f"run_root={tmp_path}/real", "run_id=r")
    with CpuStall() as stall:
        real = run.run_job(compose_cfg(*real_point))
    virt = virtual(tmp_path, f"system={system}", point, "clock.charge_cpu=false")
    assert {k: without_times(r) for k, r in rows(real).items()} == {k: without_times(r) for k, r in rows(virt).items()}
    behind = late_share([u for pool in SHARED.pools.values() for u in pool.urls]) if SHARED.pools else 0.0
    said = f"tokens/s; {behind:.1%} of the real run's engine steps late"
    assert_model_near_real(virt["tokens_per_second"], real["tokens_per_second"], real["wall_seconds"], stall, said=said)
