from __future__ import annotations

import json
import pickle

from matrix.message import DONE, ERROR, Hop, Message, Turn, Usage, new_message


def sample() -> Message:
    m = new_message("t1", "wf", {"q": "question?", "options": ["a", "b"]}, trial=2, seed=7)
    m.route.update(role="teacher", steps=3, speaker="student")
    m.turns.append(Turn("teacher", "hello", Usage(10, 5), {"answer": "B"}))
    m.turns.append(Turn("student", "hi", Usage(4, 2)))
    m.hops.append(Hop("teacher", "teacher-0", 1.0, 1.5, 2.0, 321))
    return m


def test_message_survives_pickling_unchanged() -> None:
    m = sample()
    for protocol in (4, 5):
        back = pickle.loads(pickle.dumps(m, protocol=protocol))
        assert back == m
        assert back.turns[0].usage.completion_tokens == 5


def test_usage_totals_and_by_role() -> None:
    m = sample()
    assert m.usage() == Usage(14, 7)
    assert m.usage_by_role()["student"] == Usage(4, 2)


def test_to_row_is_plain_json() -> None:
    row = sample().to_row()
    back = json.loads(json.dumps(row))
    assert back["task_id"] == "t1" and back["trial"] == 2 and back["version"] == 1
    assert back["usage"] == {"prompt_tokens": 14, "completion_tokens": 7}
    assert back["turns"][0]["meta"] == {"answer": "B"}


def test_fail_and_key() -> None:
    m = sample()
    assert m.key == ("t1", 2) and m.status not in (DONE, ERROR)
    m.fail("bad row")
    assert m.status == ERROR and m.error == "bad row"
