"""Peak memory, descriptors and process counts of Ray processes, sampled in a thread while a benchmark runs.

`MemorySampler` adds up every Ray process on the machine; `RaySampler` only those of this driver's
own cluster (when it started Ray itself), which is what a benchmark on a shared host should report.
"""

from __future__ import annotations

import contextlib
import os
import threading

import psutil


class MemorySampler:
    """Peak summed RSS of every Ray process on this machine (raylet, GCS, workers, actors)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def ray_rss() -> int:
        total = 0
        for p in psutil.process_iter(["name", "cmdline", "memory_info"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                name = p.info["name"] or ""
                if (
                    "ray::" in cmd
                    or "ray::" in name
                    or "raylet" in cmd
                    or "gcs_server" in cmd
                    or "default_worker" in cmd
                ):
                    total += p.info["memory_info"].rss
            except (psutil.Error, TypeError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.ray_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RaySampler(MemorySampler):
    """Peak summed RSS and peak descriptors of the Ray processes of *this* driver's cluster.

    `MemorySampler` adds up every Ray process on the machine, which on a shared host includes other
    people's clusters; when this process started Ray itself, its cluster is its descendants.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(interval)
        self.peak_fds = 0
        self.peak_fds_process = ""
        self.peak_processes = 0
        self.samples = 0
        self._own = not os.environ.get("RAY_ADDRESS")

    def _procs(self) -> list[psutil.Process]:
        if not self._own:
            return [p for p in psutil.process_iter() if _is_ray(p)]
        me = psutil.Process()
        return [me, *me.children(recursive=True)]

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = 0
            procs = self._procs()
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    fds = p.num_fds()
                except psutil.Error:
                    continue
                if fds > self.peak_fds:
                    self.peak_fds = fds
                    with contextlib.suppress(psutil.Error):
                        self.peak_fds_process = " ".join(p.cmdline()[:1])[:80]
            self.peak_bytes = max(self.peak_bytes, rss)
            self.peak_processes = max(self.peak_processes, len(procs))
            self.samples += 1
            self._stop.wait(self.interval)


def _is_ray(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return any(s in cmd for s in ("ray::", "raylet", "gcs_server", "default_worker"))
