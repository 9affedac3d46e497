"""Submit experiments to SLURM (or run them as local jobs) through Hydra multirun and hydra-submitit-launcher.

    python -m slurm.launch cluster=slurm_a100_31nodes cluster.slurm.partition=gpu case=coral backend=vllm
    python -m slurm.launch cluster=slurm_local case=coral backend=sim 'case.concurrency=8,16'   # a sweep
    python -m slurm.launch --per-system cluster=... case=tau2 backend=sim   # a pair, one job per system

Every sweep point (every combination of comma-separated values, Hydra's multirun) becomes one job of
the cluster config's shape (`cluster.slurm`: nodes, GPUs, CPUs, partition...). Each job runs
`experiments.run` for its point: it deploys the model replicas its backend needs, waits for them to
be healthy, runs, and writes its run directories under `run_root` (made absolute here, so that every
node writes to the same shared place). A job of several nodes first makes a Ray cluster of its nodes
(`slurm.cluster.job_cluster`).

A matched pair is one experiment with `system=pair` (the default): both systems in one job, against
the same model servers, one after the other. `--per-system` instead sweeps `system` over the case's
two systems: two jobs with identical layouts (each deploys its own replicas), run at the same time.

Before anything is submitted, the cluster's Slurm settings are checked (`slurm.settings`) and Slurm
is asked with `sbatch --test-only` whether it would accept such a job; one error lists what is wrong.
`cluster=local` (scheduler local) runs the same jobs as local processes (submitit's local executor).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from slurm.cluster import compose_cluster
from slurm.settings import SlurmConfigError, hydra_value, preflight, scheduler_of, slurm_settings

# Each case's two systems (experiments/<case>.py SYSTEMS), for --per-system.
CASE_SYSTEMS = {
    "coral": ("matrix", "coral-controller"),
    "natural_reasoning": ("matrix", "ray-data"),
    "nr": ("matrix", "ray-data"),
    "tau2": ("matrix", "tau2-threads"),
}


def _parse(overrides: Sequence[str]) -> list[object]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return list(OverridesParser.create().parse_overrides(list(overrides)))


def _value(overrides: Sequence[str], key: str) -> str | None:
    for o in _parse(overrides):
        if o.key_or_group == key and not o.is_sweep_override():  # type: ignore[attr-defined]
            return str(o.value())  # type: ignore[attr-defined]
    return None


def build_command(
    overrides: Sequence[str], *, per_system: bool = False, sweep_dir: Path | None = None, python: str | None = None,
) -> tuple[list[str], dict[str, object]]:  # fmt: skip
    """The `experiments.run --multirun` command for these overrides, checked; and what it was built from."""
    parsed = _parse(overrides)
    cluster_overrides = []
    for o, text in zip(parsed, overrides, strict=True):
        key = o.key_or_group  # type: ignore[attr-defined]
        if key == "cluster" or key.startswith("cluster."):
            if o.is_sweep_override():  # type: ignore[attr-defined]
                raise SlurmConfigError(f"the cluster cannot be swept in one launch, got {text!r}")
            cluster_overrides.append(text)
        if key.startswith("hydra/launcher") or key.startswith("hydra.launcher"):
            raise SlurmConfigError(f"{text!r}: the launcher comes from the cluster config; set cluster.slurm.* instead")
    cluster = compose_cluster(cluster_overrides)
    scheduler = scheduler_of(cluster)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep = (sweep_dir or Path("results") / "sweeps" / f"{stamp}-{cluster['name']}").resolve()
    cmd = [
        python or sys.executable,
        "-m",
        "experiments.run",
        "--multirun",
        f"hydra.sweep.dir={hydra_value(str(sweep))}",
    ]
    info: dict[str, object] = {"cluster": cluster["name"], "scheduler": scheduler, "sweep_dir": str(sweep)}
    if scheduler == "slurm":
        settings = slurm_settings(cluster)
        preflight(settings)
        cmd += ["hydra/launcher=submitit_slurm", *settings.launcher_overrides()]
        info["slurm"] = settings
    else:
        cmd += ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=600"]
    cmd.append(f"hydra.launcher.submitit_folder={hydra_value(str(sweep / '.submitit' / '%j'))}")
    user = list(overrides)
    run_root = _value(user, "run_root")
    if run_root is None:
        user.append(f"run_root={hydra_value(str(Path('results/runs').resolve()))}")
    elif not Path(run_root).is_absolute():
        user = [o for o in user if not o.startswith("run_root=")] + [
            f"run_root={hydra_value(str(Path(run_root).resolve()))}"
        ]
    if _value(user, "run_id") is None:
        user.append(f"run_id={stamp}")
    if per_system:
        case = _value(user, "case") or "coral"
        if case not in CASE_SYSTEMS:
            raise SlurmConfigError(f"--per-system: unknown case {case!r} (known: {', '.join(sorted(CASE_SYSTEMS))})")
        if _value(user, "system") not in (None, "pair") or any(o.startswith("system=") and "," in o for o in user):
            raise SlurmConfigError("--per-system sweeps `system` itself; leave system= out")
        user = [o for o in user if not o.startswith("system=")] + ["system=" + ",".join(CASE_SYSTEMS[case])]
    return cmd + user, info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurm.launch", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-system", action="store_true", help="a pair as one job per system (default: both in one job)"
    )
    parser.add_argument(
        "--sweep-dir",
        type=Path,
        help="where Hydra and submitit keep the sweep's files (default results/sweeps/<time>-<cluster>)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check everything and print the command; submit nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; comma-separated values sweep (quote them)")
    args = parser.parse_args(argv)
    try:
        cmd, info = build_command(args.overrides, per_system=args.per_system, sweep_dir=args.sweep_dir)
    except SlurmConfigError as exc:
        print(f"slurm.launch: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"slurm.launch: cluster {info['cluster']} ({info['scheduler']}); sweep files in {info['sweep_dir']}",
        file=sys.stderr,
    )
    print("slurm.launch: " + shlex.join(cmd), file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    env = {**os.environ, "HYDRA_FULL_ERROR": os.environ.get("HYDRA_FULL_ERROR", "1")}
    return subprocess.run(cmd, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
