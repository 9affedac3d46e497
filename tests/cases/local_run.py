"""The P2P run config that case and baseline tests build for a case's roles on the local runtime."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from matrix.agent import RoleSpec
from matrix.runtime.config import RunConfig


def case_run_config(case: ModuleType, roles: list[RoleSpec], source: Any, run_dir: Path, concurrency: int) -> RunConfig:
    """`case`'s workflow (its module's `WORKFLOW`) over `roles`, reading `source`, with `concurrency`
    tasks in flight and no progress line."""
    return RunConfig(
        workflow=case.WORKFLOW,
        roles=roles,
        source=source,
        run_dir=run_dir,
        max_concurrent_tasks=concurrency,
        progress=False,
        workflow_modules=[case.__name__],
    )
