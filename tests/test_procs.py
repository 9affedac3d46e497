"""matrix.procs: live processes by process group and by an entry of their environment."""

from __future__ import annotations

import os
import subprocess
import sys

from matrix.procs import live_processes


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
