"""Coral's central controller: one asyncio loop, a refilling window of conversations (Coral only)."""

from __future__ import annotations

from typing import Any

from experiments.cases.base import Case, ConfigError
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

    async def run_virtual(self, job: Job, labels: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The controller's own loop on the virtual clock. It is one process: every LLM request charges
        the measured CPU of the controller's request path (`controller_fair_matrix`, the path the Coral
        reference used in the paper) on the process's one CPU, so requests queue for it."""
        from baselines.coral_controller import ControllerConfig, run_controller_async

        pool = job.pools["dialogue"]
        window = self.concurrency(job.system_cfg)
        path = str(job.system_cfg.get("request_path") or "controller_fair_matrix")
        if ctx.charges and path not in ctx.charges:
            raise ConfigError(
                f"system.request_path={path!r} has no measured charge in {ctx.source}; "
                f"choose one of {sorted(k for k in ctx.charges if k.startswith('controller_'))}"
            )
        cfg = ControllerConfig(
            urls=pool.urls, model=pool.model, settings=job.settings, window=window, run_dir=job.run_dir,
            labels=labels, progress=False, request_cpu=ctx.charger(path, "controller"),
        )  # fmt: skip
        metrics = await run_controller_async(job.inputs, cfg)
        return metrics, {"window": window, "settings": job.settings.to_dict(), "request_path": path}
