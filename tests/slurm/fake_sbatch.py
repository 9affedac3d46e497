"""An `sbatch` on PATH that records its arguments (one line per call) and then runs `script`.

An `srun` that does nothing sits beside it: submitit looks for `srun` before it submits anything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

# For `script`: `--test-only` probes succeed; a real submission is refused, after its batch script
# (the file sbatch was given) is appended to the file `submitted` next to the calls file.
ACCEPT_PROBES_REFUSE_JOBS = """case "$1" in
  --test-only) echo "sbatch: Job 1 to start at now" >&2; exit 0 ;;
esac
cat "$1" >> "$(dirname "$0")/../submitted"
echo "sbatch: error: fake sbatch takes no jobs" >&2
exit 1
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str = "") -> Path:
    """Put the fake first on PATH; returns the file its calls are appended to (absent until called)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    for name, text in (("sbatch", f'#!/bin/sh\necho "$@" >> {calls}\n{script}'), ("srun", "#!/bin/sh\nexit 1\n")):
        exe = bin_dir / name
        exe.write_text(text)
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls
