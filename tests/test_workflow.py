from __future__ import annotations

import pytest

from matrix.bench.dummy import coral_shaped_graph
from matrix.message import DONE, ERROR, Turn, new_message
from matrix.workflow import (
    Conditional,
    Edge,
    Graph,
    Sequential,
    WorkflowError,
    get_workflow,
    register_workflow,
)


def walk(wf, msg, on_step=None):  # type: ignore[no-untyped-def]
    roles = [wf.start(msg)]
    while True:
        if on_step:
            on_step(msg, roles[-1])
        nxt = wf.advance(msg)
        if nxt is None:
            return roles
        roles.append(nxt)


def test_sequential_visits_each_role_once_then_done() -> None:
    wf = Sequential("seq-test", ["filter", "score", "question"])
    msg = new_message("1", wf.name, {})
    assert walk(wf, msg) == ["filter", "score", "question"]
    assert msg.status == DONE and msg.route["steps"] == 3 and msg.role is None


def test_sequential_stops_when_a_role_ends_the_task() -> None:
    wf = Sequential("seq-test2", ["filter", "score", "question"])
    msg = new_message("1", wf.name, {})

    def drop_at_score(m, role):  # type: ignore[no-untyped-def]
        if role == "score":
            m.status = DONE
            m.route["dropped"] = "filtered_by_score"

    assert walk(wf, msg, drop_at_score) == ["filter", "score"]


def test_conditional_routes_by_function() -> None:
    def router(m, role):  # type: ignore[no-untyped-def]
        if role == "classify":
            return "long" if len(m.row["text"]) > 5 else "short"
        return None

    wf = Conditional("cond-test", start="classify", router=router, roles=["long", "short"])
    assert walk(wf, new_message("1", wf.name, {"text": "abcdefgh"})) == ["classify", "long"]
    assert walk(wf, new_message("2", wf.name, {"text": "ab"})) == ["classify", "short"]

    bad = Conditional("cond-bad", start="a", router=lambda m, r: "nowhere", roles=[])
    msg = new_message("3", bad.name, {})
    bad.start(msg)
    with pytest.raises(WorkflowError, match="nowhere"):
        bad.advance(msg)


def test_graph_coral_shape_alternates_and_stops_at_turn_limit() -> None:
    wf = coral_shaped_graph("coral-like-4", 4)
    msg = new_message("1", wf.name, {})

    def act(m, role):  # type: ignore[no-untyped-def]
        m.turns.append(Turn(role, "..."))

    roles = walk(wf, msg, act)
    assert roles == ["teacher", "extractor", "matcher", "student", "extractor", "matcher"] * 2
    assert msg.status == DONE


def test_graph_stops_on_agreement() -> None:
    wf = coral_shaped_graph("coral-like-20", 20)
    msg = new_message("1", wf.name, {})

    def act(m, role):  # type: ignore[no-untyped-def]
        m.turns.append(Turn(role, "..."))
        if role == "matcher" and len(m.turns) >= 6:
            m.route["agreed"] = True

    assert len(walk(wf, msg, act)) == 6


def test_graph_rejects_roles_without_edges_and_unmatched_routes() -> None:
    with pytest.raises(WorkflowError, match=r"\['b'\]"):
        Graph("g-bad", start="a", edges={"a": [Edge("b")]})
    wf = Graph("g-nomatch", start="a", edges={"a": [Edge(None, lambda m: False)]})
    msg = new_message("1", wf.name, {})
    wf.start(msg)
    with pytest.raises(WorkflowError, match="no edge out of 'a'"):
        wf.advance(msg)


def test_step_limit_turns_a_loop_into_an_error() -> None:
    wf = Graph("loop", start="a", edges={"a": [Edge("a")]}, max_steps=50)
    msg = new_message("1", wf.name, {})
    walk(wf, msg)
    assert msg.status == ERROR and "step limit (50)" in (msg.error or "")


def test_registry_by_name() -> None:
    wf = register_workflow(Sequential("registry-test", ["x"]))
    assert get_workflow("registry-test") is wf
    with pytest.raises(WorkflowError, match="unknown workflow 'nope'"):
        get_workflow("nope")
    with pytest.raises(WorkflowError, match="already registered"):
        register_workflow(Sequential("registry-test", ["y"]))
