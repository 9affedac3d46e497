"""The Ray Data batch pipeline: map_batches over an actor pool, each batch one gather (NaturalReasoning only).

`concurrency` rows in flight are `concurrency / batch_size` map_batches workers of `batch_size` rows.
"""

from __future__ import annotations

from typing import Any

from experiments.cases.base import Case, ConfigError
from experiments.systems.base import Job, System


class RayDataBatch(System):
    name = "ray-data"
    cases = ("natural_reasoning",)

    def _point(self, system_cfg: Any) -> tuple[int, int]:
        c, b = self.concurrency(system_cfg), int(system_cfg.batch_size)
        if b < 1 or c % b:
            raise ConfigError(f"system.concurrency ({c}) must be a multiple of system.batch_size ({b})")
        return c // b, b

    def check(self, case: Case, system_cfg: Any) -> None:
        super().check(case, system_cfg)
        self._point(system_cfg)

    def tag(self, case: Case, system_cfg: Any) -> str:
        w, b = self._point(system_cfg)
        return f"w{w}-b{b}"

    def labels(self, case: Case, system_cfg: Any) -> dict[str, Any]:
        w, b = self._point(system_cfg)
        return {**super().labels(case, system_cfg), "parallelism": [w, b, 1]}

    def run(self, job: Job, labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from baselines.ray_data_batch import BatchConfig, run_batch
        from matrix.ray_init import ensure_ray

        ensure_ray()
        w, b = self._point(job.system_cfg)
        small, large = job.pools["small"], job.pools["large"]
        cfg = BatchConfig(
            small_urls=small.urls, large_urls=large.urls, small_model=small.model, large_model=large.model,
            settings=job.settings, batch_size=b, data_parallelism=w, run_dir=job.run_dir, labels=labels,
            progress=job.progress, limit=job.case.limit(job.inputs),
        )  # fmt: skip
        metrics = run_batch(job.inputs, cfg)
        return metrics, {"batch_size": b, "parallelism": w, "settings": job.settings.to_dict()}

    async def run_virtual(self, job: Job, labels: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A model of the pipeline's scheduling on the virtual clock (Ray Data's actors cannot run on
        one loop): the baseline's blocks, dispatch and batch barrier, its own per-row code, each actor
        one CPU of its own that every request charges (`experiments/virtual/ray_data.py`)."""
        from baselines.ray_data_batch import BatchConfig
        from experiments.virtual.ray_data import CHARGE_KEY, MODEL, run_model

        w, b = self._point(job.system_cfg)
        small, large = job.pools["small"], job.pools["large"]
        cfg = BatchConfig(
            small_urls=small.urls, large_urls=large.urls, small_model=small.model, large_model=large.model,
            settings=job.settings, batch_size=b, data_parallelism=w, run_dir=job.run_dir, labels=labels,
            progress=job.progress, limit=job.case.limit(job.inputs), worker_cpus=1.0,
        )  # fmt: skip
        metrics = await run_model(job.inputs, cfg, cpu=ctx.cpu, charge=ctx.charge(CHARGE_KEY))
        return metrics, {"batch_size": b, "parallelism": w, "settings": job.settings.to_dict(), "model": MODEL}
