"""A bounded pool of sandboxed tau2 tool servers, with leases, health checks and replacement.

The pool owns processes and slots, not traffic: `acquire` opens a session for one task on the least
loaded healthy server and hands back a `Lease`; the agents then call that server directly with
`call_tool` (the lease rides in the task's message), and `release` closes the session. At most
servers × sessions_per_server leases exist at once; `acquire` waits for a slot, never past the limit.

A watcher per server pings /health. A server whose process exited is "crashed", one that does not
answer within call_timeout_s is "hung"; either way it is killed, its leases become lost (their holders
get a ToolServerError of kind "lost_lease" or "crashed"), and a fresh server takes its place, up to
max_restarts replacements in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from matrix.tools.sandbox import detect_sandbox, sandbox_argv

ErrorKind = Literal["crashed", "hung", "lost_lease", "bad_request", "server_error"]
SERVER_MODULE = "matrix.cases.tau2.tool_server"
SCHEME_INPROC = "inproc://"  # a lease on an in-process server (matrix.tools.inproc): no socket
_LAUNCHERS = {"bwrap", "apptainer", "starter", "starter-suid", "squashfuse_ll", "fuse-overlayfs"}


class ToolServerError(RuntimeError):
    """A tool server could not answer; `.kind` says how (crashed, hung, lost_lease, bad_request, server_error)."""

    def __init__(self, kind: ErrorKind, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.url = url
        self.status = status


@dataclass(frozen=True)
class Lease:
    """One open session on one server, for one task. Plain data: it travels inside agent messages."""

    lease_id: str
    server_url: str
    session: str
    task_id: str
    server_index: int
    pid: int


@dataclass
class ToolPoolConfig:
    """How many tool servers, in which sandbox, and how patient to be with them."""

    domain: str = "telecom"
    servers: int = 2
    sessions_per_server: int = 4
    sandbox: str = "auto"
    image: str | None = None
    workdir: str | None = None  # None: a private temporary directory, removed by stop()
    start_timeout_s: float = 60.0
    call_timeout_s: float = 30.0
    health_interval_s: float = 2.0
    max_restarts: int = 16
    stop_grace_s: float = 5.0
    python: str = field(default_factory=lambda: sys.executable)
    costs: dict[str, float] = field(default_factory=dict)  # sandbox "inproc" only: see matrix.tools.inproc

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise ValueError(f"tools.servers must be >= 1, got {self.servers}")
        if self.sessions_per_server < 1:
            raise ValueError(f"tools.sessions_per_server must be >= 1, got {self.sessions_per_server}")
        if self.max_restarts < 0:
            raise ValueError(f"tools.max_restarts must be >= 0, got {self.max_restarts}")


# One HTTP client per event loop: an httpx client's connections belong to the loop that opened them.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def http_client() -> httpx.AsyncClient:
    """The shared client of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        client = httpx.AsyncClient(limits=limits, trust_env=False)
        _clients[loop] = client
    return client


async def close_http_client() -> None:
    """Close the running loop's shared client, if any."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def request_json(
    method: str, url: str, *, timeout: float, body: dict[str, Any] | None = None, what: str = ""
) -> Any:
    """One JSON request; every failure becomes a ToolServerError whose message names `what` and the URL."""
    where = f"{what} at {url}" if what else url
    try:
        response = await http_client().request(method, url, json=body, timeout=timeout)
    except httpx.PoolTimeout as exc:
        raise ToolServerError("server_error", f"{where}: no free client connection within {timeout}s", url=url) from exc
    except httpx.TimeoutException as exc:
        raise ToolServerError("hung", f"{where}: no answer within {timeout}s (server hung?)", url=url) from exc
    except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
        raise ToolServerError("crashed", f"{where}: server unreachable ({exc!r}); it died?", url=url) from exc
    if response.status_code < 400:
        return response.json()
    try:
        detail = response.json().get("error", response.text)
    except (json.JSONDecodeError, AttributeError):
        detail = response.text
    status = response.status_code
    kind: ErrorKind = "server_error" if status >= 500 else "bad_request"
    raise ToolServerError(kind, f"{where}: HTTP {status}: {detail}", url=url, status=status)


async def call_tool(lease: Lease, tool_call: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run one tool call ({"id", "name", "arguments", "requestor"}) in the lease's session.

    Returns tau2's ToolMessage as a dict (a failing tool is a normal answer with error=true). Raises
    ToolServerError: "crashed" when the server is gone, "hung" past `timeout`, "lost_lease" when the
    server no longer knows the session, "bad_request"/"server_error" for other 4xx/5xx answers.
    """
    if lease.server_url.startswith(SCHEME_INPROC):
        from matrix.tools.inproc import call_inproc

        return await call_inproc(lease, tool_call, timeout=timeout)
    name = tool_call.get("name")
    url = f"{lease.server_url}/sessions/{lease.session}/call"
    what = f"tool {name!r} on lease {lease.lease_id} (task {lease.task_id!r}, server {lease.server_index})"
    try:
        result: dict[str, Any] = await request_json("POST", url, timeout=timeout, body=tool_call, what=what)
    except ToolServerError as exc:
        if exc.status == 404:
            raise ToolServerError("lost_lease", str(exc), url=url, status=404) from exc
        raise
    return result


def pid_gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie waiting to be reaped by someone else counts as exited)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _wait_gone(pid: int, timeout: float) -> None:
    """Wait for a killed sandboxed process to disappear; a launcher can exit before its child does."""
    if pid <= 0:
        return
    async with asyncio.timeout(timeout):
        while not pid_gone(pid):
            await asyncio.sleep(0.02)


@dataclass
class _Server:
    index: int
    generation: int
    proc: asyncio.subprocess.Process
    directory: Path
    log: Any
    url: str = ""
    pid: int = 0
    alive: bool = False
    load: int = 0  # open sessions plus sessions being opened
    leases: set[str] = field(default_factory=set)


class ToolServerPool:
    """Starts, leases, watches, replaces and stops a set of tau2 tool servers (see the module doc)."""

    def __init__(self, config: ToolPoolConfig) -> None:
        self.config = config
        self.sandbox = detect_sandbox(config.sandbox, image=config.image)
        self.limit = config.servers * config.sessions_per_server
        self._servers: list[_Server | None] = [None] * config.servers
        self._leases: dict[str, tuple[Lease, _Server]] = {}
        self._lost: dict[str, str] = {}
        self._cond = asyncio.Condition()
        self._wake = [asyncio.Event() for _ in range(config.servers)]
        self._watchers: list[asyncio.Task[None]] = []
        self._info: dict[str, Any] | None = None
        self._own_workdir = config.workdir is None
        self._workdir = Path(config.workdir or tempfile.mkdtemp(prefix="matrix-tau2-")).resolve()
        self._generation = 0
        self._launching = 0
        self._closed = False
        self._started = False
        self.started_pids: list[int] = []  # every launcher and server PID this pool started, for audits
        self.counters = {
            "acquired": 0,
            "released": 0,
            "lost": 0,
            "peak": 0,
            "restarts": 0,
            "crashed": 0,
            "hung": 0,
            "restart_failures": 0,
        }
        self.start_seconds: list[float] = []
        self.last_error: str | None = None

    async def __aenter__(self) -> ToolServerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every server concurrently and wait until all answer /health; on failure stop them all."""
        if self._started:
            raise RuntimeError("ToolServerPool.start() called twice")
        self._started = True
        self._workdir.mkdir(parents=True, exist_ok=True)
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.config.servers):
                    group.create_task(self._start_slot(index))
        except BaseException:
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(i), name=f"tau2-watch-{i}") for i in range(len(self._wake))]

    async def _start_slot(self, index: int) -> None:
        server = await self._launch(index)
        async with self._cond:
            self._servers[index] = server
            self._cond.notify_all()

    async def stop(self) -> None:
        """Stop the watchers, then every server (SIGTERM, then SIGKILL after the grace period)."""
        self._closed = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._watchers = []
        async with self._cond:
            servers = [s for s in self._servers if s is not None]
            self._servers = [None] * self.config.servers
            for lease_id in list(self._leases):
                self._lose(lease_id, "pool stopped")
            self._cond.notify_all()
        await asyncio.gather(*(self._terminate(s, grace=self.config.stop_grace_s) for s in servers))
        await close_http_client()
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    async def _launch(self, index: int) -> _Server:
        """Start one server in the sandbox and wait for its ready file and first /health answer."""
        cfg = self.config
        self._generation += 1
        directory = self._workdir / f"server-{index}-{self._generation}"
        directory.mkdir(parents=True)
        ready = directory / "ready.json"
        python = "python" if self.sandbox == "apptainer" else cfg.python
        argv = [python, "-m", SERVER_MODULE, "--domain", cfg.domain, "--host", "127.0.0.1", "--port", "0"]
        argv += ["--ready-file", str(ready), "--max-sessions", str(cfg.sessions_per_server)]
        if self.sandbox == "process":
            argv.append("--die-with-parent")
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1")
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
        log = (directory / "server.log").open("wb")
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *sandbox_argv(self.sandbox, argv, workdir=directory, image=cfg.image),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=directory,
            env=env,
            start_new_session=True,
        )
        self.started_pids.append(proc.pid)
        server = _Server(index=index, generation=self._generation, proc=proc, directory=directory, log=log)
        try:
            async with asyncio.timeout(cfg.start_timeout_s):
                while not ready.exists():
                    if proc.returncode is not None:
                        raise RuntimeError(f"exited with code {proc.returncode} before it was ready")
                    await asyncio.sleep(0.05)
                announced = json.loads(ready.read_text())
                server.url = f"http://127.0.0.1:{announced['port']}"
                server.pid = self._host_pid(proc.pid) if self.sandbox != "process" else proc.pid
                if server.pid != proc.pid:
                    self.started_pids.append(server.pid)
                await request_json("GET", f"{server.url}/health", timeout=cfg.call_timeout_s, what="health")
        except BaseException as exc:
            await self._terminate(server, grace=0.0)
            if isinstance(exc, Exception):
                reason = "did not become ready in time" if isinstance(exc, TimeoutError) else str(exc)
                raise RuntimeError(
                    f"tau2 tool server {index} ({self.sandbox}, domain {cfg.domain!r}) {reason}: "
                    f"{self._log_tail(server)}"
                ) from exc
            raise
        server.alive = True
        self.start_seconds.append(time.perf_counter() - began)
        return server

    @staticmethod
    def _host_pid(launcher_pid: int) -> int:
        """The host PID of the Python server under a sandbox launcher (the launcher's own PID if not found)."""
        import psutil

        try:
            children = psutil.Process(launcher_pid).children(recursive=True)
        except psutil.Error:
            return launcher_pid
        for child in reversed(children):
            try:
                if child.name() not in _LAUNCHERS and SERVER_MODULE in " ".join(child.cmdline()):
                    return int(child.pid)
            except psutil.Error:
                continue
        return launcher_pid

    @staticmethod
    def _log_tail(server: _Server, limit: int = 2000) -> str:
        with contextlib.suppress(OSError, ValueError):  # ValueError: the log was closed already
            server.log.flush()
            text = (server.directory / "server.log").read_text(errors="replace")
            return f"log tail: {text[-limit:]!r}" if text else "empty log"
        return "no log"

    async def _terminate(self, server: _Server, *, grace: float) -> None:
        """Ask the server to stop, then kill its whole process group; always reaps the launcher."""
        server.alive = False
        proc = server.proc
        if grace > 0 and proc.returncode is None:
            for pid in {server.pid, proc.pid} - {0}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        for pid in {server.pid, proc.pid} - {0}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10.0)
        with contextlib.suppress(TimeoutError):
            await _wait_gone(server.pid, 10.0)
        server.log.close()

    # -- health ------------------------------------------------------------------------------------

    async def _probe(self, server: _Server) -> ErrorKind | None:
        if server.proc.returncode is not None:
            return "crashed"
        try:
            await request_json("GET", f"{server.url}/health", timeout=self.config.call_timeout_s, what="health")
        except ToolServerError as exc:
            if server.proc.returncode is not None:
                return "crashed"
            return "hung" if exc.kind == "hung" else "crashed" if exc.kind == "crashed" else None
        return None

    async def _watch(self, index: int) -> None:
        """Ping server `index` every health_interval_s; replace it when it is dead."""
        wake = self._wake[index]
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.config.health_interval_s)
            wake.clear()
            try:
                server = self._servers[index]
                if server is not None and server.alive:
                    verdict = await self._probe(server)
                    if verdict is None:
                        continue
                    await self._mark_dead(server, verdict, f"health check: {verdict}")
                current = self._servers[index]
                if current is None or not current.alive:
                    await self._replace(index)
            except Exception as exc:  # keep watching; the error stays visible in stats()
                self.last_error = f"watcher {index}: {exc!r}"

    async def _mark_dead(self, server: _Server, kind: ErrorKind, why: str) -> None:
        """Retire a server: lose its leases, free their slots, kill it, and wake its watcher."""
        async with self._cond:
            if not server.alive:
                return
            server.alive = False
            self.counters["crashed" if kind == "crashed" else "hung"] += 1
            self.last_error = f"server {server.index} at {server.url} (pid {server.pid}) {kind}: {why}"
            for lease_id in list(server.leases):
                self._lose(lease_id, self.last_error)
            server.load = 0
            self._cond.notify_all()
        await self._terminate(server, grace=0.0)
        self._wake[server.index].set()

    async def _replace(self, index: int) -> None:
        if self._closed or self.counters["restarts"] >= self.config.max_restarts:
            async with self._cond:
                self._cond.notify_all()  # waiters re-check whether any capacity can still come back
            return
        self.counters["restarts"] += 1
        self._launching += 1
        server: _Server | None = None
        try:
            server = await self._launch(index)
        except Exception as exc:
            self.counters["restart_failures"] += 1
            self.last_error = f"restart of server {index} failed: {exc}"
        finally:
            async with self._cond:
                self._launching -= 1
                if server is not None and not self._closed:
                    self._servers[index] = server
                    server = None
                self._cond.notify_all()
        if server is not None:  # the pool stopped while it was starting
            await self._terminate(server, grace=0.0)

    def _lose(self, lease_id: str, reason: str) -> None:
        entry = self._leases.pop(lease_id, None)
        if entry is None:
            return
        _, server = entry
        server.leases.discard(lease_id)
        self._lost[lease_id] = reason
        self.counters["lost"] += 1

    # -- leases ------------------------------------------------------------------------------------

    def _pick(self) -> _Server | None:
        if len(self._leases) >= self.limit:
            return None
        ready = [s for s in self._servers if s is not None and s.alive and s.load < self.config.sessions_per_server]
        return min(ready, key=lambda s: (s.load, s.index)) if ready else None

    def _capacity_gone(self) -> bool:
        no_live = not any(s is not None and s.alive for s in self._servers)
        return no_live and self.counters["restarts"] >= self.config.max_restarts and self._launching == 0

    async def acquire(self, task_id: str, timeout: float | None = None) -> Lease:
        """Open a session for `task_id` on the least loaded healthy server, waiting for a free slot.

        Raises TimeoutError after `timeout` seconds without a slot, ToolServerError("bad_request") for an
        unknown task id, and ToolServerError("crashed") once no server is left and none can be restarted.
        """
        async with asyncio.timeout(timeout):
            while True:
                async with self._cond:
                    while True:
                        if self._closed:
                            raise RuntimeError("ToolServerPool is stopped; acquire() after stop()")
                        server = self._pick()
                        if server is not None:
                            break
                        if self._capacity_gone():
                            raise ToolServerError(
                                "crashed", f"no live tool server left and max_restarts reached: {self.last_error}"
                            )
                        await self._cond.wait()
                    server.load += 1
                lease = await self._open(server, task_id)
                if lease is not None:
                    return lease

    async def _open(self, server: _Server, task_id: str) -> Lease | None:
        """POST /sessions on a reserved slot; None when the server failed and another should be tried."""
        try:
            body = await request_json(
                "POST",
                f"{server.url}/sessions",
                timeout=self.config.call_timeout_s,
                body={"task_id": task_id},
                what=f"open session for task {task_id!r} on server {server.index}",
            )
        except ToolServerError as exc:
            async with self._cond:
                server.load = max(0, server.load - 1)
                self._cond.notify_all()
            if exc.kind in ("crashed", "hung"):
                await self._mark_dead(server, exc.kind, str(exc))
                return None
            raise
        except BaseException:
            async with self._cond:
                server.load = max(0, server.load - 1)
                self._cond.notify_all()
            raise
        lease = Lease(
            lease_id=uuid.uuid4().hex[:16],
            server_url=server.url,
            session=body["session"],
            task_id=task_id,
            server_index=server.index,
            pid=server.pid,
        )
        # No await from here on: a cancellation cannot strand the reserved slot between answer and record.
        if not server.alive:  # died while the session was being opened; its slots are void anyway
            return None
        self._leases[lease.lease_id] = (lease, server)
        server.leases.add(lease.lease_id)
        self.counters["acquired"] += 1
        self.counters["peak"] = max(self.counters["peak"], len(self._leases))
        return lease

    def check(self, lease: Lease) -> None:
        """Raise ToolServerError("lost_lease") if the lease's server died or the pool stopped."""
        reason = self._lost.get(lease.lease_id)
        if reason is not None:
            raise ToolServerError("lost_lease", f"lease {lease.lease_id} (task {lease.task_id!r}) lost: {reason}")

    async def release(self, lease: Lease) -> None:
        """Close the lease's session and free its slot; a lost lease or a dead server is not an error."""
        if self._lost.pop(lease.lease_id, None) is not None:
            return
        entry = self._leases.get(lease.lease_id)
        if entry is None:
            return
        server = entry[1]
        if server.alive:
            try:
                await request_json(
                    "DELETE",
                    f"{server.url}/sessions/{lease.session}",
                    timeout=self.config.call_timeout_s,
                    what=f"release lease {lease.lease_id}",
                )
            except ToolServerError as exc:
                if exc.kind in ("crashed", "hung"):
                    await self._mark_dead(server, exc.kind, str(exc))
        async with self._cond:
            if self._leases.pop(lease.lease_id, None) is not None:
                server.leases.discard(lease.lease_id)
                server.load = max(0, server.load - 1)
                self.counters["released"] += 1
            self._lost.pop(lease.lease_id, None)
            self._cond.notify_all()

    # -- shared requests ---------------------------------------------------------------------------

    def _any_server(self) -> _Server:
        live = [s for s in self._servers if s is not None and s.alive]
        if not live:
            raise ToolServerError("crashed", f"no live tool server: {self.last_error}")
        return min(live, key=lambda s: s.load)

    async def info(self) -> dict[str, Any]:
        """The domain's policy and tool schemas (fetched once)."""
        if self._info is None:
            server = self._any_server()
            self._info = await request_json("GET", f"{server.url}/info", timeout=self.config.call_timeout_s)
        return self._info

    async def reward(
        self, task_id: str, messages: list[dict[str, Any]], termination_reason: str = "user_stop"
    ) -> dict[str, Any]:
        """tau2's RewardInfo for a finished trajectory, computed on any healthy server."""
        server = self._any_server()
        result: dict[str, Any] = await request_json(
            "POST",
            f"{server.url}/reward",
            timeout=self.config.call_timeout_s,
            body={"task_id": task_id, "messages": messages, "termination_reason": termination_reason},
            what=f"reward for task {task_id!r}",
        )
        return result

    def servers(self) -> list[dict[str, Any]]:
        """A snapshot of the servers: index, url, host pid, launcher pid, alive, open sessions."""
        return [
            {
                "index": s.index,
                "url": s.url,
                "pid": s.pid,
                "launcher_pid": s.proc.pid,
                "alive": s.alive,
                "sessions": len(s.leases),
                "generation": s.generation,
            }
            for s in self._servers
            if s is not None
        ]

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: leases active, peak, acquired, released, lost, restarts, crashed, hung."""
        return {
            "sandbox": self.sandbox,
            "limit": self.limit,
            "active": len(self._leases),
            "servers_alive": sum(1 for s in self._servers if s is not None and s.alive),
            **self.counters,
            "last_error": self.last_error,
        }
