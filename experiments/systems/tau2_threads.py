"""tau2's own threaded runner: `run_tasks` with a thread pool, litellm at the same servers (tau2 only).

`replicas` gives the runner only the first N of the pool's replicas: the paper's layout, where the
threaded runner had one node and Matrix thirteen (null: all of them, the same hardware).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from experiments.cases.base import Case, ConfigError
from experiments.systems.base import Job, System


class Tau2Threads(System):
    name = "tau2-threads"
    cases = ("tau2",)

    def check(self, case: Case, system_cfg: Any) -> None:
        super().check(case, system_cfg)
        n = system_cfg.get("replicas")
        if n is not None and int(n) < 1:
            raise ConfigError(f"system.replicas must be >= 1 or null, got {n!r}")

    def tag(self, case: Case, system_cfg: Any) -> str:
        return f"c{self.concurrency(system_cfg)}"

    def _config(self, job: Job, labels: dict[str, Any]) -> Any:
        """The runner's ThreadsConfig: the first `system.replicas` of the pool (the paper's one node)."""
        from baselines.tau2_threads import ThreadsConfig

        pool = job.pools["agent"]
        n = job.system_cfg.get("replicas")
        if n is not None and int(n) < len(pool.urls):
            pool = replace(pool, urls=pool.urls[: int(n)])
            labels["hardware"] = f"{labels.get('hardware')} (the baseline on {n} of {len(job.pools['agent'].urls)})"
            labels["replicas"] = int(n)
        return ThreadsConfig(
            urls=pool.urls, model=pool.model, run_dir=job.run_dir, settings=job.settings,
            task_ids=[t.id for t in job.inputs], num_trials=job.case.trials,
            max_concurrency=self.concurrency(job.system_cfg), rewrite_results=True, labels=labels,
        )  # fmt: skip

    def run(self, job: Job, labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from baselines.tau2_threads import run_threads

        metrics = run_threads(self._config(job, labels))
        return metrics, {"threads": self.concurrency(job.system_cfg), "settings": job.settings.to_dict()}

    async def run_virtual(self, job: Job, labels: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A model of the threaded runner's scheduling on the virtual clock (`experiments/virtual/tau2_threads.py`):
        N worker coroutines drive the case's own tau2 roles, the runner's one CPU charged per LLM call
        (`tau2_litellm_thread`) and per results rewrite (`tau2_rewrite`, else the committed fit)."""
        from experiments.virtual.tau2_threads import ThreadsCosts, run_threads_model

        cfg = self._config(job, labels)
        threads = cfg.max_concurrency
        costs = ThreadsCosts.from_charges(ctx.charges)
        metrics = await run_threads_model(cfg, cpu=ctx.cpu("tau2-threads"), costs=costs)
        labels.update(simulated=True, model=metrics["model"])
        return metrics, {"threads": threads, "settings": job.settings.to_dict(), "model": metrics["model"],
                         "costs": costs.to_dict()}  # fmt: skip
