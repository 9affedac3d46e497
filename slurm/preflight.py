"""The checks a SLURM multirun passes before hydra-submitit-launcher submits anything (a Hydra callback).

`experiments/conf/cluster/slurm/launcher.yaml`, which every `slurm_*` cluster config includes,
registers `Preflight` in `hydra.callbacks`. At the start of a multirun (`python -m experiments.run
-m cluster=slurm_... ...`), before the sweeper builds the launcher:

- the cluster's `cluster.slurm` settings are checked in full (`slurm.settings.slurm_settings`);
- Slurm is asked with `sbatch --test-only` (which submits nothing) whether it would take such a job;
- a relative `run_root` becomes absolute (the launch directory's), so that jobs on other nodes
  write where the launch expects its runs, whatever directory they start in.

A failed check ends the launch with one `experiments.run: error: ...` line (a list, when several
settings are wrong) and exit status 2; nothing has been submitted then.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from slurm.settings import SlurmConfigError, SlurmSettings, hydra_value, preflight, slurm_settings


def check(config: DictConfig) -> SlurmSettings:
    """The cluster's Slurm settings, checked, and accepted by `sbatch --test-only`; else SlurmConfigError."""
    settings = slurm_settings(config.cluster)
    preflight(settings)
    return settings


def absolute_run_root(config: DictConfig) -> str | None:
    """Make a relative `run_root` absolute in the launch's task overrides, which every job is composed from.

    Returns the new override, or None when there is nothing to change (already absolute, or swept:
    a swept run_root is left as given, relative to the directory the jobs start in)."""
    root = Path(str(config.run_root))
    if root.is_absolute():
        return None
    task = list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(task)
    if any(o.key_or_group == "run_root" and o.is_sweep_override() for o in parsed):
        return None
    override = f"run_root={hydra_value(str(root.resolve()))}"
    kept = [text for text, o in zip(task, parsed, strict=True) if o.key_or_group != "run_root"]
    with read_write(config), open_dict(config):
        config.hydra.overrides.task = [*kept, override]
        config.run_root = str(root.resolve())
    return override


class Preflight(Callback):
    """Hydra callback: `check` and `absolute_run_root` before a SLURM multirun submits its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            settings = check(config)
        except SlurmConfigError as exc:
            print(f"experiments.run: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        absolute_run_root(config)
        print(
            f"slurm: cluster {settings.cluster}: each job {settings.nodes} node(s) x {settings.tasks_per_node} task(s) "
            f"on partition {settings.partition} for up to {settings.time_min} min (sbatch --test-only accepts it); "
            f"runs in {config.run_root}, job files in {Path(str(config.hydra.sweep.dir)).resolve() / '.submitit'}",
            file=sys.stderr,
            flush=True,
        )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not os.environ.get("SLURM_JOB_ID") and not os.environ.get("RAY_ADDRESS"):
            name = config.cluster.get("name")
            print(
                f"experiments.run: note: cluster={name} submits jobs only in a multirun (-m); "
                "this run goes on here, on this machine",
                file=sys.stderr,
                flush=True,
            )
