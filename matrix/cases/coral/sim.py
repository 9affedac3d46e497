"""A behaviour model for the simulated engine that plays Coral's agents and its extractor.

Register name ``coral`` (import path ``matrix.cases.coral.sim:CoralBehaviour``). Like every
behaviour model it sees only the request body and the dataset it was configured with, and the same
(request, seed) always gives the same reply.

Extraction requests (system prompt ``coral.EXTRACTOR_SYSTEM``) are answered like a capable small
extractor: ``(X)`` when the reply to read says "The correct answer is (X)" (its last such phrase),
else "not sure yet".

Dialogue requests (system prompt ``coral.SYSTEM_PROMPT``) are answered by a simple model of two
copies of Llama-3.1-8B-Instruct talking, grounded in that model's real MMLU-Pro answers when a
dataset is configured (``../shared/data/mmlu_pro/mmlu_pro_test_llama31_8b_instruct.jsonl.gz``):

- The question is recovered from the templated opening and looked up by its normalised text and
  options. Its real chain-of-thought answer gives the agent's initial belief (the real prediction)
  and its reply length (the real answer's token count).
- Each turn the agent starts from its own last stated answer (the initial belief on its first turn).
  If the partner's last message states a different answer, it adopts the partner's answer with
  probability ``persuade``. Then, with probability ``explore``, it names a different option drawn
  uniformly (sampling noise: two agents sharing one initial belief would otherwise always agree at
  once). Its own previous answers are read from the chat history: ``assistant`` messages after the
  opening are its own turns, ``user`` messages its partner's.
- Length: the real answer's token count, times ``max(0.5, 0.8 ** (turn - 1))`` (replies get shorter
  as a conversation goes on; ``turn`` counts every dialogue turn so far, both agents), times a
  log-normal jitter (sigma 0.25), clipped to [``min_tokens``, ``max_tokens``]. The text is filler
  with a short opening sentence and ends with "The correct answer is (X)."

A question the dataset does not hold (the offline generated set, or no dataset) is not grounded:
its initial belief is an option drawn uniformly from a hash of the question and options (so both
agents share it, as they share a real prediction), and its base length is log-normal around 80
tokens (the real answers' median), also from that hash. The gold answer is never read.

Other requests (neither system prompt) get the `generic` behaviour's filler.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.cases.common import folded, stable_hash
from matrix.cases.coral import EXTRACTOR_SYSTEM, NOT_SURE, SYSTEM_PROMPT
from matrix.llm.sim.behaviour import GenericBehaviour, Reply, filler_tokens, register_behaviour, request_digest
from matrix.llm.sim.tokens import count_text_tokens

PERSUADE = 0.35
EXPLORE = 0.15
MIN_TOKENS = 16
MAX_TOKENS = 1024  # Coral's dialogue max_tokens (coral.DIALOGUE_SAMPLING)
TURN_DECAY = 0.8  # each later dialogue turn is this much shorter ...
TURN_FLOOR = 0.5  # ... down to this fraction of the first turn's length
LENGTH_SIGMA = 0.25  # log-normal jitter of a turn's length
UNKNOWN_MEDIAN_TOKENS = 80.0  # median token count of the real answers in the MMLU-Pro file
UNKNOWN_SIGMA = 0.8
DEFAULT_OPTIONS = 10  # MMLU-Pro's usual number of choices, for an opening that cannot be parsed

_ANSWER = re.compile(r"the correct answer is[:\s]*\**\s*\(([A-Z])\)", re.IGNORECASE)
_OPENING = re.compile(r"\AI'm trying to solve this problem: \"(?P<q>.*)\"\nAnd the choices are:\n(?P<o>.*)\Z", re.S)
_OPTION = re.compile(r"^\(([A-Z])\) ", re.M)
_REPLY_START = "**The reply to read:**\n\n"
_REPLY_END = "\n\n**Answer with the option"


def _key(question: str, options: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return folded(question), tuple(folded(o) for o in options)


def stated_answer(text: str | None) -> str | None:
    """The letter of the last "The correct answer is (X)" in `text`, or None."""
    found = _ANSWER.findall(text or "")
    return found[-1].upper() if found else None


def _text(content: Any) -> str:
    """A message's text: a plain string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


# ------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Grounding:
    """What the dataset says about one question: the real model's prediction and answer text."""

    pred: str | None
    generated_text: str


class CoralDataset:
    """An index of MMLU-Pro questions with a real model's answers, by normalised question and options."""

    def __init__(self, path: Path, records: dict[tuple[str, tuple[str, ...]], Grounding]) -> None:
        self.path = path
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, question: str, options: Sequence[str]) -> Grounding | None:
        return self._records.get(_key(question, options))

    @classmethod
    def read(cls, path: Path, model_key: str = "llama31_8b_instruct") -> CoralDataset:
        """Read a .jsonl or .jsonl.gz file; the first of several identical questions wins."""
        records: dict[tuple[str, tuple[str, ...]], Grounding] = {}
        for lineno, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from None
            if not isinstance(raw, dict) or not raw.get("question") or not isinstance(raw.get("options"), list):
                continue
            real = raw.get(model_key)
            if not isinstance(real, dict):
                continue  # a plain MMLU-Pro row: nothing to ground the model in
            pred = real.get("pred")
            key = _key(str(raw["question"]), [str(o) for o in raw["options"]])
            grounding = Grounding(
                pred=pred.strip().upper() if isinstance(pred, str) and pred.strip() else None,
                generated_text=str(real.get("generated_text") or ""),
            )
            records.setdefault(key, grounding)
        return cls(path, records)


def _lines(path: Path) -> Iterator[str]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


_CACHE: dict[str, CoralDataset] = {}
_CACHE_LOCK = threading.Lock()


def load_dataset(path: str | Path) -> CoralDataset:
    """The dataset at `path`, read once per process."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"coral behaviour: dataset not found: {path}")
    with _CACHE_LOCK:
        ds = _CACHE.get(str(resolved))
        if ds is None:
            ds = _CACHE[str(resolved)] = CoralDataset.read(resolved)
        return ds


# ----------------------------------------------------------------------------------------- parsing


def parse_opening(text: str) -> tuple[str, list[str]] | None:
    """The question and options of Coral's templated opening, or None if `text` is not one."""
    m = _OPENING.match(text)
    if m is None:
        return None
    block = m.group("o")
    starts = [(x.start(), x.end(), x.group(1)) for x in _OPTION.finditer(block)]
    options: list[str] = []
    for i, (_, end, letter) in enumerate(starts):
        if letter != chr(65 + len(options)):
            continue  # a "(X) " inside an option's own text, not the next option
        nxt = next((s for s, _, lt in starts[i + 1 :] if lt == chr(66 + len(options))), len(block) + 1)
        options.append(block[end : nxt - 1])
    return (m.group("q"), options) if options else None


def _reply_to_read(user: str) -> str:
    start = user.find(_REPLY_START)
    if start < 0:
        return user
    body = user[start + len(_REPLY_START) :]
    end = body.rfind(_REPLY_END)
    return body[:end] if end >= 0 else body


# --------------------------------------------------------------------------------------- behaviour


class CoralBehaviour:
    """Coral's teacher, student and extractor as one behaviour model (see the module docstring).

    `dataset`: a .jsonl(.gz) of MMLU-Pro rows with the real model's answers, or None (no grounding).
    `persuade`: chance of adopting a partner's different stated answer. `explore`: chance of naming
    another option on any turn. `min_tokens`, `max_tokens`: the clip of a dialogue reply's length.
    `length_scale`: multiplies every dialogue reply's length. The real answers we ground in are
    5-shot chain-of-thought completions, shorter than replies in an open two-agent chat; a twin
    that wants the paper's workload sets it from a published tokens-per-trajectory figure (and says so).
    """

    name = "coral"

    def __init__(
        self,
        dataset: str | Path | None = None,
        persuade: float = PERSUADE,
        explore: float = EXPLORE,
        min_tokens: int = MIN_TOKENS,
        max_tokens: int = MAX_TOKENS,
        length_scale: float = 1.0,
    ) -> None:
        if not length_scale > 0:
            raise ValueError(f"coral behaviour: length_scale must be > 0, got {length_scale}")
        if not (0.0 <= persuade <= 1.0 and 0.0 <= explore <= 1.0):
            raise ValueError(f"coral behaviour: persuade and explore are probabilities, got {persuade}, {explore}")
        if not 1 <= min_tokens <= max_tokens or max_tokens < MIN_TOKENS:
            raise ValueError(
                f"coral behaviour: need 1 <= min_tokens <= max_tokens and max_tokens >= {MIN_TOKENS}; "
                f"got min_tokens={min_tokens}, max_tokens={max_tokens}"
            )
        self.dataset = load_dataset(dataset) if dataset is not None else None
        self.persuade = float(persuade)
        self.explore = float(explore)
        self.min_tokens = int(min_tokens)
        self.max_tokens = int(max_tokens)
        self.length_scale = float(length_scale)
        self._generic = GenericBehaviour()

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply:
        messages = [m for m in request.get("messages") or [] if isinstance(m, Mapping)]
        system = _text(messages[0].get("content")) if messages and messages[0].get("role") == "system" else None
        if system == EXTRACTOR_SYSTEM:
            user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
            return self._extract(user)
        if system == SYSTEM_PROMPT and len(messages) >= 2:
            return self._dialogue(messages[1:], request, seed)
        return self._generic.reply(request, seed=seed)

    def _extract(self, user: str) -> Reply:
        letter = stated_answer(_reply_to_read(user))
        text = f"({letter})" if letter else NOT_SURE
        return Reply(text, count_text_tokens(text), "stop")

    def _dialogue(self, chat: Sequence[Mapping[str, Any]], request: Mapping[str, Any], seed: int) -> Reply:
        rng = random.Random(request_digest(request, seed))
        u_persuade, u_explore, jitter = rng.random(), rng.random(), rng.gauss(0.0, LENGTH_SIGMA)
        opening = _text(chat[0].get("content"))
        parsed = parse_opening(opening)
        question, options = parsed if parsed else (opening, [])
        letters = [chr(65 + i) for i in range(len(options) or DEFAULT_OPTIONS)]
        grounding = self.dataset.lookup(question, options) if self.dataset is not None and parsed else None

        # The question's shared starting point: the real prediction, or a hash of what both agents see.
        h = random.Random(stable_hash(question, *options))
        fallback, unknown_len = h.choice(letters), h.lognormvariate(math.log(UNKNOWN_MEDIAN_TOKENS), UNKNOWN_SIGMA)
        if grounding is not None:
            belief = grounding.pred if grounding.pred in letters else fallback
            base = float(max(1, count_text_tokens(grounding.generated_text)))
        else:
            belief, base = fallback, unknown_len

        turns = chat[1:]
        own = [stated_answer(_text(m.get("content"))) for m in turns if m.get("role") == "assistant"]
        own_last = next((a for a in reversed(own) if a in letters), None)
        partner = stated_answer(_text(turns[-1].get("content"))) if turns and turns[-1].get("role") == "user" else None
        partner = partner if partner in letters else None

        previous = own_last or belief
        answer, switched = previous, False
        if partner is not None and partner != previous and u_persuade < self.persuade:
            answer, switched = partner, True
        if u_explore < self.explore and len(letters) > 1:
            others = [x for x in letters if x != answer]
            answer = others[rng.randrange(len(others))]

        if not turns:
            head = "Let me work through this problem step by step."
        elif switched and answer == partner:
            head = "You are right, I made a mistake there."
        elif partner is not None and answer == partner:
            head = "I agree with your reasoning."
        elif partner is not None:
            head = "I do not think that is right; let me check again."
        else:
            head = "Let me look at this again."
        turn_no = len(turns) + 1
        factor = max(TURN_FLOOR, TURN_DECAY ** (turn_no - 1))
        n = round(base * self.length_scale * factor * math.exp(jitter))
        n = min(max(n, self.min_tokens), self.max_tokens)
        tail = f"\n\nThe correct answer is ({answer})."
        room = n - count_text_tokens(head) - count_text_tokens(tail) - 1
        text = f"{head} {filler_tokens(rng, room)}{tail}" if room >= 1 else f"{filler_tokens(rng, 1)}{tail}"
        return Reply(text, count_text_tokens(text), "stop")


register_behaviour("coral", CoralBehaviour)

__all__ = ["CoralBehaviour", "CoralDataset", "Grounding", "load_dataset", "parse_opening", "stated_answer"]
