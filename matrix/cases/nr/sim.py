"""A behaviour model for the simulated engine that plays NaturalReasoning's classifier, scorer and question writer.

Register name ``natural_reasoning`` (import path ``matrix.cases.nr.sim:NRBehaviour``). Like every
behaviour model it reads only the request body and the seed, and the same (request, seed) always
gives the same reply. The stage is told by the system message (``matrix.cases.nr.CLASSIFIER_SYSTEM``,
``SCORE_SYSTEM`` or ``QUESTION_SYSTEM``); the passage is the user message. Requests whose system
message is none of the three get the `generic` behaviour's filler (a warm-up or health probe must
not fail a server); `stage_of` tells a caller which stage a request is, or None.

Calibration: the paper's Table 7 funnel
---------------------------------------
Of all documents, 3.68% are dropped by the English check, 90.24% by the classifier, 0.44% by the
score, 0.19% for having no boxed answer, and 5.45% survive. The English check is the language
identifier, not a model, so the model stages see 96.32% of the documents and each stage's rate is
conditional on reaching it:

- classifier Yes: (100 - 3.68 - 90.24) / 96.32 = 6.08 / 96.32 = 0.0631 (``yes_rate``);
- score passes: (6.08 - 0.44) / 6.08 = 5.64 / 6.08 = 0.9276 (``score_pass_rate``);
- boxed answer: (5.64 - 0.19) / 5.64 = 5.45 / 5.64 = 0.9663 (``boxed_rate``).

The classifier is grounded in the passage rather than a coin. `reasoning_cues` counts reasoning
words (because, therefore, hence, implies, suppose, prove, solve, equation, step, divided, ...; the
inflections of one word are one *family*) and arithmetic (a number or a one-letter variable, an
operator, a number: "120 / 4 = 30", "x = 4", but not "2-3 minutes" or "1/2 cup"). A passage *has
cues* when it holds at least three hits at a density of at least 1.5 per hundred words, from at
least two families or with at least four pieces of arithmetic (one "because" in a news story, or
"Step 1, Step 2" in a how-to guide, is not reasoning). A passage with cues gets Yes with
probability ``cue_yes_rate`` (0.80 by default), any other with the *plain* rate derived so that the
average is ``yes_rate`` when a share ``reasoning_share`` of the English passages has cues::

    yes_rate = share x cue_yes_rate + (1 - share) x plain_yes_rate
    plain_yes_rate = (0.0631 - 0.065 x 0.80) / (1 - 0.065) = 0.0111 / 0.935 = 0.0119

so a passage with cues is about 67 times likelier to be labelled Yes. The default share, 6.5%, is
the share of worked explanations among the English documents of the document generator's default
mix (`matrix.cases.nr.docs`, ``reasoning_rate``). On 20,000 of its documents (seeds 100 to 103,
measured when this was written) py3langid keeps 19,254 as English; the cues flag 6.35% of those
against 6.37% that are worked explanations (5 disagreements), and the classifier says Yes to 6.13%
of them (6.19% expected at that cue share; 5.90% of all documents against the paper's 6.08%).
On a corpus whose cue share differs the Yes rate moves with it, as a real classifier's would. The
score and question stages are seeded coins at the rates above: their outcome does not depend on
the passage.

Failures look like a model's: a failing score is a well-formed review whose JSON has at least one
criterion at or below zero (the pass rule is every criterion strictly above zero), except a share
``malformed_share`` (10%) of failures whose JSON is cut off, has a word where a number belongs or
is missing; a failing question mostly ends its solution without ``\\boxed{...}``, and a share
``empty_question_share`` (15%) of failures leave ``exam_question`` empty.

Calibration: the paper's Table 9 tokens
---------------------------------------
Table 9 reports 378,591,258 completion tokens for 25,000,000 documents on Matrix (15.1 per
document) and 129,622,944 for 9,300,000 on the batch baseline (13.9). The classifier answers with
one token (Yes or No) on the 96.32% of documents that pass the English check; the scorer runs on
6.08% and the question writer on 5.64%. Means of 100 tokens for a score reply and 130 for a
question reply give::

    0.9632 x 1 + 0.0608 x 100 + 0.0564 x 130 = 0.96 + 6.08 + 7.33 = 14.4 tokens per document,

between the two published figures. Reply lengths are log-normal (``length_sigma`` 0.6) clipped to
[``min_tokens``, ``max_tokens``] and to the request's own ``max_tokens``. A reply cannot be shorter
than its fixed parts (the JSON block: about 37 tokens for a score, which a short reply gives alone
or after a one-line review, and about 50 for a question), so the log-normal's location is solved at
construction so that the clipped mean, with that floor, equals the target (measured over 3,000
replies each: 99.3 and 132.1, so 14.5 tokens per document). ``length_scale`` multiplies both means
(for experiments that want longer generations). Every reply's ``completion_tokens`` is
`count_text_tokens` of its text.

At temperature 0 (the question stage's sampling) a real engine decodes greedily, so the seed does
not change the reply: the reply then depends on the request alone.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from matrix.cases.nr import AXES, AXIS_RANGE, CLASSIFIER_SYSTEM, QUESTION_SYSTEM, SCORE_SYSTEM
from matrix.llm.sim.behaviour import GenericBehaviour, Reply, filler_tokens, register_behaviour, request_digest
from matrix.llm.sim.tokens import content_text, count_text_tokens, token_pieces

# Table 7 of the paper, as percentages of all documents.
TABLE7_ENGLISH_DROP = 3.68
TABLE7_CLASSIFIER_DROP = 90.24
TABLE7_SCORE_DROP = 0.44
TABLE7_NO_BOXED_DROP = 0.19
TABLE7_SUCCESS = 5.45
_REACH_CLASSIFIER = 100.0 - TABLE7_ENGLISH_DROP  # 96.32
_REACH_SCORE = _REACH_CLASSIFIER - TABLE7_CLASSIFIER_DROP  # 6.08
_REACH_QUESTION = _REACH_SCORE - TABLE7_SCORE_DROP  # 5.64

YES_RATE = _REACH_SCORE / _REACH_CLASSIFIER  # 0.0631
SCORE_PASS_RATE = _REACH_QUESTION / _REACH_SCORE  # 0.9276
BOXED_RATE = TABLE7_SUCCESS / _REACH_QUESTION  # 0.9663
CUE_YES_RATE = 0.80
REASONING_SHARE = 0.065
MALFORMED_SHARE = 0.10
EMPTY_QUESTION_SHARE = 0.15
SCORE_TOKENS_MEAN = 100.0
QUESTION_TOKENS_MEAN = 130.0
LENGTH_SIGMA = 0.6
MIN_TOKENS = 20
MAX_TOKENS = 8192

# A passage has reasoning cues when it has at least CUE_MIN_HITS hits at a density of at least
# CUE_MIN_PER_100_WORDS, and either cue words of CUE_MIN_FAMILIES kinds (math counts as one) or
# CUE_MIN_MATH pieces of arithmetic (a worked calculation needs no words to be reasoning).
CUE_MIN_HITS = 3
CUE_MIN_PER_100_WORDS = 1.5
CUE_MIN_FAMILIES = 2
CUE_MIN_MATH = 4

STAGES = ("filter", "score", "question")
_SYSTEMS = {CLASSIFIER_SYSTEM.strip(): "filter", SCORE_SYSTEM.strip(): "score", QUESTION_SYSTEM.strip(): "question"}

# cue word -> its family (inflections of one word are one family)
_CUE_FAMILIES: dict[str, tuple[str, ...]] = {
    "because": ("because",),
    "therefore": ("therefore",),
    "hence": ("hence",),
    "thus": ("thus",),
    "consequently": ("consequently",),
    "imply": ("imply", "implies", "implied", "implying"),
    "solve": ("solve", "solves", "solved", "solving", "solution", "solutions"),
    "prove": ("prove", "proves", "proved", "proven", "proving", "proof", "proofs", "qed", "lemma", "theorem"),
    "suppose": ("suppose", "supposed", "supposing", "assume", "assumed", "assuming", "assumption"),
    "equation": ("equation", "equations", "formula", "formulas"),
    "step": ("step", "steps"),
    "derive": ("derive", "derives", "derived", "deriving", "derivation"),
    "calculate": ("calculate", "calculated", "calculating", "calculation", "compute", "computed", "computing"),
    "arithmetic": ("divide", "divided", "dividing", "multiply", "multiplied", "multiplying", "subtract", "subtracting"),
    "conclude": ("conclude", "concludes", "concluded", "concluding", "follows"),
}
_CUE_WORDS = {word: family for family, words in _CUE_FAMILIES.items() for word in words}
# operators worth a look; `_is_arithmetic` then asks for a number (or a one-letter variable) on the
# left and a number on the right, so "2-3 minutes", "1/2 cup", "<div>" and "?id=5" do not count
_OPERATOR = re.compile(r"[=<>\u2248\u2264\u2265+*\u00d7\u00f7^]| [-/] ")
_WORD = re.compile(r"\w+")

# the frames natural_reasoning puts around a passage; stripped so they never count as its words
_PREFIX = re.compile(r"\A\s*(?:Passage|Text):[ \t]*\n")
_SUFFIXES = ("\n\nDoes this passage contain reasoning?",)
_CLIP_MARK = "\n[...]"

_CATEGORIES = (
    "mathematics",
    "physics",
    "chemistry",
    "biology",
    "computer science",
    "engineering",
    "economics",
    "law",
    "philosophy",
    "other",
)
_QUESTION_TAILS = (
    "What is the final value?",
    "How long does it take?",
    "What is the resulting quantity?",
    "Which option is correct, and why?",
    "What is the minimum number required?",
)
_LABELS = {
    "problem_completeness": "Completeness",
    "problem_complexity": "Complexity",
    "technical_correctness": "Correctness",
    "thinking_and_reasoning": "Reasoning",
}
# the score values a reviewer writes: above zero when passing, at or below zero when failing
_PASS_VALUES: dict[str, tuple[float, ...]] = {
    "problem_completeness": (0.5, 1, 1, 1, 2, 2),
    "problem_complexity": (0.5, 1, 1, 1, 1, 2),
    "technical_correctness": (0.5, 1, 1, 2, 2),
    "thinking_and_reasoning": (1, 1, 2, 2, 2, 3),
}
_FAIL_VALUES: dict[str, tuple[float, ...]] = {
    "problem_completeness": (0,),
    "problem_complexity": (0,),
    "technical_correctness": (0, 0, -1),
    "thinking_and_reasoning": (0, -1, -1),
}


# ---------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CueStats:
    """Reasoning cues in a passage: words, cue hits, distinct cue families (math is one), arithmetic hits."""

    words: int
    hits: int
    families: int
    maths: int = 0

    @property
    def per_100_words(self) -> float:
        return 100.0 * self.hits / self.words if self.words else 0.0

    @property
    def has_cues(self) -> bool:
        return (
            self.hits >= CUE_MIN_HITS
            and self.per_100_words >= CUE_MIN_PER_100_WORDS
            and (self.families >= CUE_MIN_FAMILIES or self.maths >= CUE_MIN_MATH)
        )


def _is_arithmetic(text: str, start: int, end: int) -> bool:
    left = text[max(0, start - 3) : start].rstrip()
    right = text[end : end + 4].lstrip().lstrip("(-")
    if not right[:1].isdigit() or not left:
        return False
    if left[-1].isdigit() or left[-1] == ")":
        return True
    # a one-letter variable: "x = 4", "n = 3" (not "id=5")
    return left[-1].isalpha() and left[-1].isascii() and (len(left) == 1 or not left[-2].isalpha())


def reasoning_cues(text: str) -> CueStats:
    """Count the reasoning cues in `text` (see the module docstring)."""
    words = _WORD.findall(text.lower())
    found = [_CUE_WORDS[w] for w in words if w in _CUE_WORDS]
    maths = sum(1 for m in _OPERATOR.finditer(text) if _is_arithmetic(text, m.start(), m.end()))
    return CueStats(words=len(words), hits=len(found) + maths, families=len(set(found)) + (maths > 0), maths=maths)


def has_reasoning_cues(text: str) -> bool:
    """Whether the classifier treats `text` as reasoning-like (it then says Yes far more often)."""
    return reasoning_cues(text).has_cues


def _messages(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in request.get("messages") or [] if isinstance(m, Mapping)]


def stage_of(request: Mapping[str, Any]) -> str | None:
    """The stage a request is for ("filter", "score" or "question", by its system message), or None."""
    for m in _messages(request):
        if m.get("role") == "system":
            return _SYSTEMS.get(content_text(m.get("content")).strip())
    return None


def passage_of(request: Mapping[str, Any]) -> str:
    """The passage of a stage request: its last user message without the prompt's frame."""
    text = next((content_text(m.get("content")) for m in reversed(_messages(request)) if m.get("role") == "user"), "")
    text = _PREFIX.sub("", text, count=1)
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if text.endswith(_CLIP_MARK):
        text = text[: -len(_CLIP_MARK)]
    return text


# ------------------------------------------------------------------------------------------ lengths


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[min(max(X, lo), hi)] for X log-normal(mu, sigma), 0 < lo <= hi."""
    if sigma <= 0:
        return min(max(math.exp(mu), lo), hi)
    a = (math.log(lo) - mu) / sigma
    b = (math.log(hi) - mu) / sigma
    middle = math.exp(mu + sigma**2 / 2) * (_phi(b - sigma) - _phi(a - sigma))
    return lo * _phi(a) + middle + hi * (1.0 - _phi(b))


def solve_mu(mean: float, sigma: float, lo: float, hi: float) -> float:
    """The log-normal location whose clipped mean is `mean` (the floor or ceiling when out of reach)."""
    if mean <= lo:
        return math.log(lo) - 20.0 * max(sigma, 1.0)
    if mean >= hi:
        return math.log(hi) + 20.0 * max(sigma, 1.0)
    left, right = math.log(lo) - 20.0 * max(sigma, 1.0), math.log(hi) + 1.0
    for _ in range(100):
        mid = (left + right) / 2
        if clipped_lognormal_mean(mid, sigma, lo, hi) < mean:
            left = mid
        else:
            right = mid
    return (left + right) / 2


def _flat_filler(rng: random.Random, n: int) -> str:
    """Filler of exactly `n` tokens on one line (JSON strings, review lines), ending a sentence; "" if n < 2."""
    if n < 2:
        return ""
    atoms = [" " + a if a[:1].isalpha() else a for a in token_pieces(filler_tokens(rng, n + n // 4 + 8)) if a != "\n\n"]
    atoms[0] = atoms[0].lstrip()
    head = atoms[: n - 1]
    if head[-1] == ".":  # end on "again." rather than on a sentence's first word
        return "".join([*head[:-1], " again", "."])
    return "".join([*head, "."])


def _split(rng: random.Random, room: int, parts: int) -> list[int]:
    """`room` tokens cut into `parts` random shares that add up to `room`."""
    if parts <= 0:
        return []
    weights = [0.5 + rng.random() for _ in range(parts)]
    total = sum(weights)
    sizes = [int(room * w / total) for w in weights]
    sizes[-1] += room - sum(sizes)
    return sizes


def _answer(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        return str(rng.randint(2, 999))
    if kind < 0.8:
        return f"\\frac{{{rng.randint(1, 9)}}}{{{rng.randint(10, 99)}}}"
    return f"{rng.randint(2, 99)} {rng.choice(('m/s', 'kg', 'J', 'mol', 'hours', 'dollars'))}"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


# --------------------------------------------------------------------------------------- behaviour


class NRBehaviour:
    """NaturalReasoning's three model stages as one behaviour model (see the module docstring).

    `yes_rate`: the classifier's average Yes rate on the realistic mix; `cue_yes_rate`: its Yes rate
    on passages with reasoning cues; `reasoning_share`: the share of such passages in the mix (the
    plain passages' Yes rate is derived from the three). `score_pass_rate`: chance a score reply
    passes; `malformed_share`: share of failing score replies whose JSON does not parse.
    `boxed_rate`: chance a question reply has a boxed answer; `empty_question_share`: share of the
    failing ones with an empty question instead. `score_tokens_mean`, `question_tokens_mean`,
    `length_sigma`: the log-normal reply lengths, clipped to [`min_tokens`, `max_tokens`];
    `length_scale` multiplies both means.
    """

    name = "natural_reasoning"

    def __init__(
        self,
        yes_rate: float = YES_RATE,
        cue_yes_rate: float = CUE_YES_RATE,
        reasoning_share: float = REASONING_SHARE,
        score_pass_rate: float = SCORE_PASS_RATE,
        malformed_share: float = MALFORMED_SHARE,
        boxed_rate: float = BOXED_RATE,
        empty_question_share: float = EMPTY_QUESTION_SHARE,
        score_tokens_mean: float = SCORE_TOKENS_MEAN,
        question_tokens_mean: float = QUESTION_TOKENS_MEAN,
        length_sigma: float = LENGTH_SIGMA,
        min_tokens: int = MIN_TOKENS,
        max_tokens: int = MAX_TOKENS,
        length_scale: float = 1.0,
    ) -> None:
        rates = {
            "yes_rate": yes_rate,
            "cue_yes_rate": cue_yes_rate,
            "score_pass_rate": score_pass_rate,
            "malformed_share": malformed_share,
            "boxed_rate": boxed_rate,
            "empty_question_share": empty_question_share,
        }
        for key, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"natural_reasoning behaviour: {key} is a probability, got {value}")
        if not 0.0 <= reasoning_share < 1.0:
            raise ValueError(f"natural_reasoning behaviour: reasoning_share must be in [0, 1), got {reasoning_share}")
        plain = (yes_rate - reasoning_share * cue_yes_rate) / (1.0 - reasoning_share)
        if not -1e-12 <= plain <= 1.0:
            raise ValueError(
                f"natural_reasoning behaviour: yes_rate {yes_rate} cannot be reached with cue_yes_rate "
                f"{cue_yes_rate} on a share {reasoning_share} of passages with cues (the plain passages' Yes "
                f"rate would be {plain:.4f}); lower cue_yes_rate or reasoning_share"
            )
        if not (score_tokens_mean > 0 and question_tokens_mean > 0 and length_scale > 0 and length_sigma >= 0):
            raise ValueError(
                "natural_reasoning behaviour: need score_tokens_mean, question_tokens_mean, length_scale > 0 and "
                f"length_sigma >= 0; got {score_tokens_mean}, {question_tokens_mean}, {length_scale}, {length_sigma}"
            )
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(
                f"natural_reasoning behaviour: need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}"
            )
        self.yes_rate = float(yes_rate)
        self.cue_yes_rate = float(cue_yes_rate)
        self.reasoning_share = float(reasoning_share)
        self.plain_yes_rate = max(0.0, plain)
        self.score_pass_rate = float(score_pass_rate)
        self.malformed_share = float(malformed_share)
        self.boxed_rate = float(boxed_rate)
        self.empty_question_share = float(empty_question_share)
        self.score_tokens_mean = float(score_tokens_mean)
        self.question_tokens_mean = float(question_tokens_mean)
        self.length_sigma = float(length_sigma)
        self.min_tokens = int(min_tokens)
        self.max_tokens = int(max_tokens)
        self.length_scale = float(length_scale)
        self._generic = GenericBehaviour()
        # the fixed parts of a typical reply set the floor the log-normal is solved against
        self.score_floor = max(self.min_tokens, count_text_tokens(self._score_text(random.Random(0), 0, "pass")))
        self.question_floor = max(self.min_tokens, count_text_tokens(self._question_text(random.Random(0), 0, "ok")))
        self._mu = {
            "score": self._solve(self.score_tokens_mean, self.score_floor),
            "question": self._solve(self.question_tokens_mean, self.question_floor),
        }

    def _solve(self, mean: float, floor: int) -> float:
        return solve_mu(mean * self.length_scale, self.length_sigma, floor, max(self.max_tokens, floor))

    def yes_probability(self, passage: str) -> float:
        """The classifier's chance of answering Yes on `passage`."""
        return self.cue_yes_rate if has_reasoning_cues(passage) else self.plain_yes_rate

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply:
        stage = stage_of(request)
        if stage is None:
            return self._generic.reply(request, seed=seed)
        greedy = request.get("temperature") == 0
        rng = random.Random(request_digest(request, 0 if greedy else seed))
        if stage == "filter":
            text = "Yes" if rng.random() < self.yes_probability(passage_of(request)) else "No"
            return Reply(text, count_text_tokens(text), "stop")
        u = rng.random()
        if stage == "score":
            if u < self.score_pass_rate:
                kind = "pass"
            else:
                kind = "malformed" if rng.random() < self.malformed_share else "fail"
            text = self._score_text(rng, self._length(rng, "score", request), kind)
        else:
            if u < self.boxed_rate:
                kind = "ok"
            else:
                kind = "no_question" if rng.random() < self.empty_question_share else "no_boxed"
            text = self._question_text(rng, self._length(rng, "question", request), kind)
        return Reply(text, count_text_tokens(text), "stop")

    def _length(self, rng: random.Random, stage: str, request: Mapping[str, Any]) -> int:
        floor = self.score_floor if stage == "score" else self.question_floor
        x = rng.lognormvariate(self._mu[stage], self.length_sigma) if self.length_sigma else math.exp(self._mu[stage])
        n = min(max(round(x), self.min_tokens), self.max_tokens)
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            n = min(n, max(limit, floor))  # the server's apply_limits cuts a reply longer than the limit
        return n

    # ----------------------------------------------------------------------------------- score

    def _score_values(self, rng: random.Random, passed: bool) -> dict[str, int | float]:
        values = {a: _number(rng.choice(_PASS_VALUES[a])) for a in AXES}
        if not passed:
            low = rng.sample(AXES, 1 if rng.random() < 0.7 else 2)
            for axis in low:
                values[axis] = _number(rng.choice(_FAIL_VALUES[axis]))
        # stay inside the ranges natural_reasoning accepts, should they change
        return {a: _number(min(max(float(v), AXIS_RANGE[a][0]), AXIS_RANGE[a][1])) for a, v in values.items()}

    def _score_text(self, rng: random.Random, n: int, kind: str) -> str:
        """A criterion-by-criterion review of about `n` tokens, then the fenced JSON block.

        `kind` is "pass", "fail" (some criterion at or below zero) or "malformed" (not parseable).
        """
        values = self._score_values(rng, kind == "pass")
        malformation = rng.randrange(3) if kind == "malformed" else -1
        if malformation == 0:  # a word where a number belongs
            shown: dict[str, Any] = dict(values)
            shown[rng.choice(AXES)] = "unclear"
            block = "```json\n" + json.dumps(shown) + "\n```"
        elif malformation == 1:  # the block is cut off before its closing brace
            full = json.dumps(values)
            block = "```json\n" + full[: full.rfind(",")] + "\n```"
        elif malformation == 2:  # no block: the scores are only in the prose
            block = "Scores: " + ", ".join(f"{_LABELS[a].lower()} {values[a]:g}" for a in AXES) + "."
        else:
            block = "```json\n" + json.dumps(values) + "\n```"
        heads = [f"{_LABELS[axis]}:" for axis in AXES]
        room = n - count_text_tokens("\n".join(heads) + "\n\n" + block)
        if room < 2 * len(AXES):  # too short for a review per criterion: one line, or the block alone
            line = _flat_filler(rng, n - count_text_tokens("Review:\n\n" + block))
            return f"Review: {line}\n\n{block}" if line else block
        sizes = _split(rng, room, len(AXES))
        lines = [f"{head} {_flat_filler(rng, size)}".rstrip() for head, size in zip(heads, sizes, strict=True)]
        return "\n".join(lines) + "\n\n" + block

    # -------------------------------------------------------------------------------- question

    def _question_text(self, rng: random.Random, n: int, kind: str) -> str:
        """A fenced JSON object with the four keys the question stage asks for, about `n` tokens.

        `kind` is "ok", "no_boxed" (the last step states the answer without a box) or "no_question".
        """
        answer, category, tail = _answer(rng), rng.choice(_CATEGORIES), rng.choice(_QUESTION_TAILS)
        with_extracted = kind == "ok" and rng.random() < 0.5
        boxed = f"Therefore, the final answer is: \\boxed{{{answer}}}."
        final = boxed if kind == "ok" else f"Therefore, the final answer is {answer}."

        def build(question: str, extracted: str, steps: list[str]) -> str:
            obj = {
                "exam_question": question,
                "question_category": "other" if kind == "no_question" else category,
                "extracted_answer": extracted,
                "independent_answer": [*steps, final],
            }
            return "```json\n" + json.dumps(obj) + "\n```"

        question_tail = "" if kind == "no_question" else tail
        extracted_tail = boxed if with_extracted else ""
        room = max(0, n - count_text_tokens(build(question_tail, extracted_tail, [])))
        q_room, e_room, s_room = _split(rng, room, 3)
        if kind == "no_question":
            s_room, q_room = s_room + q_room, 0
        if not with_extracted:
            s_room, e_room = s_room + e_room, 0
        question = f"{_flat_filler(rng, q_room)} {tail}".strip() if kind != "no_question" else ""
        extracted = f"{_flat_filler(rng, e_room)} {extracted_tail}".strip() if with_extracted else ""
        sizes = _split(rng, s_room, min(6, max(1, s_room // 25)))
        steps = [_flat_filler(rng, size) for size in sizes if size > 0]
        return build(question, extracted, steps)


register_behaviour("natural_reasoning", NRBehaviour)

__all__ = [
    "BOXED_RATE",
    "SCORE_PASS_RATE",
    "STAGES",
    "YES_RATE",
    "CueStats",
    "NRBehaviour",
    "clipped_lognormal_mean",
    "has_reasoning_cues",
    "passage_of",
    "reasoning_cues",
    "solve_mu",
    "stage_of",
]
