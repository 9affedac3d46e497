"""SLURM multiruns: the cluster configs choose hydra-submitit-launcher, and slurm.preflight checks the
settings (and asks `sbatch --test-only`) before anything is submitted. Slurm here is tests/slurm/fake_sbatch.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from slurm import preflight
from tests.slurm import fake_sbatch

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "experiments" / "conf"
SLURM_CLUSTERS = ["slurm_local", "slurm_a100_31nodes", "slurm_a100_32nodes", "slurm_h100_13nodes"]
# cluster.slurm key -> hydra.launcher key (hydra-submitit-launcher's names)
LAUNCHER_KEYS = {"partition": "partition", "account": "account", "qos": "qos", "time_min": "timeout_min",
                 "nodes": "nodes", "tasks_per_node": "tasks_per_node", "gpus_per_node": "gpus_per_node",
                 "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "constraint": "constraint",
                 "array_parallelism": "array_parallelism", "setup": "setup"}  # fmt: skip


def compose_with_hydra(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", SLURM_CLUSTERS)
def test_slurm_clusters_choose_the_submitit_launcher(name: str) -> None:
    cfg = compose_with_hydra(f"cluster={name}", "cluster.slurm.partition=gpu")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert cfg.hydra.callbacks.slurm_preflight._target_ == "slurm.preflight.Preflight"
    assert "summary" in cfg.hydra.callbacks, "the multirun summary stays registered beside the preflight"
    params = instantiate(cfg.hydra.launcher).params
    for key, launcher_key in LAUNCHER_KEYS.items():
        assert params[launcher_key] == cfg.cluster.slurm[key], key
    assert params["submitit_folder"] == f"{cfg.hydra.sweep.dir}/.submitit/%j"


def test_local_cluster_keeps_the_basic_launcher() -> None:
    cfg = compose_with_hydra("cluster=local")
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert "slurm_preflight" not in cfg.hydra.callbacks


def test_cluster_overrides_reach_the_launcher() -> None:
    cfg = compose_with_hydra("cluster=slurm_a100_31nodes", "cluster.slurm.partition=gpu", "cluster.slurm.nodes=4",
                             "cluster.slurm.account=lab", "cluster.slurm.setup=['module load cuda']",
                             "+cluster.slurm.additional_parameters={exclusive:true}")  # fmt: skip
    params = instantiate(cfg.hydra.launcher).params
    assert params["partition"] == "gpu" and params["nodes"] == 4 and params["account"] == "lab"
    assert params["gpus_per_node"] == 8 and params["timeout_min"] == 1440 and params["constraint"] == "a100"
    assert params["setup"] == ["module load cuda"] and params["additional_parameters"] == {"exclusive": True}


def _launch(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`python -m experiments.run -m ...` as a user would type it, with the fake Slurm on PATH."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "experiments.run", "-m", "case=coral", "backend=sim", *overrides,
           f"hydra.sweep.dir={cwd / 'sweep'}"]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_missing_partition_stops_the_launch_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_sbatch.install(tmp_path, monkeypatch)
    proc = _launch(tmp_path, "cluster=slurm_a100_31nodes", "system=matrix,coral-controller")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "experiments.run: error: cluster 'slurm_a100_31nodes': cluster.slurm.partition is missing: set it to your "
        "cluster's partition, e.g. cluster.slurm.partition=gpu; nothing was submitted"
    ]
    # Several wrong settings: one error that names each.
    proc = _launch(tmp_path, "cluster=slurm_a100_31nodes", "cluster.slurm.time_min=-5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cluster.slurm.partition is missing" in proc.stderr
    assert "cluster.slurm.time_min must be a positive whole number, got -5" in proc.stderr
    assert not calls.exists(), "nothing may reach sbatch when the settings are wrong"
    assert not (tmp_path / "sweep" / ".submitit").exists()


def test_slurms_refusal_stops_the_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse = 'echo "sbatch: error: invalid partition specified: gpu" >&2\nexit 1\n'
    calls = fake_sbatch.install(tmp_path, monkeypatch, refuse)
    proc = _launch(tmp_path, "cluster=slurm_a100_31nodes", "cluster.slurm.partition=gpu")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("experiments.run: error: Slurm would refuse the jobs of cluster 'slurm_a100_31nodes'")
    assert line.endswith("sbatch --test-only said: sbatch: error: invalid partition specified: gpu")
    assert len(calls.read_text().splitlines()) == 1, "only the --test-only probe"


def test_a_pair_is_one_job_per_system_shaped_by_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_sbatch.install(tmp_path, monkeypatch, fake_sbatch.ACCEPT_PROBES_REFUSE_JOBS)
    proc = _launch(tmp_path, "cluster=slurm_a100_31nodes", "cluster.slurm.partition=gpu",
                   "system=matrix,coral-controller", "run_root=rel/runs")  # fmt: skip
    assert proc.returncode != 0, "the fake sbatch takes no jobs"
    probe, submit = calls.read_text().splitlines()
    assert probe == ("--test-only --partition=gpu --time=1440 --nodes=31 --ntasks-per-node=1 --cpus-per-task=64 "
                     "--gpus-per-node=8 --constraint=a100 --wrap=true")  # fmt: skip
    assert Path(submit).parent == tmp_path / "sweep" / ".submitit"
    script = (tmp_path / "submitted").read_text()
    for flag in ("--array=0-1%1", "--partition=gpu", "--time=1440", "--nodes=31", "--gpus-per-node=8",
                 "--cpus-per-task=64", "--constraint=a100"):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, flag
    # One job per system, each told the launch directory's absolute run_root.
    out = proc.stdout + proc.stderr
    root = f"run_root='{tmp_path / 'rel' / 'runs'}'"
    for system in ("matrix", "coral-controller"):
        assert any(f"system={system} " in line and root in line for line in out.splitlines()), (system, out[-3000:])


def test_relative_run_root_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sbatch.install(tmp_path, monkeypatch, fake_sbatch.ACCEPT_PROBES_REFUSE_JOBS)
    monkeypatch.chdir(tmp_path)
    cfg = compose_with_hydra("cluster=slurm_local", "run_root=rel/runs", "case=coral")
    preflight.Preflight().on_multirun_start(cfg)
    assert list(cfg.hydra.overrides.task) == ["cluster=slurm_local", "case=coral", f"run_root='{tmp_path}/rel/runs'"]
    assert cfg.run_root == str(tmp_path / "rel" / "runs")
    assert preflight.absolute_run_root(compose_with_hydra("cluster=slurm_local", f"run_root={tmp_path}")) is None


def test_a_slurm_cluster_without_multirun_says_it_runs_here(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for var in ("SLURM_JOB_ID", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    preflight.Preflight().on_run_start(compose_with_hydra("cluster=slurm_local"))
    assert "cluster=slurm_local submits jobs only in a multirun (-m)" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    preflight.Preflight().on_run_start(compose_with_hydra("cluster=slurm_local"))
    assert capsys.readouterr().err == ""
