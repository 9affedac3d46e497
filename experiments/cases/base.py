"""The harness side of a case: what every system needs to run it on the same footing.

A `Case` turns its config node (`conf/case/*.yaml`, shaped by `conf/scale/`) into the model pools
it needs (`PoolSpec`s, started by whatever backend is chosen), its protocol settings for those
pools, its inputs, the P2P runtime's `RunConfig`, and quality from output rows. Systems
(`experiments/systems/`) call these; no system knows which case it runs beyond this interface.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from experiments.common import backend_labels
from matrix.agent import RoleSpec
from matrix.llm.backends.base import Pool, PoolSpec
from matrix.runtime.config import RunConfig

WarmUpChat = tuple[Pool, list[dict[str, Any]], dict[str, Any]]


class ConfigError(ValueError):
    """A configuration value that cannot run; the message names the key and the value."""


def plain(node: Any) -> Any:
    """A config node as plain Python (dicts, lists), resolved; plain values pass through."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def pool_specs_from(models: Any, behaviour_config: dict[str, dict[str, Any]] | None = None) -> list[PoolSpec]:
    """The case config's `models` block (one entry per pool) as `PoolSpec`s."""
    out = []
    for name, m in (plain(models) or {}).items():
        sim = m.get("sim") or {}
        out.append(
            PoolSpec(
                name=str(name),
                model=str(m["model"]),
                replicas=int(m.get("replicas", 1)),
                tools=bool(m.get("tools", False)),
                min_context=int(m.get("min_context", 0)),
                serve=dict(m.get("serve") or {}),
                sim_profile=sim.get("profile"),
                sim_model=sim.get("model"),
                sim_behaviour=str(sim.get("behaviour", "generic")),
                sim_behaviour_config={**(sim.get("config") or {}), **((behaviour_config or {}).get(str(name)) or {})},
            )
        )
    if not out:
        raise ConfigError("case.models is empty: a case needs at least one model pool")
    return out


def warm_up_chats(chats: Sequence[WarmUpChat], *, max_concurrency: int | None = None) -> None:
    """Send each (pool, messages, request fields) chat once, all at once, one client per pool, and
    wait for the replies; a failed request is ignored (warming up only wakes the engines)."""
    from matrix.llm.client import LLMClient
    from matrix.llm.errors import LLMError

    if not chats:
        return
    options: dict[str, Any] = {} if max_concurrency is None else {"max_concurrency": max_concurrency}

    async def send_all() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[int, LLMClient] = {}
            for pool, _, _ in chats:
                if id(pool) not in clients:
                    client = LLMClient(pool.urls, model=pool.model, **options)
                    clients[id(pool)] = await stack.enter_async_context(client)

            async def one(pool: Pool, messages: list[dict[str, Any]], body: dict[str, Any]) -> None:
                with contextlib.suppress(LLMError):
                    await clients[id(pool)].chat(messages, role="warm-up", **body)

            await asyncio.gather(*(one(*chat) for chat in chats))

    from experiments.virtual import run_coroutine

    run_coroutine(send_all())  # on the virtual clock's loop when a job runs there


class Case(abc.ABC):
    """One case study as the harness runs it."""

    name: ClassVar[str]
    workflow: ClassVar[str]  # the runtime workflow's registered name
    workflow_module: ClassVar[str]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------ what it needs
    def pool_specs(self) -> list[PoolSpec]:
        return pool_specs_from(self.cfg.models)

    @abc.abstractmethod
    def settings(self, pools: dict[str, Pool]) -> Any:
        """The protocol settings for these pools (a small-context model gets shorter turns)."""

    @abc.abstractmethod
    def inputs(self, settings: Any) -> Any:
        """The rows every system gets (the same list, or the same source path)."""

    def limit(self, inputs: Any) -> int | None:
        """How many rows a system reads from `inputs` when it is a path (None: all)."""
        return None

    @property
    def trials(self) -> int:
        """How many times each input row runs (tau2's trials); once unless a case says otherwise."""
        return 1

    def warm_up(self, pools: dict[str, Pool], inputs: Any, settings: Any) -> None:
        """A few untimed requests after the pools start, so that no system pays for a cold engine."""

    # ------------------------------------------------------------------ the P2P runtime
    @abc.abstractmethod
    def p2p_roles(self, pools: dict[str, Pool], settings: Any, instances: int) -> list[RoleSpec]:
        """The runtime's roles for this case on these pools, `instances` actors each."""

    def p2p_source(self, settings: Any, inputs: Any) -> Any:
        """The rows as the runtime reads them (the inputs themselves unless a case reshapes them)."""
        return inputs

    def p2p_config(
        self, pools: dict[str, Pool], settings: Any, inputs: Any, run_dir: Path, *, concurrency: int,
        partitions: int, instances: int, progress: bool, labels: dict[str, Any], **options: Any,
    ) -> RunConfig:  # fmt: skip
        """The runtime's RunConfig for this case on these pools; `options` are further RunConfig fields."""
        return RunConfig(
            workflow=self.workflow,
            roles=self.p2p_roles(pools, settings, instances),
            source=self.p2p_source(settings, inputs),
            run_dir=run_dir,
            max_concurrent_tasks=concurrency,
            num_partitions=partitions,
            num_trials=self.trials,
            limit=self.limit(inputs),
            progress=progress,
            workflow_modules=[self.workflow_module],
            labels=labels,
            **options,
        )

    @contextlib.contextmanager
    def p2p_services(self, settings: Any) -> Iterator[Callable[[], dict[str, Any]]]:
        """Services a P2P run needs beside the models (tau2's tool servers), up for the run's length;
        yields a function the system calls after the run for the services' metrics."""
        yield dict

    def p2p_tag(self, concurrency: int, partitions: int, instances: int) -> str:
        """The run id's suffix for a P2P point (rundirs.py strips it to find the experiment)."""
        return f"c{concurrency}"

    def p2p_labels(self, concurrency: int, partitions: int, instances: int) -> dict[str, Any]:
        """Labels a P2P point adds to its metrics (NaturalReasoning: Table 8's parallelism triple)."""
        return {}

    # ------------------------------------------------------------------ results
    @abc.abstractmethod
    def quality(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The case's quality metrics from output rows (the same function for every system)."""

    def labels(self, pools: dict[str, Pool]) -> dict[str, Any]:
        """Where the run's models ran, as the results contract records it (single-pool cases)."""
        (pool,) = pools.values()
        return backend_labels(
            self.name, pool.backend, pool.simulated, pool.time_scale, pool.hardware, len(pool.urls), pool.info
        )

    def settings_dict(self, settings: Any) -> dict[str, Any]:
        return dict(settings.to_dict())

    def extra_metrics(self, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        """Case-specific figures added to metrics.json after a run (Coral: backend efficiency)."""
        return {}
