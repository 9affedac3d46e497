"""The model pools of a launch: started for the first job that needs them, kept for the next job
that needs the very same ones (a matched pair's two systems, a sweep's points, repeats), stopped
when a job needs others and at the end of the launch (the Hydra callback in experiments/summary.py)."""

from __future__ import annotations

import atexit
import contextlib
import json
from typing import Any

from experiments.cases.base import Case, plain
from matrix.llm.backends import get_backend
from matrix.llm.backends.base import PoolSet


class SharedPools:
    """The pools of the last job, kept for the next job when it needs the very same ones."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.engine: str | None = None
        self.pools: PoolSet | None = None
        atexit.register(self._stop_quietly)

    def get(self, case: Case, backend_cfg: Any) -> tuple[PoolSet, bool]:
        """The pools for `case` on the configured backend, and whether they were started just now."""
        specs = case.pool_specs()
        options = {k: v for k, v in (plain(backend_cfg) or {}).items() if k != "name"}
        backend = get_backend(str(backend_cfg.name))
        key = json.dumps([backend_cfg.name, options, [repr(s) for s in specs]], sort_keys=True, default=str)
        engine = backend.engine_key(specs, **options)
        engine = None if engine is None else json.dumps([backend_cfg.name, engine])
        if self.pools is not None and key == self.key:
            return self.pools, False
        if self.pools is not None and engine is not None and engine == self.engine:
            rebound = self.pools.rebound(specs)  # the same servers play this case's pools
            if rebound is not None:
                self.pools, self.key = rebound, key
                return rebound, False
        self.stop()
        self.pools, self.key, self.engine = backend.start_pools(specs, **options), key, engine
        return self.pools, True

    def stop(self) -> None:
        pools, self.pools, self.key, self.engine = self.pools, None, None, None
        if pools is not None:
            pools.stop()

    def _stop_quietly(self) -> None:
        # At interpreter exit Ray may already be down (its own exit hook ran first), and with it the
        # sim replicas; what is left to stop (a CPU engine's process group) has its own exit hook.
        with contextlib.suppress(Exception):
            self.stop()


SHARED = SharedPools()
