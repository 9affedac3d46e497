"""The harness side of a case: what every system needs to run it on the same footing.

A `Case` turns its config node (`conf/case/*.yaml`, shaped by `conf/scale/`) into the model pools
it needs (`PoolSpec`s, started by whatever backend is chosen), its protocol settings for those
pools, its inputs, the P2P runtime's `RunConfig`, and quality from output rows. Systems
(`experiments/systems/`) call these; no system knows which case it runs beyond this interface.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from experiments.common import backend_labels
from matrix.llm.backends.base import Pool, PoolSpec
from matrix.runtime.config import RunConfig


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


class Case(abc.ABC):
    """One case study as the harness runs it."""

    name: ClassVar[str]
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

    def warm_up(self, pools: dict[str, Pool], inputs: Any, settings: Any) -> None:
        """A few untimed requests after the pools start, so that no system pays for a cold engine."""

    # ------------------------------------------------------------------ the P2P runtime
    @abc.abstractmethod
    def p2p_config(
        self, pools: dict[str, Pool], settings: Any, inputs: Any, run_dir: Path, *, concurrency: int,
        partitions: int, instances: int, progress: bool, labels: dict[str, Any],
    ) -> RunConfig:  # fmt: skip
        """The runtime's RunConfig for this case on these pools."""

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
