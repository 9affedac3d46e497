"""Coral's export view: each agent's view of the dialogue as a conversation, for training.

The teacher's record is what the teacher saw at its last turn (Coral's system prompt, the student's
templated opening as the user, the partner's turns as the user, its own as the assistant) followed by
that turn; the student's record likewise, where the templated opening is the student's own first
(assistant) message, as `dialogue_messages` gives it to the model. These are the two perspectives
the Coral reference trains on. Extractor and matcher turns are not in `messages`: their answers and
verdicts are in the metadata, with the gold letter, agreement and correctness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matrix.cases.coral import DIALOGUE_ROLES, WORKFLOW, dialogue_messages, opening, outcome, question_of
from matrix.export import Field, LeftOut, Record, RunInfo, register_view


class CoralView:
    workflow = WORKFLOW
    fields = (
        Field("question_id", "str", "the MMLU-Pro question id"),
        Field("category", "str", "the question's subject"),
        Field("gold", "str", "the correct letter"),
        Field("agreed", "bool", "the conversation ended in agreement"),
        Field("answer", "str", "the letter agreed on (null without agreement)"),
        Field("correct", "bool", "agreement on the gold letter (agreement correctness)"),
        Field("any_turn_correct", "bool", "some turn's extracted answer was the gold letter"),
        Field("dialogue_turns", "int", "teacher and student turns in the whole conversation"),
        Field("stop_reason", "str", "the matcher's last verdict: agree or max_turns"),
        Field("opening_is_templated", "bool", "the first assistant message is the templated opening, not a model's"),
        Field("extractions", "json", "per dialogue turn: the extractor's reply and the letter it names"),
        Field("matcher", "json", "per dialogue turn: the matcher's verdict"),
    )

    def records(self, row: Mapping[str, Any], run: RunInfo) -> list[Record]:
        q = question_of(row.get("row") or {})
        turns = row.get("turns") or []
        said = [(str(t["role"]), str(t.get("content") or "")) for t in turns if t.get("role") in DIALOGUE_ROLES]
        if not said:
            raise LeftOut("no dialogue turns")
        out = outcome(row)
        matcher = [{"verdict": t.get("content"), **(t.get("meta") or {})} for t in turns if t.get("role") == "matcher"]
        extractions = [
            {"of_turn": (t.get("meta") or {}).get("of_turn"), "answer": (t.get("meta") or {}).get("answer"),
             "text": t.get("content")}
            for t in turns if t.get("role") == "extractor"
        ]  # fmt: skip
        shared = {
            "model": run.model("dialogue"),
            "sampling": run.settings().get("dialogue"),
            "question_id": q.qid,
            "category": q.category,
            "gold": q.answer,
            "agreed": out.agreed,
            "answer": out.answer,
            "correct": out.correct,
            "any_turn_correct": out.any_turn_correct,
            "dialogue_turns": out.turns,
            "stop_reason": matcher[-1]["verdict"] if matcher else None,
            "extractions": extractions,
            "matcher": matcher,
        }
        records = []
        for agent in DIALOGUE_ROLES:
            mine = [i for i, (role, _) in enumerate(said) if role == agent]
            if not mine:
                continue
            last = mine[-1]
            chat: list[dict[str, Any]] = [dict(m) for m in dialogue_messages(q, said[:last])]
            chat.append({"role": "assistant", "content": said[last][1]})
            meta = {**shared, "view": agent, "opening_is_templated": agent == "student"}
            records.append({"messages": chat, "tools": None, "metadata": meta})
        return records


def dialogue_of(records: Sequence[Record]) -> list[tuple[str, str]]:
    """The conversation's dialogue turns, (speaker, text) in order, from a conversation's records.

    The longest record holds every turn up to the last one; after the system prompt and the opening
    the speakers alternate from the teacher. Each shorter record must agree with it turn for turn."""
    if not records:
        return []
    texts = [[str(m.get("content")) for m in r["messages"][1:]] for r in records]
    full = max(texts, key=len)
    for other in texts:
        if full[: len(other)] != other:
            raise ValueError("the records of one conversation disagree on its turns")
    return [(DIALOGUE_ROLES[i % 2], text) for i, text in enumerate(full[1:])]


def opening_of(record: Record) -> str:
    """The templated opening in a record (its first message after the system prompt)."""
    return str(record["messages"][1]["content"])


VIEW = register_view(CoralView())

__all__ = ["VIEW", "CoralView", "dialogue_of", "opening", "opening_of"]
