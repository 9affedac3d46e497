"""Behaviour models: deterministic replies that respect the request's limits."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import pytest

from matrix.llm.sim.behaviour import (
    GenericBehaviour,
    Reply,
    UnknownBehaviourError,
    apply_limits,
    get_behaviour,
    list_behaviours,
    register_behaviour,
)
from matrix.llm.sim.tokens import count_text_tokens


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_generic_is_deterministic_and_counts_its_tokens() -> None:
    model = get_behaviour("generic")
    a = model.reply(chat("What is 2+2?"), seed=0)
    assert a == model.reply(chat("What is 2+2?"), seed=0)
    assert a != model.reply(chat("What is 2+2?"), seed=1)
    assert a != model.reply(chat("What is 3+3?"), seed=0)
    assert a.content and count_text_tokens(a.content) == a.completion_tokens
    assert a.finish_reason == "stop"


def test_generic_lengths_follow_the_configured_distribution() -> None:
    model = get_behaviour("generic", mean_tokens=120, sigma=0.5)
    lengths = [model.reply(chat(f"question {i}"), seed=0).completion_tokens for i in range(1500)]
    assert statistics.fmean(lengths) == pytest.approx(120, rel=0.08)
    assert statistics.pstdev(lengths) > 30
    fixed = get_behaviour("generic", mean_tokens=40, sigma=0)
    assert {fixed.reply(chat(str(i)), seed=0).completion_tokens for i in range(20)} == {40}


def test_limits_max_tokens_stop_and_ignore_eos() -> None:
    reply = get_behaviour("generic", mean_tokens=200, sigma=0).reply(chat("x"), seed=0)
    cut = apply_limits(reply, max_tokens=10)
    assert cut.finish_reason == "length" and cut.completion_tokens == 10
    assert cut.content and count_text_tokens(cut.content) == 10 and reply.content.startswith(cut.content)

    word = reply.content.split()[5]
    stopped = apply_limits(reply, max_tokens=500, stop=[word])
    assert stopped.finish_reason == "stop" and word not in stopped.content
    assert stopped.completion_tokens == count_text_tokens(stopped.content)

    short = Reply("Yes.", 2)
    padded = apply_limits(short, max_tokens=30, ignore_eos=True)
    assert padded.finish_reason == "length" and padded.completion_tokens == 30
    assert padded.content.startswith("Yes.") and count_text_tokens(padded.content) == 30
    assert apply_limits(short, max_tokens=30) == short


def test_ignore_eos_makes_generic_fill_max_tokens() -> None:
    reply = get_behaviour("generic").reply(chat("x", max_tokens=77, ignore_eos=True), seed=0)
    assert reply.completion_tokens == 77


def test_real_token_counts_are_scaled_when_truncated() -> None:
    # a grounded behaviour may report the real tokenizer's count, not ours
    reply = Reply("one two three four five six seven eight nine ten", 20)
    cut = apply_limits(reply, max_tokens=10)
    assert cut.completion_tokens == 10 and cut.content == "one two three four five"


def test_forced_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    model = get_behaviour("generic")
    reply = model.reply(chat("find it", tools=tools, tool_choice="required"), seed=0)
    assert reply.finish_reason == "tool_calls" and reply.content is None
    assert reply.tool_calls[0]["function"]["name"] == "lookup"
    auto = model.reply(chat("find it", tools=tools, tool_choice="auto"), seed=0)
    assert auto.tool_calls == () and auto.content


class Echo:
    name = "echo"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply:
        text = self.prefix + request["messages"][-1]["content"]
        return Reply(text, count_text_tokens(text))


def test_registry() -> None:
    register_behaviour("echo-test", Echo, replace=True)
    assert "echo-test" in list_behaviours() and "generic" in list_behaviours()
    assert get_behaviour("echo-test", prefix="> ").reply(chat("hi"), seed=0).content == "> hi"
    with pytest.raises(UnknownBehaviourError, match=r"'nope'.*generic"):
        get_behaviour("nope")
    with pytest.raises(ValueError, match="configuration"):
        get_behaviour("generic", colour="red")
    with pytest.raises(ValueError, match="already registered"):
        register_behaviour("generic", Echo)
    imported = get_behaviour("matrix.llm.sim.behaviour:GenericBehaviour", mean_tokens=5, sigma=0)
    assert isinstance(imported, GenericBehaviour)
