"""Shared by the virtual-clock model tests."""

from __future__ import annotations

import urllib.request


def late_share(urls: list[str]) -> float:
    """The share of the sim replicas' engine steps that ran behind their schedule (the host could
    not keep up: their wall-clock timings, and a real run's tokens/s, are then not exact)."""
    late = steps = 0.0
    for url in urls:
        root = url.rstrip("/").removesuffix("/v1")
        with urllib.request.urlopen(root + "/metrics", timeout=10) as reply:
            for line in reply.read().decode().splitlines():
                name, _, value = line.rpartition(" ")
                if name.startswith("matrix_sim_late_steps_total"):
                    late += float(value)
                elif name.startswith("matrix_sim_engine_steps_total"):
                    steps += float(value)
    return late / steps if steps else 0.0
