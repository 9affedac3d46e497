"""The `coral` behaviour model of the simulated engine (no Ray, no server)."""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from matrix.cases import coral
from matrix.cases.coral.sim import CoralBehaviour, CoralDataset, parse_opening, stated_answer
from matrix.llm.sim.behaviour import BehaviourModel, apply_limits, get_behaviour
from matrix.llm.sim.tokens import count_text_tokens

MMLU = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mmlu_pro"
DATA = MMLU / "mmlu_pro_test_llama31_8b_instruct.jsonl.gz"
needs_data = pytest.mark.skipif(
    not DATA.exists(), reason="../shared/data/mmlu_pro is absent (a user's clone has no ../shared)"
)
ROW = {"id": "q1", "question": 'Which is "even"?\nPick one.', "options": ["3", "4", "5", "7"], "answer": "B"}


@cache
def _rows() -> list[dict[str, Any]]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _question(raw: dict[str, Any]) -> coral.Question:
    return coral.question_of({**raw, "id": raw.get("question_id", raw.get("id"))})


def _turn(model: BehaviourModel, q: coral.Question, said: list[tuple[str, str]], *, trial: int = 0) -> str:
    seed = coral.request_seed(q.qid, trial, len(said) + 1, "dialogue")
    reply = model.reply({"messages": coral.dialogue_messages(q, said), **coral.DIALOGUE_SAMPLING.body()}, seed=seed)
    assert reply.content is not None and reply.completion_tokens == count_text_tokens(reply.content)
    return reply.content


def _extract(model: BehaviourModel, q: coral.Question, text: str) -> str | None:
    request = {"messages": coral.extraction_messages(q, text), **coral.EXTRACTOR_SAMPLING.body()}
    reply = model.reply(request, seed=7)
    assert reply.completion_tokens <= 5
    return coral.parse_extraction(reply.content)


def _converse(model: BehaviourModel, q: coral.Question, max_turns: int = coral.MAX_TURNS) -> tuple[bool, list[Any]]:
    said: list[tuple[str, str]] = []
    answers: list[str | None] = []
    while True:
        role = "teacher" if len(said) % 2 == 0 else "student"
        text = _turn(model, q, said)
        said.append((role, text))
        answers.append(_extract(model, q, text))
        v = coral.verdict(answers, max_turns)
        if v.stop:
            return v.agreed, answers


def test_extraction_names_the_last_stated_answer_or_not_sure() -> None:
    model = CoralBehaviour()
    q = coral.question_of(ROW)
    assert _extract(model, q, "First (A) looks odd. The correct answer is (C). Wait: The correct answer is (B).") == "B"
    assert _extract(model, q, "I think **the correct answer is: (D)**") == "D"
    assert _extract(model, q, "Options (A) and (B) both look plausible to me.") is None
    assert _extract(model, q, "") is None


def test_opening_is_parsed_back_into_question_and_options() -> None:
    q = coral.question_of({**ROW, "options": ["first\nline", "(B) inside", "x"]})
    assert parse_opening(coral.opening(q)) == (q.question, list(q.options))
    assert parse_opening("hello") is None


def test_dialogue_reply_ends_with_an_answer_and_is_deterministic() -> None:
    model = get_behaviour("coral")
    q = coral.question_of(ROW)
    first = _turn(model, q, [])
    assert first.rstrip(".").endswith(f"The correct answer is ({stated_answer(first)})")
    assert stated_answer(first) in ("A", "B", "C", "D")
    assert _turn(model, q, []) == first
    assert _turn(model, q, [], trial=1) != first  # another seed samples another reply
    second = _turn(model, q, [("teacher", first)])
    assert stated_answer(second) in ("A", "B", "C", "D")


def test_limits_and_non_coral_requests() -> None:
    model = CoralBehaviour(min_tokens=200, max_tokens=200)
    q = coral.question_of(ROW)
    reply = model.reply({"messages": coral.dialogue_messages(q, [])}, seed=3)
    assert 195 <= reply.completion_tokens <= 205
    cut = apply_limits(reply, max_tokens=50)
    assert cut.finish_reason == "length" and stated_answer(cut.content) is None
    other = model.reply({"messages": [{"role": "user", "content": "hi"}]}, seed=0)
    assert other.content and other.completion_tokens >= 1
    with pytest.raises(ValueError):
        CoralBehaviour(persuade=1.5)
    with pytest.raises(FileNotFoundError):
        CoralBehaviour(dataset="/nonexistent/mmlu.jsonl.gz")


def test_unknown_questions_get_valid_shared_first_beliefs() -> None:
    model = get_behaviour("matrix.cases.coral.sim:CoralBehaviour", explore=0.0)
    letters: list[str] = []
    for row in coral.generated_questions(60, seed=1):
        q = coral.question_of(row)
        teacher = _turn(model, q, [])
        letter = stated_answer(teacher)
        assert letter is not None and letter <= chr(64 + len(q.options))
        letters.append(letter)
        # The student starts from the same belief, so without noise it agrees at once.
        assert stated_answer(_turn(model, q, [("teacher", teacher)])) == letter
    assert len(set(letters)) >= 5  # uniform over options, not stuck on one letter


def test_persuasion_and_exploration_change_answers_at_the_configured_extremes() -> None:
    q = coral.question_of(ROW)
    stubborn = CoralBehaviour(persuade=0.0, explore=0.0)
    pushover = CoralBehaviour(persuade=1.0, explore=0.0)
    mine = stated_answer(_turn(stubborn, q, []))
    other = "A" if mine != "A" else "B"
    said = [("teacher", f"Done. The correct answer is ({mine})."), ("student", f"No. The correct answer is ({other}).")]
    assert stated_answer(_turn(stubborn, q, said)) == mine
    assert stated_answer(_turn(pushover, q, said)) == other
    restless = CoralBehaviour(persuade=0.0, explore=1.0)
    assert stated_answer(_turn(restless, q, said)) != mine


@needs_data
def test_dataset_loads_fast_and_grounds_first_answers_and_lengths() -> None:
    start = time.perf_counter()
    assert len(CoralDataset.read(DATA)) > 11_000  # a fresh read, not the per-process cache
    assert time.perf_counter() - start < 2.0
    model = get_behaviour("coral", dataset=str(DATA), explore=0.0)
    rows = random.Random(5).sample(_rows(), 200)
    real, sim = [], []
    for raw in rows:
        q = _question(raw)
        text = _turn(model, q, [])
        assert stated_answer(text) == raw["llama31_8b_instruct"]["pred"]
        real.append(math.log(max(1, count_text_tokens(raw["llama31_8b_instruct"]["generated_text"]))))
        sim.append(math.log(count_text_tokens(text)))
    mr, ms = sum(real) / len(real), sum(sim) / len(sim)
    cov = sum((a - mr) * (b - ms) for a, b in zip(real, sim, strict=True))
    corr = cov / math.sqrt(sum((a - mr) ** 2 for a in real) * sum((b - ms) ** 2 for b in sim))
    assert corr > 0.8, corr


@needs_data
def test_simulated_conversations_agree_soon_with_plausible_accuracy() -> None:
    model = CoralBehaviour(dataset=DATA)
    rows = random.Random(0).sample(_rows(), 300)
    agreed = correct = 0
    turns: list[int] = []
    for raw in rows:
        q = _question(raw)
        ok, answers = _converse(model, q)
        agreed += ok
        correct += ok and answers[-1] == q.answer
        turns.append(len(answers))
    mean_turns = sum(turns) / len(turns)
    print(f"agreement {agreed / 300:.3f}, agreement correctness {correct / 300:.3f}, mean turns {mean_turns:.2f}")
    assert agreed / 300 > 0.9
    assert sum(t <= 4 for t in turns) / len(turns) > 0.8
    assert 0.3 <= correct / 300 <= 0.6
