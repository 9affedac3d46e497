"""The `natural_reasoning` behaviour model of the simulated engine and the two NR profiles (no Ray, no server)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest

from matrix.cases import nr
from matrix.cases.nr import sim as nr_sim
from matrix.cases.nr.sim import NRBehaviour, has_reasoning_cues, passage_of, reasoning_cues, stage_of
from matrix.llm.sim.behaviour import BehaviourModel, GenericBehaviour, Reply, get_behaviour
from matrix.llm.sim.loadgen import RequestSpec, unloaded_latency
from matrix.llm.sim.profile import load_profile
from matrix.llm.sim.tokens import count_text_tokens

SETTINGS = nr.NRSettings()
MESSAGES = {"filter": nr.classifier_messages, "score": nr.score_messages, "question": nr.question_messages}
SAMPLING = {"filter": SETTINGS.filter, "score": SETTINGS.score, "question": SETTINGS.question}

# ---------------------------------------------------------------------------------- test passages

_PLAIN = (
    "The city council met on Tuesday to discuss the new library opening hours.",
    "Our garden chairs are on sale this week, with free delivery on orders over 50 euros.",
    "The museum reopened after a long renovation and now shows a collection of maritime paintings.",
    "Sign up for our newsletter to hear about upcoming events and special offers.",
    "The hotel is a short walk from the old town and has a rooftop restaurant.",
    "Fans lined the streets as the team returned home with the trophy.",
    "The recipe calls for fresh basil, olive oil and a pinch of sea salt.",
    "Tickets for the summer festival go on sale next Friday at noon.",
    "The new model comes in three colours and ships with a charger.",
    "Local farmers expect a good harvest because the spring was mild.",  # a lone cue is not reasoning
    "Click here to read the full terms and conditions of the offer.",
    "The band will play songs from their first two albums on the tour.",
)
_REASONING = (
    "Suppose the tank holds 120 litres and drains at 4 litres per minute.",
    "Then 120 / 4 = 30, so the tank is empty after 30 minutes.",
    "Because the inflow adds 1 litre per minute, the net rate is 4 - 1 = 3.",
    "Therefore the time is 120 / 3 = 40 minutes, which we can check by substitution.",
    "We solve the equation 2x + 6 = 14 step by step: subtracting 6 gives 2x = 8, hence x = 4.",
    "This implies that the second estimate was too low, since the drain never stops.",
    "To prove the claim, assume the opposite and derive a contradiction.",
)


def plain_passage(rng: random.Random, sentences: int = 8) -> str:
    return " ".join(rng.choice(_PLAIN) for _ in range(sentences))


def reasoning_passage(rng: random.Random) -> str:
    """Web text with a worked argument in it: a few plain sentences around several reasoning ones."""
    parts = [rng.choice(_PLAIN) for _ in range(3)] + rng.sample(_REASONING, 4) + [rng.choice(_PLAIN)]
    return " ".join(parts)


def request(stage: str, passage: str) -> dict[str, Any]:
    return {"messages": MESSAGES[stage](passage, SETTINGS), **SAMPLING[stage].body()}


def ask(model: BehaviourModel, stage: str, passage: str, key: str, *, check: bool = True) -> Reply:
    reply = model.reply(request(stage, passage), seed=nr.request_seed(key, stage))
    assert reply.content is not None and reply.finish_reason == "stop"
    if check:  # the token count is the text's (skipped in the bulk runs below, to keep them fast)
        assert reply.completion_tokens == count_text_tokens(reply.content)
    return reply


def binomial_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------- reading


def test_stage_is_told_by_the_system_message_and_the_passage_is_unframed() -> None:
    passage = "Line one.\nLine two: because 2 + 2 = 4."
    for stage in nr_sim.STAGES:
        req = request(stage, passage)
        assert stage_of(req) == stage
        assert passage_of(req) == passage
    assert stage_of({"messages": [{"role": "user", "content": "hello"}]}) is None
    assert stage_of({"messages": [{"role": "system", "content": "You are helpful."}]}) is None
    assert stage_of({"prompt": "Once upon a time"}) is None
    clipped = nr.classifier_messages("x" * 200, nr.NRSettings(max_doc_chars=100))
    assert passage_of({"messages": clipped}) == "x" * 100


def test_cue_detector_needs_several_cues_of_more_than_one_kind() -> None:
    rng = random.Random(1)
    assert has_reasoning_cues(reasoning_passage(rng))
    assert not has_reasoning_cues(plain_passage(rng))
    assert not has_reasoning_cues("It rained because it was cold. " + plain_passage(rng, 4))
    no_cues = " ".join(_PLAIN[:9])
    assert not has_reasoning_cues("Step one. Step two. Step three. " + no_cues)  # one kind of cue
    assert not has_reasoning_cues("Hence 2 + 2 = 4, because. " + no_cues * 3)  # too sparse
    stats = reasoning_cues("Suppose x = 3; therefore 2 * x = 6.")
    assert stats.hits == 4 and stats.families == 3 and stats.has_cues


# ------------------------------------------------------------------------------- determinism


def test_same_request_and_seed_give_the_same_reply() -> None:
    a, b = NRBehaviour(), NRBehaviour()
    passage = reasoning_passage(random.Random(3))
    for stage in nr_sim.STAGES:
        req = request(stage, passage)
        assert a.reply(req, seed=11) == b.reply(req, seed=11) == a.reply(dict(req), seed=11)
    score = request("score", passage)
    assert len({a.reply(score, seed=s).content for s in range(5)}) > 1  # sampled: the seed matters
    question = request("question", passage)  # temperature 0: greedy, the seed does not matter
    assert len({a.reply(question, seed=s).content for s in range(5)}) == 1


# ----------------------------------------------------------------------------------- formats


def test_every_stage_reply_parses_with_the_stage_parsers() -> None:
    model = NRBehaviour(score_pass_rate=0.5, boxed_rate=0.5)  # plenty of failures to look at too
    rng = random.Random(5)
    details: set[str | None] = set()
    outcomes = {"pass": 0, "fail": 0, "malformed": 0}
    for i in range(400):
        passage = reasoning_passage(rng) if i % 2 else plain_passage(rng)
        filt = ask(model, "filter", passage, f"d{i}")
        assert filt.content in ("Yes", "No") and filt.completion_tokens == 1
        assert nr.parse_yes_no(filt.content) is (filt.content == "Yes")

        score = ask(model, "score", passage, f"d{i}").content or ""
        try:
            scores = nr.parse_scores(score)
        except nr.ScoreParseError:
            outcomes["malformed"] += 1
        else:
            for axis, value in scores.items():
                lo, hi = nr.AXIS_RANGE[axis]
                assert lo <= value <= hi
            outcomes["pass" if nr.scores_pass(scores) else "fail"] += 1
            if not nr.scores_pass(scores):
                assert min(scores.values()) <= 0
            assert score.rstrip().endswith("```")

        qa, why = nr.parse_question(ask(model, "question", passage, f"d{i}").content or "")
        details.add(why)
        if qa is not None:
            assert qa["question"] and qa["boxed_answer"] and qa["category"]
    assert all(outcomes.values()), outcomes
    assert outcomes["malformed"] < outcomes["fail"]  # 10% of failures are malformed
    assert details == {None, "no_boxed_answer", nr.NO_QUESTION}


# ------------------------------------------------------------------------------- calibration


@cache
def _measured() -> dict[str, Any]:
    """The three stage rates and the reply lengths over a few thousand synthetic documents."""
    model = NRBehaviour()
    rng = random.Random(7)
    n_docs, n_reasoning = 4000, 260  # 6.5% of English documents are reasoning-like
    flags = [True] * n_reasoning + [False] * (n_docs - n_reasoning)
    yes = {True: 0, False: 0}
    for i, flag in enumerate(flags):
        passage = reasoning_passage(rng) if flag else plain_passage(rng)
        yes[flag] += ask(model, "filter", passage, f"c{i}", check=False).content == "Yes"
    n_stage = 3000
    passed = boxed = 0
    score_tokens, question_tokens = [], []
    for i in range(n_stage):
        passage = f"Document {i}. " + reasoning_passage(rng)
        score = ask(model, "score", passage, f"s{i}", check=False)
        score_tokens.append(score.completion_tokens)
        with contextlib.suppress(nr.ScoreParseError):
            passed += nr.scores_pass(nr.parse_scores(score.content or ""))
        question = ask(model, "question", passage, f"s{i}", check=False)
        question_tokens.append(question.completion_tokens)
        boxed += nr.parse_question(question.content or "")[0] is not None
    return {
        "n_docs": n_docs,
        "n_reasoning": n_reasoning,
        "yes": yes,
        "n_stage": n_stage,
        "pass_rate": passed / n_stage,
        "boxed_rate": boxed / n_stage,
        "score_tokens": statistics.fmean(score_tokens),
        "question_tokens": statistics.fmean(question_tokens),
    }


def test_stage_rates_match_table_7_within_sampling_error() -> None:
    m = _measured()
    model = NRBehaviour()
    assert model.yes_rate == pytest.approx(6.08 / 96.32)
    assert model.plain_yes_rate == pytest.approx((6.08 / 96.32 - 0.065 * 0.8) / 0.935)
    # the Yes count is a sum of two binomials: its variance is the sum of theirs
    n_cue, n_plain = m["n_reasoning"], m["n_docs"] - m["n_reasoning"]
    p_cue, p_plain = model.cue_yes_rate, model.plain_yes_rate
    sd = math.sqrt(n_cue * p_cue * (1 - p_cue) + n_plain * p_plain * (1 - p_plain))
    yes_rate = (m["yes"][True] + m["yes"][False]) / m["n_docs"]
    assert abs(yes_rate - nr_sim.YES_RATE) <= 4 * sd / m["n_docs"], yes_rate
    assert abs(m["pass_rate"] - 5.64 / 6.08) <= binomial_tolerance(5.64 / 6.08, m["n_stage"]), m["pass_rate"]
    assert abs(m["boxed_rate"] - 5.45 / 5.64) <= binomial_tolerance(5.45 / 5.64, m["n_stage"]), m["boxed_rate"]


def test_reasoning_passages_get_yes_far_more_often_than_plain_ones() -> None:
    m = _measured()
    cue_rate = m["yes"][True] / m["n_reasoning"]
    plain_rate = m["yes"][False] / (m["n_docs"] - m["n_reasoning"])
    assert cue_rate > 0.7 and plain_rate < 0.02 and cue_rate > 20 * plain_rate, (cue_rate, plain_rate)


def test_reply_lengths_give_table_9s_tokens_per_document() -> None:
    m = _measured()
    assert m["score_tokens"] == pytest.approx(100, rel=0.05)
    assert m["question_tokens"] == pytest.approx(130, rel=0.05)
    # of all documents: the classifier sees 96.32%, the scorer 6.08%, the question writer 5.64%
    per_doc = 0.9632 * 1 + 0.0608 * m["score_tokens"] + 0.0564 * m["question_tokens"]
    assert 13.9 * 0.97 <= per_doc <= 15.1 * 1.03, per_doc


def test_length_scale_stretches_both_stages() -> None:
    model = NRBehaviour(length_scale=3.0, length_sigma=0.0)
    passage = reasoning_passage(random.Random(2))
    assert ask(model, "score", passage, "x").completion_tokens == pytest.approx(300, rel=0.05)
    assert ask(model, "question", passage, "x").completion_tokens == pytest.approx(390, rel=0.05)
    capped = model.reply({**request("score", passage), "max_tokens": 120}, seed=1)
    assert capped.completion_tokens <= 120


def test_nr_docs_mix_gives_the_calibrated_yes_rate() -> None:
    nr_docs = pytest.importorskip("matrix.cases.nr.docs")
    docs = [d for d in nr_docs.generate_documents(2000, seed=0) if d["meta"]["lang"] == "en"]
    n = len(docs)
    model = NRBehaviour()
    flags = [has_reasoning_cues(d["text"]) for d in docs]
    truth = [d["meta"]["kind"] == "reasoning" for d in docs]
    assert sum(f != t for f, t in zip(flags, truth, strict=True)) <= 0.01 * n  # the cues find the reasoning pages
    share = sum(flags) / n
    assert abs(share - nr_sim.REASONING_SHARE) <= binomial_tolerance(nr_sim.REASONING_SHARE, n), share
    yes = sum(ask(model, "filter", d["text"], str(d["id"]), check=False).content == "Yes" for d in docs)
    n_cue = sum(flags)
    p_cue, p_plain = model.cue_yes_rate, model.plain_yes_rate
    expected = n_cue * p_cue + (n - n_cue) * p_plain
    sd = math.sqrt(n_cue * p_cue * (1 - p_cue) + (n - n_cue) * p_plain * (1 - p_plain))
    assert abs(yes - expected) <= 4 * sd, (yes, expected)


# ------------------------------------------------------------------------ the stage functions


def test_the_stage_chain_runs_on_the_behaviour() -> None:
    model = NRBehaviour(yes_rate=0.5, cue_yes_rate=1.0, reasoning_share=0.5)

    async def call(stage: str, messages: list[dict[str, str]], body: dict[str, Any], seed: int) -> Mapping[str, Any]:
        reply = model.reply({"messages": messages, **body}, seed=seed)
        return {
            "choices": [{"message": {"role": "assistant", "content": reply.content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": reply.completion_tokens},
        }

    rng = random.Random(9)
    rows = [{"id": f"r{i}", "text": reasoning_passage(rng)} for i in range(20)]
    results = [asyncio.run(nr.curate(row, row["id"], call, SETTINGS)) for row in rows]
    assert all(res[0].keep for res in results)  # reasoning passages, cue_yes_rate 1
    assert any(res[-1].stage == "question" and res[-1].keep for res in results)


# ------------------------------------------------------------------------------ other requests


def test_an_unknown_stage_gets_the_generic_filler() -> None:
    req = {"messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}]}
    assert NRBehaviour().reply(req, seed=3) == GenericBehaviour().reply(req, seed=3)


def test_loaded_by_import_path_with_config_and_bad_config_is_refused() -> None:
    model = get_behaviour("matrix.cases.nr.sim:NRBehaviour", score_pass_rate=1.0, boxed_rate=1.0)
    assert isinstance(model, NRBehaviour) and model.name == "natural_reasoning"
    assert get_behaviour("natural_reasoning").name == "natural_reasoning"
    with pytest.raises(ValueError, match="cannot be reached"):
        NRBehaviour(yes_rate=0.01, cue_yes_rate=0.8, reasoning_share=0.065)
    with pytest.raises(ValueError, match="probability"):
        NRBehaviour(boxed_rate=1.5)
    with pytest.raises(ValueError, match="length_scale"):
        NRBehaviour(length_scale=0)


def test_clipped_lognormal_mean_is_solved() -> None:
    mu = nr_sim.solve_mu(100.0, 0.6, 37, 8192)
    assert nr_sim.clipped_lognormal_mean(mu, 0.6, 37, 8192) == pytest.approx(100.0)
    draws = random.Random(0)
    sample = [min(max(draws.lognormvariate(mu, 0.6), 37), 8192) for _ in range(20000)]
    assert statistics.fmean(sample) == pytest.approx(100.0, rel=0.02)


# ----------------------------------------------------------------------------------- profiles


def test_nr_profiles_load_and_the_70b_replica_decodes_slower_than_the_3b() -> None:
    small, large = load_profile("h100-llama32-3b"), load_profile("h100x4-llama33-70b")
    assert small.kv_bytes_per_token == 28 * 8 * 128 * 2 * 2
    assert large.kv_bytes_per_token == 80 * 8 * 128 * 2 * 2
    gib = 2**30
    assert small.kv_cache_tokens == pytest.approx((0.9 * 80 * gib - 6.43e9 - 4e9) / 114688, rel=0.01)
    assert large.kv_cache_tokens == pytest.approx((0.9 * 320 * gib - 141.1e9 - 16e9) / 327680, rel=0.01)
    assert large.decode_floor_s() > 3 * small.decode_floor_s()
    spec = RequestSpec(1000, 100)
    assert unloaded_latency(large, spec) > 2 * unloaded_latency(small, spec)
