"""Choosing a replica for each request: least outstanding requests, optionally sticky by task key.

Stickiness uses rendezvous (highest-random-weight) hashing: a task key always maps to the same
healthy replica, so a multi-turn conversation keeps hitting the replica that holds its prefix in
cache, and when a replica goes down only the keys that lived on it move.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from matrix import clock


@dataclass(eq=False)
class Endpoint:
    """One OpenAI-compatible replica (`base_url` ends in `/v1`) and its live load."""

    base_url: str
    max_concurrency: int = 256
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency} for {self.base_url}")

    @property
    def slots(self) -> asyncio.Semaphore:
        """Bounds in-flight requests to this replica (created lazily inside the running loop)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    def healthy(self, now: float) -> bool:
        return now >= self.down_until

    def mark_failure(self, now: float, *, base_cooldown: float = 0.5, max_cooldown: float = 30.0) -> None:
        """Take the replica out of rotation for a cooldown that doubles with consecutive failures."""
        self.failures += 1
        self.down_until = now + min(max_cooldown, base_cooldown * 2 ** (self.failures - 1))

    def mark_success(self) -> None:
        self.failures = 0
        self.down_until = 0.0


def _weight(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest(), "big")


class Balancer:
    """Picks an endpoint per request. Not thread-safe: one balancer per event loop."""

    def __init__(self, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        urls = [e.base_url for e in endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate endpoint URLs: {urls}")
        self.endpoints = list(endpoints)
        self._rng = rng or random.Random()

    def _candidates(self, exclude: set[str]) -> list[Endpoint]:
        now = clock.now()
        live = [e for e in self.endpoints if e.base_url not in exclude and e.healthy(now)]
        if live:
            return live
        # Every replica is cooling down (or excluded): try the one that comes back first rather than
        # failing the request outright; the retry policy bounds how long this can go on.
        pool = [e for e in self.endpoints if e.base_url not in exclude] or self.endpoints
        return [min(pool, key=lambda e: e.down_until)]

    def pick(self, *, sticky_key: str | None = None, exclude: set[str] | None = None) -> Endpoint:
        candidates = self._candidates(exclude or set())
        if sticky_key is not None:
            return max(candidates, key=lambda e: _weight(sticky_key, e.base_url))
        least = min(e.outstanding for e in candidates)
        return self._rng.choice([e for e in candidates if e.outstanding == least])
