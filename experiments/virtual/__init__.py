"""The virtual clock (`clock=virtual`): a whole run on one asyncio loop whose time is simulated.

The loop is `looptime`'s: whenever every task waits, its clock jumps to the next timer, so the
simulated replicas' steps (matrix.llm.sim, started in this loop and reached with no socket,
`matrix.llm.sim.inproc`) cost only their Python work, and an hour of cluster time takes minutes.
Every measurement of the run reads the loop's time (`matrix.clock`), so metrics.json, the output
rows and the tables are the same files as in real time, in simulated seconds, labelled SIMULATED
with `clock: virtual`.

What runs: the P2P side is the runtime's own admission, workflow, agents and sink on the local
(in-process) transport; the Coral controller is its own code. Ray Data's actor pool and tau2's
thread pool cannot run on one loop; their systems run a model of their scheduling
(`experiments/virtual/ray_data.py`, `tau2_threads.py`), validated against the real systems.

What virtual time does not see is the CPU the schedulers themselves spend: it is charged from
measurements (`results/bench/process_ceiling.json`, `matrix bench ceiling`) on `SerialCpu`s: a
single process is one CPU that every conversation's requests queue on; a P2P agent actor is one
CPU of its own. `clock.charge_cpu=false` turns the charges off (to see what they cost).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.cases.base import Case, ConfigError, plain
from matrix import clock
from matrix.clock import SerialCpu
from matrix.llm.backends.base import Pool, PoolSet, PoolSpec
from matrix.llm.sim.profile import load_profile

CHARGES_FILE = Path("results/bench/process_ceiling.json")
NAME = "virtual"
GC_THRESHOLD = 200_000  # allocations between young-generation collections on the virtual loop


@dataclass
class VirtualContext:
    """What a system's virtual run gets besides its job: the CPU charges and the CPUs they go on."""

    charges: dict[str, Any] = field(default_factory=dict)
    source: str = "none"
    cpus: dict[str, SerialCpu] = field(default_factory=dict)

    def cpu(self, name: str) -> SerialCpu:
        """The CPU called `name` (made on first use): one holder at a time on the loop's clock."""
        if name not in self.cpus:
            self.cpus[name] = SerialCpu(name)
        return self.cpus[name]

    def charge(self, key: str) -> float:
        """Seconds of one CPU per unit of `key` (0 when not measured or charges are off)."""
        value = self.charges.get(key, 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    def charger(self, key: str, cpu: str) -> Callable[[], Awaitable[None]] | None:
        """A callable that charges `key`'s cost on CPU `cpu`, or None when nothing is charged."""
        seconds = self.charge(key)
        if seconds <= 0:
            return None
        target = self.cpu(cpu)

        async def charge() -> None:
            await target.charge(seconds)

        return charge

    def describe(self) -> dict[str, Any]:
        return {
            "name": NAME,
            "library": "looptime",
            "charges_from": self.source,
            "charges": {k: v for k, v in self.charges.items() if isinstance(v, int | float)},
            "cpus": {name: cpu.snapshot() for name, cpu in sorted(self.cpus.items())},
        }


def load_charges(clock_cfg: Any) -> tuple[dict[str, Any], str]:
    """The measured CPU costs to charge (`clock.charges`, a process_ceiling.json), or none."""
    if not bool(clock_cfg.get("charge_cpu", True)):
        return {}, "off (clock.charge_cpu=false)"
    path = clock_cfg.get("charges")
    if not path:
        return {}, "none (clock.charges is empty)"
    p = Path(str(path))
    if not p.exists():
        raise ConfigError(
            f"clock.charges={str(path)!r} does not exist: run `matrix bench ceiling` to measure the CPU "
            "costs, or set clock.charge_cpu=false to charge nothing"
        )
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"clock.charges={str(path)!r} is not JSON: {exc}") from None
    charges = data.get("charges")
    if not isinstance(charges, dict):
        raise ConfigError(f"clock.charges={str(path)!r} has no 'charges' object (made by `matrix bench ceiling`?)")
    skip = [str(k) for k in (clock_cfg.get("skip") or [])]
    unknown = [k for k in skip if k not in charges]
    if unknown:
        raise ConfigError(f"clock.skip names charges {unknown} that {str(path)!r} does not have: {sorted(charges)}")
    kept = {k: v for k, v in charges.items() if k not in skip}
    return kept, str(p) + (f" without {', '.join(skip)}" if skip else "")


def check_layout(specs: list[PoolSpec], backend_cfg: Any, clock_cfg: Any) -> None:
    """Refuse what cannot run on the virtual clock before the loop starts, naming the key and value."""
    if str(backend_cfg.name) != "sim":
        raise ConfigError(
            f"clock=virtual runs simulated replicas in-process: it needs backend=sim, got backend={backend_cfg.name}"
        )
    limit = int(clock_cfg.get("max_replicas", 4096))
    total = 0
    for spec in specs:
        n = int(backend_cfg.get("replicas") or spec.replicas)
        if n < 1:
            raise ConfigError(f"case.models.{spec.name}.replicas must be >= 1, got {n}")
        load_profile(str(backend_cfg.get("profile") or spec.sim_profile))  # an unknown profile names the valid ones
        total += n
    if total > limit:
        raise ConfigError(
            f"{total} simulated replicas do not fit the virtual clock's clock.max_replicas={limit} "
            "(each one is an engine in this process); lower case.models.*.replicas or raise the limit"
        )


async def start_pools(specs: list[PoolSpec], backend_cfg: Any) -> PoolSet:
    """The case's pools as in-process simulated replicas on the running loop."""
    from matrix.llm.sim.inproc import start_inproc_replicas

    pools: dict[str, Pool] = {}
    for spec in specs:
        prof = str(backend_cfg.get("profile") or spec.sim_profile)
        n = int(backend_cfg.get("replicas") or spec.replicas)
        served = spec.sim_model or load_profile(prof).model
        urls = await start_inproc_replicas(
            spec.name,
            n,
            prof,
            behaviour=spec.sim_behaviour,
            behaviour_config=dict(spec.sim_behaviour_config),
            model=served,
        )
        pools[spec.name] = Pool(
            name=spec.name,
            urls=urls,
            model=served,
            backend="sim",
            simulated=True,
            time_scale=1.0,
            hardware=f"SIMULATED {n} x {prof} (virtual clock)",
            info={
                "profile": prof,
                "replicas": n,
                "behaviour": spec.sim_behaviour,
                "behaviour_config": dict(spec.sim_behaviour_config),
                "clock": NAME,
            },
        )
    return PoolSet(pools, [lambda: None])


class VirtualLoop:
    """One looptime loop for a whole job: pools, warm-up and the run are phases on the same clock."""

    current: VirtualLoop | None = None

    def __init__(self, noop_cycles: int = 1) -> None:
        import looptime

        self.loop = looptime.new_event_loop(start=0.0, noop_cycles=noop_cycles)

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def __enter__(self) -> VirtualLoop:
        from matrix.llm import client

        asyncio.set_event_loop(self.loop)
        # Tens of thousands of conversations in flight hold millions of objects; the default collector
        # thresholds rescan them every few thousand allocations. Collect far less often during the run.
        self._gc = gc.get_threshold()
        gc.set_threshold(GC_THRESHOLD, 50, 1000)
        clock.set_virtual_epoch(time.time())
        client.DEFAULT_SEED = 0  # replica choices repeat, so a virtual run's figures do too
        VirtualLoop.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        from matrix.llm import client
        from matrix.llm.sim.inproc import stop_inproc_replicas

        try:
            self.run(stop_inproc_replicas())
        finally:
            client.DEFAULT_SEED = None
            gc.set_threshold(*self._gc)
            VirtualLoop.current = None
            clock.set_virtual_epoch(None)
            asyncio.set_event_loop(None)
            self.loop.close()


def run_coroutine(coro: Any) -> Any:
    """Run `coro` to its end: on the virtual loop while one is running a job, else with asyncio.run."""
    if VirtualLoop.current is not None:
        return VirtualLoop.current.run(coro)
    return asyncio.run(coro)


def run_virtual_job(
    cfg: Any, case: Case, system: Any, run_dir_for: Callable[[str], Path], extra_labels: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`experiments.run`'s job on the virtual clock; returns the metrics (also in the run directory)."""
    from experiments.common import fresh
    from experiments.systems import Job

    specs = case.pool_specs()
    check_layout(specs, cfg.backend, cfg.clock)
    charges, source = load_charges(cfg.clock)
    ctx = VirtualContext(charges, source)
    with VirtualLoop(int(cfg.clock.get("noop_cycles", 1))) as vloop:
        pools = vloop.run(start_pools(specs, cfg.backend))
        settings = case.settings(pools)
        inputs = case.inputs(settings)
        if cfg.get("warm_up", True):
            case.warm_up(pools, inputs, settings)
        run_dir = run_dir_for(system.tag(case, cfg.system))
        fresh(run_dir)
        job = Job(case, cfg.system, pools, settings, inputs, run_dir, progress=False)
        labels = {**case.labels(pools), "clock": NAME, **(extra_labels or {})}
        t0 = time.perf_counter()
        metrics = vloop.run(system.execute_virtual(job, labels, ctx))
        metrics["host_seconds"] = round(time.perf_counter() - t0, 3)
    _record_host_time(run_dir, metrics["host_seconds"])
    return metrics


def _record_host_time(run_dir: Path, seconds: float) -> None:
    from matrix.runtime.report import write_json

    path = run_dir / "metrics.json"
    m = json.loads(path.read_text())
    m["host_seconds"] = seconds  # how long the virtual run took on this machine (not a measured figure)
    write_json(path, m)


__all__ = ["VirtualContext", "VirtualLoop", "check_layout", "load_charges", "plain", "run_coroutine", "run_virtual_job"]
