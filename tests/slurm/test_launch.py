"""slurm.launch: the multirun command it builds, and its refusals before anything is submitted."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from slurm import launch
from slurm.settings import SlurmConfigError
from tests.slurm import fake_sbatch


def test_local_cluster_uses_submitits_local_launcher(tmp_path: Path) -> None:
    cmd, info = launch.build_command(["cluster=local", "case=coral", "backend=sim", "case.concurrency=8,16"],
                                     sweep_dir=tmp_path / "sweep")  # fmt: skip
    assert cmd[1:4] == ["-m", "experiments.run", "--multirun"]
    assert "hydra/launcher=submitit_local" in cmd and info["scheduler"] == "local"
    assert "case.concurrency=8,16" in cmd
    run_root = next(c for c in cmd if c.startswith("run_root="))
    assert os.path.isabs(run_root.split("=", 1)[1].strip("'")), "jobs on other nodes need an absolute run_root"
    assert any(c.startswith("run_id=") for c in cmd)


def test_per_system_sweeps_the_two_systems(tmp_path: Path) -> None:
    cmd, _ = launch.build_command(["case=tau2", "backend=sim"], per_system=True, sweep_dir=tmp_path)
    assert "system=matrix,tau2-threads" in cmd
    with pytest.raises(SlurmConfigError, match="--per-system sweeps `system` itself"):
        launch.build_command(["case=coral", "system=matrix"], per_system=True, sweep_dir=tmp_path)


def test_refusals_name_the_override(tmp_path: Path) -> None:
    with pytest.raises(
        SlurmConfigError, match="the cluster cannot be swept in one launch, got 'cluster=local,slurm_local'"
    ):
        launch.build_command(["cluster=local,slurm_local"], sweep_dir=tmp_path)
    with pytest.raises(
        SlurmConfigError, match=re.escape("'hydra.launcher.partition=x': the launcher comes from the cluster config")
    ):
        launch.build_command(["hydra.launcher.partition=x"], sweep_dir=tmp_path)


def test_bad_slurm_settings_stop_before_sbatch_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    calls_file = fake_sbatch.install(tmp_path, monkeypatch)
    code = launch.main(["--sweep-dir", str(tmp_path / "s"), "cluster=slurm_a100_31nodes", "cluster.slurm.time_min=-5",
                        "case=coral"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "cluster.slurm.partition is missing" in err
        and "cluster.slurm.time_min must be a positive whole number, got -5" in err
    )
    assert not calls_file.exists(), "nothing may reach sbatch when the settings are wrong"
    # With good settings, only the --test-only probe runs in a dry run.
    code = launch.main(["--dry-run", "--sweep-dir", str(tmp_path / "s"), "cluster=slurm_a100_31nodes",
                        "cluster.slurm.partition=gpu", "case=coral", "backend=vllm"])  # fmt: skip
    assert code == 0
    calls = calls_file.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("--test-only --partition=gpu --time=1440 --nodes=31")
    assert "hydra/launcher=submitit_slurm" in capsys.readouterr().err
