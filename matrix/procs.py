"""The processes of this machine, read from /proc: which are still alive, by process group or by an
entry of their environment. Used to stop what a server or a `ray start` leaves behind, by PID."""

from __future__ import annotations

import contextlib
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
