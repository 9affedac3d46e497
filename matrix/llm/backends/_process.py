"""Start an HTTP server as a child process, wait until it is healthy, stop it by PID.

Shared by the backends that run a server process (`sim`, `vllm-cpu`). Only processes started here
are ever signalled; the child gets its own process group so that its workers stop with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from matrix.llm.backends.base import BackendError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def wait_healthy(
    url: str,
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    name: str = "server",
    log_path: Path | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if `proc` exits."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BackendError(
                f"{name} exited with code {proc.returncode} before it became healthy at {url}"
                + (f"; last lines of {log_path}:\n{_tail(log_path)}" if log_path else "")
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last_error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        time.sleep(interval)
    raise BackendError(
        f"{name} did not become healthy at {url} within {timeout:.0f}s (last: {last_error})"
        + (f"; last lines of {log_path}:\n{_tail(log_path)}" if log_path else "")
    )


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """SIGTERM the child's process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def start_server_process(
    cmd: Sequence[str],
    *,
    health_url: str,
    name: str,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start `cmd` in its own process group, wait for `health_url`, return (process, stop)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    out: int | IO[bytes] = subprocess.DEVNULL
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        out = log_file
    try:
        proc = subprocess.Popen(list(cmd), env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise BackendError(f"could not start {name} ({cmd[0]}): {exc}") from exc

    def stop() -> None:
        stop_process(proc)
        if log_file is not None:
            log_file.close()

    try:
        wait_healthy(health_url, timeout=timeout, proc=proc, name=name, log_path=log_path)
    except BaseException:
        stop()
        raise
    return proc, stop
