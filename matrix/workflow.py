"""Routing: given a message that a role has just handled, the next role, or the end.

Workflows are looked up by name in every process (`register_workflow` / `get_workflow`); only the
name travels in the message. Three forms:

- `Sequential("nr", ["filter", "score", "question"])`: each role once, in order;
- `Conditional("x", start="a", router=fn)`: `fn(message, role) -> next role | None`;
- `Graph("coral", start="teacher", edges={"matcher": [Edge("teacher", cond), ...], ...})`: nodes
  are roles, edges are conditions on the message, the first edge that holds is taken.

A role can end a task early by setting `message.status` to done or error; every workflow has a
step limit so that a cyclic graph cannot run forever.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from matrix.message import DONE, ERROR, RUNNING, Message

Condition = Callable[[Message], bool]
Router = Callable[[Message, str], "str | None"]


class WorkflowError(ValueError):
    """A workflow is malformed, unknown, or could not route a message; the text names which."""


class Workflow(abc.ABC):
    """Base class: subclasses say where a task starts and where it goes after each role."""

    def __init__(self, name: str, *, max_steps: int = 1000) -> None:
        if not name:
            raise WorkflowError("a workflow needs a non-empty name")
        if max_steps < 1:
            raise WorkflowError(f"workflow {name!r}: max_steps must be >= 1, got {max_steps}")
        self.name = name
        self.max_steps = max_steps

    @abc.abstractmethod
    def first(self, message: Message) -> str:
        """The first role of a new task."""

    @abc.abstractmethod
    def after(self, message: Message, role: str) -> str | None:
        """The role after `role`, or None when the task is complete."""

    @abc.abstractmethod
    def roles(self) -> frozenset[str]:
        """Every role this workflow can route to (used to check a deployment before it starts)."""

    def start(self, message: Message) -> str:
        """Put a fresh message on its first role."""
        role = self.first(message)
        message.route["role"] = role
        message.route["steps"] = 0
        return role

    def advance(self, message: Message) -> str | None:
        """Route a message that its current role has finished; None means send it to the sink.

        Sets `route['role']` to the next role, counts steps, and turns a runaway loop into an
        error status rather than a task that never ends.
        """
        role = message.role
        if role is None:
            raise WorkflowError(f"task {message.task_id!r} has no current role; was start() called?")
        steps = int(message.route.get("steps", 0)) + 1
        message.route["steps"] = steps
        if message.status in (DONE, ERROR):
            message.route["role"] = None
            return None
        if steps >= self.max_steps:
            message.fail(f"workflow {self.name!r} hit its step limit ({self.max_steps}) at role {role!r}")
            message.route["role"] = None
            return None
        nxt = self.after(message, role)
        if nxt is None:
            message.status = DONE if message.status == RUNNING else message.status
        message.route["role"] = nxt
        return nxt


class Sequential(Workflow):
    def __init__(self, name: str, roles: Sequence[str], *, max_steps: int = 1000) -> None:
        super().__init__(name, max_steps=max_steps)
        if not roles:
            raise WorkflowError(f"workflow {name!r}: a sequential workflow needs at least one role")
        self.order = list(roles)
        self._next = {a: b for a, b in zip(self.order, self.order[1:], strict=False)}
        if len(set(self.order)) != len(self.order):
            raise WorkflowError(f"workflow {name!r}: roles repeat in {self.order}; use a Graph for cycles")

    def first(self, message: Message) -> str:
        return self.order[0]

    def after(self, message: Message, role: str) -> str | None:
        if role not in self.order:
            raise WorkflowError(f"workflow {self.name!r} has no role {role!r} (roles: {self.order})")
        return self._next.get(role)

    def roles(self) -> frozenset[str]:
        return frozenset(self.order)


class Conditional(Workflow):
    """Routing by a function of the message; `roles` must list every role the router can return."""

    def __init__(self, name: str, *, start: str, router: Router, roles: Iterable[str], max_steps: int = 1000) -> None:
        super().__init__(name, max_steps=max_steps)
        self._start = start
        self._router = router
        self._roles = frozenset(roles) | {start}

    def first(self, message: Message) -> str:
        return self._start

    def after(self, message: Message, role: str) -> str | None:
        nxt = self._router(message, role)
        if nxt is not None and nxt not in self._roles:
            raise WorkflowError(f"workflow {self.name!r}: router sent task to unknown role {nxt!r} after {role!r}")
        return nxt

    def roles(self) -> frozenset[str]:
        return self._roles


@dataclass(frozen=True)
class Edge:
    """Go to `to` (a role, or None for the end) when `when(message)` holds; no condition always holds."""

    to: str | None
    when: Condition | None = None


class Graph(Workflow):
    def __init__(self, name: str, *, start: str, edges: Mapping[str, Sequence[Edge]], max_steps: int = 1000) -> None:
        super().__init__(name, max_steps=max_steps)
        self._start = start
        self.edges = {role: list(out) for role, out in edges.items()}
        nodes = {start} | set(self.edges) | {e.to for out in self.edges.values() for e in out if e.to}
        missing = sorted(n for n in nodes if n not in self.edges)
        if missing:
            raise WorkflowError(f"workflow {name!r}: roles {missing} have no outgoing edges (use Edge(None) to end)")
        self._roles = frozenset(nodes)

    def first(self, message: Message) -> str:
        return self._start

    def after(self, message: Message, role: str) -> str | None:
        out = self.edges.get(role)
        if out is None:
            raise WorkflowError(f"workflow {self.name!r} has no role {role!r}")
        for edge in out:
            if edge.when is None or edge.when(message):
                return edge.to
        raise WorkflowError(f"workflow {self.name!r}: no edge out of {role!r} matched task {message.task_id!r}")

    def roles(self) -> frozenset[str]:
        return self._roles


_registry: dict[str, Workflow] = {}
_lock = threading.Lock()


def register_workflow(workflow: Workflow, *, replace: bool = False) -> Workflow:
    """Make `workflow` findable by name in this process (case modules call this at import)."""
    with _lock:
        if workflow.name in _registry and not replace and _registry[workflow.name] is not workflow:
            raise WorkflowError(f"a different workflow named {workflow.name!r} is already registered")
        _registry[workflow.name] = workflow
    return workflow


def get_workflow(name: str) -> Workflow:
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise WorkflowError(f"unknown workflow {name!r} (registered here: {known})") from None


def registered_workflows() -> list[str]:
    return sorted(_registry)
