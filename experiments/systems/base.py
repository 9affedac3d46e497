"""A system under comparison: it runs a case on given pools and writes one run directory.

Every system gets the same `Job` (case, pools, settings, inputs) from the entry point, so the
footing is equal by construction: what differs between two systems' runs is their own scheduling
and the knobs in their config (`conf/system/<name>.yaml`). `finish` writes what the results contract
asks for the same way for every system (quality from the output rows, labels, config).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from experiments.cases.base import Case, ConfigError, plain
from experiments.common import read_rows
from matrix.llm.backends.base import Pool
from matrix.runtime.report import write_json


@dataclass
class Job:
    """One run of one system: what the entry point prepared for it."""

    case: Case
    system_cfg: Any
    pools: dict[str, Pool]
    settings: Any
    inputs: Any
    run_dir: Path
    progress: bool = True


class System(abc.ABC):
    """One system's way of running a case."""

    name: ClassVar[str]
    cases: ClassVar[tuple[str, ...] | None] = None  # the cases it can run (None: every case)

    def check(self, case: Case, system_cfg: Any) -> None:
        """Refuse a case or a knob this system cannot run, before any server starts."""
        if self.cases is not None and case.name not in self.cases:
            raise ConfigError(
                f"system {self.name!r} runs case {' or '.join(self.cases)}, not {case.name!r}; "
                f"pick system=matrix or the case's own baseline"
            )
        if self.concurrency(system_cfg) < 1:
            raise ConfigError(f"system.concurrency must be >= 1, got {system_cfg.get('concurrency')!r}")

    def concurrency(self, system_cfg: Any) -> int:
        return int(system_cfg.concurrency)

    @abc.abstractmethod
    def tag(self, case: Case, system_cfg: Any) -> str:
        """The run id's suffix for this point (`c16`, `w50`, `w2-b8`, `p4-t125-a1`)."""

    def labels(self, case: Case, system_cfg: Any) -> dict[str, Any]:
        return {"system": self.name, "concurrency": self.concurrency(system_cfg)}

    @abc.abstractmethod
    def run(self, job: Job, labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the job; return its metrics and the config to record (knobs, settings)."""

    async def run_virtual(self, job: Job, labels: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the job on the virtual clock's loop (`experiments.virtual`); `ctx` is its VirtualContext."""
        raise ConfigError(f"system {self.name!r} has no virtual-clock mode; run it with clock=real")

    async def execute_virtual(self, job: Job, base_labels: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """`execute` on the virtual clock: the same files, with the clock and its CPU charges recorded."""
        labels = {**base_labels, **self.labels(job.case, job.system_cfg)}
        metrics, config = await self.run_virtual(job, labels, ctx)
        metrics["virtual_clock"] = ctx.describe()
        return finish(job, metrics, labels, {**config, "virtual_clock": ctx.describe()})

    def execute(self, job: Job, base_labels: dict[str, Any]) -> dict[str, Any]:
        """Run, then write metrics.json and config.json with quality and labels (every system alike)."""
        labels = {**base_labels, **self.labels(job.case, job.system_cfg)}
        metrics, config = self.run(job, labels)
        return finish(job, metrics, labels, config)


def finish(job: Job, metrics: dict[str, Any], labels: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    run_dir = job.run_dir
    metrics.update(labels)
    metrics["quality"] = job.case.quality(read_rows(run_dir))
    metrics.update(job.case.extra_metrics(run_dir, metrics))
    write_json(run_dir / "metrics.json", metrics)
    path = run_dir / "config.json"
    written = json.loads(path.read_text()) if path.exists() else {}  # what the system itself recorded
    pools = {name: {"urls": p.urls, "model": p.model} for name, p in job.pools.items()}
    write_json(path, {**written, **config, **labels, "pools": pools, "case_config": plain(job.case.cfg)})
    return metrics
