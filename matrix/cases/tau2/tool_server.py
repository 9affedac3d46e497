"""A tau2-bench tool server: one process, one domain, one tau2 environment per open session.

A session belongs to one task: the environment's database is that task's state, so two tasks never
share one. The HTTP layer is the standard library's, which keeps start-up to tau2's own import time
and lets the server run in any sandbox. Run it as

    python -m matrix.cases.tau2.tool_server --domain telecom --port 0 --ready-file ready.json

Once listening it writes {"port", "pid"} to the ready file (atomically), which is how a pool learns the
port it was given. Every error answer is {"error": "..."} naming the offending key or value.

    GET    /health                  {"ok", "domain", "sessions", "max_sessions", "pid"}
    GET    /info                    {"domain", "policy", "tools", "user_tools", "tasks"} (OpenAI tool schemas)
    GET    /tasks, /tasks/<id>      the task ids; one task as tau2 JSON (scenario, evaluation criteria)
    POST   /sessions                {"task_id"} -> {"session"}: a fresh environment in the task's initial state
    GET    /sessions/<id>           {"task_id", "calls", "db_hash", "user_db_hash"}
    POST   /sessions/<id>/call      {"id", "name", "arguments", "requestor"} -> tau2 ToolMessage
    DELETE /sessions/<id>
    POST   /reward                  {"task_id", "messages", "termination_reason"} -> tau2 RewardInfo
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

MESSAGE_ROLES = ("assistant", "user", "tool")


class ApiError(Exception):
    """An error answered to the client with `status` and {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def import_tau2() -> None:
    """Import tau2 offline and quiet: litellm must not fetch its cost map, loguru must not chatter."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from loguru import logger

    logger.remove()
    import tau2.registry  # noqa: F401


def require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """The value of `key` in a request body, or a 400 naming the key."""
    if key not in body:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"missing key {key!r} in request body")
    value = body[key]
    if not isinstance(value, kind):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"key {key!r} has the wrong type: got {type(value).__name__}")
    return value


class Session:
    """One task's environment; a lock serializes the calls on it (tau2 environments are not thread-safe)."""

    def __init__(self, session_id: str, task_id: str, env: Any) -> None:
        self.id = session_id
        self.task_id = task_id
        self.env = env
        self.lock = threading.Lock()
        self.calls = 0
        self.created = time.time()


class Tau2Backend:
    """The tau2 side of the server: tasks, sessions, tool calls and rewards for one domain."""

    def __init__(self, domain: str, max_sessions: int) -> None:
        import_tau2()
        from tau2.registry import registry

        if domain not in registry.get_domains():
            raise ValueError(f"unknown tau2 domain {domain!r}: expected one of {registry.get_domains()}")
        self.domain = domain
        self.max_sessions = max_sessions
        self.env_constructor = registry.get_env_constructor(domain)
        self.tasks = {task.id: task for task in registry.get_tasks_loader(domain)()}
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            env = self.env_constructor()
            try:
                user_tools = [tool.openai_schema for tool in env.get_user_tools()]
            except ValueError:  # domains without user tools raise instead of returning []
                user_tools = []
            self._info = {
                "domain": self.domain,
                "policy": env.get_policy(),
                "tools": [tool.openai_schema for tool in env.get_tools()],
                "user_tools": user_tools,
                "tasks": len(self.tasks),
            }
        return self._info

    def task(self, task_id: str) -> Any:
        task = self.tasks.get(task_id)
        if task is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"unknown task_id {task_id!r} in domain {self.domain!r}")
        return task

    def open_session(self, task_id: str) -> str:
        """Create the task's environment with its initial state (data, actions and message history)."""
        task = self.task(task_id)
        with self.lock:
            if len(self.sessions) >= self.max_sessions:
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"max_sessions={self.max_sessions} sessions already open; delete one before opening another",
                )
            session_id = uuid.uuid4().hex[:16]
            self.sessions[session_id] = Session(session_id, task_id, None)  # reserves the slot
        try:
            env = self.env_constructor()
            init = task.initial_state
            env.set_state(
                initialization_data=init.initialization_data if init else None,
                initialization_actions=init.initialization_actions if init else None,
                message_history=(init.message_history or []) if init else [],
            )
        except Exception as exc:
            with self.lock:
                self.sessions.pop(session_id, None)
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, f"task {task_id!r}: initial state failed: {exc!r}") from exc
        self.sessions[session_id].env = env
        return session_id

    def session(self, session_id: str) -> Session:
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None or session.env is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"unknown session {session_id!r} (closed, or never opened here)")
        return session

    def close_session(self, session_id: str) -> None:
        with self.lock:
            if self.sessions.pop(session_id, None) is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"unknown session {session_id!r} (closed, or never opened here)")

    def describe(self, session_id: str) -> dict[str, Any]:
        session = self.session(session_id)
        with session.lock:
            return {
                "session": session.id,
                "task_id": session.task_id,
                "calls": session.calls,
                "db_hash": session.env.get_db_hash(),
                "user_db_hash": session.env.get_user_db_hash(),
            }

    def call(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run one tool call; a failing tool comes back as tau2's own ToolMessage with error=true."""
        from tau2.data_model.message import ToolCall

        call_id = require(body, "id", str)
        name = require(body, "name", str)
        arguments = require(body, "arguments", dict)
        requestor = require(body, "requestor", str)
        if requestor not in ("assistant", "user"):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"key 'requestor' must be 'assistant' or 'user', got {requestor!r}")
        session = self.session(session_id)
        tool_call = ToolCall(id=call_id, name=name, arguments=arguments, requestor=requestor)
        with session.lock:
            message = session.env.get_response(tool_call)
            session.env.sync_tools()
            session.calls += 1
        return message.model_dump(mode="json")

    def reward(self, body: dict[str, Any]) -> dict[str, Any]:
        """Score a finished trajectory with tau2's evaluator (environment, actions and communication)."""
        from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage
        from tau2.data_model.simulation import SimulationRun, TerminationReason
        from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

        task = self.task(require(body, "task_id", str))
        raw_messages = require(body, "messages", list)
        reason = body.get("termination_reason", "user_stop")
        valid_reasons = [r.value for r in TerminationReason]
        if reason not in valid_reasons:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"key 'termination_reason' is {reason!r}: expected one of {valid_reasons}"
            )
        classes = {"assistant": AssistantMessage, "user": UserMessage, "tool": ToolMessage}
        messages = []
        for index, raw in enumerate(raw_messages):
            role = raw.get("role") if isinstance(raw, dict) else None
            if role not in classes:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    f"messages[{index}] has role {role!r}: expected one of {list(MESSAGE_ROLES)}",
                )
            try:
                messages.append(classes[role](**raw))
            except Exception as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"messages[{index}] is not a tau2 message: {exc}") from exc
        now = datetime.now(UTC).isoformat()
        simulation = SimulationRun(
            id=uuid.uuid4().hex,
            task_id=task.id,
            start_time=now,
            end_time=now,
            duration=0.0,
            termination_reason=reason,
            messages=messages,
        )
        try:
            reward_info = evaluate_simulation(
                simulation=simulation,
                task=task,
                evaluation_type=EvaluationType.ALL,
                solo_mode=False,
                domain=self.domain,
            )
        except Exception as exc:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, f"evaluation of task {task.id!r} failed: {exc!r}") from exc
        return reward_info.model_dump(mode="json")


class Handler(BaseHTTPRequestHandler):
    """JSON in, JSON out; routes by method and path."""

    server: Tau2HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def _dispatch(self, method: str) -> None:
        backend = self.server.backend
        parts = [unquote(p) for p in self.path.split("?", 1)[0].split("/") if p]
        try:
            body = self._body() if method == "POST" else {}
            match method, parts:
                case "GET", ["health"]:
                    with backend.lock:
                        n = len(backend.sessions)
                    result: Any = {
                        "ok": True,
                        "domain": backend.domain,
                        "sessions": n,
                        "max_sessions": backend.max_sessions,
                        "pid": os.getpid(),
                    }
                case "GET", ["info"]:
                    result = backend.info()
                case "GET", ["tasks"]:
                    result = {"domain": backend.domain, "tasks": list(backend.tasks)}
                case "GET", ["tasks", task_id]:
                    result = backend.task(task_id).model_dump(mode="json")
                case "POST", ["sessions"]:
                    result = {"session": backend.open_session(require(body, "task_id", str))}
                case "GET", ["sessions", session_id]:
                    result = backend.describe(session_id)
                case "POST", ["sessions", session_id, "call"]:
                    result = backend.call(session_id, body)
                case "DELETE", ["sessions", session_id]:
                    backend.close_session(session_id)
                    result = {"deleted": session_id}
                case "POST", ["reward"]:
                    result = backend.reward(body)
                case _:
                    raise ApiError(HTTPStatus.NOT_FOUND, f"no route {method} {self.path!r}")
            self._send(HTTPStatus.OK, result)
        except ApiError as exc:
            self._send(exc.status, {"error": exc.message})
        except Exception as exc:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{method} {self.path}: {exc!r}"})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Tau2HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Tau2Backend) -> None:
        super().__init__(address, Handler)
        self.backend = backend


def write_ready_file(path: Path, payload: dict[str, Any]) -> None:
    """Write the ready file atomically so a reader never sees a half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent exits, so an orphaned server never lingers."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return


def serve(domain: str, host: str, port: int, ready_file: Path | None, max_sessions: int) -> None:
    """Build the backend, bind, announce readiness, and serve until SIGTERM or SIGINT."""
    backend = Tau2Backend(domain, max_sessions)
    httpd = Tau2HTTPServer((host, port), backend)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if ready_file is not None:
        write_ready_file(ready_file, {"port": httpd.server_address[1], "pid": os.getpid(), "host": host})
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matrix.cases.tau2.tool_server", description=__doc__.split("\n")[0])
    parser.add_argument("--domain", default="telecom", help="tau2 domain: mock, airline, retail, telecom")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, default=None, help='where to write {"port", "pid"} once bound')
    parser.add_argument("--max-sessions", type=int, default=8, help="open sessions allowed at once")
    parser.add_argument("--die-with-parent", action="store_true", help="exit when the parent process exits")
    args = parser.parse_args(argv)
    if args.max_sessions < 1:
        parser.error(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if args.die_with_parent:
        die_with_parent()
    try:
        serve(args.domain, args.host, args.port, args.ready_file, args.max_sessions)
    except ValueError as exc:
        print(f"tau2 tool server: {exc}", file=sys.stderr)
        return 2
    # The socket is closed and no state outlives the process; skipping interpreter teardown
    # (over a second with litellm loaded) makes a stop take milliseconds.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
