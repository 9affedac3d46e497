"""Tau2-bench (paper 5.3): tool-use trajectories with tau2's own tools, tasks, prompts and evaluator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from experiments.cases.base import Case
from matrix.agent import RoleSpec
from matrix.cases import tau2
from matrix.llm.backends.base import Pool

# The tiny CPU model: the mock domain's short tasks, short turns and few steps.
SMALL_MODEL_SETTINGS = tau2.Tau2Settings(domain="mock", max_steps=10, max_tokens=96)
SMALL_CONTEXT = 4096
POOL_ACTOR = "tau2_tools"  # the named actor that leases the tool servers to the P2P tool role


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
    def p2p_services(self, settings: Any) -> Iterator[Callable[[], dict[str, Any]]]:
        import ray

        from matrix.tools.pool_actor import start_pool_actor, stop_pool_actor

        actor = start_pool_actor(POOL_ACTOR, self.tools_config(settings))
        try:
            yield lambda: {"tool_pool": ray.get(actor.stats.remote())}
        finally:
            stop_pool_actor(actor)

    def p2p_roles(self, pools: dict[str, Pool], settings: Any, instances: int) -> list[RoleSpec]:
        pool = pools["agent"]
        dep = tau2.Tau2Deployment(pool.urls, pool.model, settings, pool=POOL_ACTOR, instances=instances)
        return dep.roles()

    def p2p_source(self, settings: Any, inputs: Any) -> Any:
        return tau2.task_rows(settings.domain, inputs)

    def quality(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(tau2.quality(rows))
