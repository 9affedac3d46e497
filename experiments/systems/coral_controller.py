"""Coral's central controller: one asyncio loop, a refilling window of conversations (Coral only)."""

from __future__ import annotations

from typing import Any

from experiments.cases.base import Case
from experiments.systems.base import Job, System


class CoralController(System):
    name = "coral-controller"
    cases = ("coral",)

    def tag(self, case: Case, system_cfg: Any) -> str:
        return f"w{self.concurrency(system_cfg)}"

    def run(self, job: Job, labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from baselines.coral_controller import ControllerConfig, run_controller

        pool = job.pools["dialogue"]
        window = self.concurrency(job.system_cfg)
        cfg = ControllerConfig(
            urls=pool.urls, model=pool.model, settings=job.settings, window=window, run_dir=job.run_dir,
            labels=labels, progress=job.progress,
        )  # fmt: skip
        metrics = run_controller(job.inputs, cfg)
        return metrics, {"window": window, "settings": job.settings.to_dict()}
