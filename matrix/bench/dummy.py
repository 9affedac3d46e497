"""Dummy agents and workflows with no LLM: the overhead benchmark's workload and the tests' fixtures.

`coral-dummy` has Coral's shape (teacher -> extractor -> matcher -> student -> extractor -> matcher,
up to 20 turns). Dialogue roles return canned text of realistic length (`reply_chars`, default
1,600 characters, about 400 tokens), the extractor a letter, the matcher a rule. A task agrees at a
turn drawn from its seed (2 to 4 dialogue turns, mean 3, so about 9 hops a trajectory, close to the
330 hops/s / 39 trajectories/s = 8.5 measured for the reference on the same workload).

`echo` is a two-role sequential workflow whose agents can be told, per row, to fail, to sleep, or to
wait at a gate (a file path; the step goes on once the file exists), so that a test can hold tasks
inside a role's step for exactly as long as it needs.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from matrix.agent import Agent
from matrix.message import Message, Turn, Usage
from matrix.workflow import Edge, Graph, Sequential, register_workflow

_WORDS = (
    "the answer depends on how we read the question so let us check each option carefully and compare "
    "the evidence for every choice before we commit to one final letter"
).split()


def canned_text(chars: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:chars]


def dialogue_turns(message: Message) -> int:
    return sum(1 for t in message.turns if t.role in ("teacher", "student"))


class DummyDialogue(Agent):
    """Teacher or student: appends canned text; optional `sleep` seconds per step."""

    async def step(self, message: Message) -> Message:
        if self.config.get("sleep"):
            await asyncio.sleep(float(self.config["sleep"]))
        # Read the whole conversation, as an LLM agent building its prompt would.
        history = await self.history(message)
        prompt_chars = sum(len(c) for _, c in history if isinstance(c, str))
        n = dialogue_turns(message)
        text = canned_text(int(self.config.get("reply_chars", 1600)), message.seed + n)
        usage = Usage(prompt_tokens=50 + prompt_chars // 4, completion_tokens=len(text) // 4)
        message.turns.append(Turn(self.role, text, usage))
        return message


class DummyExtractor(Agent):
    async def step(self, message: Message) -> Message:
        n = dialogue_turns(message)
        agree_at = 2 + message.seed % 3
        letter = "B" if n >= agree_at else "ABCD"[n % 4]
        message.turns.append(Turn(self.role, letter, Usage(prompt_tokens=450, completion_tokens=2)))
        return message


class DummyMatcher(Agent):
    async def step(self, message: Message) -> Message:
        answers = [t.content for t in message.turns if t.role == "extractor"]
        agreed = len(answers) >= 2 and answers[-1] == answers[-2]
        message.route["agreed"] = agreed
        message.turns.append(Turn(self.role, "agree" if agreed else "continue"))
        return message


def _agreed(m: Message) -> bool:
    return bool(m.route.get("agreed"))


def _student_next(m: Message) -> bool:
    last = [t.role for t in m.turns if t.role in ("teacher", "student")]
    return bool(last) and last[-1] == "teacher"


def coral_shaped_graph(name: str, max_turns: int) -> Graph:
    """Coral's routing: teacher and student take turns, each turn followed by extractor and matcher,
    until the matcher records agreement or `max_turns` dialogue turns have been taken."""

    def out_of_turns(m: Message) -> bool:
        return dialogue_turns(m) >= max_turns

    return Graph(
        name,
        start="teacher",
        edges={
            "teacher": [Edge("extractor")],
            "student": [Edge("extractor")],
            "extractor": [Edge("matcher")],
            "matcher": [
                Edge(None, _agreed),
                Edge(None, out_of_turns),
                Edge("student", _student_next),
                Edge("teacher"),
            ],
        },
    )


MAX_DIALOGUE_TURNS = 20
CORAL_DUMMY = register_workflow(coral_shaped_graph("coral-dummy", MAX_DIALOGUE_TURNS))


class Echo(Agent):
    """Appends `role:x`; fails when the row says `fail_at == role`; sleeps `row['sleep']` seconds
    (a number, or a dict of seconds per role); waits until the file `row['gate']` exists (a path, or
    a dict of paths per role), for at most `GATE_TIMEOUT` seconds."""

    GATE_TIMEOUT = 120.0

    async def step(self, message: Message) -> Message:
        row: dict[str, Any] = message.row
        sleep = row.get("sleep")
        if isinstance(sleep, dict):
            sleep = sleep.get(self.role)
        if sleep:
            await asyncio.sleep(float(sleep))
        gate = row.get("gate")
        if isinstance(gate, dict):
            gate = gate.get(self.role)
        if gate:
            await _wait_for_file(Path(gate), self.GATE_TIMEOUT, self.role)
        if row.get("fail_at") == self.role:
            raise RuntimeError(f"asked to fail at {self.role}")
        pad = int(row.get("pad", 0))
        message.turns.append(Turn(self.role, f"{self.role}:{row.get('x')}" + "." * pad, Usage(3, 2)))
        return message


async def _wait_for_file(path: Path, timeout: float, role: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"role {role!r}: gate {str(path)!r} did not open within {timeout:.0f} s")
        await asyncio.sleep(0.05)


ECHO = register_workflow(Sequential("echo", ["a", "b"]))


def coral_dummy_roles(instances: int = 1, **config: Any) -> list[Any]:
    from matrix.agent import RoleSpec

    return [
        RoleSpec("teacher", DummyDialogue, config, num_instances=instances),
        RoleSpec("student", DummyDialogue, config, num_instances=instances),
        RoleSpec("extractor", DummyExtractor, num_instances=instances),
        RoleSpec("matcher", DummyMatcher, num_instances=instances),
    ]
