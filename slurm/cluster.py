"""A Ray cluster on SLURM, started with submitit: `matrix cluster up | status | down`, and `matrix run` on it.

- The head is one single-node job that runs `ray start --head --block` and writes the cluster's
  address to a rendezvous file (`<root>/<name>/rendezvous.json`, on a filesystem every node sees).
- The workers are one multi-node job (one task per node) whose tasks wait for the rendezvous file,
  run `ray start --address=... --block` with the node's GPUs and custom resources, and join again
  if the head comes back at a new address (a requeued head rewrites the file).
- Both jobs are submitit `Checkpointable`s: on preemption or time-out submitit requeues them.
- `down` writes a stop file, cancels both jobs and waits until Slurm has ended them. Each job stops its
  `ray start` and then ends any process that start got going and that outlived it (a Ray agent can
  outlive its raylet by a minute), found by a variable in its environment; Slurm's TERM/KILL covers
  the rest.
- `matrix run --cluster NAME ...` runs `experiments.run` as a driver attached to the cluster.

The cluster's Slurm settings come from a Hydra `cluster` config (`experiments/conf/cluster/`) and are
checked (`slurm.settings`) and tried with `sbatch --test-only` before anything is submitted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from matrix.procs import live_processes
from matrix.ray_init import node_env
from slurm.settings import SlurmConfigError, SlurmSettings, preflight, scheduler_of, slurm_settings

RENDEZVOUS = "rendezvous.json"
STATE = "cluster.json"
STOP = "stop"
CONF_DIR = Path(__file__).resolve().parent.parent / "experiments" / "conf"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def default_root() -> Path:
    """Where clusters keep their rendezvous and job files: $MATRIX_CLUSTER_DIR or ./.matrix/clusters (shared FS)."""
    return Path(os.environ.get("MATRIX_CLUSTER_DIR") or Path.cwd() / ".matrix" / "clusters").resolve()


@dataclass(frozen=True)
class RaySpec:
    """How each node starts Ray: GCS port, address to bind, and what it offers."""

    port: int = 6379
    node_ip: str | None = None  # None: the address the node's hostname resolves to
    num_cpus: int | None = None  # None: the job's CPUs (SLURM_CPUS_ON_NODE)
    num_gpus: int | None = None  # None: the job's GPUs per node
    resources: dict[str, float] = field(default_factory=dict)
    join_timeout_s: float = 900.0
    #: Start `matrix monitor` (Prometheus on the head's 127.0.0.1:PORT) with the head; None: off. Ray then
    #: runs its dashboard (on 127.0.0.1) too, which writes the discovery file that lists every node's metrics.
    monitor_port: int | None = None

    @classmethod
    def from_config(cls, ray_cfg: Mapping[str, Any] | None, settings: SlurmSettings) -> RaySpec:
        ray_cfg = dict(ray_cfg or {})
        unknown = set(ray_cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise SlurmConfigError(f"cluster.ray has unknown key(s) {sorted(unknown)}")
        gpus = ray_cfg.get("num_gpus")
        return cls(
            port=int(ray_cfg.get("port") or 6379),
            node_ip=ray_cfg.get("node_ip"),
            num_cpus=ray_cfg.get("num_cpus"),
            num_gpus=settings.gpus_per_node if gpus is None else int(gpus),
            resources={str(k): float(v) for k, v in (ray_cfg.get("resources") or {}).items()},
            join_timeout_s=float(ray_cfg.get("join_timeout_s") or 900.0),
            monitor_port=None if ray_cfg.get("monitor_port") is None else int(ray_cfg["monitor_port"]),
        )


def node_ip(explicit: str | None = None) -> str:
    """This node's address for Ray: the configured one, else what its hostname resolves to."""
    if explicit:
        return explicit
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _ray_exe() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


TOKEN = "auth_token"


def auth_env(cluster_dir: Path) -> dict[str, str]:
    """Ray token authentication with the cluster's own token (written by `up`, readable by its owner only)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster_dir / TOKEN)}


def _write_token(cluster_dir: Path) -> None:
    import secrets

    path = cluster_dir / TOKEN
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def _ray_env(cluster_dir: Path) -> dict[str, str]:
    """The jobs' environment for `ray start`: the cluster's token, and multi-node on (a driver shell may
    have turned it off for local runs, see matrix.runtime.ray_p2p.local_only), and the runtime's Ray settings
    (`matrix.ray_init.node_env`)."""
    return {**os.environ, **node_env(), **auth_env(cluster_dir), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}


def _ray_start_args(spec: RaySpec, ip: str) -> list[str]:
    cpus = spec.num_cpus or int(os.environ.get("SLURM_CPUS_ON_NODE") or os.environ.get("SLURM_CPUS_PER_TASK") or 0)
    args = [f"--node-ip-address={ip}", "--block", "--disable-usage-stats"]
    if cpus:
        args.append(f"--num-cpus={cpus}")
    if spec.num_gpus is not None:
        args.append(f"--num-gpus={spec.num_gpus}")
    if spec.resources:
        args.append(f"--resources={json.dumps(spec.resources)}")
    return args


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _relay(proc: subprocess.Popen[str], marker: str, seen: threading.Event) -> None:
    """Copy a child's output to ours (the job's log) and flag the line that says it is up."""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if marker in line:
            seen.set()


# Every process a `ray start` of this job starts (raylet, GCS, agents, workers) inherits this variable
# with a value of its own per start: what `_stop_child` finds still running afterwards is ours to end.
SPAWN_VAR = "MATRIX_RAY_SPAWN"
_SPAWNED: dict[int, str] = {}  # pid of a `ray start` -> its SPAWN_VAR value


def _spawn_ray(cmd: list[str], d: Path) -> tuple[subprocess.Popen[str], threading.Event]:
    """Run a `ray start ... --block` with the cluster's environment; the event is set once Ray says it is up."""
    token = f"{os.getpid()}.{time.monotonic_ns()}"
    env = {**_ray_env(d), SPAWN_VAR: token}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _SPAWNED[proc.pid] = token
    up = threading.Event()
    threading.Thread(target=_relay, args=(proc, "Ray runtime started", up), daemon=True).start()
    return proc, up


def processes_of_spawn(token: str) -> list[int]:
    """Pids of the live processes whose environment carries `SPAWN_VAR=token`."""
    return live_processes(env=f"{SPAWN_VAR}={token}")


def _reap(token: str, grace: float = 3.0) -> list[int]:
    """End what a stopped `ray start` left behind. A Ray agent outlives its raylet by a few seconds at best,
    and by a minute when the raylet was killed and the agent tries to report it to a GCS that is gone;
    Slurm with proctrack/cgroup would end them with the job, other setups do not. Returns the pids that
    needed a signal."""
    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        while (left := processes_of_spawn(token)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                signalled.append(pid)
    deadline = time.monotonic() + grace
    while processes_of_spawn(token) and time.monotonic() < deadline:  # KILL takes a moment too
        time.sleep(0.1)
    return sorted(set(signalled))


def _stop_child(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Stop a `ray start --block` (TERM, then KILL after `timeout`) and whatever it started that outlives it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    token = _SPAWNED.pop(proc.pid, None)
    if token is not None and (late := _reap(token)):
        print(f"ray: ended {len(late)} process(es) left behind by ray start (pids {late})", flush=True)


def _checkpointable() -> type:
    try:
        from submitit.helpers import Checkpointable

        return Checkpointable
    except ImportError:  # the job functions still work without submitit (tests, `make setup` without [slurm])
        return object


def start_head(d: Path, spec: RaySpec, *, attempts: int = 12) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `ray start --head --block` and write the rendezvous file once its GCS answers.

    A requeued head can land where the previous incarnation is still shutting down, or beside a worker
    still attached to it (Ray then says the head is "already running"): a start that fails before the
    head is up is tried again, 5 s apart, `attempts` times in all."""
    ip = node_ip(spec.node_ip)
    dashboard = (
        ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        if spec.monitor_port
        else ["--include-dashboard=false"]
    )
    cmd = [_ray_exe(), "start", "--head", f"--port={spec.port}", *dashboard, *_ray_start_args(spec, ip)]
    for attempt in range(1, attempts + 1):
        print("ray head:", " ".join(cmd), flush=True)
        proc, up = _spawn_ray(cmd, d)
        deadline = time.monotonic() + spec.join_timeout_s
        while not (up.is_set() and _port_open(ip, spec.port)) and proc.poll() is None:
            if time.monotonic() > deadline:
                _stop_child(proc)
                raise RuntimeError(f"the Ray head did not come up in {spec.join_timeout_s:.0f}s")
            time.sleep(0.5)
        if proc.poll() is None:
            break
        _stop_child(proc)  # what the failed start got going
        if attempt == attempts:
            raise RuntimeError(
                f"ray start --head exited with {proc.returncode} before the head was up, {attempts} times "
                "(see this job's log)"
            )
        print(f"ray head: start failed (exit {proc.returncode}); trying again in 5 s", flush=True)
        time.sleep(5.0)
    info = {
        "address": f"{ip}:{spec.port}",
        "node_ip": ip,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "host": socket.gethostname(),
        "pid": proc.pid,
        "started": time.time(),
    }
    _write_json(d / RENDEZVOUS, info)
    print(f"ray head: up at {info['address']}; rendezvous {d / RENDEZVOUS}", flush=True)
    return proc, info


def _monitor(d: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """`matrix monitor ARGS` with the cluster's monitor folder (`d/monitor`); None if it could not run."""
    env = {**os.environ, "MATRIX_MONITOR_DIR": str(d / "monitor")}
    try:
        return subprocess.run(
            [sys.executable, "-m", "experiments.monitor", *args], env=env, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def start_monitor(d: Path, spec: RaySpec) -> bool:
    """Start `matrix monitor` beside the head when `spec.monitor_port` asks for it. Monitoring that cannot
    start is said in one line and the cluster goes on without it."""
    if spec.monitor_port is None:
        return False
    res = _monitor(d, "start", f"--port={spec.monitor_port}", "--ray-session=latest")
    if res is None or res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines() if res is not None else []
        why = lines[-1] if lines else "it did not answer in 120 s"
        print(f"ray head: monitoring not started ({why}); the cluster runs without it", flush=True)
        return False
    print(
        f"ray head: {res.stdout.strip()} (drivers announce to it with MATRIX_MONITOR_DIR={d / 'monitor'})", flush=True
    )
    return True


def stop_monitor(d: Path, started: bool) -> None:
    if started:
        _monitor(d, "stop")


def _forget_current_cluster(address: str) -> None:
    """Remove Ray's per-machine "current cluster" note if it still names this (now stopped) head."""
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if note.read_text().strip() == address:
            note.unlink()


class RayHead(_checkpointable()):  # type: ignore[misc]
    """The head job: `ray start --head --block`, its address in the rendezvous file, until `down` or the job ends."""

    def __call__(self, cluster_dir: str, spec: RaySpec) -> dict[str, Any]:
        d = Path(cluster_dir)
        proc, info = start_head(d, spec)
        monitoring = start_monitor(d, spec)
        try:
            while proc.poll() is None:
                if (d / STOP).exists():
                    break
                time.sleep(1.0)
        finally:
            _stop_child(proc)  # also ends what a head that exited on its own left behind
            stop_monitor(d, monitoring)
        _forget_current_cluster(info["address"])
        if not (d / STOP).exists():
            raise RuntimeError(f"the Ray head exited with {proc.returncode} without a stop request")
        return {"role": "head", **info, "exit": proc.returncode}


# A worker whose head's GCS port stays closed this long stops its node and waits for a new rendezvous.
HEAD_LOST_S = 10.0


class RayWorker(_checkpointable()):  # type: ignore[misc]
    """A worker task: joins the address in the rendezvous file; when the head is lost (its GCS port stays
    closed) or re-registers elsewhere, it stops its node and joins the next head that registers."""

    def __call__(self, cluster_dir: str, spec: RaySpec) -> dict[str, Any]:
        d = Path(cluster_dir)
        ip = node_ip(spec.node_ip)
        rank = os.environ.get("SLURM_PROCID", "0")
        joins = failures = 0
        joined_started = 0.0  # the rendezvous this worker last joined: after losing it, wait for a newer one
        marker = d / "workers" / f"{os.environ.get('SLURM_JOB_ID', 'local')}.{rank}.json"
        while not (d / STOP).exists():
            info = wait_rendezvous(d, spec.join_timeout_s, stop=d / STOP, after=joined_started)
            if info is None:
                break
            host, port = str(info["address"]).rsplit(":", 1)
            cmd = [_ray_exe(), "start", f"--address={info['address']}", *_ray_start_args(spec, ip)]
            print(f"ray worker {rank}:", " ".join(cmd), flush=True)
            proc, up = _spawn_ray(cmd, d)
            joins += 1
            lost_since: float | None = None
            while proc.poll() is None:
                if up.is_set():
                    joined_started = float(info.get("started", 0))
                    if not marker.exists():
                        marker.parent.mkdir(exist_ok=True)
                        _write_json(marker, {"host": socket.gethostname(), "node_ip": ip, "address": info["address"]})
                now = read_json(d / RENDEZVOUS)
                if (d / STOP).exists() or (now and now.get("started") != info.get("started")):
                    _stop_child(proc)
                    if (d / STOP).exists():
                        marker.unlink(missing_ok=True)  # tells the head this node has left (see job_cluster)
                    break
                if _port_open(host, int(port)):
                    lost_since = None
                elif lost_since is None:
                    lost_since = time.monotonic()
                elif time.monotonic() - lost_since > HEAD_LOST_S:
                    print(
                        f"ray worker {rank}: head {info['address']} lost; waiting for it to register again", flush=True
                    )
                    break
                time.sleep(1.0)
            _stop_child(proc)  # also ends what a node that exited on its own left behind
            if not up.is_set() and proc.returncode not in (0, None):
                failures += 1
                if failures >= 5:
                    raise RuntimeError(
                        f"ray start --address={info['address']} failed {failures} times (exit {proc.returncode})"
                    )
                time.sleep(2.0)
        return {"role": "worker", "rank": rank, "joins": joins}


def wait_rendezvous(d: Path, timeout: float, *, stop: Path | None = None, after: float = 0.0) -> dict[str, Any] | None:
    """The rendezvous written after `after`, once it is there (None if `stop` appears first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_json(d / RENDEZVOUS)
        if info and float(info.get("started", 0)) > after:
            return info
        if stop is not None and stop.exists():
            return None
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head registered in {d / RENDEZVOUS} after {timeout:.0f}s")


WORKERS_LEAVE_S = 20.0  # how long a job's head waits for its workers to stop before it stops itself


def workers_joined(d: Path) -> int:
    return len(list((d / "workers").glob("*.json"))) if (d / "workers").exists() else 0


@contextlib.contextmanager
def job_cluster(d: Path, spec: RaySpec, *, tasks: int | None = None, rank: int | None = None) -> Iterator[bool]:
    """A Ray cluster over the tasks of this Slurm job (one task per node): yields True on rank 0 once every
    other task has joined, with RAY_ADDRESS pointing at it, and stops it afterwards; the other ranks serve as
    Ray workers until rank 0 is done, then yield False. A one-task job yields True and changes nothing."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1")) if tasks is None else tasks
    rank = int(os.environ.get("SLURM_PROCID", "0")) if rank is None else rank
    if tasks <= 1:
        yield True
        return
    d.mkdir(parents=True, exist_ok=True)
    if rank != 0:
        RayWorker()(str(d), spec)
        yield False
        return
    _write_token(d)
    proc, info = start_head(d, spec)
    monitoring = start_monitor(d, spec)
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "MATRIX_MONITOR_DIR")}  # fmt: skip
    try:
        deadline = time.monotonic() + spec.join_timeout_s
        while workers_joined(d) < tasks - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{workers_joined(d)} of {tasks - 1} Ray workers joined in {spec.join_timeout_s:.0f}s"
                )
            if proc.poll() is not None:
                raise RuntimeError(f"the Ray head exited with {proc.returncode} while workers were joining")
            time.sleep(0.5)
        os.environ.update({"RAY_ADDRESS": info["address"], **auth_env(d), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"})
        if monitoring:  # this driver's exporter and replicas announce themselves to the head's monitor
            os.environ["MATRIX_MONITOR_DIR"] = str(d / "monitor")
        print(f"job cluster: {tasks} nodes at {info['address']}", file=sys.stderr, flush=True)
        yield True
    finally:
        (d / STOP).touch()
        # Workers leave first (each removes its marker once its node has stopped): a worker node that
        # is still up when the head goes waits out Ray's whole shutdown drain (30 s) before it exits.
        deadline = time.monotonic() + WORKERS_LEAVE_S
        while workers_joined(d) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.25)
        _stop_child(proc)
        stop_monitor(d, monitoring)
        _forget_current_cluster(info["address"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# up / status / down


def compose_cluster(overrides: Sequence[str]) -> dict[str, Any]:
    """The `cluster` node of experiments/conf composed with `overrides` (e.g. cluster=slurm_a100_31nodes)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg.cluster, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def _squeue_states(job_ids: Sequence[str | None]) -> dict[str, str]:
    """Slurm's state for each job (squeue while it is queued or running, else sacct)."""
    out: dict[str, str] = {}
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return out
    for cmd in (["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)],
                ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)]):  # fmt: skip
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in text.splitlines():
            parts = line.replace("|", " ").split()
            if len(parts) >= 2 and parts[0].split("_")[0] in ids and parts[0] not in out:
                out[parts[0]] = parts[1]
    return out


def up(
    overrides: Sequence[str], *, name: str | None = None, root: Path | None = None, workers: int | None = None,
    wait: bool = True, timeout: float = 900.0,
) -> dict[str, Any]:  # fmt: skip
    """Submit the head (and the workers) of a Ray cluster; with `wait`, return once every node has joined."""
    import submitit

    cluster = compose_cluster(overrides)
    if scheduler_of(cluster) != "slurm":
        raise SlurmConfigError(
            f"cluster {cluster.get('name')!r} is not a Slurm cluster (scheduler {cluster.get('scheduler')!r}); "
            "pick one with cluster=<config> (see experiments/conf/cluster/)"
        )
    settings = slurm_settings(cluster)
    spec = RaySpec.from_config(cluster.get("ray"), settings)
    n_workers = settings.nodes - 1 if workers is None else workers
    if n_workers < 0:
        raise SlurmConfigError(f"--workers must be >= 0, got {n_workers}")
    preflight(settings, nodes=1)
    if n_workers:
        preflight(settings, nodes=n_workers)
    name = name or str(cluster["name"])
    d = (root or default_root()) / name
    state = read_json(d / STATE)
    if state:
        live = {j: s for j, s in _squeue_states([state.get("head_job"), state.get("workers_job")]).items()
                if s not in TERMINAL}  # fmt: skip
        if live:
            raise SlurmConfigError(f"cluster {name!r} is already up (jobs {live}); `matrix cluster down {name}` first")
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    _write_token(d)
    ex = submitit.AutoExecutor(folder=d / "jobs" / "%j", slurm_max_num_timeout=3)
    ex.update_parameters(**{**settings.executor_parameters(nodes=1, name=f"ray-head-{name}"), "tasks_per_node": 1})
    head = ex.submit(RayHead(), str(d), spec)
    state = {"name": name, "dir": str(d), "head_job": head.job_id, "workers_job": None, "workers": n_workers,
             "cluster": cluster, "submitted": time.time()}  # fmt: skip
    _write_json(d / STATE, state)
    print(f"cluster {name}: head job {head.job_id} submitted", file=sys.stderr)
    if n_workers:
        ex.update_parameters(**settings.executor_parameters(nodes=n_workers, name=f"ray-workers-{name}"))
        wjob = ex.submit(RayWorker(), str(d), spec)
        state["workers_job"] = wjob.job_id
        _write_json(d / STATE, state)
        print(f"cluster {name}: worker job {wjob.job_id} ({n_workers} node(s)) submitted", file=sys.stderr)
        state["workers"] = n_workers * settings.tasks_per_node
    if wait:
        _wait_up(d, state, timeout)
    return state


def _job_log_tail(d: Path, job_id: str, lines: int = 15) -> str:
    logs = sorted((d / "jobs" / job_id).glob("*_log.*"))
    text = []
    for log in logs:
        text += [f"--- {log}", *log.read_text(errors="replace").splitlines()[-lines:]]
    return "\n".join(text)


def _wait_up(d: Path, state: Mapping[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        jobs = [state["head_job"], state.get("workers_job")]
        states = _squeue_states(jobs)
        for job in jobs:
            if job and states.get(job) in TERMINAL:
                raise RuntimeError(
                    f"job {job} ended ({states[job]}) while the cluster was starting:\n{_job_log_tail(d, job)}"
                )
        info = read_json(d / RENDEZVOUS)
        joined = workers_joined(d)
        where = f" at {info['address']}" if info else ""
        line = f"cluster {state['name']}: head {states.get(state['head_job'], '?')}{where}"
        line += f", workers joined {joined}/{state['workers']}"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if info and joined >= int(state["workers"]):
            return
        time.sleep(1.0)
    raise TimeoutError(
        f"cluster {state['name']} not up after {timeout:.0f}s ({last}); its jobs are still queued or starting: "
        f"`matrix cluster status {state['name']}` follows them, `matrix cluster down {state['name']}` cancels them"
    )


def status(name: str, *, root: Path | None = None) -> dict[str, Any]:
    d = (root or default_root()) / name
    state = read_json(d / STATE)
    if state is None:
        known = sorted(p.name for p in (root or default_root()).glob("*") if (p / STATE).exists())
        raise SlurmConfigError(f"no cluster named {name!r} under {d.parent} (known: {', '.join(known) or 'none'})")
    jobs = [state["head_job"], state.get("workers_job")]
    info = read_json(d / RENDEZVOUS)
    joined = sorted(p.stem for p in (d / "workers").glob("*.json")) if (d / "workers").exists() else []
    return {"name": name, "dir": str(d), "jobs": _squeue_states(jobs), "address": info and info["address"],
            "workers_joined": joined, "stopping": (d / STOP).exists()}  # fmt: skip


def down(name: str, *, root: Path | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Ask the jobs to stop Ray, cancel them, and wait until Slurm says they have ended."""
    d = (root or default_root()) / name
    state = read_json(d / STATE)
    if state is None:
        raise SlurmConfigError(f"no cluster named {name!r} under {d.parent}")
    (d / STOP).touch()
    jobs = [j for j in (state["head_job"], state.get("workers_job")) if j]
    deadline = time.monotonic() + timeout
    # The jobs see the stop file within a second and end Ray themselves; scancel covers the rest.
    grace = time.monotonic() + 10.0
    while time.monotonic() < grace:
        now = _squeue_states(jobs)
        if now and all(s in TERMINAL for s in now.values()):
            break
        time.sleep(1.0)
    subprocess.run(["scancel", *jobs], capture_output=True, check=False, timeout=60)
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = _squeue_states(jobs)
        if all(states.get(j) in TERMINAL for j in jobs):
            break
        time.sleep(1.0)
    else:
        raise TimeoutError(f"cluster {name}: jobs not ended after {timeout:.0f}s: {states}")
    (d / RENDEZVOUS).unlink(missing_ok=True)
    print(f"cluster {name}: down ({', '.join(f'{j} {s}' for j, s in states.items())})", file=sys.stderr)
    return {"name": name, "jobs": states}


def address_of(name: str, *, root: Path | None = None) -> str:
    """The Ray address of a running cluster, from its rendezvous file."""
    d = (root or default_root()) / name
    info = read_json(d / RENDEZVOUS)
    if info is None:
        raise SlurmConfigError(
            f"cluster {name!r} has no head registered in {d / RENDEZVOUS}; is it up? (matrix cluster status {name})"
        )
    return str(info["address"])


# ---------------------------------------------------------------------------------------------
# the `matrix cluster` and `matrix run` commands (registered through the `matrix.commands` entry point)


def _cmd_cluster(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve() if args.root else None
    if args.action == "up":
        state = up(args.overrides, name=args.name, root=root, workers=args.workers, wait=not args.no_wait,
                   timeout=args.timeout)  # fmt: skip
        d = Path(state["dir"])
        info = read_json(d / RENDEZVOUS)
        print(json.dumps({"name": state["name"], "address": info and info["address"], "head_job": state["head_job"],
                          "workers_job": state["workers_job"], "dir": state["dir"]}, indent=2))  # fmt: skip
        return 0
    if not args.overrides or len(args.overrides) != 1:
        raise SlurmConfigError(f"matrix cluster {args.action} takes the cluster's name, got {args.overrides!r}")
    name = args.overrides[0]
    if args.action == "status":
        print(json.dumps(status(name, root=root), indent=2))
        return 0
    print(json.dumps(down(name, root=root, timeout=args.timeout), indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.cluster:
        root = Path(args.root).resolve() if args.root else None
        env["RAY_ADDRESS"] = address_of(args.cluster, root=root)
        env.update(auth_env((root or default_root()) / args.cluster))
        print(f"matrix run: attached to cluster {args.cluster} at {env['RAY_ADDRESS']}", file=sys.stderr)
    cmd = [sys.executable, "-m", "experiments.run", *args.overrides]
    print(f"matrix run: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=env, check=False).returncode


def register_cli(sub: Any) -> None:
    """Add `matrix cluster` and `matrix run` to the `matrix` command's subparsers."""
    c = sub.add_parser("cluster", help="a Ray cluster on SLURM: up CLUSTER_OVERRIDES... | status NAME | down NAME")
    c.add_argument("action", choices=["up", "status", "down"])
    c.add_argument(
        "overrides", nargs="*", help="up: Hydra overrides, e.g. cluster=slurm_a100_31nodes cluster.slurm.partition=gpu"
    )
    c.add_argument("--name", help="up: the cluster's name (default: the cluster config's)")
    c.add_argument(
        "--root",
        help="where clusters keep their files, on a shared filesystem ($MATRIX_CLUSTER_DIR or ./.matrix/clusters)",
    )
    c.add_argument("--workers", type=int, help="up: worker nodes (default: cluster.slurm.nodes - 1)")
    c.add_argument("--no-wait", action="store_true", help="up: return once submitted")
    c.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for up/down (default 900)")
    c.set_defaults(func=_cmd_cluster)
    r = sub.add_parser(
        "run", help="run an experiment (python -m experiments.run OVERRIDES), on a cluster with --cluster NAME"
    )
    r.add_argument("--cluster", help="attach to this running cluster (matrix cluster up)")
    r.add_argument("--root", help="where clusters keep their files (default $MATRIX_CLUSTER_DIR or ./.matrix/clusters)")
    r.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, e.g. case=coral backend=sim")
    r.set_defaults(func=_cmd_run, passthrough="overrides")  # Hydra's own flags (-m, --cfg) pass through too


if __name__ == "__main__":  # python -m slurm.cluster up|status|down ...
    p = argparse.ArgumentParser(prog="python -m slurm.cluster")
    register_cli(p.add_subparsers(dest="command", required=True))
    a = p.parse_args()
    try:
        sys.exit(a.func(a))
    except (SlurmConfigError, TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, SlurmConfigError) else 1)
