"""Matrix: the P2P runtime on Ray (admission, stateless agent actors, sink), for any case."""

from __future__ import annotations

from typing import Any

from experiments.cases.base import Case, ConfigError
from experiments.systems.base import Job, System


class MatrixP2P(System):
    name = "matrix"

    def _point(self, system_cfg: Any) -> tuple[int, int, int]:
        triple = system_cfg.get("parallelism")
        if triple is not None:
            if len(triple) != 3:
                raise ConfigError(
                    f"system.parallelism must be [partitions, tasks per partition, instances], got {list(triple)}"
                )
            p, t, a = (int(v) for v in triple)
            c = p * t
        else:
            c = self.concurrency(system_cfg)
            p, a = int(system_cfg.get("partitions", 1)), int(system_cfg.get("instances", 1))
        if p < 1 or a < 1:
            raise ConfigError(f"system.partitions and system.instances must be >= 1, got {p} and {a}")
        if c % p:
            raise ConfigError(f"system.concurrency ({c}) must be a multiple of system.partitions ({p})")
        return c, p, a

    def concurrency(self, system_cfg: Any) -> int:
        triple = system_cfg.get("parallelism")
        if triple is not None and len(triple) == 3:
            return int(triple[0]) * int(triple[1])
        return int(system_cfg.concurrency)

    def check(self, case: Case, system_cfg: Any) -> None:
        self._point(system_cfg)
        super().check(case, system_cfg)

    def tag(self, case: Case, system_cfg: Any) -> str:
        return case.p2p_tag(*self._point(system_cfg))

    def labels(self, case: Case, system_cfg: Any) -> dict[str, Any]:
        return {**super().labels(case, system_cfg), **case.p2p_labels(*self._point(system_cfg))}

    def run(self, job: Job, labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from matrix.ray_init import ensure_ray
        from matrix.runtime.ray_p2p import run_ray

        ensure_ray()
        c, p, a = self._point(job.system_cfg)
        with job.case.p2p_services(job.settings) as services:
            port = job.system_cfg.get("prometheus_port")
            cfg = job.case.p2p_config(
                job.pools, job.settings, job.inputs, job.run_dir, concurrency=c, partitions=p, instances=a,
                progress=job.progress, labels=labels, prometheus_port=None if port is None else int(port),
                checkpoints=bool(job.system_cfg.get("checkpoints", True)),
            )  # fmt: skip
            metrics = run_ray(cfg)
            metrics.update(services())
        config = {"concurrency": c, "partitions": p, "instances": a, "settings": job.case.settings_dict(job.settings)}
        return metrics, config

    async def run_virtual(self, job: Job, labels: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The runtime's own admission, workflow, agents and sink on the local transport, in the virtual
        loop. Each hop is charged the measured per-hop CPU of an agent actor (`p2p_hop`) on that actor's
        own CPU: `instances` actors per role, a task's hops going to one of them by its task id."""
        import zlib

        from matrix.runtime.local import run_local_async

        c, p, a = self._point(job.system_cfg)
        hop = ctx.charge("p2p_hop")

        async def before_step(role: str, msg: Any) -> None:
            if hop > 0:
                await ctx.cpu(f"{role}-{zlib.crc32(msg.task_id.encode()) % a}").charge(hop)

        # tau2's in-process tool servers charge their measured costs unless the clock charges nothing
        options: dict[str, Any] = {} if ctx.charges or job.case.name != "tau2" else {"costs": {}}
        with job.case.p2p_services(job.settings, **options) as services:
            cfg = job.case.p2p_config(
                job.pools, job.settings, job.inputs, job.run_dir, concurrency=c, partitions=p, instances=a,
                progress=False, labels=labels,
            )  # fmt: skip
            metrics = await run_local_async(cfg, before_step=before_step)
            metrics.update(services())
        config = {"concurrency": c, "partitions": p, "instances": a, "settings": job.case.settings_dict(job.settings)}
        return metrics, config
