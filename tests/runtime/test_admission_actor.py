"""How admission's census decides which tasks are somewhere (no Ray: the answers are given)."""

from __future__ import annotations

from matrix.runtime.admission_actor import held_from_census

NOW = 1000.0


def held(*answers: list[tuple[object, ...]], died_at: dict[str, float] | None = None) -> dict[tuple[str, int], int]:
    return held_from_census(list(answers), died_at or {}, now=NOW, watching_since=0.0)


def test_a_task_an_agent_holds_is_held() -> None:
    assert held([(("t", 0), 2, "", 0.0, 0)]) == {("t", 0): 2}


def test_a_task_in_transit_to_a_live_peer_is_held() -> None:
    # matcher-1 handed it to student-1 a moment ago; student-1 answered before it arrived
    assert held([(("t", 0), 1, "student-1", 0.2, 6)], []) == {("t", 0): 1}


def test_a_task_handed_to_a_peer_that_died_since_is_lost() -> None:
    assert held([(("t", 0), 1, "extractor-0", 0.5, 7)], died_at={"extractor-0": NOW - 0.2}) == {}


def test_the_latest_hand_off_decides_not_an_older_one_to_a_live_peer() -> None:
    # matcher-1 -> student-1 (6 hops), then student-1 -> extractor-0 (7 hops), and extractor-0 died: an
    # earlier census counted the task held for as long as matcher-1 remembered its hand-off (5 s)
    older = [(("t", 0), 1, "student-1", 2.1, 6)]
    later = [(("t", 0), 1, "extractor-0", 1.8, 7)]
    assert held(older, later, died_at={"extractor-0": NOW - 1.5}) == {}
    # the same chain with extractor-0 alive: in transit, held
    assert held(older, later) == {("t", 0): 1}
    # and once extractor-0 holds it, held whatever the records say
    assert held(older, later, [(("t", 0), 1, "", 0.0, 0)], died_at={"student-1": NOW - 1.0}) == {("t", 0): 1}


def test_attempts_are_judged_apart_and_a_death_before_watching_counts() -> None:
    old_attempt = [(("t", 0), 1, "student-1", 0.3, 9)]
    new_attempt = [(("t", 0), 2, "teacher-0", 0.2, 1)]
    assert held(old_attempt, new_attempt) == {("t", 0): 2}
    assert held_from_census([new_attempt], {}, now=NOW, watching_since=NOW - 0.5) == {}
