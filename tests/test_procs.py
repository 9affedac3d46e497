"""matrix.procs: live processes by process group and by an entry of their environment; a file's lock holders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.procs import live_processes, lock_holders
from matrix.sink import lock_exclusive


def test_a_child_is_found_by_its_group_and_its_environment_and_not_once_it_is_a_zombie() -> None:
    env = {**os.environ, "MATRIX_PROCS_TEST": "one"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    try:
        assert live_processes(group=child.pid) == [child.pid]  # its own session: the group id is its pid
        assert live_processes(env="MATRIX_PROCS_TEST=one") == [child.pid]
        assert live_processes(group=child.pid, env="MATRIX_PROCS_TEST=one") == [child.pid]
        assert live_processes(env="MATRIX_PROCS_TEST=two") == []
        assert live_processes(group=child.pid, env="MATRIX_PROCS_TEST=two") == []
        assert os.getpid() not in live_processes(group=child.pid)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
        assert live_processes(group=child.pid) == [] and live_processes(env="MATRIX_PROCS_TEST=one") == []
    finally:
        child.kill()
        child.wait()


HOLD = (  # a writer that takes the output's lock and keeps it
    "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('held', flush=True); time.sleep(60)"
)


def test_the_holder_of_a_files_lock_is_named_and_a_blocked_writer_says_who(tmp_path: Path) -> None:
    path, other = tmp_path / "output.jsonl", tmp_path / "other.jsonl"
    path.touch()
    other.touch()
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        (pid, cmd), *rest = lock_holders(path)
        assert pid == child.pid and "fcntl" in cmd and not rest
        assert lock_holders(other) == [] and lock_holders(tmp_path / "missing") == []
        with open(path, "ab") as fh, pytest.raises(RuntimeError, match=rf"held by PID {child.pid} .*python"):
            lock_exclusive(fh, path, 0.3)
    finally:
        child.kill()
        child.wait()
    assert lock_holders(path) == []
