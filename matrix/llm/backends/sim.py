"""Backend `sim`: one simulated GPU replica (matrix.llm.sim) as a child process on 127.0.0.1.

The profile and behaviour are checked here, before anything starts, so that a typo fails at once
with the valid names instead of as a child process that exited. The `Server` it returns says
`simulated=True` and carries the profile and time scale, so that every consumer can label (and
convert) its figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from matrix.llm.backends._process import free_port, start_server_process
from matrix.llm.backends.base import Backend, BackendError, Pool, PoolSpec, Server
from matrix.llm.sim.behaviour import get_behaviour
from matrix.llm.sim.profile import DEFAULT_PROFILE, load_profile


class SimBackend(Backend):
    """`matrix serve sim --profile NAME --port N [--time-scale X] [--behaviour NAME]`."""

    name: ClassVar[str] = "sim"
    simulated: ClassVar[bool] = True

    def start(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        profile: str = DEFAULT_PROFILE,
        time_scale: float = 1.0,
        behaviour: str = "generic",
        behaviour_config: dict[str, Any] | None = None,
        model: str | None = None,
        log_path: Path | str | None = None,
        timeout: float = 60.0,
        **options: Any,
    ) -> Server:
        """Start the replica, wait until `/health` answers, and return it (stop() ends the process)."""
        if options:
            raise BackendError(
                f"sim: unknown options {sorted(options)}; known: profile, time_scale, behaviour, "
                "behaviour_config, model, log_path, timeout"
            )
        prof = load_profile(profile)  # raises UnknownProfileError naming the valid profiles
        get_behaviour(behaviour, **(behaviour_config or {}))  # raises with the registered names
        if not time_scale > 0:
            raise ValueError(f"sim backend: time_scale must be > 0, got {time_scale!r}")
        served = model or prof.model
        port = port or free_port(host)
        cmd = [
            sys.executable,
            "-m",
            "matrix.llm.sim.server",
            "--host",
            host,
            "--port",
            str(port),
            "--profile",
            str(profile),
            "--time-scale",
            repr(float(time_scale)),
            "--behaviour",
            behaviour,
            "--model",
            served,
        ]
        if behaviour_config:
            cmd += ["--behaviour-config", json.dumps(behaviour_config)]
        proc, stop = start_server_process(
            cmd,
            health_url=f"http://{host}:{port}/health",
            name=f"sim replica ({prof.name})",
            log_path=Path(log_path) if log_path is not None else None,
            timeout=timeout,
        )
        return Server(
            backend=self.name,
            base_url=f"http://{host}:{port}/v1",
            model=served,
            simulated=True,
            info={
                "profile": prof.name,
                "gpu": prof.gpu,
                "time_scale": float(time_scale),
                "behaviour": behaviour,
                "pid": proc.pid,
                "time_unit": "simulated seconds",
            },
            _stop=stop,
        )

    def start_pool(
        self,
        spec: PoolSpec,
        *,
        time_scale: float = 1.0,
        profile: str | None = None,
        replicas: int | None = None,
        **options: Any,
    ) -> tuple[Pool, Any]:
        """`spec.replicas` simulated replicas as Ray actors on 127.0.0.1 (Ray is started if needed).

        `profile` and `replicas` override the spec's for every pool (a backend-wide choice, e.g. the
        H100 profile instead of the A100 one); `time_scale` runs the replicas faster than real time.
        """
        if options:
            raise BackendError(f"sim: unknown pool options {sorted(options)}; known: time_scale, profile, replicas")
        from matrix.llm.sim.replicas import start_sim_replicas
        from matrix.ray_init import ensure_ray

        prof = profile or spec.sim_profile or DEFAULT_PROFILE
        n = int(replicas or spec.replicas)
        served = spec.sim_model or load_profile(prof).model
        ensure_ray()
        reps = start_sim_replicas(
            n,
            prof,
            float(time_scale),
            spec.sim_behaviour,
            behaviour_config=dict(spec.sim_behaviour_config),
            model=served,
        )
        pool = Pool(
            name=spec.name,
            urls=list(reps),
            model=served,
            backend=self.name,
            simulated=True,
            time_scale=float(time_scale),
            hardware=f"SIMULATED {n} x {prof}",
            info={
                "profile": prof,
                "replicas": n,
                "behaviour": spec.sim_behaviour,
                "behaviour_config": dict(spec.sim_behaviour_config),
            },
        )
        return pool, reps.stop
