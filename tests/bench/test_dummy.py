"""The dummy agents' per-row controls (the tests' fixtures rely on them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from matrix.bench.dummy import Echo
from matrix.message import new_message


def test_echo_waits_at_its_gate_until_the_file_exists(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    msg = new_message("t0", "echo", {"x": 1, "gate": {"b": str(gate)}})

    async def scenario() -> list[str]:
        seen: list[str] = []
        step = asyncio.create_task(Echo("b").step(msg))
        await asyncio.sleep(0.3)
        seen.append("waiting" if not step.done() else "passed")
        gate.touch()
        out = await asyncio.wait_for(step, 5)
        seen.append(out.turns[-1].content)
        # Another role's gate is not this role's: a passes straight through.
        other = new_message("t1", "echo", {"x": 2, "gate": {"b": "/nonexistent"}})
        a = await asyncio.wait_for(Echo("a").step(other), 1)
        seen.append(a.turns[-1].content)
        return seen

    assert asyncio.run(scenario()) == ["waiting", "b:1", "a:2"]


def test_echo_gate_that_never_opens_fails_naming_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Echo, "GATE_TIMEOUT", 0.2)
    gate = tmp_path / "never"
    with pytest.raises(TimeoutError, match=r"role 'b': gate '.*never' did not open"):
        asyncio.run(Echo("b").step(new_message("t0", "echo", {"x": 1, "gate": str(gate)})))
