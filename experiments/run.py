"""The one entry point: `python -m experiments.run case=coral backend=sim system=pair ...` (Hydra).

Configs live in `experiments/conf/` (case x backend x cluster). `system=pair` runs the P2P runtime
and the case's baseline on the same servers and inputs; a list for `case.window` sweeps the
baseline and a list for `case.concurrency` sweeps P2P; the table uses each system's best point
(the paper sweeps the baseline, Fig 4, and runs P2P at 50 tasks per GPU).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from experiments import coral as coral_pair
from matrix.cases import coral


def _windows(value: Any) -> list[int]:
    if isinstance(value, ListConfig | list | tuple):
        return [int(v) for v in value]
    return [int(value)]


def _overrides(be: DictConfig, key: str) -> dict[str, Any] | None:
    """A backend's serving-spec overrides (`serve`, `small_serve`, ...) as a plain dict, None when empty."""
    node = be.get(key)
    return OmegaConf.to_container(node, resolve=True) if node else None  # type: ignore[return-value]


def run_coral(cfg: DictConfig) -> dict[str, Any]:
    case, be = cfg.case, cfg.backend
    if cfg.system not in ("pair", *coral_pair.SYSTEMS):
        raise ValueError(f"system must be pair, {' or '.join(coral_pair.SYSTEMS)}; got {cfg.system!r}")
    rows = coral.load_questions(None if case.input in (None, "generated") else case.input, limit=case.limit)
    settings = coral_pair.SMALL_MODEL_SETTINGS if be.name == "vllm-cpu" else coral.CoralSettings()
    if case.max_turns:
        settings = coral.CoralSettings(int(case.max_turns), settings.dialogue, settings.extractor)
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.run_root)
    with coral_pair.start_servers(
        be.name,
        replicas=int(be.get("replicas", 1)),
        profile=str(be.get("profile", "a100-llama31-8b")),
        time_scale=float(be.get("time_scale", 1.0)),
        dataset=be.get("dataset"),
        length_scale=float(be.get("length_scale", 1.0)),
        model=be.get("model"),
        serve_options=_overrides(be, "serve"),
    ) as servers:

        def sweep(system: str, points: list[int], tag: str, run: Callable[[int, Path], dict[str, Any]]) -> None:
            """Run `system` at each point (its own run directory when there are several); keep the best."""
            runs = []
            for point in points:
                sub = run_id if len(points) == 1 else f"{run_id}-{tag}{point}"
                runs.append(run(point, coral_pair.run_dir_for(root, system, sub)))
            for m in runs:
                print(
                    f"{system} at concurrency {m['concurrency']}: {m['tokens_per_second']:.1f} tokens/s",
                    file=sys.stderr,
                )
            result[system] = max(runs, key=lambda m: m["tokens_per_second"])

        result: dict[str, Any] = {}
        if cfg.system in ("pair", coral_pair.P2P):
            sweep(coral_pair.P2P, _windows(case.concurrency), "c", lambda c, out: coral_pair.run_p2p(
                rows, servers, out, concurrency=c, settings=settings, progress=cfg.progress))  # fmt: skip
        if cfg.system in ("pair", coral_pair.CONTROLLER):
            sweep(coral_pair.CONTROLLER, _windows(case.window), "w", lambda w, out: coral_pair.run_controller(
                rows, servers, out, window=w, settings=settings, progress=cfg.progress))  # fmt: skip
    for m in result.values():
        eff = m.get("backend_efficiency")
        if eff:
            steady = eff.get("steady_fraction_of_saturation")
            print(
                f"{m['system']}: {eff['fraction_of_saturation']:.2f} of the replicas' saturation over the whole run"
                + (f", {steady:.2f} in steady state" if steady is not None else "")
                + f" (SIMULATED; saturation from {eff['source']})"
            )
    if len(result) == 2:
        print(coral_pair.print_pair(result))
        if cfg.table:
            coral_pair.write_table(result, Path(cfg.table), title=f"Coral, paper Table 1 layout ({servers.hardware})")
            print(f"wrote {cfg.table}.md and .csv", file=sys.stderr)
    return result


def _triples(value: Any, width: int) -> list[tuple[int, ...]]:
    """[a, b, c] is one point; [[a, b, c], ...] a sweep."""
    items = list(value)
    if items and not isinstance(items[0], ListConfig | list | tuple):
        items = [items]
    out = [tuple(int(v) for v in item) for item in items]
    for t in out:
        if len(t) != width:
            raise ValueError(f"expected {width} numbers per point, got {list(t)}")
    return out


def run_nr(cfg: DictConfig) -> dict[str, Any]:
    from experiments import nr as nr_exp
    from matrix.cases import natural_reasoning as nr

    case, be = cfg.case, cfg.backend
    if cfg.system not in ("pair", *nr_exp.SYSTEMS):
        raise ValueError(f"system must be pair, {' or '.join(nr_exp.SYSTEMS)}; got {cfg.system!r}")
    docs = nr_exp.load_documents(case.input, limit=int(case.limit), seed=int(case.seed))
    limit = None if isinstance(docs, list) else int(case.limit)
    settings = nr_exp.SMALL_MODEL_SETTINGS if be.name == "vllm-cpu" else nr.NRSettings()
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.run_root)
    p2p_runs: list[dict[str, Any]] = []
    batch_runs: list[dict[str, Any]] = []
    pools_kw: dict[str, Any] = {}
    if be.name == "sim":
        pools_kw = {
            "small_replicas": int(case.small_replicas),
            "large_replicas": int(case.large_replicas),
            "time_scale": float(be.get("time_scale", 1.0)),
        }
    elif be.name in ("vllm", "sglang"):
        pools_kw = {
            "small_replicas": int(case.small_replicas),
            "large_replicas": int(case.large_replicas),
            "small_model": be.get("small_model"),
            "large_model": be.get("large_model"),
            "small_serve": _overrides(be, "small_serve"),
            "large_serve": _overrides(be, "large_serve"),
        }
    with nr_exp.start_pools(be.name, **pools_kw) as pools:
        if cfg.system in ("pair", nr_exp.P2P):
            for p, t, a in _triples(case.parallelism, 3):
                d = nr_exp.run_dir_for(root, nr_exp.P2P, f"{run_id}-p{p}-t{t}-a{a}")
                p2p_runs.append(nr_exp.run_p2p(docs, pools, d, partitions=p, per_partition=t, instances=a,
                                               settings=settings, limit=limit, progress=cfg.progress))  # fmt: skip
        if cfg.system in ("pair", nr_exp.BATCH):
            for w, b in _triples(case.batch, 2):
                d = nr_exp.run_dir_for(root, nr_exp.BATCH, f"{run_id}-w{w}-b{b}")
                batch_runs.append(nr_exp.run_batch(docs, pools, d, batch_size=b, parallelism=w, settings=settings,
                                                   limit=limit, progress=cfg.progress))  # fmt: skip
    print("\n".join(nr_exp.sweep_lines([*p2p_runs, *batch_runs])), file=sys.stderr)
    result: dict[str, Any] = {}
    if p2p_runs and batch_runs:
        res = nr_exp.write_tables(p2p_runs, batch_runs, Path(cfg.table)) if cfg.table else None
        result = {nr_exp.P2P: nr_exp.best(p2p_runs), nr_exp.BATCH: nr_exp.best(batch_runs)}
        if res:
            print(res["texts"][2])
    return result


def run_tau2(cfg: DictConfig) -> dict[str, Any]:
    from experiments import tau2 as tau2_exp
    from matrix.cases import tau2

    case, be = cfg.case, cfg.backend
    if cfg.system not in ("pair", *tau2_exp.SYSTEMS):
        raise ValueError(f"system must be pair, {' or '.join(tau2_exp.SYSTEMS)}; got {cfg.system!r}")
    if be.name == "vllm-cpu":
        base = tau2_exp.SMALL_MODEL_SETTINGS
        settings = tau2.Tau2Settings(
            domain=str(case.domain), max_steps=min(int(case.max_steps), base.max_steps), max_tokens=base.max_tokens
        )
        models_kw: dict[str, Any] = {}
    else:
        settings = tau2.Tau2Settings(domain=str(case.domain), max_steps=int(case.max_steps))
        if be.name in ("vllm", "sglang"):  # the paper's settings and model, on GPU replicas
            models_kw = {
                "replicas": int(case.replicas),
                "model": be.get("tau2_model"),
                "serve": _overrides(be, "tau2_serve"),
            }
        else:
            models_kw = {
                "replicas": int(case.replicas),
                "profile": str(case.profile),
                "time_scale": float(be.get("time_scale", 1.0)),
                "behaviour_config": {"domain": str(case.domain)},
            }
    tasks = tau2.load_tasks(settings.domain, limit=None if case.limit is None else int(case.limit))
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.run_root)
    runs: dict[str, list[dict[str, Any]]] = {tau2_exp.P2P: [], tau2_exp.THREADS: []}
    with tau2_exp.start_models(be.name, **models_kw) as models:
        if cfg.system in ("pair", tau2_exp.THREADS):
            for n in _windows(case.threads):
                d = tau2_exp.run_dir_for(root, tau2_exp.THREADS, f"{run_id}-c{n}")
                runs[tau2_exp.THREADS].append(
                    tau2_exp.run_threads(models, d, settings=settings, tasks=tasks, trials=int(case.trials), threads=n)
                )
        if cfg.system in ("pair", tau2_exp.P2P):
            for n in _windows(case.concurrency):
                d = tau2_exp.run_dir_for(root, tau2_exp.P2P, f"{run_id}-c{n}")
                runs[tau2_exp.P2P].append(
                    tau2_exp.run_p2p(
                        models, d, settings=settings, tasks=tasks, trials=int(case.trials), concurrency=n,
                        tool_servers=int(case.tool_servers), sessions_per_server=int(case.sessions_per_server),
                        sandbox=str(case.sandbox), progress=bool(cfg.progress),
                    )
                )  # fmt: skip
    every = [*runs[tau2_exp.THREADS], *runs[tau2_exp.P2P]]
    print("\n".join(tau2_exp.summary_line(m) for m in every), file=sys.stderr)
    result: dict[str, Any] = {}
    if runs[tau2_exp.P2P] and runs[tau2_exp.THREADS]:
        best = {k: max(v, key=lambda m: float(m["tokens_per_second"])) for k, v in runs.items()}
        if cfg.table:
            out = Path(cfg.table) / "table10_tau2"
            print(tau2_exp.table10(best[tau2_exp.THREADS], best[tau2_exp.P2P], out, notes=[
                "Every run (the table takes each system's best):", "", *(tau2_exp.summary_line(m) for m in every)
            ]))  # fmt: skip
        result = best
    return result


CASES: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    "coral": run_coral,
    "natural_reasoning": run_nr,
    "tau2": run_tau2,
}


def effective_run_id(cfg: DictConfig) -> str:
    """The run id: the configured one or a timestamp; in a multirun each job adds its number (-n0, -n1...)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    run_id = str(cfg.run_id) if cfg.run_id else time.strftime("%Y%m%d-%H%M%S")
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        run_id += f"-n{HydraConfig.get().job.num}"
    return run_id


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured case (in a multi-node Slurm job: on a Ray cluster made of the job's nodes)."""
    if cfg.case.name not in CASES:
        raise ValueError(f"case {cfg.case.name!r} is not built yet; available: {', '.join(CASES)}")
    group = str(cfg.run_id) if cfg.run_id else None  # one launch's runs share it in W&B
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
            result = CASES[cfg.case.name](cfg)
    else:
        result = CASES[cfg.case.name](cfg)
    _log_to_wandb(cfg, group or str(cfg.run_id))
    return result


def _log_to_wandb(cfg: DictConfig, group: str) -> None:
    """Every run directory this invocation wrote goes to W&B (offline unless configured otherwise)."""
    from experiments import tracking

    dirs = tracking.run_dirs_of(Path(cfg.run_root), str(cfg.run_id))
    extra = {"hydra": OmegaConf.to_container(cfg, resolve=True), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    tracking.log_runs(dirs, cfg.get("wandb"), extra, group=group)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict[str, Any]:
    print(OmegaConf.to_yaml(cfg), file=sys.stderr)
    return run(cfg)


if __name__ == "__main__":
    main()
