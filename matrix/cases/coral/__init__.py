"""Coral (Collaborative Reasoner) on MMLU-Pro: two agents discuss a question until they agree.

The protocol follows the public Coral reference (facebookresearch/collaborative-reasoner) and the
Matrix paper's setup (arXiv 2511.21686, section 5.1); prompt wording here is our own.

- The student opens with a templated message, ``I'm trying to solve this problem: "<question>"``,
  then ``And the choices are:`` and one ``(A) option`` line per choice. No model writes it.
- The teacher answers first; then they alternate. Both get the same system prompt, which asks
  them to end with ``The correct answer is (X)``.
- Chat roles are assigned backwards from the last message: the last one is ``user`` and the
  speaking agent sees its own turns as ``assistant`` (so the first message after the system prompt
  may be an assistant message, as in Coral).
- After each dialogue turn an extractor call (given the question, the options and that one turn)
  returns a letter ``(X)`` or "not sure yet"; "not sure yet" wins over any letter, otherwise the
  first ``(X)`` counts, otherwise the extraction is invalid.
- A matcher (a rule) stops the conversation when this turn's answer and the partner's previous
  answer are both valid and equal (agreement), or after `max_turns` dialogue turns (20).

This module holds everything the two systems share: prompts, parsing, decisions, sampling, the
dataset and the quality metrics. The P2P roles are at the bottom; the central controller lives in
`baselines.coral_controller` and calls the same functions. Sampling settings, seeds and interval
statistics come from `matrix.cases.common`, which every case shares; `matrix.cases.coral.sim` is the
simulated engine's behaviour model of these agents (loaded by the sim server, not imported here).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.agent import Agent, RoleSpec
from matrix.cases.common import Sampling, derived_seed, llm_role_config, mean_ci, proportion, two_proportion_p, wilson
from matrix.llm.agent import LLMAgent
from matrix.llm.client import message_text
from matrix.message import ERROR, Message, Turn, Usage
from matrix.workflow import Edge, Graph, register_workflow

WORKFLOW = "coral"
MAX_TURNS = 20
DIALOGUE_ROLES = ("teacher", "student")
NOT_SURE = "not sure yet"

SYSTEM_PROMPT = (
    "You and a partner are solving a reasoning question together.\n"
    "\n"
    "How to work:\n"
    "* Begin on the problem yourself and aim for a complete solution.\n"
    "* When your partner proposes a solution, check every step and point out any mistake plainly.\n"
    "* When your partner questions your work, first consider whether you erred. Fix real mistakes, "
    "but keep your answer if you still believe it is right.\n"
    "* Stay on the original problem and keep moving towards a solution.\n"
    "* Be direct and brief throughout.\n"
    '* State a final answer in the form "The correct answer is (X)", for example "The correct answer is (B)".'
)

EXTRACTOR_SYSTEM = (
    "You read one reply from a conversation about a multiple-choice question and report which option "
    'that reply gives as its final answer. If the reply commits to no option, say "not sure yet".'
)

_LETTER = re.compile(r"\(([A-Z])\)")


# The paper's setup (../shared/paper/paper_setups.csv; fair-matrix's coral resources).
DIALOGUE_SAMPLING = Sampling(temperature=0.2, top_p=0.9, max_tokens=1024)
EXTRACTOR_SAMPLING = Sampling(temperature=0.0, top_p=0.9, max_tokens=32)


@dataclass(frozen=True)
class CoralSettings:
    """What both systems must agree on for a comparison to mean anything."""

    max_turns: int = MAX_TURNS
    dialogue: Sampling = DIALOGUE_SAMPLING
    extractor: Sampling = EXTRACTOR_SAMPLING

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_turns": self.max_turns, "dialogue": self.dialogue.body(), "extractor": self.extractor.body()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CoralSettings:
        if not data:
            return cls()
        return cls(
            max_turns=int(data.get("max_turns", MAX_TURNS)),
            dialogue=Sampling(**{**DIALOGUE_SAMPLING.body(), **dict(data.get("dialogue") or {})}),
            extractor=Sampling(**{**EXTRACTOR_SAMPLING.body(), **dict(data.get("extractor") or {})}),
        )


# ----------------------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    options: tuple[str, ...]
    answer: str  # gold letter
    category: str = ""


def question_of(row: Mapping[str, Any]) -> Question:
    """The question in an input row; a clear error names the row and the missing or bad key."""
    rid = row.get("id", row.get("question_id", "?"))
    if "raw_line" in row:  # an input line that could not be read (see read_mmlu_pro)
        raise ValueError(f"row {rid}: {row.get('error', 'unreadable input line')}")
    for key in ("question", "options", "answer"):
        if key not in row or row[key] in (None, "", []):
            raise ValueError(f"row {rid}: missing {key!r} (a Coral row needs question, options and answer)")
    options = row["options"]
    if not isinstance(options, list | tuple) or not all(isinstance(o, str | int | float) for o in options):
        raise ValueError(f"row {rid}: 'options' must be a list of strings, got {type(options).__name__}")
    if not 2 <= len(options) <= 26:
        raise ValueError(f"row {rid}: 'options' must have 2 to 26 choices, got {len(options)}")
    answer = str(row["answer"]).strip().upper()
    if len(answer) != 1 or not "A" <= answer <= chr(64 + len(options)):
        raise ValueError(f"row {rid}: 'answer' must be a letter A..{chr(64 + len(options))}, got {row['answer']!r}")
    opts = tuple(str(o) for o in options)
    return Question(str(rid), str(row["question"]), opts, answer, str(row.get("category", "")))


def options_block(q: Question) -> str:
    return "\n".join(f"({chr(65 + i)}) {opt}" for i, opt in enumerate(q.options))


def opening(q: Question) -> str:
    """The student's first message: the question and the lettered choices (templated, no model)."""
    return f'I\'m trying to solve this problem: "{q.question}"\nAnd the choices are:\n{options_block(q)}'


def dialogue(turns: Sequence[Turn]) -> list[Turn]:
    return [t for t in turns if t.role in DIALOGUE_ROLES]


def next_speaker(turns: Sequence[Turn]) -> str:
    """The teacher answers the student's opening; then they alternate."""
    said = dialogue(turns)
    return "student" if said and said[-1].role == "teacher" else "teacher"


def dialogue_messages(q: Question, said: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The chat for the next speaker: system prompt, then the conversation (opening first) with
    roles assigned backwards from the last message, which is always the partner's ("user")."""
    texts = [opening(q), *(text for _, text in said)]
    n = len(texts)
    chat = [{"role": "system", "content": SYSTEM_PROMPT}]
    chat += [{"role": "user" if (n - i) % 2 == 1 else "assistant", "content": t} for i, t in enumerate(texts)]
    return chat


def extraction_messages(q: Question, reply: str) -> list[dict[str, str]]:
    user = (
        f"**The question:**\n{q.question}\n\n**The options:**\n{options_block(q)}\n\n"
        f"**The reply to read:**\n\n{reply}\n\n"
        f'**Answer with the option in ([A-Z]) form, or say "{NOT_SURE}".**'
    )
    return [{"role": "system", "content": EXTRACTOR_SYSTEM}, {"role": "user", "content": user}]


def parse_extraction(text: str | None) -> str | None:
    """The letter an extractor reply names, or None ("not sure yet", or no `(X)` at all)."""
    if not text or NOT_SURE in text.lower():
        return None
    m = _LETTER.search(text)
    return m.group(1) if m else None


def request_seed(task_id: str, trial: int, turn: int, kind: str) -> int:
    """A per-request sampling seed, the same in both systems, so the same task samples alike."""
    return derived_seed(task_id, trial, turn, kind)


@dataclass(frozen=True)
class Verdict:
    agreed: bool
    stop: bool
    reason: str  # "agree", "continue" or "max_turns"


def verdict(answers: Sequence[str | None], max_turns: int) -> Verdict:
    """After a dialogue turn: `answers` holds the extracted answer of every dialogue turn so far."""
    if len(answers) >= 2 and answers[-1] is not None and answers[-1] == answers[-2]:
        return Verdict(True, True, "agree")
    if len(answers) >= max_turns:
        return Verdict(False, True, "max_turns")
    return Verdict(False, False, "continue")


def extractor_turn(text: str, usage: Usage, of_turn: int) -> Turn:
    return Turn("extractor", text, usage, {"answer": parse_extraction(text), "of_turn": of_turn})


def matcher_turn(v: Verdict) -> Turn:
    return Turn("matcher", v.reason, meta={"agreed": v.agreed, "stop": v.stop})


def answers_so_far(turns: Sequence[Turn]) -> list[str | None]:
    return [t.meta.get("answer") for t in turns if t.role == "extractor"]


# ---------------------------------------------------------------------------------------- quality


@dataclass
class Outcome:
    """One conversation's result, computed from its output row alone (both systems alike)."""

    task_id: str
    error: bool
    agreed: bool
    answer: str | None
    correct: bool
    any_turn_correct: bool
    turns: int
    extractions: int
    valid: int


def outcome(row: Mapping[str, Any]) -> Outcome:
    gold = str((row.get("row") or {}).get("answer", "")).strip().upper()
    turns = row.get("turns") or []
    answers = [(t.get("meta") or {}).get("answer") for t in turns if t.get("role") == "extractor"]
    agreed = any((t.get("meta") or {}).get("agreed") for t in turns if t.get("role") == "matcher")
    answer = answers[-1] if agreed and answers else None
    return Outcome(
        task_id=str(row.get("task_id")),
        error=row.get("status") == ERROR,
        agreed=agreed,
        answer=answer,
        correct=agreed and answer == gold,
        any_turn_correct=any(a == gold for a in answers),
        turns=sum(1 for t in turns if t.get("role") in DIALOGUE_ROLES),
        extractions=len(answers),
        valid=sum(a is not None for a in answers),
    )


def quality(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Coral's quality metrics over output rows. Agreement correctness (the headline) counts a
    conversation as correct when it ended in agreement on the gold letter; conversations that
    never agreed, and conversation errors, count as not correct."""
    outs = [outcome(r) for r in rows]
    n = len(outs)
    ok = [o for o in outs if not o.error]
    turns = [o.turns for o in ok]
    mean_turns, lo, hi = mean_ci(turns) if turns else (0.0, 0.0, 0.0)
    extractions = sum(o.extractions for o in ok)
    return {
        "conversations": n,
        "agreement_correctness": proportion(sum(o.correct for o in outs), n),
        "agreement_rate": proportion(sum(o.agreed for o in outs), n),
        "valid_answer_rate": proportion(sum(o.valid for o in ok), extractions),
        "any_turn_correct": proportion(sum(o.any_turn_correct for o in outs), n),
        "mean_turns": {"value": mean_turns, "n": len(turns), "ci95": [lo, hi]},
        "conversation_errors": proportion(sum(o.error for o in outs), n),
    }


# ------------------------------------------------------------------------------------------- data

MMLU_PRO_HUB = "TIGER-Lab/MMLU-Pro"


def coral_row(raw: Mapping[str, Any], index: int) -> dict[str, Any]:
    """An MMLU-Pro record (hub or file) as a Coral input row; other fields are dropped."""
    qid = raw.get("question_id", raw.get("id", index))
    out = {
        "id": str(qid),
        "question": raw.get("question"),
        "options": raw.get("options"),
        "answer": raw.get("answer"),
        "category": raw.get("category", ""),
    }
    return out


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        yield from fh


def read_mmlu_pro(path: str | Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Coral rows from a local MMLU-Pro JSONL (or .jsonl.gz). A line that is not JSON becomes a row
    carrying its location and text, so that the run turns it into an error row instead of losing it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MMLU-Pro file not found: {path}")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(_open_text(path), 1):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append({"id": f"{path.name}:{lineno}", "raw_line": line[:2000], "error": f"bad JSON: {exc}"})
            continue
        rows.append(coral_row(raw, lineno) if isinstance(raw, dict) else {"id": f"{path.name}:{lineno}"})
    return rows


def load_hub(name: str = MMLU_PRO_HUB, *, split: str = "test", limit: int | None = None) -> list[dict[str, Any]]:
    """MMLU-Pro from the Hugging Face hub (online), a local data folder or a `save_to_disk` folder,
    streamed (`matrix.sources.hf_stream`): only the first `limit` records are read. Needs the hf extra."""
    from itertools import islice

    from matrix.sources import hf_stream

    return [coral_row(raw, i) for i, raw in enumerate(islice(hf_stream(name, split), limit))]


_UNITS = (("metres", 1), ("centimetres", 100), ("millimetres", 1000))


def generated_questions(n: int, *, seed: int = 0, num_options: int = 10) -> list[dict[str, Any]]:
    """Offline stand-in for MMLU-Pro: arithmetic and unit questions with `num_options` choices,
    reproducible from `seed`. Used only when no dataset file or hub is given; labelled `generated`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(12, 99), rng.randint(12, 99)
            question, gold = f"What is {a} multiplied by {b}?", a * b
        elif kind == 1:
            a, b, c = rng.randint(100, 999), rng.randint(10, 99), rng.randint(2, 9)
            question, gold = f"What is ({a} + {b}) minus {c} times {b}?", a + b - c * b
        else:
            m = rng.randint(2, 40)
            unit, factor = _UNITS[rng.randrange(1, 3)]
            question, gold = f"A rope is {m} metres long. How long is it in {unit}?", m * factor
        wrong: set[int] = set()
        while len(wrong) < num_options - 1:
            cand = gold + rng.choice([-1, 1]) * rng.randint(1, max(10, abs(gold) // 5))
            if cand != gold:
                wrong.add(cand)
        options = [gold, *wrong]
        rng.shuffle(options)
        rows.append(
            {
                "id": f"gen-{i}",
                "question": question,
                "options": [str(o) for o in options],
                "answer": chr(65 + options.index(gold)),
                "category": "generated",
            }
        )
    return rows


def load_questions(source: str | Path | None, *, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Coral rows from `source`: a local MMLU-Pro .jsonl/.jsonl.gz path, `hf://TIGER-Lab/MMLU-Pro`
    (online), or None / "generated" for the offline generated set (needs `limit`)."""
    if source is None or str(source) == "generated":
        return generated_questions(limit or 100, seed=seed)
    text = str(source)
    if text.startswith("hf://"):
        return load_hub(text.removeprefix("hf://"), limit=limit)
    return read_mmlu_pro(text, limit=limit)


# ------------------------------------------------------------------------------------ P2P roles


def _settings(config: Mapping[str, Any]) -> CoralSettings:
    return CoralSettings.from_dict(config.get("settings"))


class _CoralLLM(LLMAgent):
    """Shared setup of the LLM roles: `urls`, `model`, `settings` (CoralSettings.to_dict())."""

    async def setup(self) -> None:
        await super().setup()
        self.settings = _settings(self.config)


class CoralDialogue(_CoralLLM):
    """Teacher or student: one dialogue turn from the conversation so far."""

    async def step(self, message: Message) -> Message:
        q = question_of(await self.resolve(message.row))
        said = [(r, str(c)) for r, c in await self.history(message) if r in DIALOGUE_ROLES]
        turn_no = len(said) + 1
        reply = await self.llm.chat(
            dialogue_messages(q, said),
            role=self.role,
            sticky_key=message.task_id,  # one conversation, one replica: its prefix stays cached
            seed=request_seed(message.task_id, message.trial, turn_no, "dialogue"),
            **self.settings.dialogue.body(),
        )
        usage = Usage()
        usage.add(reply.get("usage"))
        message.turns.append(Turn(self.role, message_text(reply), usage))
        return message


class CoralExtractor(_CoralLLM):
    """Reads the last dialogue turn and names the option it commits to (or none)."""

    async def step(self, message: Message) -> Message:
        q = question_of(await self.resolve(message.row))
        said = dialogue(message.turns)
        text = str(await self.resolve(said[-1].content))
        reply = await self.llm.chat(
            extraction_messages(q, text),
            role="extractor",
            sticky_key=message.task_id,
            seed=request_seed(message.task_id, message.trial, len(said), "extract"),
            **self.settings.extractor.body(),
        )
        usage = Usage()
        usage.add(reply.get("usage"))
        message.turns.append(extractor_turn(message_text(reply), usage, len(said)))
        return message


class CoralMatcher(Agent):
    """The stop rule: agreement of this turn and the partner's previous one, or the turn limit."""

    async def step(self, message: Message) -> Message:
        v = verdict(answers_so_far(message.turns), _settings(self.config).max_turns)
        message.turns.append(matcher_turn(v))
        message.route["stop"] = v.stop
        return message


def _stop(m: Message) -> bool:
    return bool(m.route.get("stop"))


def _student_next(m: Message) -> bool:
    return next_speaker(m.turns) == "student"


CORAL = register_workflow(
    Graph(
        WORKFLOW,
        start="teacher",
        edges={
            "teacher": [Edge("extractor")],
            "student": [Edge("extractor")],
            "extractor": [Edge("matcher")],
            "matcher": [Edge(None, _stop), Edge("student", _student_next), Edge("teacher")],
        },
        max_steps=100_000,  # the matcher's max_turns ends a conversation; this only stops a broken graph
    )
)


@dataclass
class CoralDeployment:
    """Where the models are and how many actors each role gets."""

    urls: Sequence[str]
    model: str | None = None
    settings: CoralSettings = field(default_factory=CoralSettings)
    instances: int = 1
    max_concurrency: int = 256

    def roles(self) -> list[RoleSpec]:
        llm = llm_role_config(self.urls, self.model, self.settings, self.max_concurrency)
        return [
            RoleSpec("teacher", CoralDialogue, llm, num_instances=self.instances),
            RoleSpec("student", CoralDialogue, llm, num_instances=self.instances),
            RoleSpec("extractor", CoralExtractor, llm, num_instances=self.instances),
            RoleSpec("matcher", CoralMatcher, {"settings": self.settings.to_dict()}, num_instances=self.instances),
        ]


__all__ = [
    "CORAL",
    "DIALOGUE_ROLES",
    "DIALOGUE_SAMPLING",
    "EXTRACTOR_SAMPLING",
    "EXTRACTOR_SYSTEM",
    "MAX_TURNS",
    "MMLU_PRO_HUB",
    "NOT_SURE",
    "SYSTEM_PROMPT",
    "WORKFLOW",
    "CoralDeployment",
    "CoralDialogue",
    "CoralExtractor",
    "CoralMatcher",
    "CoralSettings",
    "Outcome",
    "Question",
    "Sampling",
    "Verdict",
    "answers_so_far",
    "coral_row",
    "dialogue",
    "dialogue_messages",
    "extraction_messages",
    "extractor_turn",
    "generated_questions",
    "load_hub",
    "load_questions",
    "matcher_turn",
    "next_speaker",
    "opening",
    "options_block",
    "outcome",
    "parse_extraction",
    "quality",
    "question_of",
    "read_mmlu_pro",
    "request_seed",
    "two_proportion_p",
    "verdict",
    "wilson",
]
