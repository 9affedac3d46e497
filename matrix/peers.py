"""The directory of live actors per role, and the choice of a peer for each hop.

Each sender keeps its own view: the load each peer reported on its last acknowledgement plus the
sends it has in flight to that peer. Policies: power of two choices (`p2c`, the default: two random
live peers, the less loaded wins), `least_loaded`, `random`; a sticky role routes every hop of a
task to the same live peer by rendezvous hashing of the task id. A peer whose call failed (its
actor died) is skipped for a cooldown while Ray restarts it.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Peer:
    handle: Any
    name: str
    load: int = 0
    sending: int = 0
    down_until: float = 0.0
    failures: int = 0

    def score(self) -> int:
        return self.load + self.sending


class PeerSet:
    """The peers of one role as seen from one sender."""

    def __init__(
        self, role: str, peers: Sequence[Peer], *, policy: str = "p2c", sticky: bool = False, seed: int | None = None
    ) -> None:
        if not peers:
            raise ValueError(f"role {role!r} has no deployed actors")
        self.role = role
        self.peers = list(peers)
        self.policy = policy
        self.sticky = sticky
        self._rng = random.Random(seed)

    def _live(self, now: float) -> list[Peer]:
        live = [p for p in self.peers if p.down_until <= now]
        return live or [min(self.peers, key=lambda p: p.down_until)]

    def pick(self, task_key: str) -> Peer:
        live = self._live(time.monotonic())
        if len(live) == 1:
            return live[0]
        if self.sticky:
            return max(
                live,
                key=lambda p: hashlib.blake2b(f"{task_key}|{p.name}".encode(), digest_size=8).digest(),
            )
        if self.policy == "random":
            return self._rng.choice(live)
        if self.policy == "least_loaded":
            best = min(p.score() for p in live)
            return self._rng.choice([p for p in live if p.score() == best])
        a, b = self._rng.sample(live, 2)
        return a if a.score() <= b.score() else b

    @staticmethod
    def mark_down(peer: Peer, *, base: float = 0.2, cap: float = 5.0) -> None:
        peer.failures += 1
        peer.down_until = time.monotonic() + min(cap, base * 2 ** (peer.failures - 1))

    @staticmethod
    def mark_up(peer: Peer, load: int) -> None:
        peer.failures = 0
        peer.down_until = 0.0
        peer.load = load
