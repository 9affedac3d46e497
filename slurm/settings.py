"""Slurm settings from a Hydra `cluster` config, checked in full before anything is submitted.

A cluster config (`experiments/conf/cluster/*.yaml`) says `scheduler: slurm` or `scheduler: local`
and, for Slurm, carries a `slurm:` block (partition, account, qos, time, nodes, GPUs, CPUs, memory,
constraint). `slurm_settings` turns it into `SlurmSettings` or raises one `SlurmConfigError` that
lists every missing or wrong key with the value it got; `preflight` then asks the cluster itself
(`sbatch --test-only`, which submits nothing) whether it would accept such a job.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

SCHEDULERS = ("local", "slurm")
# Keys of the `slurm:` block; anything else is a typo that would otherwise be ignored silently.
KNOWN_KEYS = frozenset(
    {
        "partition",
        "account",
        "qos",
        "time_min",
        "nodes",
        "tasks_per_node",
        "gpus_per_node",
        "cpus_per_task",
        "mem_gb",
        "constraint",
        "array_parallelism",
        "setup",
        "additional_parameters",
    }
)


class SlurmConfigError(ValueError):
    """The Slurm settings are incomplete or wrong; the message lists every offending key."""


@dataclass(frozen=True)
class SlurmSettings:
    """What sbatch needs for one job of this cluster config (per node, like submitit)."""

    cluster: str
    partition: str
    time_min: int
    nodes: int = 1
    # Ray nodes per Slurm node: 1 on a real cluster; 2 lets one machine exercise the multi-node path.
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 16
    setup: tuple[str, ...] = ()
    additional_parameters: dict[str, Any] = field(default_factory=dict)

    def executor_parameters(self, *, nodes: int | None = None, name: str = "matrix") -> dict[str, Any]:
        """Keyword arguments for `submitit.AutoExecutor.update_parameters` (a job of `nodes` nodes)."""
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time_min,
            "nodes": self.nodes if nodes is None else nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "slurm_partition": self.partition,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        for key in ("account", "qos", "constraint"):
            value = getattr(self, key)
            if value:
                params[f"slurm_{key}"] = value
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.additional_parameters:
            params["slurm_additional_parameters"] = dict(self.additional_parameters)
        return params

    def sbatch_args(self, *, nodes: int | None = None) -> list[str]:
        """The same request as sbatch flags (for `sbatch --test-only`)."""
        args = [
            f"--partition={self.partition}",
            f"--time={self.time_min}",
            f"--nodes={self.nodes if nodes is None else nodes}",
            f"--ntasks-per-node={self.tasks_per_node}",
            f"--cpus-per-task={self.cpus_per_task}",
        ]
        if self.gpus_per_node:
            args.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.mem_gb:
            args.append(f"--mem={self.mem_gb}G")
        for key in ("account", "qos", "constraint"):
            value = getattr(self, key)
            if value:
                args.append(f"--{key}={value}")
        return args


def hydra_value(value: Any) -> str:
    """Render a value for a Hydra command-line override (strings quoted so that any text survives)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    # Hydra's quoted strings: backslashes escape only before a quote or at the end of the string.
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"'{text}'"


def _as_dict(cluster: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    if isinstance(cluster, DictConfig):
        # Keep ??? (missing) values visible as the marker string rather than raising on access.
        return OmegaConf.to_container(cluster, resolve=False, throw_on_missing=False)  # type: ignore[return-value]
    return dict(cluster)


def _positive_int(errors: list[str], key: str, value: Any, *, allow_zero: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a whole number >= 0" if allow_zero else "a positive whole number"
        errors.append(f"cluster.slurm.{key} must be {kind}, got {value!r}")
        return 0
    return int(value)


def scheduler_of(cluster: Mapping[str, Any] | DictConfig) -> str:
    """`local` or `slurm`; anything else is a SlurmConfigError naming the value."""
    data = _as_dict(cluster)
    scheduler = data.get("scheduler", "local")
    if scheduler not in SCHEDULERS:
        raise SlurmConfigError(
            f"cluster {data.get('name', '?')!r}: cluster.scheduler must be one of {', '.join(SCHEDULERS)}, "
            f"got {scheduler!r}"
        )
    return str(scheduler)


def slurm_settings(cluster: Mapping[str, Any] | DictConfig) -> SlurmSettings:
    """Check a `scheduler: slurm` cluster config and return its settings, or raise one error listing every problem."""
    data = _as_dict(cluster)
    name = str(data.get("name", "?"))
    if scheduler_of(data) != "slurm":
        raise SlurmConfigError(f"cluster {name!r} has scheduler {data.get('scheduler')!r}, not 'slurm'")
    block = data.get("slurm")
    if not isinstance(block, Mapping):
        raise SlurmConfigError(f"cluster {name!r}: cluster.slurm must be a mapping of Slurm settings, got {block!r}")
    errors: list[str] = []
    for key in sorted(set(block) - KNOWN_KEYS):
        errors.append(
            f"cluster.slurm.{key} is not a Slurm setting this launcher knows ({', '.join(sorted(KNOWN_KEYS))})"
        )

    def missing(key: str) -> bool:
        return key not in block or block[key] is None or block[key] == "???"

    partition = block.get("partition")
    if missing("partition"):
        errors.append(
            "cluster.slurm.partition is missing: set it to your cluster's partition, e.g. cluster.slurm.partition=gpu"
        )
    elif not isinstance(partition, str) or not partition.strip():
        errors.append(f"cluster.slurm.partition must be a partition name, got {partition!r}")
    if missing("time_min"):
        errors.append(
            "cluster.slurm.time_min is missing: the job's time limit in minutes, e.g. cluster.slurm.time_min=240"
        )
        time_min = 0
    else:
        time_min = _positive_int(errors, "time_min", block["time_min"])
    nodes = _positive_int(errors, "nodes", block.get("nodes", 1))
    tasks = _positive_int(errors, "tasks_per_node", block.get("tasks_per_node") or 1)
    gpus = _positive_int(errors, "gpus_per_node", block.get("gpus_per_node") or 0, allow_zero=True)
    cpus = _positive_int(errors, "cpus_per_task", block.get("cpus_per_task") or 1)
    mem = block.get("mem_gb")
    if mem is not None:
        mem = _positive_int(errors, "mem_gb", mem)
    parallel = _positive_int(errors, "array_parallelism", block.get("array_parallelism") or 16)
    optional: dict[str, str | None] = {}
    for key in ("account", "qos", "constraint"):
        value = block.get(key)
        if value == "???":
            errors.append(f"cluster.slurm.{key} is required by this cluster config: set cluster.slurm.{key}=...")
            value = None
        elif value is not None and (not isinstance(value, str) or not value.strip()):
            errors.append(f"cluster.slurm.{key} must be text or null, got {value!r}")
            value = None
        optional[key] = value
    setup = block.get("setup") or []
    if not isinstance(setup, Sequence) or isinstance(setup, str) or not all(isinstance(s, str) for s in setup):
        errors.append(f"cluster.slurm.setup must be a list of shell lines, got {setup!r}")
        setup = []
    extra = block.get("additional_parameters") or {}
    if not isinstance(extra, Mapping):
        errors.append(f"cluster.slurm.additional_parameters must be a mapping of sbatch options, got {extra!r}")
        extra = {}
    if len(errors) == 1:
        raise SlurmConfigError(f"cluster {name!r}: {errors[0]}; nothing was submitted")
    if errors:
        raise SlurmConfigError(
            f"cluster {name!r} has {len(errors)} bad Slurm setting(s); nothing was submitted:\n  - "
            + "\n  - ".join(errors)
        )
    return SlurmSettings(
        cluster=name,
        partition=str(partition),
        time_min=time_min,
        nodes=nodes,
        tasks_per_node=tasks,
        gpus_per_node=gpus,
        cpus_per_task=cpus,
        mem_gb=mem,
        account=optional["account"],
        qos=optional["qos"],
        constraint=optional["constraint"],
        array_parallelism=parallel,
        setup=tuple(setup),
        additional_parameters=dict(extra),
    )


def preflight(settings: SlurmSettings, *, nodes: int | None = None, timeout: float = 60.0) -> None:
    """Ask Slurm whether it would run such a job (`sbatch --test-only` submits nothing); raise with its answer."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmConfigError(
            f"cluster {settings.cluster!r} needs Slurm, but 'sbatch' is not on PATH "
            "(run on a login node, or bring up the local one: scripts/local_slurm.sh up)"
        )
    args = [sbatch, "--test-only", *settings.sbatch_args(nodes=nodes), "--wrap=true"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmConfigError(
            f"'sbatch --test-only' did not answer in {timeout:.0f}s; is slurmctld reachable?"
        ) from None
    text = (proc.stderr + proc.stdout).strip()
    if proc.returncode != 0 or "error" in text.lower():
        flags = " ".join(args[2:-1])
        raise SlurmConfigError(
            f"Slurm would refuse the jobs of cluster {settings.cluster!r} ({flags}); nothing was submitted; "
            f"sbatch --test-only said: {' '.join(text.split()) or f'exit {proc.returncode}'}"
        )
