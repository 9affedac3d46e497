"""Coral's shared protocol and its P2P roles (local transport, scripted model; no Ray, no real model)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from matrix.cases import coral
from matrix.message import Turn
from matrix.runtime.local import run_local_async
from tests.cases.local_run import case_run_config
from tests.llm.fake_openai import FakeServer, serve_fake

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mmlu_pro"
MMLU = SHARED / "mmlu_pro_test_llama31_8b_instruct.jsonl.gz"
ROW = {"id": "q1", "question": "2 + 2?", "options": ["3", "4", "5"], "answer": "B"}


def test_opening_is_the_reference_template() -> None:
    q = coral.question_of(ROW)
    assert coral.opening(q) == 'I\'m trying to solve this problem: "2 + 2?"\nAnd the choices are:\n(A) 3\n(B) 4\n(C) 5'


def test_roles_are_assigned_backwards_from_the_last_message() -> None:
    q = coral.question_of(ROW)
    # The teacher answers the opening: system, user(opening).
    assert [m["role"] for m in coral.dialogue_messages(q, [])] == ["system", "user"]
    # The student replies to the teacher: its own opening is an assistant turn.
    chat = coral.dialogue_messages(q, [("teacher", "T1")])
    assert [m["role"] for m in chat] == ["system", "assistant", "user"] and chat[-1]["content"] == "T1"
    chat = coral.dialogue_messages(q, [("teacher", "T1"), ("student", "S1")])
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[0]["content"] == coral.SYSTEM_PROMPT and "The correct answer is (X)" in coral.SYSTEM_PROMPT


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("(C)", "C"),
        ("The answer is (B).", "B"),
        ("(A) or maybe (D)", "A"),
        ("Not sure yet, but (B) is likely", None),  # "not sure yet" wins over a letter, as in Coral
        ("B", None),
        ("", None),
        (None, None),
    ],
)
def test_extraction_parsing(text: str | None, letter: str | None) -> None:
    assert coral.parse_extraction(text) == letter


def test_agreement_needs_this_and_the_partners_previous_answer_valid_and_equal() -> None:
    assert coral.verdict(["B"], 20) == coral.Verdict(False, False, "continue")
    assert coral.verdict(["B", "B"], 20).agreed
    assert not coral.verdict(["B", None], 20).stop
    assert not coral.verdict([None, None], 20).agreed
    assert not coral.verdict(["B", "C", None], 20).stop
    assert coral.verdict(["A", "B", "B"], 20).reason == "agree"
    assert coral.verdict(["A", "B", "A", "B"], 4) == coral.Verdict(False, True, "max_turns")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"id": 7, "question": "q", "answer": "A"}, "row 7: missing 'options'"),
        ({"id": 8, "question": "q", "options": ["x"], "answer": "A"}, "row 8: 'options' must have 2 to 26"),
        ({"id": 9, "question": "q", "options": ["x", "y"], "answer": "Q"}, "row 9: 'answer' must be a letter A..B"),
        ({"id": 10, "question": "q", "options": "x,y", "answer": "A"}, "row 10: 'options' must be a list"),
    ],
)
def test_bad_rows_name_the_row_and_key(row: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        coral.question_of(row)


def test_quality_counts_disagreement_and_errors_as_not_correct() -> None:
    def row(answers: list[str | None], agreed: bool, gold: str = "B", status: str = "done") -> dict[str, Any]:
        turns: list[dict[str, Any]] = []
        for i, a in enumerate(answers):
            turns += [
                {"role": "teacher" if i % 2 == 0 else "student", "content": "...", "meta": {}},
                {"role": "extractor", "content": f"({a})", "meta": {"answer": a}},
                {"role": "matcher", "content": "", "meta": {"agreed": agreed and i == len(answers) - 1}},
            ]
        return {"task_id": "t", "status": status, "row": {"answer": gold}, "turns": turns}

    rows = [row(["A", "B", "B"], True), row(["C", "C"], True), row(["A", None], False), row([], False, status="error")]
    q = coral.quality(rows)
    assert q["conversations"] == 4
    assert q["agreement_correctness"]["value"] == 0.25 and q["agreement_rate"]["value"] == 0.5
    assert q["any_turn_correct"]["k"] == 1
    assert q["valid_answer_rate"]["k"] == 6 and q["valid_answer_rate"]["n"] == 7
    assert q["mean_turns"]["value"] == pytest.approx(7 / 3)
    assert q["conversation_errors"]["k"] == 1
    lo, hi = q["agreement_correctness"]["ci95"]
    assert lo < 0.25 < hi


def test_two_proportion_test() -> None:
    assert coral.two_proportion_p(50, 100, 50, 100) == 1.0
    assert coral.two_proportion_p(10, 100, 60, 100) < 1e-6
    assert 0.05 < coral.two_proportion_p(45, 100, 50, 100) < 1.0


def test_generated_questions_are_valid_and_reproducible() -> None:
    rows = coral.load_questions("generated", limit=30, seed=3)
    assert rows == coral.generated_questions(30, seed=3) and len({r["id"] for r in rows}) == 30
    for r in rows:
        q = coral.question_of(r)
        assert len(q.options) == 10 and len(set(q.options)) == 10


def test_a_missing_dataset_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("nope.jsonl")):
        coral.load_questions(tmp_path / "nope.jsonl")


def test_a_broken_dataset_line_becomes_a_row_naming_its_line(tmp_path: Path) -> None:
    src = tmp_path / "mmlu.jsonl"
    good = {"question_id": 70, "question": "q", "options": ["a", "b"], "answer": "A", "category": "math"}
    src.write_text(json.dumps(good) + "\n{oops\n")
    rows = coral.read_mmlu_pro(src)
    assert rows[0] == {"id": "70", "question": "q", "options": ["a", "b"], "answer": "A", "category": "math"}
    assert rows[1]["id"] == "mmlu.jsonl:2" and "bad JSON" in rows[1]["error"]
    with pytest.raises(ValueError, match=re.escape("mmlu.jsonl:2")):
        coral.question_of(rows[1])


@pytest.mark.skipif(not MMLU.exists(), reason="../shared/data/mmlu_pro is absent (a user's clone has no ../shared)")
def test_reads_the_real_mmlu_pro_file() -> None:
    rows = coral.load_questions(MMLU, limit=200)
    assert len(rows) == 200
    qs = [coral.question_of(r) for r in rows]
    assert all(2 <= len(q.options) <= 10 for q in qs) and len({q.qid for q in qs}) == 200


# ------------------------------------------------------------------------- P2P roles, local transport


class ScriptedCoral(FakeServer):
    """A stand-in model. Dialogue: the teacher always says (B); the student says (C) on its first
    turn for even question numbers (so those agree one exchange later) and (B) otherwise; rows with
    "never" in the question never agree. Extraction: names the last "(X)" of the reply it reads."""

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        msgs = body["messages"]
        if msgs[0]["content"] == coral.EXTRACTOR_SYSTEM:
            found = re.findall(r"The correct answer is \(([A-Z])\)", msgs[-1]["content"])
            text = f"({found[-1]})" if found else coral.NOT_SURE
        else:
            opening = next(m["content"] for m in msgs if m["role"] != "system")
            n_said = len(msgs) - 2  # turns before this one, opening excluded
            speaker = "teacher" if n_said % 2 == 0 else "student"
            number = int(re.search(r"#(\d+)", opening).group(1))  # type: ignore[union-attr]
            if "never" in opening:
                letter = "ABCD"[n_said % 4]
            elif speaker == "teacher":
                letter = "B"
            else:
                letter = "C" if number % 2 == 0 and n_said == 1 else "B"
            text = f"Let me think about #{number}. The correct answer is ({letter})"
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
        }


def coral_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"q{i}", "question": f"Question #{i}" + (" never" if i == 3 else ""), "options": list("wxyz"),
         "answer": "B"}
        for i in range(n)
    ]  # fmt: skip


def run_p2p_local(rows: list[dict[str, Any]], run_dir: Path, settings: coral.CoralSettings) -> tuple[dict, FakeServer]:
    async def go() -> tuple[dict, FakeServer]:
        async with serve_fake(ScriptedCoral()) as (server,):
            deployment = coral.CoralDeployment(urls=[server.url], model="m", settings=settings)
            cfg = case_run_config(coral, deployment.roles(), rows, run_dir, concurrency=4)
            return await run_local_async(cfg), server

    return asyncio.run(go())


def output(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "output.jsonl").read_text().splitlines()]


def test_p2p_roles_run_the_protocol_end_to_end(tmp_path: Path) -> None:
    rows = [*coral_rows(6), {"id": "bad", "question": "no options", "answer": "A"}]
    m, server = run_p2p_local(rows, tmp_path, coral.CoralSettings(max_turns=6))
    out = {r["task_id"]: r for r in output(tmp_path)}
    assert len(out) == 7 and m["tasks_failed"] == 1
    assert "row bad: missing 'options'" in out["bad"]["error"]
    # Odd questions agree at once (teacher B, student B); even ones one exchange later; #3 never.
    roles = [t["role"] for t in out["q1"]["turns"]]
    assert roles == ["teacher", "extractor", "matcher", "student", "extractor", "matcher"]
    assert sum(t["role"] == "teacher" for t in out["q2"]["turns"]) == 2
    assert sum(t["role"] in ("teacher", "student") for t in out["q3"]["turns"]) == 6
    assert out["q3"]["turns"][-1]["content"] == "max_turns"
    q = coral.quality(out.values())
    assert q["agreement_rate"]["k"] == 5 and q["agreement_correctness"]["k"] == 5
    # Requests carry the paper's sampling and a per-turn seed; the extractor sees only one reply.
    dialogue = [b for b in server.bodies if b["messages"][0]["content"] == coral.SYSTEM_PROMPT]
    extract = [b for b in server.bodies if b["messages"][0]["content"] == coral.EXTRACTOR_SYSTEM]
    assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in dialogue} == {(0.2, 0.9, 1024)}
    assert {(b["temperature"], b["max_tokens"]) for b in extract} == {(0.0, 32)}
    assert len({b["seed"] for b in dialogue}) == len(dialogue)
    assert all(b["messages"][-1]["content"].count("The correct answer is") == 1 for b in extract)
    assert m["tokens_generated"] > 0


def test_turn_history_is_built_from_the_message_alone() -> None:
    turns = [Turn("teacher", "T"), Turn("extractor", "(B)", meta={"answer": "B"}), Turn("matcher", "continue")]
    assert coral.next_speaker(turns) == "student" and coral.next_speaker([]) == "teacher"
    assert coral.answers_so_far(turns) == ["B"]
