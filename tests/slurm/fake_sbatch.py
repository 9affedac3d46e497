"""An `sbatch` on PATH that records its arguments (one line per call) and then runs `script`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str = "") -> Path:
    """Put the fake first on PATH; returns the file its calls are appended to (absent until called)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    exe = bin_dir / "sbatch"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{script}')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls
