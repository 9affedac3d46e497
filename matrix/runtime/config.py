"""What a run needs: the workflow, its roles, the input, the bounds, where results go."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.agent import RoleSpec
from matrix.payload import DEFAULT_OFFLOAD_THRESHOLD
from matrix.workflow import get_workflow

PEER_POLICIES = ("p2c", "least_loaded", "random")
PLACEMENTS = ("default", "spread")


@dataclass
class RunConfig:
    """One run of a workflow over a data source.

    `workflow_modules` are imported in every process before anything else, so that the workflows
    and agents they register can be looked up by name there (no code travels in messages).
    """

    workflow: str
    roles: Sequence[RoleSpec]
    source: str | Path | Iterable[dict[str, Any]]
    run_dir: Path
    max_concurrent_tasks: int = 100
    num_trials: int = 1
    num_partitions: int = 1
    seed: int = 0
    id_field: str | None = "id"
    limit: int | None = None
    offload_threshold: int | None = DEFAULT_OFFLOAD_THRESHOLD
    lease_seconds: float = 3600.0
    max_attempts: int = 3
    #: A replayed attempt keeps its payloads in the message instead of offloading them, so that it no
    #: longer depends on other actors staying alive (a payload's owner dying is what replays most tasks).
    inline_replays: bool = True
    workflow_modules: Sequence[str] = ()
    peer_policy: str = "p2c"
    progress: bool = True
    flush_every: int = 64
    #: On SIGINT/SIGTERM: stop admitting and let the tasks in flight finish for at most this long, then
    #: close the output (resumable either way: a rerun with the same run_dir does only what is missing).
    drain_seconds: float = 30.0
    #: Serve live metrics for Prometheus at http://prometheus_host:prometheus_port/metrics (None: off).
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    #: Replays start from the task's last hop (each hop's message is kept by admission until the task
    #: ends) instead of its first role; False: every replay starts over (the ablation).
    checkpoints: bool = True
    #: The message itself is kept every this many hops (the values a hop offloads are sent at every hop
    #: that has any): a replay redoes fewer than this many hops, and a long task's growing message is
    #: not pickled once more at every hop.
    checkpoint_every: int = 4
    #: Where Ray puts the run's actors: "default" (Ray's own choice: zero-CPU actors mostly land on the
    #: driver's node) or "spread" (agents, sinks and admissions spread over every node of the cluster,
    #: so that one node's loss takes a share of each, as on a real cluster).
    placement: str = "default"
    labels: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.max_concurrent_tasks < 1:
            raise ValueError(f"max_concurrent_tasks must be >= 1, got {self.max_concurrent_tasks}")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {self.num_partitions}")
        if self.peer_policy not in PEER_POLICIES:
            raise ValueError(f"peer_policy must be one of {PEER_POLICIES}, got {self.peer_policy!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 hop, got {self.checkpoint_every}")
        if self.drain_seconds < 0:
            raise ValueError(f"drain_seconds must be >= 0, got {self.drain_seconds}")
        if self.offload_threshold is not None and self.offload_threshold < 0:
            raise ValueError(f"offload_threshold must be >= 0 or None (off), got {self.offload_threshold}")

    def import_modules(self) -> None:
        for name in self.workflow_modules:
            importlib.import_module(name)

    def check(self) -> None:
        """Fail before starting anything if the workflow names a role nobody deploys."""
        self.import_modules()
        wf = get_workflow(self.workflow)
        deployed = {r.role for r in self.roles}
        missing = sorted(wf.roles() - deployed)
        if missing:
            raise ValueError(f"workflow {self.workflow!r} routes to roles {missing} but no RoleSpec deploys them")
        dupes = sorted({r.role for r in self.roles if sum(x.role == r.role for x in self.roles) > 1})
        if dupes:
            raise ValueError(f"roles deployed twice: {dupes}")

    def partition_bound(self) -> int:
        """Each data partition's share of `max_concurrent_tasks` (the bound is for the whole run)."""
        return max(1, -(-self.max_concurrent_tasks // self.num_partitions))

    def output_path(self, partition: int) -> Path:
        if self.num_partitions == 1:
            return self.run_dir / "output.jsonl"
        return self.run_dir / f"output-{partition:04d}.jsonl"
