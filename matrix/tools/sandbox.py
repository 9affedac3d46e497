"""How a tool server process is isolated: one choice among apptainer, bubblewrap and a plain process.

The sandbox only wraps an argv; the pool starts whatever comes back. Every kind keeps the host network
namespace, so a server bound to 127.0.0.1 inside is reachable from the pool outside.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

SANDBOXES = ("auto", "apptainer", "bwrap", "process")


class SandboxUnavailable(RuntimeError):
    """A sandbox was asked for by name but cannot run on this machine."""


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap is installed and can actually create its namespaces here (probed once)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def detect_sandbox(preferred: str = "auto", *, image: str | None = None) -> str:
    """Resolve `preferred` to the sandbox kind that will be used.

    "auto" picks apptainer when it is on PATH and an image is given, else bubblewrap when it works,
    else a plain process. Naming "apptainer" or "bwrap" explicitly fails loudly when it cannot run.
    """
    if preferred not in SANDBOXES:
        raise ValueError(f"unknown sandbox {preferred!r}: expected one of {', '.join(SANDBOXES)}")
    has_apptainer = shutil.which("apptainer") is not None
    if preferred == "apptainer":
        if not has_apptainer:
            raise SandboxUnavailable("sandbox 'apptainer' requested but `apptainer` is not on PATH")
        if not image:
            raise SandboxUnavailable("sandbox 'apptainer' requested without an image (set tools.image to a .sif)")
        return "apptainer"
    if preferred == "bwrap":
        if not bwrap_works():
            raise SandboxUnavailable(
                "sandbox 'bwrap' requested but bubblewrap is missing or cannot create namespaces here "
                "(probe: bwrap --ro-bind / / --dev /dev --proc /proc true); use sandbox='process' or 'auto'"
            )
        return "bwrap"
    if preferred == "process":
        return "process"
    if has_apptainer and image:
        return "apptainer"
    if bwrap_works():
        return "bwrap"
    return "process"


def sandbox_argv(kind: str, argv: list[str], *, workdir: str | Path, image: str | None = None) -> list[str]:
    """Wrap `argv` so that it runs inside sandbox `kind`, with only `workdir` writable."""
    wd = str(Path(workdir).resolve())
    if kind == "process":
        return list(argv)
    if kind == "bwrap":
        exe = shutil.which("bwrap") or "bwrap"
        # /tmp is private to the sandbox; the code it runs (this checkout, the Python environment)
        # stays visible, read-only, when it lives under /tmp (a checkout or a venv made there).
        keep = sorted({str(Path(p).resolve()) for p in (Path(__file__).resolve().parents[2], sys.prefix)})
        under_tmp = [p for p in keep if p == "/tmp" or p.startswith("/tmp/")]
        return [
            exe,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            *[arg for p in under_tmp for arg in ("--ro-bind", p, p)],
            "--bind", wd, wd,
            "--chdir", wd,
            "--unshare-pid",
            "--die-with-parent",
            "--new-session",
            *argv,
        ]  # fmt: skip
    if kind == "apptainer":
        if not image:
            raise ValueError("sandbox 'apptainer' needs an image (a .sif path)")
        return ["apptainer", "exec", "--containall", "--bind", wd, "--pwd", wd, image, *argv]
    raise ValueError(f"unknown sandbox kind {kind!r}: expected one of apptainer, bwrap, process")
