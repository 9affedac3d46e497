"""Many simulated replicas as Ray actors, each serving HTTP on 127.0.0.1 from its own event loop.

This is the paper's fleet shape (one replica per GPU behind the client's load balancing) without
GPUs: `start_sim_replicas(8, "a100-llama31-8b", time_scale=10)` returns eight base URLs to hand to
`matrix.llm.client.LLMClient`. Each actor is an async Ray actor: its aiohttp server and engine loop
run in the actor's event loop between calls, so an actor costs one process and almost no CPU when
idle (its default CPU request is 0, so replicas never starve the agents of Ray CPUs).

Call `ray.init(...)` first (tests use `ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from matrix.llm.sim.behaviour import get_behaviour
from matrix.llm.sim.profile import DEFAULT_PROFILE, SimProfile, load_profile


class SimReplicaActor:
    """The body of one replica actor (wrapped with `ray.remote` by `start_sim_replicas`)."""

    def __init__(
        self,
        profile: str | SimProfile,
        time_scale: float,
        behaviour: str,
        behaviour_config: dict[str, Any] | None,
        model: str | None,
        host: str,
    ) -> None:
        self._profile = profile
        self._time_scale = time_scale
        self._behaviour = behaviour
        self._behaviour_config = behaviour_config or {}
        self._model = model
        self._host = host
        self._runner: Any = None
        self._engine: Any = None
        self.base_url = ""

    async def start(self, port: int = 0) -> str:
        from matrix.llm.sim.engine import SimEngine
        from matrix.llm.sim.server import start_server

        if self._runner is not None:
            return self.base_url
        behaviour = get_behaviour(self._behaviour, **self._behaviour_config)
        self._engine = SimEngine(
            self._profile, time_scale=self._time_scale, behaviour=behaviour, model_name=self._model
        )
        self._runner, self.base_url = await start_server(
            self._engine, host=self._host, port=port, model_name=self._model
        )
        return self.base_url

    async def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = self._engine.snapshot() if self._engine is not None else {}
        state["base_url"] = self.base_url
        return state

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


class SimReplicas(list[str]):
    """The replicas' base URLs (a list of str), plus the actors behind them and `stop()`."""

    def __init__(self, urls: Iterable[str], actors: list[Any]) -> None:
        super().__init__(urls)
        self.actors = actors

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every server, then kill the actors this call started."""
        import ray

        actors, self.actors = self.actors, []
        if not actors:
            return
        try:
            ray.get([a.stop.remote() for a in actors], timeout=timeout)
        finally:
            for actor in actors:
                ray.kill(actor)

    def __enter__(self) -> SimReplicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sim_replicas(
    n: int,
    profile: str | SimProfile = DEFAULT_PROFILE,
    time_scale: float = 1.0,
    behaviour: str = "generic",
    *,
    behaviour_config: dict[str, Any] | None = None,
    model: str | None = None,
    host: str = "127.0.0.1",
    num_cpus: float = 0.0,
    timeout: float = 120.0,
    ports: list[int] | None = None,
) -> SimReplicas:
    """Start `n` replicas as Ray actors; returns their base URLs (`.stop()` ends them).

    `ports` (one per replica) fixes where they listen; by default each picks a free port.
    """
    import ray

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not ray.is_initialized():
        raise RuntimeError("start_sim_replicas needs Ray: call ray.init(...) first")
    prof = load_profile(profile) if isinstance(profile, str) else profile  # fail before any actor starts
    get_behaviour(behaviour, **(behaviour_config or {}))
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
    if ports is not None and len(ports) != n:
        raise ValueError(f"ports must give one port per replica ({n}), got {ports}")
    actor_cls: Any = ray.remote(num_cpus=num_cpus)(SimReplicaActor)
    actors: list[Any] = [actor_cls.remote(prof, time_scale, behaviour, behaviour_config, model, host) for _ in range(n)]
    try:
        urls = ray.get([a.start.remote(ports[i] if ports else 0) for i, a in enumerate(actors)], timeout=timeout)
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        raise
    return SimReplicas(urls, actors)


def stop_sim_replicas(replicas: SimReplicas) -> None:
    """Stop replicas started by `start_sim_replicas` (same as `replicas.stop()`)."""
    replicas.stop()
