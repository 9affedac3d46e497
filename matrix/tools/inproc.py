"""Tool servers inside the caller's event loop: no process, no socket (the virtual clock's tool pool).

`InprocToolPool` has `ToolServerPool`'s interface (start, acquire, release, check, info, reward,
servers, stats, stop) and hands out the same `Lease`s, so the tool role and `KeyedPool` run
unchanged; only the lease's `server_url` differs: `inproc://<name>-<i>`. `call_tool` sees that
scheme and calls the server here instead of over HTTP. The servers answer with the tool server's own
backend (`matrix.cases.tau2.tool_server.Tau2Backend`: the same tau2 environment code, one environment
per session, one session per task, the same errors), called directly; each server has its own CPU.

What the real path costs is charged on the loop's clock (`matrix.clock`), from `InprocCosts`: each
operation (open a session, a tool call, close it) holds its server's `SerialCpu` for the server's
CPU per operation (a tool server is one Python process: its requests serialize on the GIL), holds
the pool's client CPU for the caller's share (the tool role's own process), and waits out the rest
of the measured round trip as plain latency. `scripts/bench_tau2_tool_call.py` measures those
numbers against real sandboxed servers (results/bench/tau2_tool_call.json). With zero costs (the
default) a call takes no clock time, which is what a runner that calls its environment inside its
own process (tau2's threads) wants: its CPU is charged elsewhere.

The servers cannot crash or hang, so there is no health watch and no restart; a call still obeys
its timeout (a long queue on a server's CPU ends in `ToolServerError("hung")`, as over HTTP).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from matrix import clock
from matrix.clock import SerialCpu
from matrix.tools.pool import SCHEME_INPROC, ErrorKind, Lease, ToolPoolConfig, ToolServerError

SANDBOX = "inproc"
_SERVERS: dict[str, InprocToolServer] = {}


@dataclass(frozen=True)
class InprocCosts:
    """Clock seconds per operation: the server's CPU, the caller's CPU, and the whole round trip."""

    open_cpu_s: float = 0.0
    open_latency_s: float = 0.0
    call_cpu_s: float = 0.0
    call_client_cpu_s: float = 0.0
    call_latency_s: float = 0.0
    close_cpu_s: float = 0.0
    close_latency_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"tool pool cost {f.name} must be a number >= 0 seconds, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> InprocCosts:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tool pool cost(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _backend_factory(domain: str, max_sessions: int) -> Any:
    from matrix.cases.tau2.tool_server import Tau2Backend

    return Tau2Backend(domain, max_sessions)


class InprocToolServer:
    """One tool server's backend, its CPU, and its costs; reached through its URL."""

    def __init__(self, url: str, index: int, backend: Any, costs: InprocCosts, client_cpu: SerialCpu) -> None:
        self.url = url
        self.index = index
        self.backend = backend
        self.costs = costs
        self.cpu = SerialCpu(url)
        self.client_cpu = client_cpu
        self.calls = 0

    async def _spend(self, server_cpu: float, client_cpu: float, latency: float) -> None:
        """The operation's clock time: its server CPU and client CPU (each queued on its CPU), then the rest."""
        await self.client_cpu.charge(client_cpu)
        await self.cpu.charge(server_cpu)
        rest = latency - server_cpu - client_cpu
        if rest > 0:
            await asyncio.sleep(rest)

    def _answer(self, what: str, work: Callable[[], Any]) -> Any:
        """Run `work` on the backend; its errors become the ToolServerErrors the HTTP path raises."""
        from matrix.cases.tau2.tool_server import ApiError

        try:
            return work()
        except ApiError as exc:
            kind: ErrorKind = "server_error" if exc.status >= 500 else "bad_request"
            text = f"{what} at {self.url}: {exc.status}: {exc.message}"
            raise ToolServerError(kind, text, url=self.url, status=exc.status) from exc
        except Exception as exc:  # the HTTP server answers 500 with the exception's repr
            raise ToolServerError(
                "server_error", f"{what} at {self.url}: 500: {exc!r}", url=self.url, status=500
            ) from exc

    async def open(self, task_id: str, timeout: float) -> str:
        c = self.costs
        await _within(timeout, self._spend(c.open_cpu_s, 0.0, c.open_latency_s), f"open session at {self.url}")
        return str(self._answer(f"open session for task {task_id!r}", lambda: self.backend.open_session(task_id)))

    async def call(self, session: str, body: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        c = self.costs
        await _within(timeout, self._spend(c.call_cpu_s, c.call_client_cpu_s, c.call_latency_s), what)
        result: dict[str, Any] = self._answer(what, lambda: self.backend.call(session, dict(body)))
        if clock.is_virtual():  # the environment stamps its reply with the real time; this server's clock is the loop's
            result["timestamp"] = datetime.fromtimestamp(clock.wall()).isoformat()
        self.calls += 1
        return result

    async def close(self, session: str, timeout: float) -> None:
        c = self.costs
        await _within(timeout, self._spend(c.close_cpu_s, 0.0, c.close_latency_s), f"close session at {self.url}")
        self._answer(f"close session {session!r}", lambda: self.backend.close_session(session))


async def _within(timeout: float, work: Any, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            await work
    except TimeoutError as exc:
        raise ToolServerError("hung", f"{what}: no answer within {timeout}s (server busy)") from exc


def server(url: str) -> InprocToolServer:
    key = url[len(SCHEME_INPROC) :].split("/", 1)[0] if url.startswith(SCHEME_INPROC) else url
    found = _SERVERS.get(key)
    if found is None:
        raise ToolServerError("crashed", f"no in-process tool server at {url} (running: {sorted(_SERVERS) or 'none'})")
    return found


async def call_inproc(lease: Lease, tool_call: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """`call_tool` for an `inproc://` lease: the same answers and errors as the HTTP path."""
    name = tool_call.get("name")
    what = f"tool {name!r} on lease {lease.lease_id} (task {lease.task_id!r}, server {lease.server_index})"
    try:
        return await server(lease.server_url).call(lease.session, tool_call, timeout, what)
    except ToolServerError as exc:
        if exc.status == 404:
            raise ToolServerError("lost_lease", str(exc), url=lease.server_url, status=404) from exc
        raise


class InprocToolPool:
    """`ToolServerPool`'s leases over in-process servers (see the module doc)."""

    def __init__(self, config: ToolPoolConfig, costs: InprocCosts | Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.sandbox = SANDBOX
        self.costs = costs if isinstance(costs, InprocCosts) else InprocCosts.from_dict(costs or config.costs)
        self.limit = config.servers * config.sessions_per_server
        self.name = f"tau2-tools-{uuid.uuid4().hex[:8]}"
        self.client_cpu = SerialCpu(f"{self.name}-client")
        self._servers: list[InprocToolServer] = []
        self._load: list[int] = []
        self._leases: dict[str, tuple[Lease, InprocToolServer]] = {}
        self._cond: asyncio.Condition | None = None
        self._info: dict[str, Any] | None = None
        self._closed = False
        self.started_pids: list[int] = []  # none: nothing is started outside this process
        self.counters = dict.fromkeys(
            ("acquired", "released", "lost", "peak", "restarts", "crashed", "hung", "restart_failures"), 0
        )
        self.last_error: str | None = None

    async def __aenter__(self) -> InprocToolPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_now(self) -> None:
        """Build the servers (synchronous: tau2's environment code loads here, no clock time passes).

        The servers share one backend (the domain's tasks load once, each session still gets its own
        environment): what a server owns here is its CPU and its slots, so the paper's 1,500 one-session
        servers cost 1,500 small objects, not 1,500 loads of the task set.
        """
        if self._servers:
            raise RuntimeError("InprocToolPool started twice")
        backend = _backend_factory(self.config.domain, self.limit)
        for i in range(self.config.servers):
            key = f"{self.name}-{i}"
            srv = InprocToolServer(f"{SCHEME_INPROC}{key}", i, backend, self.costs, self.client_cpu)
            _SERVERS[key] = srv
            self._servers.append(srv)
            self._load.append(0)

    async def start(self) -> None:
        self.start_now()

    def stop_now(self) -> None:
        """Unregister the servers; leases still held are counted lost (synchronous: nothing to wait for)."""
        self._closed = True
        for srv in self._servers:
            _SERVERS.pop(srv.url[len(SCHEME_INPROC) :], None)
        self.counters["lost"] += len(self._leases)
        self._leases.clear()

    async def stop(self) -> None:
        self.stop_now()
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _pick(self) -> int | None:
        if len(self._leases) >= self.limit:
            return None
        free = [i for i, n in enumerate(self._load) if n < self.config.sessions_per_server]
        return min(free, key=lambda i: (self._load[i], i)) if free else None

    async def acquire(self, task_id: str, timeout: float | None = None) -> Lease:
        """A session for `task_id` on the least loaded server, waiting for a free slot (as the real pool)."""
        cond = self._condition()
        async with asyncio.timeout(timeout):
            async with cond:
                while True:
                    if self._closed:
                        raise RuntimeError("InprocToolPool is stopped; acquire() after stop()")
                    index = self._pick()
                    if index is not None:
                        break
                    await cond.wait()
                self._load[index] += 1
        srv = self._servers[index]
        try:
            session = await srv.open(task_id, self.config.call_timeout_s)
        except BaseException:
            async with cond:
                self._load[index] -= 1
                cond.notify_all()
            raise
        lease = Lease(uuid.uuid4().hex[:16], srv.url, session, task_id, server_index=index, pid=0)
        self._leases[lease.lease_id] = (lease, srv)
        self.counters["acquired"] += 1
        self.counters["peak"] = max(self.counters["peak"], len(self._leases))
        return lease

    def check(self, lease: Lease) -> None:
        if lease.lease_id not in self._leases:
            raise ToolServerError("lost_lease", f"lease {lease.lease_id} (task {lease.task_id!r}) is not held")

    async def release(self, lease: Lease) -> None:
        entry = self._leases.get(lease.lease_id)
        if entry is None:
            return
        srv = entry[1]
        try:
            await srv.close(lease.session, self.config.call_timeout_s)
        except ToolServerError as exc:
            self.last_error = str(exc)
        cond = self._condition()
        async with cond:
            if self._leases.pop(lease.lease_id, None) is not None:
                self._load[srv.index] -= 1
                self.counters["released"] += 1
            cond.notify_all()

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = dict(self._servers[0].backend.info())
        return self._info

    async def reward(
        self, task_id: str, messages: list[dict[str, Any]], termination_reason: str = "user_stop"
    ) -> dict[str, Any]:
        srv = min(self._servers, key=lambda s: self._load[s.index])
        body = {"task_id": task_id, "messages": messages, "termination_reason": termination_reason}
        result: dict[str, Any] = srv._answer(f"reward for task {task_id!r}", lambda: srv.backend.reward(body))
        return result

    def servers(self) -> list[dict[str, Any]]:
        alive = not self._closed
        return [
            {
                "index": s.index,
                "url": s.url,
                "pid": 0,
                "launcher_pid": 0,
                "alive": alive,
                "sessions": self._load[s.index],
            }
            for s in self._servers
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "sandbox": self.sandbox,
            "limit": self.limit,
            "active": len(self._leases),
            "servers_alive": 0 if self._closed else len(self._servers),
            **self.counters,
            "last_error": self.last_error,
            "costs": self.costs.to_dict(),
            "calls": sum(s.calls for s in self._servers),
            "server_cpu": [s.cpu.snapshot() for s in self._servers],
            "client_cpu": self.client_cpu.snapshot(),
        }


__all__ = ["SANDBOX", "InprocCosts", "InprocToolPool", "InprocToolServer", "call_inproc", "server"]
