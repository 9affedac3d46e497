"""The one interface every serving backend implements.

A backend starts (or points at) an OpenAI-compatible service and hands back a `Server`: its base
URL, the model name to put in requests, and a way to stop what we started. Agents never see which
backend is behind a URL; they reach every model through `matrix.llm.client.LLMClient`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class BackendError(RuntimeError):
    """A backend could not start or reach its service; the message names the step and the value."""


@dataclass
class Server:
    """A running OpenAI-compatible service.

    `base_url` ends in `/v1`. `stop()` stops only what this process started (by PID or by handle);
    for an external API it does nothing.
    """

    backend: str
    base_url: str
    model: str
    simulated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    _stop: Any = None

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Backend(abc.ABC):
    """A serving backend, chosen by one config key (`backend: sim | vllm-cpu | vllm | sglang | openai`)."""

    name: ClassVar[str]
    simulated: ClassVar[bool] = False

    @abc.abstractmethod
    def start(self, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
        """Start the service (or resolve the external one), wait until healthy, return it."""

    # Pools: what a workload needs (one or more named pools of replicas), started in one call. The
    # default starts each pool through `start_pool`; a backend whose one server can play every pool
    # (the CPU engine, an external API) overrides `start_pools`.

    def engine_key(self, specs: list[PoolSpec], **options: Any) -> str | None:
        """What identifies the servers `start_pools` would start for `specs`, when other specs could
        share them (their `PoolSet.rebound`); None: only the very same specs share servers."""
        return None

    def start_pool(self, spec: PoolSpec, **options: Any) -> tuple[Pool, Any]:
        """Start `spec`'s replicas; return the pool and a callable that stops them."""
        raise BackendError(f"backend {self.name!r} cannot start replica pools")

    def start_pools(self, specs: list[PoolSpec], **options: Any) -> PoolSet:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise BackendError(f"pool names must be unique, got {names}")
        pools: dict[str, Pool] = {}
        stops: list[Any] = []
        try:
            for spec in specs:
                pool, stop = self.start_pool(spec, **options)
                pools[spec.name] = pool
                stops.append(stop)
        except BaseException:
            PoolSet({}, stops).stop()
            raise
        return PoolSet(pools, stops)


@dataclass(frozen=True)
class PoolSpec:
    """One pool of replicas a workload needs, described once for every backend.

    A case declares its pools (Coral: one `dialogue` pool; NaturalReasoning: `small` and `large`;
    tau2: one `agent` pool with tool calling) and the chosen backend turns each into endpoints:
    `model` and `serve` are what GPU backends deploy, `sim_*` what the simulated replicas play,
    `replicas` how many of them. Backends that cannot honour a field (an external API has no
    replica count) ignore it and say so in the pool's `info`.
    """

    name: str
    model: str
    replicas: int = 1
    tools: bool = False
    min_context: int = 0
    serve: dict[str, Any] = field(default_factory=dict)
    sim_profile: str | None = None
    sim_model: str | None = None
    sim_behaviour: str = "generic"
    sim_behaviour_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.replicas) < 1:
            raise BackendError(f"pool {self.name!r}: replicas must be >= 1, got {self.replicas!r}")


@dataclass
class Pool:
    """A started pool: the endpoints to send requests to and how to label what they produce."""

    name: str
    urls: list[str]
    model: str
    backend: str
    simulated: bool = False
    time_scale: float = 1.0
    hardware: str = ""
    context_window: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


Rebind = Callable[[list["PoolSpec"]], dict[str, Pool]]


class PoolSet(dict[str, Pool]):
    """The pools of one workload by name, plus `stop()` for everything that was started for them.

    `rebind`, where the backend gives one, maps other pool specs onto the same running servers
    (the CPU engine plays any pool): a launch that moves from one case to another keeps the engine.
    """

    def __init__(
        self,
        pools: dict[str, Pool],
        stops: list[Any],
        rebind: Callable[[list[PoolSpec]], dict[str, Pool]] | None = None,
    ) -> None:
        super().__init__(pools)
        self._stops = stops
        self.rebind = rebind

    def rebound(self, specs: list[PoolSpec]) -> PoolSet | None:
        """These servers as `specs`' pools (stopping the result stops them), or None when they cannot be."""
        if self.rebind is None:
            return None
        return PoolSet(self.rebind(specs), self._stops, self.rebind)

    def stop(self) -> None:
        stops, self._stops = self._stops, []
        errors = []
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # stop the rest; report the first failure afterwards
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> PoolSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
