"""Tau2-bench (paper 5.3): tool-use trajectories with tau2's own tools, tasks, prompts and evaluator."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from experiments.cases.base import Case
from matrix import clock
from matrix.agent import RoleSpec
from matrix.cases import tau2
from matrix.llm.backends.base import Pool

# The tiny CPU model: the mock domain's short tasks, short turns and few steps.
SMALL_MODEL_SETTINGS = tau2.Tau2Settings(domain="mock", max_steps=10, max_tokens=96)
SMALL_CONTEXT = 4096
POOL_ACTOR = "tau2_tools"  # the named actor that leases the tool servers to the P2P tool role
# What a tool call costs against a real sandboxed tool server here (scripts/bench_tau2_tool_call.py):
# the in-process tool pool of the virtual clock charges it.
TOOL_COSTS_FILE = Path(__file__).resolve().parents[2] / "results" / "bench" / "tau2_tool_call.json"


def tool_call_costs(path: Path = TOOL_COSTS_FILE) -> dict[str, float]:
    """The measured per-operation costs (seconds) for `matrix.tools.inproc.InprocCosts`."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python scripts/bench_tau2_tool_call.py` to measure what a tau2 tool call costs"
        )
    data = json.loads(path.read_text())
    costs = data.get("charges")
    if not isinstance(costs, dict):
        raise ValueError(f"{path} has no 'charges' object (made by scripts/bench_tau2_tool_call.py?)")
    return {str(k): float(v) for k, v in costs.items()}


class Tau2Case(Case):
    name = "tau2"
    workflow = tau2.WORKFLOW
    workflow_module = "matrix.cases.tau2"

    def settings(self, pools: dict[str, Pool]) -> tau2.Tau2Settings:
        window = pools["agent"].context_window
        if window is not None and window <= SMALL_CONTEXT:
            base = SMALL_MODEL_SETTINGS
            return tau2.Tau2Settings(
                domain=str(self.cfg.domain), max_steps=min(int(self.cfg.max_steps), base.max_steps),
                max_tokens=base.max_tokens,
            )  # fmt: skip
        return tau2.Tau2Settings(domain=str(self.cfg.domain), max_steps=int(self.cfg.max_steps))

    def inputs(self, settings: Any) -> list[Any]:
        limit = self.cfg.get("limit")
        return list(tau2.load_tasks(settings.domain, limit=None if limit is None else int(limit)))

    @property
    def trials(self) -> int:
        return int(self.cfg.get("trials", 1))

    def tools_config(self, settings: Any) -> dict[str, Any]:
        return {
            "domain": settings.domain,
            "servers": int(self.cfg.tool_servers),
            "sessions_per_server": int(self.cfg.sessions_per_server),
            "sandbox": str(self.cfg.sandbox),
            "call_timeout_s": settings.tool_timeout_s,
        }

    @contextlib.contextmanager
    def p2p_services(
        self, settings: Any, costs: Mapping[str, float] | None = None
    ) -> Iterator[Callable[[], dict[str, Any]]]:
        """The tool servers: a named Ray actor leasing sandboxed server processes; on the virtual clock
        (or with `case.sandbox=inproc`) the same pool over in-process servers (`matrix.tools.inproc`),
        charging `costs` (default: the measured `tool_call_costs()`; on the virtual clock only)."""
        tools = self.tools_config(settings)
        if clock.is_virtual() or tools["sandbox"] == "inproc":
            with self._inproc_tools(tools, costs) as stats:
                yield stats
            return
        import ray

        from matrix.tools.pool_actor import start_pool_actor, stop_pool_actor

        actor = start_pool_actor(POOL_ACTOR, tools)
        try:
            yield lambda: {"tool_pool": ray.get(actor.stats.remote())}
        finally:
            stop_pool_actor(actor)

    @contextlib.contextmanager
    def _inproc_tools(
        self, tools: dict[str, Any], costs: Mapping[str, float] | None
    ) -> Iterator[Callable[[], dict[str, Any]]]:
        """The in-process pool, registered for the tool and reward roles of this process (local transport)."""
        from matrix.tools.inproc import InprocToolPool
        from matrix.tools.pool_actor import KeyedPool

        if costs is None:
            costs = tool_call_costs() if clock.is_virtual() else {}
        keyed = KeyedPool({**tools, "sandbox": "inproc", "costs": dict(costs)})
        pool = keyed.pool
        assert isinstance(pool, InprocToolPool)
        pool.start_now()
        tau2.register_local_pool(POOL_ACTOR, keyed)
        try:
            yield lambda: {"tool_pool": {**pool.stats(), "replaced_on_replay": keyed.replaced}}
        finally:
            tau2.unregister_local_pool(POOL_ACTOR, keyed)
            pool.stop_now()

    def p2p_roles(self, pools: dict[str, Pool], settings: Any, instances: int) -> list[RoleSpec]:
        pool = pools["agent"]
        dep = tau2.Tau2Deployment(pool.urls, pool.model, settings, pool=POOL_ACTOR, instances=instances)
        return dep.roles()

    def p2p_source(self, settings: Any, inputs: Any) -> Any:
        return tau2.task_rows(settings.domain, inputs)

    def quality(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(tau2.quality(rows))
