"""Agents: a role is an object with an async `step(message) -> message`.

A role does one thing to a task (an LLM call, a tool call, a rule) and returns the message. It
keeps no per-task state of its own: everything a later step needs goes into the message, so any
instance of the role can take any hop, and a replayed task starts clean.

Where a role runs is the transport's business (`matrix.runtime.local` runs roles in one asyncio
loop; `matrix.runtime.ray_p2p` hosts each role in Ray actors that forward messages to peers).
"""

from __future__ import annotations

import abc
import asyncio
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from matrix.message import Message


class Agent(abc.ABC):
    """One role. Subclasses implement `step`; `setup`/`close` run once per hosting process."""

    #: Route every hop of a task to the same instance of this role (e.g. to reuse a KV prefix).
    sticky: bool = False

    def __init__(self, role: str, **config: Any) -> None:
        self.role = role
        self.config = config

    _payload: Any = None  # set by the hosting transport when payloads may be offloaded

    async def setup(self) -> None:
        """Open clients and caches; called once before the first step in this process."""

    async def resolve(self, value: Any) -> Any:
        """The full value of a field that may have been offloaded to the object store.

        Offloaded fields are fetched only when a role reads them (an extractor that looks at the
        last turn never pulls the whole history), and each is fetched once per process.
        """
        if self._payload is None:
            return value
        return await self._payload.resolve_value(value)

    async def history(self, message: Message) -> list[tuple[str, Any]]:
        """(role, content) of every turn so far, with offloaded contents fetched."""
        contents = await asyncio.gather(*(self.resolve(t.content) for t in message.turns))
        return [(t.role, c) for t, c in zip(message.turns, contents, strict=True)]

    @abc.abstractmethod
    async def step(self, message: Message) -> Message:
        """Do this role's work on one task and return the (updated) message."""

    async def close(self) -> None:
        """Release what `setup` opened."""


AgentFactory = Callable[..., Agent]


def resolve_factory(target: str | AgentFactory) -> AgentFactory:
    """`"package.module:Class"` or a class/callable; strings keep configs free of code objects."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"agent class must look like 'package.module:Class', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for agent {target!r}: {exc}") from exc
    try:
        factory: AgentFactory = getattr(module, attr)
        return factory
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (agent {target!r})") from None


@dataclass
class RoleSpec:
    """How a role is deployed: its agent class and config, and (on Ray) how many actors with what."""

    role: str
    agent: str | AgentFactory
    config: Mapping[str, Any] = field(default_factory=dict)
    num_instances: int = 1
    max_concurrency: int = 1000
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_instances < 1:
            raise ValueError(f"role {self.role!r}: num_instances must be >= 1, got {self.num_instances}")
        if self.max_concurrency < 1:
            raise ValueError(f"role {self.role!r}: max_concurrency must be >= 1, got {self.max_concurrency}")

    def is_sticky(self) -> bool:
        return bool(getattr(resolve_factory(self.agent), "sticky", False))

    def build(self) -> Agent:
        agent = resolve_factory(self.agent)(self.role, **dict(self.config))
        if not isinstance(agent, Agent):
            raise TypeError(f"role {self.role!r}: {self.agent!r} built a {type(agent).__name__}, not an Agent")
        return agent
