"""How busy the host was while a test ran something on the wall clock.

Linux's pressure stall information (/proc/pressure/cpu, "some"): the time during which at least one
runnable task waited for a CPU. Over a span of wall time, its share says whether the host kept up:
near 0 on a quiet host, near 1 while another test saturates the cores (as under pytest-xdist on two
cores). Tests that compare a real run's wall-clock throughput with a model check it before they
treat the real run as a reference.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

PRESSURE = Path("/proc/pressure/cpu")


def cpu_stall_microseconds() -> int | None:
    """The host's cumulative CPU "some" stall (µs), or None where the kernel does not export it."""
    try:
        for line in PRESSURE.read_text().splitlines():
            if line.startswith("some "):
                return int(line.rpartition("total=")[2])
    except (OSError, ValueError):
        return None
    return None


class CpuStall:
    """`with CpuStall() as stall: ...`, then `stall.share`: the share of that span's wall time during
    which some runnable task waited for a CPU (None without /proc/pressure), and `stall.seconds`."""

    def __init__(self) -> None:
        self.share: float | None = None
        self.seconds: float | None = None
        self._t0 = 0.0
        self._s0: int | None = None

    def __enter__(self) -> CpuStall:
        self._s0, self._t0 = cpu_stall_microseconds(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        s1, wall = cpu_stall_microseconds(), time.monotonic() - self._t0
        if self._s0 is not None and s1 is not None and wall > 0:
            self.seconds = (s1 - self._s0) / 1e6
            self.share = min(1.0, self.seconds / wall)

    def __str__(self) -> str:
        return "CPU stall unknown" if self.share is None else f"a CPU stall {100 * self.share:.0f}% of the time"


def fastest_without_contention(rate: float, wall_seconds: float, stall: CpuStall) -> float:
    """The most a real run's `rate` (anything per second over `wall_seconds` of wall time) could have
    been on a host with nothing else to run: its work could have been held back only while some task
    waited for a CPU, so at most `stall.seconds` of its window. inf where that covers the whole window
    or the stall is unknown."""
    if stall.seconds is None or stall.seconds >= wall_seconds:
        return math.inf
    return rate * wall_seconds / (wall_seconds - stall.seconds)


def assert_model_near_real(
    model: float, real: float, wall_seconds: float, stall: CpuStall, *, rel: float = 0.10, said: str = ""
) -> None:
    """A model's throughput against a real run's, within `rel`, as far as a loaded host allows.

    Contention on the host can only slow the real run, so the lower bound (the model at least
    (1 - rel) x the real run) always holds. The upper bound is checked against the fastest the real run
    could have been without contention: on a quiet host that is the real run itself (a two-sided check),
    under another test's load it widens by the time the host had a CPU stall, instead of failing or
    skipping on a slow reference.
    """
    fastest = fastest_without_contention(real, wall_seconds, stall)
    said = f"{said}; model {model:.1f}, real {real:.1f} (at most {fastest:.1f} with the host's {stall})"
    assert model >= (1 - rel) * real, f"the model is more than {rel:.0%} slower than the real run: {said}"
    assert model <= (1 + rel) * fastest, f"the model is more than {rel:.0%} faster than the real run: {said}"
