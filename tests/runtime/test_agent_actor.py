"""The agent actor's bookkeeping of tasks it handed on, without Ray (the class under the actor)."""

from __future__ import annotations

import time

from matrix.runtime import agent_actor
from matrix.runtime.agent_actor import AgentActor


def bare() -> object:
    cls = AgentActor.__ray_actor_class__
    obj = cls.__new__(cls)
    obj.recent = {}
    obj.attempts = {}
    return obj


def test_census_names_the_hops_of_each_hand_off_and_forgets_old_ones() -> None:
    a = bare()
    now = time.monotonic()
    a.recent[("t1", 0)] = (now - 0.5, 1, "student-1", 6)
    a.recent[("t2", 0)] = (now - agent_actor.RECENT_SECONDS - 1, 1, "teacher-0", 3)
    a.attempts[("t3", 0)] = 2
    got = {k: (att, peer, hops) for k, att, peer, _ago, hops in a.census()}
    assert got == {("t1", 0): (1, "student-1", 6), ("t3", 0): (2, "", 0)}
    assert ("t2", 0) not in a.recent  # pruned


def test_hand_offs_are_pruned_as_they_pile_up_without_a_census() -> None:
    # a run with no deaths takes no census; the records must not grow with every task ever handed on
    a = bare()
    a._prune_at = 1024
    old = time.monotonic() - agent_actor.RECENT_SECONDS - 1
    for i in range(1023):
        a.recent[(f"old-{i}", 0)] = (old, 1, "teacher-0", 2)
    a._remember(("new", 0), 1, "student-0", 3)  # the 1,024th record: old ones go
    assert list(a.recent) == [("new", 0)] and a._prune_at == 1026
    for i in range(2000):
        a._remember((f"n-{i}", 0), 1, "student-0", 3)
    assert len(a.recent) == 2001  # recent ones stay (a census may still need them)
