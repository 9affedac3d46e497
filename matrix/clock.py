"""The clock every run measures with: the event loop's time, real or virtual.

Inside a running asyncio loop, `now()` is the loop's own `time()`. On an ordinary loop that is
`time.monotonic()`, so nothing changes in real time. On a virtual-clock loop (`looptime`, see
`experiments/virtual.py`) it is the simulated time, which jumps forward whenever every task is
waiting, so a run's windows, latencies and tokens/s come out in simulated seconds with no code of
the run knowing which clock it is on. `wall()` is the matching epoch time for timestamps in rows.

`SerialCpu` charges CPU work on that clock: one CPU that runs one piece of work at a time, which is
how the virtual clock makes a single process's own CPU cost count (virtual time is otherwise free).
"""

from __future__ import annotations

import asyncio
import time

_epoch_offset: float | None = None  # set while a virtual loop runs: wall() = offset + loop.time()


def _loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def now() -> float:
    """Monotonic seconds: the running loop's time, else `time.monotonic()`."""
    loop = _loop()
    return loop.time() if loop is not None else time.monotonic()


def wall() -> float:
    """Epoch seconds for timestamps: `time.time()`, or the virtual loop's time on its own epoch."""
    if _epoch_offset is not None:
        loop = _loop()
        if loop is not None:
            return _epoch_offset + loop.time()
    return time.time()


def set_virtual_epoch(offset: float | None) -> None:
    """While a virtual loop runs, `wall()` is `offset + loop.time()`; None goes back to `time.time()`."""
    global _epoch_offset
    _epoch_offset = offset


def is_virtual() -> bool:
    return _epoch_offset is not None


class SerialCpu:
    """One CPU on the loop's clock: `await cpu.charge(s)` holds it for `s` seconds, one holder at a time.

    On the virtual clock this is how a single process's scheduling CPU becomes time: work charged
    by many coroutines queues behind each other, as it would on the process's one core. `busy` is
    the total charged and `waited` the time spent queueing for the CPU (both in clock seconds).
    """

    def __init__(self, name: str = "cpu") -> None:
        self.name = name
        self.busy = 0.0
        self.waited = 0.0
        self.charges = 0
        self._lock = asyncio.Lock()

    async def charge(self, seconds: float) -> None:
        if seconds <= 0:
            return
        t0 = now()
        async with self._lock:
            self.waited += now() - t0
            await asyncio.sleep(seconds)
        self.busy += seconds
        self.charges += 1

    def snapshot(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "busy_s": round(self.busy, 6),
            "queued_s": round(self.waited, 6),
            "charges": self.charges,
        }
