"""The message: one task's whole state, travelling from agent to agent.

A message is plain data (dataclasses of strings, numbers, lists and dicts, plus small handles of
offloaded payloads, see `matrix.payload`): no code, no handles, no callables travel in it. That keeps it
cheap to pickle, safe to replay from its start, and readable in the output row it becomes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from matrix import clock

MESSAGE_VERSION = 1

RUNNING = "running"
DONE = "done"
ERROR = "error"
STATUSES = (RUNNING, DONE, ERROR)


@dataclass(slots=True)
class Usage:
    """Tokens an LLM call used, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)


@dataclass(slots=True)
class Turn:
    """One contribution to the task: an LLM reply, a tool result, a rule's verdict."""

    role: str
    content: Any = None
    usage: Usage = field(default_factory=Usage)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Hop:
    """Timestamps of one visit to a role (wall-clock seconds since the epoch).

    `sent` is when the previous holder handed the message on; `started` when this role's step began
    (so `started - sent` is queueing plus transport); `finished` when the step returned.
    """

    role: str
    actor: str
    sent: float
    started: float = 0.0
    finished: float = 0.0
    bytes_in: int = 0


@dataclass(slots=True)
class Message:
    """The state of one trial of one task.

    `route` holds the workflow's control state (the current role, per-role counters and anything a
    condition needs); `row` is the input row or a payload reference to it.
    """

    task_id: str
    workflow: str
    row: Any
    trial: int = 0
    seed: int = 0
    route: dict[str, Any] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    status: str = RUNNING
    error: str | None = None
    attempt: int = 1
    created: float = field(default_factory=clock.wall)
    finished: float = 0.0
    version: int = MESSAGE_VERSION

    @property
    def key(self) -> tuple[str, int]:
        """The identity that the done-ledger and de-duplication use."""
        return (self.task_id, self.trial)

    @property
    def role(self) -> str | None:
        """The role that holds the message now (None before the first hop and after the last)."""
        value = self.route.get("role")
        return None if value is None else str(value)

    def usage(self) -> Usage:
        total = Usage()
        for turn in self.turns:
            total.prompt_tokens += turn.usage.prompt_tokens
            total.completion_tokens += turn.usage.completion_tokens
        return total

    def usage_by_role(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for turn in self.turns:
            u = out.setdefault(turn.role, Usage())
            u.prompt_tokens += turn.usage.prompt_tokens
            u.completion_tokens += turn.usage.completion_tokens
        return out

    def fail(self, reason: str) -> Message:
        self.status = ERROR
        self.error = reason
        return self

    def to_row(self) -> dict[str, Any]:
        """The output row: plain JSON-able data (offloaded payloads must be resolved first)."""
        row = asdict(self)
        row["usage"] = asdict(self.usage())
        return row


def new_message(task_id: str, workflow: str, row: Any, *, trial: int = 0, seed: int = 0, attempt: int = 1) -> Message:
    """A fresh message at the start of its workflow."""
    return Message(task_id=task_id, workflow=workflow, row=row, trial=trial, seed=seed, attempt=attempt)
