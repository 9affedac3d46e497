"""NaturalReasoning's export view: each curated question as a single-turn record.

The user message is the generated exam question; the assistant message is the independent
step-by-step solution ending in `\\boxed{...}` (the reasoning). The reference answer (the answer the
source text gives, when it gives one), the boxed answer, the question's subject and every stage's
decision (the language score, the classifier's label, the four quality scores) are in the metadata.
A document that a stage dropped has no question: it is left out under its drop reason, which the
export's summary counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matrix.cases.nr import AXES, SUCCESS, WORKFLOW, outcome_of, qa_of
from matrix.export import Field, LeftOut, Record, RunInfo, register_view


class NRView:
    workflow = WORKFLOW
    fields = (
        Field("doc_id", "str", "the source document's id"),
        Field("subject", "str", "the question's subject, as the question stage labelled it"),
        Field("reference_answer", "str", "the answer the source text gives (may be empty)"),
        Field("boxed_answer", "str", "the solution's final \\boxed{} answer"),
        Field("lang", "str", "the document's language (filter stage)"),
        Field("lang_prob", "float", "the language identifier's probability"),
        Field("classifier_label", "str", "the filter classifier's Yes/No"),
        *(Field(axis, "float", f"score stage: {axis}") for axis in AXES),
        Field("scores", "json", "the score stage's four criteria"),
    )

    def records(self, row: Mapping[str, Any], run: RunInfo) -> list[Record]:
        outcome = outcome_of(row)
        if outcome != SUCCESS:
            raise LeftOut(outcome or "no decision")
        qa = qa_of(row)
        if not qa:
            raise LeftOut("no question")
        meta_of = {t.get("role"): (t.get("meta") or {}) for t in row.get("turns") or []}
        filt, score = meta_of.get("filter", {}), meta_of.get("score", {})
        scores = score.get("scores") or {}
        messages = [{"role": "user", "content": qa["question"]}, {"role": "assistant", "content": qa["solution"]}]
        src = row.get("row")
        if not isinstance(src, Mapping):
            src = {}
        meta = {
            "view": "qa",
            "model": run.model("large"),
            "sampling": run.settings().get("question"),
            "doc_id": str(src.get("id") or src.get("doc_id") or src.get("url") or row.get("task_id")),
            "subject": qa.get("category"),
            "reference_answer": qa.get("extracted_answer"),
            "boxed_answer": qa.get("boxed_answer"),
            "lang": filt.get("lang"),
            "lang_prob": filt.get("lang_prob"),
            "classifier_label": filt.get("label"),
            **{axis: scores.get(axis) for axis in AXES},
            "scores": scores or None,
        }
        return [{"messages": messages, "tools": None, "metadata": meta}]


VIEW = register_view(NRView())

__all__ = ["VIEW", "NRView"]
