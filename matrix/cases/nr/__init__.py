"""NaturalReasoning curation (paper 5.2): web documents in, reasoning questions out.

Three stages, each a P2P role, each ending the task early when it drops the document:

1. filter: a real language identifier (py3langid, its model ships in the wheel) keeps English
   text; then a small classifier model answers Yes or No to "does this passage contain reasoning"
   (max_tokens 8). Dropped as `filtered_by_english` or `filtered_by_classifier`.
2. score: a large model grades the passage on several quality axes and answers with JSON; every
   axis must reach the threshold. Dropped as `filtered_by_score` (a reply that is not the JSON
   asked for fails the stage too, with the parse error kept on the turn).
3. question: the large model writes a question, a short reference answer and a step-by-step
   solution that ends in `\\boxed{...}`. Dropped as `filtered_by_no_boxed_answer` when there is no
   boxed answer; otherwise the row becomes a QA row (`success`).

The decision code here (prompts, parsing, thresholds, seeds) is shared with the Ray Data batch
baseline (`baselines/ray_data_batch.py`), which runs the same three stages per row inside
`map_batches`; only the scheduling differs. Both write rows with the same `turns` schema, so
`outcome_of`, `funnel` and `quality` read either system's output.

Sampling is the paper's (../shared/paper/paper_setups.csv, from fair-matrix's NR resources).

The package also holds the offline input (`matrix.cases.nr.docs`, web-like documents whose word lists
and templates are data files under `data/`) and the simulated engine's behaviour model of the three
model stages (`matrix.cases.nr.sim`); neither is imported here.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matrix.agent import RoleSpec
from matrix.cases.common import Sampling, derived_seed, llm_role_config
from matrix.llm.agent import LLMAgent
from matrix.llm.client import message_text
from matrix.message import Message, Turn, Usage
from matrix.workflow import Edge, Graph, register_workflow

WORKFLOW = "natural_reasoning"
STAGES = ("filter", "score", "question")
ENGLISH = "filtered_by_english"
CLASSIFIER = "filtered_by_classifier"
SCORE = "filtered_by_score"
NO_BOXED = "filtered_by_no_boxed_answer"
SUCCESS = "success"
DROP_REASONS = (ENGLISH, CLASSIFIER, SCORE, NO_BOXED)
OUTCOMES = (*DROP_REASONS, SUCCESS)

FILTER_SAMPLING = Sampling(temperature=1.0, top_p=0.95, max_tokens=8)
SCORE_SAMPLING = Sampling(temperature=0.2, top_p=0.9, max_tokens=10240)
QUESTION_SAMPLING = Sampling(temperature=0.0, top_p=0.9, max_tokens=20480)

# The scorer's criteria, as in the reference pipeline (fair-matrix nr_agents): each is scored on its
# own scale and a passage is kept only when every criterion is strictly above zero.
AXES = ("problem_completeness", "problem_complexity", "technical_correctness", "thinking_and_reasoning")
AXIS_RANGE = {
    "problem_completeness": (0.0, 2.0),
    "problem_complexity": (0.0, 2.0),
    "technical_correctness": (-1.0, 2.0),
    "thinking_and_reasoning": (-1.0, 3.0),
}


@dataclass(frozen=True)
class NRSettings:
    """What both systems must agree on: sampling per stage, the score threshold, prompt truncation."""

    filter: Sampling = FILTER_SAMPLING
    score: Sampling = SCORE_SAMPLING
    question: Sampling = QUESTION_SAMPLING
    score_threshold: float = 0.0  # every criterion must be strictly above this
    max_doc_chars: int = 24000  # about 6k tokens of a web page go into a prompt; the rest is cut

    def __post_init__(self) -> None:
        if not -1.0 <= self.score_threshold < 2.0:
            raise ValueError(f"score_threshold must be in [-1, 2), got {self.score_threshold}")
        if self.max_doc_chars < 100:
            raise ValueError(f"max_doc_chars must be >= 100, got {self.max_doc_chars}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": self.filter.body(),
            "score": self.score.body(),
            "question": self.question.body(),
            "score_threshold": self.score_threshold,
            "max_doc_chars": self.max_doc_chars,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NRSettings:
        if not data:
            return cls()
        known = {"filter", "score", "question", "score_threshold", "max_doc_chars"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown natural_reasoning settings {unknown}; known: {sorted(known)}")
        kw: dict[str, Any] = {}
        for stage in ("filter", "score", "question"):
            if stage in data:
                kw[stage] = Sampling(**dict(data[stage]))
        if "score_threshold" in data:
            kw["score_threshold"] = float(data["score_threshold"])
        if "max_doc_chars" in data:
            kw["max_doc_chars"] = int(data["max_doc_chars"])
        return cls(**kw)


# ------------------------------------------------------------------------------------- documents


class BadDocument(ValueError):
    """A row that is not a usable document; the message names the row and the key."""


def doc_id(row: Any, fallback: str = "?") -> str:
    if isinstance(row, Mapping):
        for key in ("id", "doc_id", "url"):
            if row.get(key) not in (None, ""):
                return str(row[key])
    return fallback


def text_of(row: Any, *, where: str = "") -> str:
    """The document's text (`text`, or `content` as some dumps name it), or BadDocument."""
    name = where or doc_id(row)
    if not isinstance(row, Mapping):
        raise BadDocument(f"document {name}: expected a JSON object, got {type(row).__name__}")
    key = "text" if "text" in row else "content" if "content" in row else None
    if key is None:
        raise BadDocument(f"document {name}: missing 'text' (keys: {sorted(map(str, row))[:10]})")
    text = row[key]
    if not isinstance(text, str):
        raise BadDocument(f"document {name}: '{key}' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadDocument(f"document {name}: '{key}' is empty")
    sample = text[:4000]
    junk = sum(1 for ch in sample if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"))
    if junk > 0.1 * len(sample):
        raise BadDocument(
            f"document {name}: '{key}' looks binary "
            f"({junk} of {len(sample)} characters are control or replacement characters)"
        )
    return text


def _clip(text: str, settings: NRSettings) -> str:
    return text if len(text) <= settings.max_doc_chars else text[: settings.max_doc_chars] + "\n[...]"


# --------------------------------------------------------------------------------- stage 1: filter

_identifier: Any = None
ENGLISH_MIN_PROB = 0.8  # fair-matrix keeps a page when fastText gives English at least 0.8
DCLM_LANG_FIELD = "language_id_whole_page_fasttext"


def load_language_model() -> Any:
    """py3langid's model, loaded once per process (about 0.9 s of CPU). Workers load it when they are
    set up, so that it counts as their startup, outside the run window (matrix.runtime.window)."""
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def language_of(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) from py3langid on the first 2,000 characters."""
    lang, prob = load_language_model().classify(text[:2000])
    return str(lang), float(prob)


def is_english(text: str, row: Mapping[str, Any] | None = None) -> tuple[bool, dict[str, Any]]:
    """English with probability >= 0.8. DCLM rows carry fastText's whole-page score, which the
    reference pipeline uses; other rows are identified here with py3langid."""
    field_ = (row or {}).get(DCLM_LANG_FIELD)
    if isinstance(field_, Mapping):
        prob = float(field_.get("en") or 0.0)
        return prob >= ENGLISH_MIN_PROB, {
            "lang": "en" if prob >= ENGLISH_MIN_PROB else "other",
            "lang_prob": round(prob, 4),
            "lang_source": "fasttext (DCLM field)",
        }
    lang, prob = language_of(text)
    return lang == "en" and prob >= ENGLISH_MIN_PROB, {
        "lang": lang,
        "lang_prob": round(prob, 4),
        "lang_source": "py3langid",
    }


CLASSIFIER_SYSTEM = (
    "You label web passages for a dataset of reasoning problems. A passage contains reasoning when "
    "it works something out: it derives a result step by step, explains why something happens, "
    "weighs evidence to reach a conclusion, or solves a problem. Listings, navigation text, news "
    "without analysis, adverts and plain descriptions do not count. Answer with one word: Yes or No."
)


def _messages(
    system: str, text: str, settings: NRSettings, *, label: str = "Passage", ask: str = ""
) -> list[dict[str, str]]:
    """A stage's request: its instructions as the system message, the document as the user turn."""
    user = f"{label}:\n{_clip(text, settings)}" + (f"\n\n{ask}" if ask else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def classifier_messages(text: str, settings: NRSettings) -> list[dict[str, str]]:
    return _messages(CLASSIFIER_SYSTEM, text, settings, ask="Does this passage contain reasoning?")


def parse_yes_no(reply: str) -> bool | None:
    """True for Yes, False for No, None when the reply is neither (the stage then drops the row)."""
    m = re.match(r"\W*(yes|no)\b", reply.strip(), re.IGNORECASE)
    return None if m is None else m.group(1).lower() == "yes"


# ---------------------------------------------------------------------------------- stage 2: score

SCORE_SYSTEM = (
    "You review web text as raw material for hard reasoning questions. Go through the criteria one "
    "at a time, reason about each briefly, and keep a running total.\n"
    "1. problem_completeness (0 to 2): 0 if the text poses no clear problem; 1 if it poses one and "
    "gives enough to work it out; 2 if, in addition, several people discuss it.\n"
    "2. problem_complexity (0 to 2): 0 if a college student could solve it; 1 if it needs "
    "graduate-level knowledge; 2 if even a skilled non-expert with half an hour of searching could not.\n"
    "3. technical_correctness (-1 to 2): -1 for clear errors; 0 if unsure; up to 2 for text that is "
    "precise and correct throughout.\n"
    "4. thinking_and_reasoning (-1 to 3): -1 for no reasoning at all; up to 3 for careful multi-step "
    "reasoning that weighs alternatives and checks itself.\n"
    "Finish with one fenced json block mapping the four criterion names to numbers, e.g.\n"
    '```json\n{"problem_completeness": 1, "problem_complexity": 0, "technical_correctness": 0.5, '
    '"thinking_and_reasoning": 1}\n```'
)


def score_messages(text: str, settings: NRSettings) -> list[dict[str, str]]:
    return _messages(SCORE_SYSTEM, text, settings)


class ScoreParseError(ValueError):
    pass


def _json_objects(text: str) -> Iterable[Any]:
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            value, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        yield value


def parse_scores(reply: str) -> dict[str, float]:
    """The last JSON object in the reply that names the criteria, every one a number in its range."""
    found = [v for v in _json_objects(reply) if isinstance(v, dict) and any(a in v for a in AXES)]
    if not found:
        raise ScoreParseError("no JSON object with the score criteria in the reply")
    obj = found[-1]
    scores: dict[str, float] = {}
    for axis in AXES:
        value = obj.get(axis)
        if isinstance(value, Mapping):  # {"axis": {"score": 1, "reason": ...}} is accepted too
            value = value.get("score")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScoreParseError(f"criterion {axis!r} has no numeric score (got {value!r})")
        lo, hi = AXIS_RANGE[axis]
        if not lo <= value <= hi:
            raise ScoreParseError(f"criterion {axis!r} score {value} is outside [{lo:g}, {hi:g}]")
        scores[axis] = float(value)
    return scores


def scores_pass(scores: Mapping[str, float], threshold: float = 0.0) -> bool:
    return all(scores[a] > threshold for a in AXES)


# ------------------------------------------------------------------------------- stage 3: question

QUESTION_SYSTEM = (
    "You turn a web discussion into an exam question that tests reasoning. Work in four steps:\n"
    "1. Rewrite the problem the text discusses as one self-contained, well-defined exam question "
    "(leave it empty if the text has none).\n"
    "2. Label its subject (e.g. mathematics, physics, chemistry, biology, computer science, "
    "engineering, economics, law, philosophy, other).\n"
    "3. If the text contains a correct answer, restate it, ending with: Therefore, the final "
    "answer is: \\boxed{answer}.\n"
    "4. Independently of the text, solve the question step by step as a list of steps; the last "
    "step must be: Therefore, the final answer is: \\boxed{answer}.\n"
    "Reply with one fenced json block with the keys exam_question (string), question_category "
    "(string), extracted_answer (string, may be empty) and independent_answer (list of strings)."
)


def question_messages(text: str, settings: NRSettings) -> list[dict[str, str]]:
    return _messages(QUESTION_SYSTEM, text, settings, label="Text")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    inner = text[i + 1 : j].strip()
                    if inner:
                        return inner
                    break
        start = text.rfind("\\boxed{", 0, start)
    return None


# Why the question stage drops a row, in the order the checks run (the reference's order). The
# paper's Table 7 has one row for this stage, `filtered_by_no_boxed_answer`; the detail is kept.
NO_QUESTION, NO_ANSWER, QUESTION_NOT_JSON = "no_question", "no_answer", "question_not_json"


def parse_question(reply: str) -> tuple[dict[str, Any] | None, str | None]:
    """(QA row, None) or (None, why): the last JSON object with the keys asked for, a non-empty
    question, a non-empty step list whose last step has a boxed answer."""
    found = [v for v in _json_objects(reply) if isinstance(v, dict) and "exam_question" in v]
    if not found:
        return None, QUESTION_NOT_JSON
    obj = found[-1]
    question = obj.get("exam_question")
    if not isinstance(question, str) or not question.strip():
        return None, NO_QUESTION
    steps = obj.get("independent_answer")
    if isinstance(steps, str):
        steps = [steps]
    if not isinstance(steps, list) or not steps:
        return None, NO_ANSWER
    steps = [str(s) for s in steps]
    boxed = last_boxed(steps[-1])
    if boxed is None:
        return None, "no_boxed_answer"
    return {
        "question": question.strip(),
        "category": str(obj.get("question_category") or ""),
        "extracted_answer": str(obj.get("extracted_answer") or ""),
        "solution": "\n".join(steps),
        "boxed_answer": boxed,
    }, None


# ------------------------------------------------------------------------- decisions, one per stage


@dataclass
class StageResult:
    """One stage's outcome: its LLM reply (if any), usage, whether the row goes on, and why not."""

    stage: str
    keep: bool
    reason: str | None = None
    content: str = ""
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    meta: dict[str, Any] = field(default_factory=dict)

    def turn(self) -> Turn:
        u = Usage(self.usage.get("prompt_tokens", 0), self.usage.get("completion_tokens", 0))
        return Turn(self.stage, self.content, u, {**self.meta, "keep": self.keep, "reason": self.reason})


# An LLM call as both systems make it: (stage, messages, sampling body, seed) -> OpenAI response.
LLMCall = Callable[[str, list[dict[str, str]], dict[str, Any], int], Awaitable[Mapping[str, Any]]]


def request_seed(doc: str, stage: str, trial: int = 0) -> int:
    """Per-request sampling seed from the document and stage: the same in both systems."""
    return derived_seed(doc, trial, stage)


def _usage(response: Mapping[str, Any]) -> dict[str, int]:
    u = response.get("usage") or {}
    return {
        "prompt_tokens": int(u.get("prompt_tokens") or 0),
        "completion_tokens": int(u.get("completion_tokens") or 0),
    }


async def filter_stage(
    text: str, key: str, call: LLMCall, settings: NRSettings, trial: int = 0, row: Mapping[str, Any] | None = None
) -> StageResult:
    english, lang = is_english(text, row)
    if not english:
        return StageResult("filter", False, ENGLISH, meta=lang)
    resp = await call(
        "filter", classifier_messages(text, settings), settings.filter.body(), request_seed(key, "filter", trial)
    )
    reply = message_text(resp)
    verdict = parse_yes_no(reply)
    meta = {**lang, "label": None if verdict is None else ("Yes" if verdict else "No")}
    return StageResult("filter", bool(verdict), None if verdict else CLASSIFIER, reply, _usage(resp), meta)


async def score_stage(
    text: str, key: str, call: LLMCall, settings: NRSettings, trial: int = 0, row: Mapping[str, Any] | None = None
) -> StageResult:
    resp = await call("score", score_messages(text, settings), settings.score.body(), request_seed(key, "score", trial))
    reply = message_text(resp)
    try:
        scores = parse_scores(reply)
    except ScoreParseError as e:
        return StageResult(
            "score", False, SCORE, reply, _usage(resp), {"scores": None, "detail": f"score_not_json: {e}"}
        )
    keep = scores_pass(scores, settings.score_threshold)
    return StageResult("score", keep, None if keep else SCORE, reply, _usage(resp), {"scores": scores})


async def question_stage(
    text: str, key: str, call: LLMCall, settings: NRSettings, trial: int = 0, row: Mapping[str, Any] | None = None
) -> StageResult:
    resp = await call(
        "question", question_messages(text, settings), settings.question.body(), request_seed(key, "question", trial)
    )
    reply = message_text(resp)
    qa, why = parse_question(reply)
    return StageResult(
        "question", qa is not None, None if qa else NO_BOXED, reply, _usage(resp), {"qa": qa, "detail": why}
    )


STAGE_FUNCTIONS = {"filter": filter_stage, "score": score_stage, "question": question_stage}


async def curate(row: Any, key: str, call: LLMCall, settings: NRSettings, trial: int = 0) -> list[StageResult]:
    """All stages of one document in order, stopping at the first drop (the batch baseline's path)."""
    text = text_of(row, where=key)
    results: list[StageResult] = []
    for stage in STAGES:
        res = await STAGE_FUNCTIONS[stage](text, key, call, settings, trial, row)
        results.append(res)
        if not res.keep:
            break
    return results


# ------------------------------------------------------------------------------ reading outputs


def outcome_of(row: Mapping[str, Any]) -> str | None:
    """`success` or the drop reason of a finished output row (either system); None for a failed row."""
    if row.get("status") not in (None, "done"):
        return None
    turns = [t for t in row.get("turns") or [] if t.get("role") in STAGES]
    if not turns:
        return None
    last = turns[-1].get("meta") or {}
    if not last.get("keep"):
        return str(last.get("reason"))
    return SUCCESS if turns[-1].get("role") == "question" else None


def qa_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    for t in row.get("turns") or []:
        if t.get("role") == "question" and (t.get("meta") or {}).get("qa"):
            return dict(t["meta"]["qa"])
    return None


def funnel(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Table 7 from output rows: documents per outcome and their share of all documents.

    Failed rows (bad documents, errors) are counted apart and are not in the denominator of the
    shares, which describe the model's decisions."""
    counts: Counter[str] = Counter()
    failed = 0
    for row in rows:
        out = outcome_of(row)
        if out is None:
            failed += 1
        else:
            counts[out] += 1
    decided = sum(counts.values())
    return {
        "documents": decided + failed,
        "decided": decided,
        "failed": failed,
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "percent": {k: 100.0 * counts.get(k, 0) / decided if decided else 0.0 for k in OUTCOMES},
    }


def quality(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    f = funnel(rows)
    qa = [q for q in (qa_of(r) for r in rows) if q]
    return {
        **f,
        "questions": len(qa),
        "survival_rate": f["counts"][SUCCESS] / f["decided"] if f["decided"] else 0.0,
        "questions_with_text": sum(1 for q in qa if q.get("question")),
    }


def decisions(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str | None, str | None]]:
    """task id -> (outcome, boxed answer): what the two systems must agree on, row for row."""
    out = {}
    for row in rows:
        qa = qa_of(row)
        out[str(row.get("task_id"))] = (outcome_of(row), qa.get("boxed_answer") if qa else None)
    return out


# ------------------------------------------------------------------------------------ P2P roles


class _NRStage(LLMAgent):
    """One stage as a role. Config: `urls`, `model`, `settings` (NRSettings.to_dict()), `stage`."""

    stage = ""

    async def setup(self) -> None:
        await super().setup()
        self.settings = NRSettings.from_dict(self.config.get("settings"))

    async def _call(
        self, stage: str, messages: list[dict[str, str]], body: dict[str, Any], seed: int
    ) -> Mapping[str, Any]:
        return await self.llm.chat(messages, role=stage, seed=seed, **body)

    async def step(self, message: Message) -> Message:
        row = await self.resolve(message.row)
        loc = message.route.get("location")
        text = text_of(row, where=f"{message.task_id} (input {loc})" if loc else message.task_id)
        res = await STAGE_FUNCTIONS[self.stage](text, message.task_id, self._call, self.settings, message.trial, row)
        message.turns.append(res.turn())
        message.route["stop"] = not res.keep or self.stage == "question"
        return message


class FilterAgent(_NRStage):
    stage = "filter"

    async def setup(self) -> None:
        await super().setup()
        load_language_model()  # startup, not the first document's time


class ScoreAgent(_NRStage):
    stage = "score"


class QuestionAgent(_NRStage):
    stage = "question"


def _dropped(m: Message) -> bool:
    return bool(m.route.get("stop"))


NATURAL_REASONING = register_workflow(
    Graph(
        WORKFLOW,
        start="filter",
        edges={
            "filter": [Edge(None, _dropped), Edge("score")],
            "score": [Edge(None, _dropped), Edge("question")],
            "question": [Edge(None)],
        },
        max_steps=10,
    )
)


@dataclass
class NRDeployment:
    """The two model pools and how many actors each role gets (Table 8's agent parallelism)."""

    small_urls: Sequence[str]
    large_urls: Sequence[str]
    small_model: str | None = None
    large_model: str | None = None
    settings: NRSettings = field(default_factory=NRSettings)
    instances: int = 1
    max_concurrency: int = 1024

    def roles(self) -> list[RoleSpec]:
        small = llm_role_config(self.small_urls, self.small_model, self.settings, self.max_concurrency)
        large = llm_role_config(self.large_urls, self.large_model, self.settings, self.max_concurrency)
        n = self.instances
        return [
            RoleSpec("filter", FilterAgent, small, num_instances=n, max_concurrency=100_000),
            RoleSpec("score", ScoreAgent, large, num_instances=n, max_concurrency=100_000),
            RoleSpec("question", QuestionAgent, large, num_instances=n, max_concurrency=100_000),
        ]


__all__ = [
    "AXES",
    "DROP_REASONS",
    "NATURAL_REASONING",
    "OUTCOMES",
    "WORKFLOW",
    "BadDocument",
    "FilterAgent",
    "NRDeployment",
    "NRSettings",
    "QuestionAgent",
    "ScoreAgent",
    "StageResult",
    "curate",
    "decisions",
    "funnel",
    "outcome_of",
    "parse_question",
    "parse_scores",
    "parse_yes_no",
    "quality",
    "text_of",
]
