"""What every case study shares: sampling settings, seeds and hashes derived from names, and the statistics
of quality metrics.

The two systems of a comparison (the P2P roles and a baseline) import these from the case, so a request's
sampling seed or a metric's interval is computed the same way on both sides; the sim behaviours use the same
hashes so that one task always draws alike, whichever process serves it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------------ sampling


@dataclass(frozen=True)
class Sampling:
    """A request's sampling fields, as the paper's setups give them per role or stage."""

    temperature: float
    top_p: float
    max_tokens: int

    def body(self) -> dict[str, Any]:
        """The fields of an OpenAI-compatible request body."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


def llm_role_config(urls: Sequence[str], model: str | None, settings: Any, max_concurrency: int) -> dict[str, Any]:
    """The config of a role that calls a model: the pool's endpoints and model name, the case's settings
    as plain data (`settings.to_dict()`: role configs travel to the actors) and the requests its client
    keeps in flight per replica."""
    return {"urls": list(urls), "model": model, "settings": settings.to_dict(), "max_concurrency": max_concurrency}


def _digest(parts: Sequence[object]) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def derived_seed(*parts: object) -> int:
    """A 31-bit sampling seed from ``parts`` (their text, NUL-separated, through SHA-256).

    The same parts give the same seed in every process and in both systems, so that one task's requests
    sample alike wherever they are sent."""
    return int.from_bytes(_digest(parts)[:4], "big") & 0x7FFFFFFF


def stable_hash(*parts: object) -> int:
    """A 64-bit number from ``parts`` (their text, NUL-separated, through SHA-256), to seed a private
    ``random.Random`` with: unlike ``hash()``, the same in every process."""
    return int.from_bytes(_digest(parts)[:8], "big")


def folded(text: str) -> str:
    """``text`` with runs of whitespace made one space and case folded: a key that survives re-wrapping."""
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------------------------------- statistics

Z95 = 1.96  # the normal quantile of a two-sided 95% interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (95% by default); (0, 0) when ``n`` is 0."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(k: int, n: int) -> dict[str, Any]:
    """A proportion as a metric: ``{"value", "k", "n", "ci95"}`` (value 0 and interval [0, 0] when ``n`` is 0)."""
    lo, hi = wilson(k, n)
    return {"value": k / n if n else 0.0, "k": k, "n": n, "ci95": [lo, hi]}


def mean_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% confidence interval (sample standard deviation); all NaN when
    ``values`` is empty, and the interval is the mean itself for one value."""
    if not values:
        return (float("nan"), float("nan"), float("nan"))
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return (mean, mean - half, mean + half)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test (1.0 when there is nothing to compare)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(k1 / n1 - k2 / n2) / se
    return math.erfc(z / math.sqrt(2))


__all__ = [
    "Z95",
    "Sampling",
    "derived_seed",
    "folded",
    "llm_role_config",
    "mean_ci",
    "proportion",
    "stable_hash",
    "two_proportion_p",
    "wilson",
]
