"""SinkWriter: a writer restarted in the middle of a run carries on its predecessor's counts."""

from __future__ import annotations

from pathlib import Path

from matrix.message import Message, Turn, Usage, new_message
from matrix.sink import SinkWriter


def finished(task: str, tokens: int, *, error: str | None = None) -> Message:
    m = new_message(task, "w", {"x": task})
    m.turns.append(Turn("teacher", "hi", Usage(prompt_tokens=5, completion_tokens=tokens)))
    if error:
        m.fail(error)
    else:
        m.status = "done"
    return m


def test_a_restarted_writer_counts_this_runs_rows_as_its_own_not_as_resumed(tmp_path: Path) -> None:
    path = tmp_path / "output.jsonl"
    earlier = SinkWriter(path)  # a run before this one
    earlier.accept(finished("old", 1))
    earlier.close()

    first = SinkWriter(path)  # this run's sink
    offset = first.size()
    assert first.stats.resumed == 1
    first.accept(finished("a", 10))
    first.accept(finished("b", 20, error="role 'teacher': boom"))
    first.close()  # then it is killed and restarted

    second = SinkWriter(path)
    assert second.stats.resumed == 3  # without take_over, this run's rows look resumed
    second.take_over(offset)
    s = second.stats
    assert (s.resumed, s.finished, s.failed) == (1, 1, 1)
    assert s.completion_tokens == 30 and s.prompt_tokens == 10
    assert s.tokens_by_role == {"teacher": {"prompt_tokens": 10, "completion_tokens": 30}}
    assert s.errors_by_reason == {"role 'teacher'": 1}
    assert len(s.e2e_latencies) == 2 and all(x >= 0 for x in s.e2e_latencies)
    assert not second.accept(finished("a", 10))  # the ledger still de-duplicates
    second.accept(finished("c", 5))
    assert second.stats.finished == 2 and second.stats.completion_tokens == 35
    second.close()


def test_a_torn_tail_is_cut_reading_backwards_a_block_at_a_time(tmp_path: Path) -> None:
    from matrix.sink import cut_torn_tail, repair_and_load_ledger

    path = tmp_path / "output.jsonl"
    rows = b'{"task_id": "a", "trial": 0}\n{"task_id": "b", "trial": 1}\n'
    path.write_bytes(rows + b'{"task_id": "c", "tri')
    assert cut_torn_tail(path, block=4) == 21 and path.read_bytes() == rows  # the tail spans six blocks
    assert cut_torn_tail(path, block=4) == 0
    path.write_bytes(b'{"task_id": "only a torn one')
    assert cut_torn_tail(path, block=8) == 28 and path.read_bytes() == b""
    path.write_bytes(rows + b'{"task_id": "c"')
    assert repair_and_load_ledger(path) == ({("a", 0), ("b", 1)}, 15)
