"""The one entry point: `python -m experiments.run case=coral system=matrix backend=sim scale=twin ...` (Hydra).

Configs live in `experiments/conf/`, one folder per group: `case/` (coral, nr, tau2), `system/`
(matrix, coral-controller, ray-data, tau2-threads), `backend/` (sim, vllm-cpu, vllm, sglang, openai),
`cluster/` (local, slurm_*), `scale/` (small, twin, paper: each case's layout at that scale, in
`scale/layout/<case>_<scale>.yaml`) and `experiment/` (presets that fix a whole table's run).

One invocation runs one system on one point; every comparison and sweep is a Hydra multirun:

    python -m experiments.run -m system=matrix,coral-controller              # a matched pair
    python -m experiments.run -m experiment=table1_twin                      # Table 1's SIMULATED twin

Jobs of one multirun share the model pools when their case, scale and backend agree (same
servers for both systems, warmed up once, before the first timed run); each job writes
`<run_root>/<case>/<system>/<run_id>-<point>/`. At the end of a multirun the runs are summed up
(`experiments.summary`): each system's best tokens/s, the ratio and, with repeats, its spread.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.cases import ConfigError, get_case
from experiments.cases.base import Case
from experiments.common import fresh, sim_mark
from experiments.pools import SHARED
from experiments.systems import Job, get_system
from matrix.llm.backends import BackendError

# ----------------------------------------------------------------------------------- one job


# One launch, one default run id: set when the launching process imports this module, inherited by
# the jobs it starts (in-process, local processes, or Slurm jobs, which export the environment).
os.environ.setdefault("MATRIX_LAUNCH_ID", time.strftime("%Y%m%d-%H%M%S"))


def effective_run_id(cfg: DictConfig) -> str:
    """The configured run id, or the launch's timestamp (every job of a multirun shares it)."""
    return str(cfg.run_id) if cfg.run_id else os.environ["MATRIX_LAUNCH_ID"]


def run_dir_for(cfg: DictConfig, case: Case, system_tag: str) -> Path:
    name = f"{effective_run_id(cfg)}-{system_tag}"
    variant = cfg.get("variant")
    if variant:
        if not re.fullmatch(r"[a-z0-9]+", str(variant)):
            raise ConfigError(
                f"variant must be lower-case letters and digits (it ends the run's name), got {variant!r}"
            )
        name += f"-v{variant}"
    if int(cfg.get("repeat", 0)):
        name += f"-r{int(cfg.repeat)}"
    return Path(cfg.run_root) / case.name / str(cfg.system.name) / name


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured system on the configured case; return its metrics."""
    case = get_case(cfg.case)
    system = get_system(str(cfg.system.name))
    system.check(case, cfg.system)  # before any server starts
    if str(cfg.clock.name) == "virtual":
        from experiments.virtual import run_virtual_job

        run_dir_for(cfg, case, "check")  # a bad variant is refused before the loop starts
        metrics = run_virtual_job(cfg, case, system, lambda tag: run_dir_for(cfg, case, tag), variant_label(cfg))
        metrics["run_dir"] = str(run_dir_for(cfg, case, system.tag(case, cfg.system)))
        print(summary_line(metrics), file=sys.stderr, flush=True)
        return metrics
    pools, started = SHARED.get(case, cfg.backend)
    settings = case.settings(pools)
    inputs = case.inputs(settings)
    if started and cfg.get("warm_up", True):
        case.warm_up(pools, inputs, settings)
    run_dir = run_dir_for(cfg, case, system.tag(case, cfg.system))
    fresh(run_dir)
    job = Job(case, cfg.system, pools, settings, inputs, run_dir, progress=bool(cfg.progress))
    metrics = system.execute(job, {**case.labels(pools), **variant_label(cfg)})
    metrics["run_dir"] = str(run_dir)
    print(summary_line(metrics), file=sys.stderr, flush=True)
    return metrics


def variant_label(cfg: DictConfig) -> dict[str, Any]:
    """`variant` on the run's metrics when the run is one (a decomposition step, e.g. CPU charges off)."""
    return {"variant": str(cfg.variant)} if cfg.get("variant") else {}


def summary_line(m: dict[str, Any]) -> str:
    sim, unit = sim_mark(m), ("simulated s" if m.get("simulated") else "s")
    return (
        f"{m.get('case')} / {m.get('system')} at concurrency {m.get('concurrency')}: "
        f"{float(m.get('tokens_per_second') or 0):,.1f} tokens per {unit}{sim}, {m.get('tasks_finished')} tasks "
        f"finished, {m.get('tasks_failed', 0)} failed -> {m.get('run_dir')}"
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job (in a multi-node Slurm job: on a Ray cluster made of the job's nodes), logged to W&B."""
    with open_dict(cfg):
        cfg.run_id = effective_run_id(cfg)
    if cfg.cluster.get("scheduler") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from slurm.cluster import RaySpec, job_cluster
        from slurm.settings import slurm_settings

        spec = RaySpec.from_config(cfg.cluster.get("ray"), slurm_settings(cfg.cluster))
        where = Path(cfg.run_root) / ".ray" / os.environ.get("SLURM_JOB_ID", "job")
        with job_cluster(where, spec) as driver:
            if not driver:
                return {}
            result = run_job(cfg)
    else:
        result = run_job(cfg)
    _log_to_wandb(cfg, Path(result["run_dir"]))
    return result


def _log_to_wandb(cfg: DictConfig, run_dir: Path) -> None:
    """The run directory goes to W&B (offline unless configured otherwise), grouped by launch."""
    from experiments import tracking

    extra = {"hydra": OmegaConf.to_container(cfg, resolve=True), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    tracking.log_runs([run_dir], cfg.get("wandb"), extra, group=str(cfg.run_id))


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg), file=sys.stderr)
    try:
        return run(cfg)
    except (ConfigError, BackendError) as exc:
        # A value that cannot run, or a service that is not there: one line, before any task starts.
        print(f"experiments.run: error: {exc}", file=sys.stderr)
        SHARED.stop()
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
