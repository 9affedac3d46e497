"""NaturalReasoning decision code: the English check, the three parsers, the stage chain, the funnel,
and the workflow on the local runtime against a deterministic fake model."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from matrix.cases import nr
from matrix.runtime.local import run_local_async
from tests.cases.local_run import case_run_config
from tests.llm.fake_openai import FakeServer, serve_fake

REASONING = (
    "Suppose a train leaves at 3 pm travelling at 60 km/h, and a second train leaves the same station at "
    "4 pm at 90 km/h. Because the first train has a 60 km head start and the second closes the gap at "
    "30 km/h, the second train catches up after 2 hours, therefore at 6 pm, 180 km from the station."
)
PLAIN = "Buy our new garden chairs today. Free delivery on orders over 50 euros. Sign up for the newsletter."
FRENCH = (
    "Le conseil municipal a voté mardi soir la rénovation de la bibliothèque du quartier. Les travaux "
    "commenceront au printemps et dureront environ huit mois, selon la mairie."
)
SCORES_OK = dict(problem_completeness=1, problem_complexity=1, technical_correctness=1, thinking_and_reasoning=2)


def qa_json(boxed: bool = True, question: str = "When does the second train catch up?") -> str:
    last = "Therefore, the final answer is: \\boxed{6 pm}." if boxed else "So it is six."
    obj = {
        "exam_question": question,
        "question_category": "mathematics",
        "extracted_answer": "",
        "independent_answer": ["The gap is 60 km.", "It closes at 30 km/h.", last],
    }
    return "```json\n" + json.dumps(obj) + "\n```"


# ------------------------------------------------------------------------------------- parsers


def test_english_check_uses_the_identifier_and_the_dclm_field_when_present() -> None:
    assert nr.is_english(REASONING)[0] is True
    keep, meta = nr.is_english(FRENCH)
    assert keep is False and meta["lang"] == "fr"
    # DCLM rows carry fastText's whole-page score; the reference keeps English >= 0.8.
    assert nr.is_english(FRENCH, {nr.DCLM_LANG_FIELD: {"en": 0.93}})[0] is True
    assert nr.is_english(REASONING, {nr.DCLM_LANG_FIELD: {"en": 0.5}})[0] is False


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("Yes", True),
        ("yes.", True),
        (" No", False),
        ("**No**", False),
        ("Maybe", None),
        ("", None),
        ("Yes-ish", True),
        ("Yesterday", None),
    ],
)
def test_yes_no(reply: str, want: bool | None) -> None:
    assert nr.parse_yes_no(reply) is want


def test_scores_parse_the_last_json_block_and_pass_only_when_every_criterion_is_positive() -> None:
    reply = 'First I think {"problem_completeness": 2}...\n```json\n' + json.dumps(SCORES_OK) + "\n```"
    scores = nr.parse_scores(reply)
    assert scores == {k: float(v) for k, v in SCORES_OK.items()} and nr.scores_pass(scores)
    assert not nr.scores_pass({**scores, "problem_complexity": 0.0})
    nested = {k: {"score": v, "reason": "r"} for k, v in SCORES_OK.items()}
    assert nr.parse_scores(json.dumps(nested)) == scores
    with pytest.raises(nr.ScoreParseError, match="no JSON object"):
        nr.parse_scores("I would give it a four.")
    with pytest.raises(nr.ScoreParseError, match="'problem_complexity' score 7"):
        nr.parse_scores(json.dumps({**SCORES_OK, "problem_complexity": 7}))
    with pytest.raises(nr.ScoreParseError, match="'thinking_and_reasoning' has no numeric"):
        nr.parse_scores(json.dumps({**SCORES_OK, "thinking_and_reasoning": "high"}))


def test_question_parsing_and_its_drop_details() -> None:
    qa, why = nr.parse_question("Here it is:\n" + qa_json())
    assert why is None and qa is not None
    assert qa["boxed_answer"] == "6 pm" and qa["question"].startswith("When") and qa["category"] == "mathematics"
    assert nr.parse_question(qa_json(boxed=False)) == (None, "no_boxed_answer")
    assert nr.parse_question(qa_json(question=" ")) == (None, nr.NO_QUESTION)
    assert nr.parse_question("no json here \\boxed{3}") == (None, nr.QUESTION_NOT_JSON)
    assert nr.last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert nr.last_boxed("\\boxed{}") is None


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"id": "d1"}, "document d1: missing 'text'"),
        ({"id": "d2", "text": 5}, "document d2: 'text' must be a string, got int"),
        ({"id": "d3", "text": "  "}, "document d3: 'text' is empty"),
        ({"id": "d4", "text": "\x00\x01\x02\x03 junk \x04\x05\x06\x07\x08"}, "document d4: 'text' looks binary"),
        (["not", "a", "dict"], "expected a JSON object, got list"),
    ],
)
def test_bad_documents_name_the_row_and_key(row: Any, match: str) -> None:
    with pytest.raises(nr.BadDocument, match=match):
        nr.text_of(row)


def test_settings_round_trip_and_reject_unknown_keys() -> None:
    s = nr.NRSettings(score_threshold=0.5)
    assert nr.NRSettings.from_dict(s.to_dict()) == s
    assert s.filter.max_tokens == 8 and s.score.max_tokens == 10240 and s.question.temperature == 0.0
    with pytest.raises(ValueError, match=r"unknown natural_reasoning settings \['bogus'\]"):
        nr.NRSettings.from_dict({"bogus": 1})


# ------------------------------------------------------------------------ a deterministic model


def _passage(body: Mapping[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def _h(text: str, seed: Any) -> int:
    return int(hashlib.sha256(f"{text}|{seed}".encode()).hexdigest()[:8], 16)


def fake_reply(body: Mapping[str, Any]) -> tuple[str, int]:
    """Yes for passages with 'because'; scores fail for passages with 'fails-score'; no boxed
    answer for 'no-box'; otherwise pass. Lengths depend on the request and seed only."""
    system = str(body["messages"][0]["content"])
    text, seed = _passage(body), body.get("seed")
    if system == nr.CLASSIFIER_SYSTEM:
        return ("Yes" if "because" in text.lower() else "No"), 1
    if system == nr.SCORE_SYSTEM:
        scores = dict(SCORES_OK, problem_complexity=0) if "fails-score" in text else SCORES_OK
        return "Review...\n```json\n" + json.dumps(scores) + "\n```", 40 + _h(text, seed) % 20
    if system == nr.QUESTION_SYSTEM:
        return qa_json(boxed="no-box" not in text), 60 + _h(text, seed) % 30
    raise AssertionError(f"unexpected system prompt {system[:40]!r}")


class NRFake(FakeServer):
    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        text, n = fake_reply(body)
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(_passage(body)) // 4, "completion_tokens": n},
        }


def docs() -> list[dict[str, Any]]:
    rows = [
        {"id": "plain", "text": PLAIN},
        {"id": "fr", "text": FRENCH},
        {"id": "good", "text": REASONING},
        {"id": "score", "text": REASONING + " fails-score"},
        {"id": "nobox", "text": REASONING + " no-box"},
        {"id": "missing", "body": "no text key"},
    ]
    return rows


WANT = {
    "plain": nr.CLASSIFIER,
    "fr": nr.ENGLISH,
    "good": nr.SUCCESS,
    "score": nr.SCORE,
    "nobox": nr.NO_BOXED,
    "missing": None,
}


def test_curate_chain_stops_at_the_first_drop() -> None:
    calls: list[str] = []

    async def call(stage: str, messages: list[dict[str, str]], body: dict[str, Any], seed: int) -> dict[str, Any]:
        calls.append(stage)
        text, n = fake_reply({"messages": messages, "seed": seed, **body})
        return {"choices": [{"message": {"content": text}}], "usage": {"prompt_tokens": 9, "completion_tokens": n}}

    async def go() -> dict[str, list[nr.StageResult]]:
        out = {}
        for row in docs()[:5]:
            out[row["id"]] = await nr.curate(row, row["id"], call, nr.NRSettings())
        return out

    results = asyncio.run(go())
    assert [r.stage for r in results["good"]] == ["filter", "score", "question"]
    assert [r.stage for r in results["fr"]] == ["filter"] and results["fr"][0].usage["completion_tokens"] == 0
    assert results["nobox"][-1].meta["detail"] == "no_boxed_answer"
    assert calls.count("filter") == 4  # French never reaches the classifier
    with pytest.raises(nr.BadDocument, match="missing 'text'"):
        asyncio.run(nr.curate(docs()[5], "missing", call, nr.NRSettings()))


def test_workflow_on_the_local_runtime_drops_with_reasons_and_counts_bad_documents(tmp_path: Path) -> None:
    async def go() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with serve_fake(NRFake("small"), NRFake("large")) as (small, large):
            dep = nr.NRDeployment([small.url], [large.url], small_model="small-3b", large_model="large-70b")
            cfg = case_run_config(nr, dep.roles(), docs(), tmp_path, concurrency=4)
            metrics = await run_local_async(cfg)
            return metrics, small.bodies + large.bodies

    metrics, bodies = asyncio.run(go())
    rows = [json.loads(line) for line in (tmp_path / "output.jsonl").read_text().splitlines()]
    got = {r["task_id"]: nr.outcome_of(r) for r in rows}
    assert got == WANT
    f = nr.quality(rows)
    assert f["counts"] == {nr.ENGLISH: 1, nr.CLASSIFIER: 1, nr.SCORE: 1, nr.NO_BOXED: 1, nr.SUCCESS: 1}
    assert f["failed"] == 1 and f["questions"] == 1 and f["survival_rate"] == pytest.approx(0.2)
    assert metrics["tasks_failed"] == 1 and sum(metrics["errors_by_reason"].values()) == 1
    bad = next(r for r in rows if r["task_id"] == "missing")
    assert bad["status"] == "error" and "document missing (input row 6): missing 'text'" in bad["error"]
    assert metrics["tokens_generated"] == sum(r["usage"]["completion_tokens"] for r in rows)
    # Every request carries the stage's sampling and a per-document seed.
    assert {b["max_tokens"] for b in bodies} == {8, 10240, 20480} and all("seed" in b for b in bodies)
