"""slurm.cluster without a scheduler: refusals before submission, the rendezvous, the single-task job cluster."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from slurm import cluster
from slurm.settings import SlurmConfigError, slurm_settings
from tests.slurm import fake_sbatch


def test_up_refuses_bad_settings_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_sbatch.install(tmp_path, monkeypatch)
    with pytest.raises(SlurmConfigError, match=r"cluster\.slurm\.partition is missing"):
        cluster.up(["cluster=slurm_h100_13nodes"], root=tmp_path / "c")
    with pytest.raises(SlurmConfigError, match="is not a Slurm cluster"):
        cluster.up(["cluster=local"], root=tmp_path / "c")
    with pytest.raises(SlurmConfigError, match=re.escape("cluster.ray has unknown key(s) ['gpus']")):
        cluster.up(["cluster=slurm_local", "+cluster.ray.gpus=1"], root=tmp_path / "c")
    assert not calls.exists() and not (tmp_path / "c").exists()


def test_ray_spec_takes_gpus_from_the_slurm_settings() -> None:
    cfg = cluster.compose_cluster(["cluster=slurm_a100_31nodes", "cluster.slurm.partition=gpu"])
    spec = cluster.RaySpec.from_config(cfg["ray"], slurm_settings(cfg))
    assert spec.num_gpus == 8 and spec.resources == {"A100": 8.0} and spec.port == 6379
    args = cluster._ray_start_args(spec, "10.0.0.5")
    assert "--node-ip-address=10.0.0.5" in args and "--num-gpus=8" in args and '--resources={"A100": 8.0}' in args


def test_rendezvous_wait_and_stop(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="no Ray head registered"):
        cluster.wait_rendezvous(tmp_path, 0.6)
    (tmp_path / "stop").touch()
    assert cluster.wait_rendezvous(tmp_path, 5, stop=tmp_path / "stop") is None
    (tmp_path / cluster.RENDEZVOUS).write_text(json.dumps({"address": "10.0.0.5:6379", "started": 5.0}))
    assert cluster.wait_rendezvous(tmp_path, 5)["address"] == "10.0.0.5:6379"
    assert cluster.address_of(tmp_path.name, root=tmp_path.parent) == "10.0.0.5:6379"
    with pytest.raises(SlurmConfigError, match="has no head registered"):
        cluster.address_of("other", root=tmp_path)


def test_one_task_job_needs_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with cluster.job_cluster(tmp_path / "r", cluster.RaySpec(), tasks=1, rank=0) as driver:
        assert driver is True and "RAY_ADDRESS" not in os.environ
    assert not (tmp_path / "r").exists()


def test_token_file_is_private(tmp_path: Path) -> None:
    cluster._write_token(tmp_path)
    token = tmp_path / cluster.TOKEN
    assert len(token.read_text()) == 64 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert cluster.auth_env(tmp_path) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def test_ray_start_gets_the_runtimes_node_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matrix.ray_init import NODE_ENV

    monkeypatch.delenv("RAY_timeout_ms_task_wait_for_death_info", raising=False)
    monkeypatch.setenv("RAY_task_events_max_num_task_in_gcs", "777")
    cluster._write_token(tmp_path)
    env = cluster._ray_env(tmp_path)
    assert env["RAY_timeout_ms_task_wait_for_death_info"] == NODE_ENV["RAY_timeout_ms_task_wait_for_death_info"]
    assert env["RAY_task_events_max_num_task_in_gcs"] == "777"  # a cluster's own setting is kept
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


# A stand-in for `ray start --block`: it starts a child in a session of its own that ignores SIGTERM and
# outlives it (as a Ray agent does its raylet), says it is up, and waits to be stopped.
_FAKE_RAY_START = """
import subprocess, sys, time
agent = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open(READY, 'w').close(); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", agent], start_new_session=True)
print("Ray runtime started", flush=True)
time.sleep(600)
"""


def test_stopping_ray_start_ends_what_it_left_behind(tmp_path: Path) -> None:
    import sys
    import time

    cluster._write_token(tmp_path)
    ready = tmp_path / "agent-up"
    proc, up = cluster._spawn_ray([sys.executable, "-c", _FAKE_RAY_START.replace("READY", repr(str(ready)))], tmp_path)
    assert up.wait(30)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    token = cluster._SPAWNED[proc.pid]
    left = cluster.processes_of_spawn(token)
    assert len(left) == 2 and proc.pid in left  # the start and its detached child, found by their environment
    cluster._stop_child(proc, timeout=10)
    assert proc.returncode is not None and cluster.processes_of_spawn(token) == []
    assert proc.pid not in cluster._SPAWNED
