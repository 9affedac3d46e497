"""A driver process for the resume and graceful-stop tests: one echo run over N rows into RUN_DIR.

    python tests/runtime/resume_driver.py RUN_DIR N [STEP_SECONDS] [DRAIN_SECONDS]

Each row sleeps STEP_SECONDS in role b, so that a run lasts long enough to be killed mid-way. It
prints one JSON line with the run's metrics when it ends (normally or after SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import matrix.bench.dummy  # noqa: F401 (registers the echo workflow)
from matrix.agent import RoleSpec
from matrix.bench.dummy import Echo
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import run_ray


def main() -> int:
    run_dir, n = Path(sys.argv[1]), int(sys.argv[2])
    step = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    drain = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    cfg = RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo, num_instances=2)],
        source=[{"id": i, "x": i, "sleep": {"b": step}} for i in range(n)],
        run_dir=run_dir,
        max_concurrent_tasks=20,
        num_partitions=2,
        flush_every=4,
        drain_seconds=drain,
        progress=False,
    )
    m = run_ray(cfg)
    print(json.dumps({k: m.get(k) for k in ("tasks_finished", "tasks_resumed", "duplicate_rows", "stopped")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
