"""The processes of this machine, read from /proc: which are still alive, by process group or by an
entry of their environment (used to stop what a server or a `ray start` leaves behind, by PID), and
which hold a lock on a file (named when a run's output is still locked by an earlier writer)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def live_processes(*, group: int | None = None, env: str | None = None) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group `group` and/or whose environment has the
    entry `env` ("NAME=value"); [] where there is no /proc."""
    if not PROC.is_dir():
        return []
    needle = env.encode() if env is not None else None
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
            # After the parenthesised command: state, ppid, pgrp, ...
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if state == "Z" or (group is not None and int(pgrp) != group):
                continue
            if needle is not None and needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            found.append(int(entry.name))
    return found


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """The processes holding a lock on `path` (flock or POSIX), from /proc/locks: (PID, command line),
    the command line "" where it cannot be read; [] where there is no /proc/locks or no such file."""
    try:
        st = path.stat()
        table = (PROC / "locks").read_text()
    except OSError:
        return []
    holders: dict[int, str] = {}
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a process waiting for the lock, not holding it
            continue
        with contextlib.suppress(IndexError, ValueError):
            pid, where = int(fields[4]), fields[5]
            major, minor, inode = where.split(":")
            device = (int(major, 16), int(minor, 16))
            if int(inode) != st.st_ino or device != (os.major(st.st_dev), os.minor(st.st_dev)):
                continue
            cmdline = b""
            with contextlib.suppress(OSError):
                cmdline = (PROC / str(pid) / "cmdline").read_bytes()
            holders[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return sorted(holders.items())
