"""A real SLURM (scripts/local_slurm.sh: slurmctld, slurmd, slurmdbd + MariaDB, munge in a private
network namespace): a matched pair swept over two points as SLURM jobs (`python -m experiments.run -m
cluster=slurm_local ...`, one job per system and point), a Ray cluster through slurm.cluster that takes a
`matrix run`, gets its worker back after Slurm requeues its head and leaves no process behind, and a
two-node job that makes its own Ray cluster.

Bringing SLURM up (installing its Debian packages when missing) is this module's setup. It needs root;
elsewhere the module skips with the reason, except in CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local_slurm.sh"
MATRIX = str(Path(sys.executable).with_name("matrix"))
NS = "matrix-slurm-test"
SMALL_CORAL = ["case=coral", "backend=sim", "case.limit=8", "backend.time_scale=4", "progress=false"]


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespace and SLURM daemons)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the local SLURM must run in CI: {reason}")
        pytest.skip(reason)
    state = Path("/tmp") / f"mslurm-{os.getpid()}"  # short: the munge socket path has a length limit
    env = {**os.environ, "LOCAL_SLURM_DIR": str(state), "LOCAL_SLURM_NS": NS, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}  # fmt: skip
    up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600, check=False)
    if up.returncode != 0:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=120, check=False)
        pytest.fail(f"scripts/local_slurm.sh up failed:\n{up.stderr[-3000:]}")
    env["PATH"] = f"{state / 'bin'}{os.pathsep}{env['PATH']}"
    env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    pids = {p.name: int(p.read_text()) for p in (state / "pids").iterdir()}
    try:
        yield env
    finally:
        down = subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert down.returncode == 0, down.stderr
        time.sleep(0.5)
        alive = [name for name, pid in pids.items() if Path(f"/proc/{pid}").exists()]
        assert not alive, f"daemons still running after down: {alive}"
        shutil.rmtree(state, ignore_errors=True)


def _run(cmd: list[str], env: dict[str, str], timeout: float = 420) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def _sacct(env: dict[str, str], job_ids: list[str]) -> dict[str, str]:
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)], env, timeout=60).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if "|" in line)


def _processes_of_jobs(job_ids: set[str]) -> list[str]:
    """Processes (any, not only ours) whose environment says they belong to one of these Slurm jobs."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"SLURM_JOB_ID=") and item.split(b"=", 1)[1].decode() in job_ids:
                found.append(f"{proc.name}: {cmd[:120]}")
    return found


def _wandb_run_mentions(run_dir: Path, *needles: bytes) -> bool:
    files = list(run_dir.glob("wandb/offline-run-*/*.wandb"))
    return bool(files) and all(n in files[0].read_bytes() for n in needles)


def _multirun(env: dict[str, str], sweep: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """What a user types to run on SLURM: the entry point's multirun with a slurm cluster config."""
    cmd = [sys.executable, "-m", "experiments.run", "-m", "cluster=slurm_local", *overrides,
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    return _run(cmd, env)


def test_a_swept_pair_runs_as_slurm_jobs(slurm_env: dict[str, str], tmp_path: Path) -> None:
    runs, sweep = tmp_path / "runs", tmp_path / "sweep"
    # A run_root relative to the launch directory: the preflight makes it absolute for the jobs.
    proc = _multirun(slurm_env, sweep, *SMALL_CORAL, "system=matrix,coral-controller", "system.concurrency=4,8",
                     f"run_root={os.path.relpath(runs, REPO)}", "run_id=sweep")  # fmt: skip
    assert "sbatch --test-only accepts it" in proc.stderr
    for concurrency in (4, 8):
        for system, point in (("matrix", f"c{concurrency}"), ("coral-controller", f"w{concurrency}")):
            d = runs / "coral" / system / f"sweep-{point}"
            metrics = json.loads((d / "metrics.json").read_text())
            assert metrics["trajectories"] == 8 and metrics["tasks_lost"] == 0
            assert metrics["simulated"] is True and metrics["concurrency"] == concurrency
            assert _wandb_run_mentions(d, b"tokens_per_second", system.encode()), f"no offline W&B run in {d}"
    logs = "".join(p.read_text(errors="replace") for p in sweep.glob(".submitit/*/*_log.*"))
    assert f"-> {runs}/coral/matrix/sweep-c4" in logs, "each job was given the absolute run_root"
    # The multirun's summary came back to the launching process once the jobs had ended.
    assert "matrix / coral-controller:" in proc.stderr
    # The four points ran as elements of one Slurm job array, and Slurm's accounting saw them finish.
    jobs = sorted(p.name for p in (sweep / ".submitit").iterdir() if "_" in p.name and p.is_dir())
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs}) == 1, jobs
    deadline = time.monotonic() + 90  # the results come back a moment before Slurm ends the job
    while (states := _sacct(slurm_env, [j.split("_")[0] for j in jobs])) and time.monotonic() < deadline:
        if set(states.values()) == {"COMPLETED"}:
            break
        time.sleep(1)
    assert set(states) == set(jobs) and set(states.values()) == {"COMPLETED"}, states


def _alive_nodes(env: dict[str, str], root: Path, address: str) -> int:
    probe = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")  # fmt: skip
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "slurm_local" / "auth_token"),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # fmt: skip
    return int(_run([str(SCRIPT), "exec", sys.executable, "-c", probe], env, timeout=120).stdout.split()[-1])


def test_a_ray_cluster_takes_a_run_survives_a_requeued_head_and_leaves_nothing_behind(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """One cluster's life through slurm.cluster: up, a `matrix run` on it, Slurm requeueing the head (as on
    preemption: it comes back, rewrites the rendezvous, the worker rejoins), down, and no process left."""
    root = tmp_path / "clusters"
    up = _run([MATRIX, "cluster", "up", "cluster=slurm_local", "--workers", "1", "--root", str(root), "--timeout=300"],
              slurm_env)  # fmt: skip
    state = json.loads(up.stdout)
    jobs = {state["head_job"], state["workers_job"]}
    rendezvous = root / "slurm_local" / "rendezvous.json"
    try:
        assert state["address"] == "127.0.0.1:6390"
        status = json.loads(_run([MATRIX, "cluster", "status", "slurm_local", "--root", str(root)], slurm_env).stdout)
        assert set(status["jobs"].values()) == {"RUNNING"} and len(status["workers_joined"]) == 1
        # The head and the worker are one Ray cluster of two nodes, reached with the cluster's own token.
        assert _alive_nodes(slurm_env, root, state["address"]) == 2
        runs = tmp_path / "runs"
        # A matched pair as a multirun of the driver (basic launcher: both systems on the same pools).
        run = _run([str(SCRIPT), "exec", MATRIX, "run", "--cluster", "slurm_local", "--root", str(root), "-m",
                    *SMALL_CORAL, "system=matrix,coral-controller", "system.concurrency=8", f"run_root={runs}",
                    "run_id=oncluster", f"hydra.sweep.dir={tmp_path / 'sweep'}"], slurm_env)  # fmt: skip
        assert "Connecting to existing Ray cluster at address: 127.0.0.1:6390" in run.stderr
        for system, point in (("matrix", "c8"), ("coral-controller", "w8")):
            metrics = json.loads((runs / "coral" / system / f"oncluster-{point}" / "metrics.json").read_text())
            assert metrics["trajectories"] == 8

        first = json.loads(rendezvous.read_text())
        _run(["scontrol", "requeue", state["head_job"]], slurm_env, timeout=60)
        # Slurm holds a requeued job for about two minutes (Reason=BeginTime); the test releases it.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            now = json.loads(rendezvous.read_text())
            if now["started"] != first["started"]:
                break
            queued = _run(["squeue", "-h", "-o", "%T %r", "-j", state["head_job"]], slurm_env).stdout
            if "BeginTime" in queued:
                _run(["scontrol", "update", f"JobId={state['head_job']}", "StartTime=now"], slurm_env, timeout=60)
            time.sleep(1)
        else:
            raise AssertionError("the requeued head never registered again")
        deadline = time.monotonic() + 120
        while (nodes := _alive_nodes(slurm_env, root, now["address"])) < 2 and time.monotonic() < deadline:
            time.sleep(2)
        assert nodes == 2, "the worker did not rejoin the requeued head"
    finally:
        down = _run([MATRIX, "cluster", "down", "slurm_local", "--root", str(root)], slurm_env)
    ended = json.loads(down.stdout)["jobs"]
    assert set(ended) == jobs and set(ended.values()) <= {"COMPLETED", "CANCELLED"}, ended
    deadline = time.monotonic() + 30
    while (left := _processes_of_jobs(jobs)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"processes of the cluster's jobs still running: {left}"


def test_a_two_node_job_builds_its_own_ray_cluster(slurm_env: dict[str, str], tmp_path: Path) -> None:
    runs, sweep = tmp_path / "runs", tmp_path / "sweep"
    _multirun(slurm_env, sweep, "cluster.slurm.tasks_per_node=2", "cluster.ray.num_cpus=1", *SMALL_CORAL,
              "system=matrix", "system.concurrency=8", f"run_root={runs}", "run_id=twonode")  # fmt: skip
    assert json.loads((runs / "coral" / "matrix" / "twonode-c8" / "metrics.json").read_text())["trajectories"] == 8
    logs = "".join(p.read_text(errors="replace") for p in sweep.glob(".submitit/*/*_log.*"))
    assert "job cluster: 2 nodes at 127.0.0.1:" in logs
    assert "ray worker 1:" in logs and "ray head: up at" in logs
