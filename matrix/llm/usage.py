"""Token and request accounting per role, from the servers' own `usage` fields.

Tokens per second everywhere in the project is computed from these completion-token counts, the
numbers the serving engine reported, never from a local tokenizer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class RoleUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    missing_usage: int = 0


class UsageLedger:
    """Accumulates usage and failures per role; `snapshot()` is plain data for metrics.json."""

    def __init__(self) -> None:
        self._roles: dict[str, RoleUsage] = defaultdict(RoleUsage)

    def record(self, role: str, usage: dict[str, Any] | None) -> None:
        r = self._roles[role]
        r.requests += 1
        if not usage:
            r.missing_usage += 1
            return
        r.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        r.completion_tokens += int(usage.get("completion_tokens") or 0)

    def record_retry(self, role: str) -> None:
        self._roles[role].retries += 1

    def record_failure(self, role: str) -> None:
        self._roles[role].failures += 1

    def role(self, role: str) -> RoleUsage:
        return self._roles[role]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self._roles.values())

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self._roles.values())

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self._roles.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {name: asdict(r) for name, r in sorted(self._roles.items())}

    def reset(self) -> None:
        self._roles.clear()
