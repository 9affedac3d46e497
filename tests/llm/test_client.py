from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

import pytest

from matrix.llm.client import LLMClient, RetryPolicy, message_text
from matrix.llm.errors import LLMRequestError, LLMUnavailableError
from tests.llm.fake_openai import Behaviour, FakeServer, serve_fake

FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
MSGS = [{"role": "user", "content": "hi"}]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_chat_returns_server_json_and_counts_usage_per_role() -> None:
    async def main() -> None:
        async with serve_fake(FakeServer()) as (s,):
            async with LLMClient([s.url], model="m") as llm:
                r1 = await llm.chat(MSGS, role="teacher", temperature=0.2)
                await llm.chat(MSGS, role="student")
                await llm.chat(MSGS, role="student")
            assert message_text(r1) == "reply from fake"
            assert s.bodies[0] == {"messages": MSGS, "temperature": 0.2, "model": "m"}
            assert llm.usage.role("teacher").completion_tokens == 3
            assert llm.usage.role("student").requests == 2
            assert llm.usage.role("student").prompt_tokens == 14
            assert llm.usage.completion_tokens == 9

    run(main())


def test_tools_pass_through_unchanged_both_ways() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    tool_reply = {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12},
        "vendor_extra": {"kept": True},
    }

    async def main() -> None:
        async with serve_fake(FakeServer(default=Behaviour(body=tool_reply))) as (s,):
            async with LLMClient([s.url], model="m") as llm:
                r = await llm.chat(MSGS, tools=tools, tool_choice="auto", extra_field={"a": 1})
            assert s.bodies[0]["tools"] == tools
            assert s.bodies[0]["tool_choice"] == "auto"
            assert s.bodies[0]["extra_field"] == {"a": 1}
            assert r == tool_reply

    run(main())


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retries_transient_status_then_succeeds(status: int) -> None:
    async def main() -> None:
        s = FakeServer(script=deque([Behaviour(status=status), Behaviour(status=status)]))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST_RETRY) as llm:
            r = await llm.chat(MSGS, role="a")
        assert message_text(r) == "reply from fake"
        assert len(s.bodies) == 3
        assert llm.usage.role("a").retries == 2
        assert llm.usage.role("a").failures == 0

    run(main())


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_input_errors_are_never_retried(status: int) -> None:
    async def main() -> None:
        s = FakeServer(default=Behaviour(status=status))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST_RETRY) as llm:
            with pytest.raises(LLMRequestError) as err:
                await llm.chat(MSGS, role="a")
        assert len(s.bodies) == 1
        assert err.value.status == status
        assert f"HTTP {status}" in str(err.value) and "scripted" in str(err.value)
        assert llm.usage.role("a").failures == 1

    run(main())


def test_gives_up_after_retries_and_counts_the_failure() -> None:
    async def main() -> None:
        s = FakeServer(default=Behaviour(status=503))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST_RETRY) as llm:
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS, role="a")
            assert llm.stats().failures == 1
        assert len(s.bodies) == 4
        assert "after 4 attempts" in str(err.value) and "503" in str(err.value)
        assert llm.usage.role("a").failures == 1

    run(main())


def test_dropped_connection_and_malformed_json_are_retried() -> None:
    async def main() -> None:
        s = FakeServer(script=deque([Behaviour(drop=True), Behaviour(malformed=True)]))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST_RETRY) as llm:
            r = await llm.chat(MSGS)
        assert message_text(r) == "reply from fake"
        assert len(s.bodies) == 3

    run(main())


def test_timeout_is_retried_on_another_replica() -> None:
    async def main() -> None:
        slow = FakeServer(name="slow", default=Behaviour(delay=5))
        fast = FakeServer(name="fast")
        async with (
            serve_fake(slow, fast),
            LLMClient([slow.url, fast.url], model="m", retry=FAST_RETRY, timeout=0.3) as llm,
        ):
            # Pin the first attempt to the slow replica with a sticky key that hashes there.
            key = next(k for k in map(str, range(1000)) if llm.balancer.pick(sticky_key=k).base_url == slow.url)
            r = await llm.chat(MSGS, sticky_key=key)
        assert message_text(r) == "reply from fast"

    run(main())


def test_unreachable_endpoint_error_names_the_url() -> None:
    async def main() -> None:
        url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
        async with LLMClient([url], model="m", retry=FAST_RETRY) as llm:
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS)
        assert "127.0.0.1:9" in str(err.value)

    run(main())


def test_least_outstanding_spreads_load_and_bounds_concurrency() -> None:
    async def main() -> None:
        a = FakeServer(name="a", default=Behaviour(delay=0.05))
        b = FakeServer(name="b", default=Behaviour(delay=0.05))
        async with serve_fake(a, b), LLMClient([a.url, b.url], model="m", max_concurrency=4) as llm:
            replies = await asyncio.gather(*(llm.chat(MSGS) for _ in range(40)))
        who = Counter(message_text(r) for r in replies)
        assert who["reply from a"] == 20 and who["reply from b"] == 20
        assert a.peak_in_flight <= 4 and b.peak_in_flight <= 4

    run(main())


def test_sticky_key_always_hits_the_same_replica() -> None:
    async def main() -> None:
        servers = [FakeServer(name=f"r{i}") for i in range(4)]
        async with serve_fake(*servers), LLMClient([s.url for s in servers], model="m") as llm:
            for task in range(10):
                got = {message_text(await llm.chat(MSGS, sticky_key=f"task-{task}")) for _ in range(5)}
                assert len(got) == 1

    run(main())


def test_stream_yields_chunks_and_records_usage() -> None:
    async def main() -> None:
        s = FakeServer(script=deque([Behaviour(status=503)]))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST_RETRY) as llm:
            pieces = [
                c["choices"][0]["delta"].get("content", "")
                async for c in llm.chat_stream(MSGS, role="r")
                if c.get("choices")
            ]
        assert "".join(pieces) == "reply from fake"
        assert s.bodies[-1]["stream"] is True
        assert s.bodies[-1]["stream_options"] == {"include_usage": True}
        assert llm.usage.role("r").completion_tokens == 3
        assert llm.usage.role("r").retries == 1

    run(main())


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        LLMClient(["ftp://x"])
    with pytest.raises(ValueError, match="duplicate"):
        LLMClient(["http://127.0.0.1:1", "http://127.0.0.1:1/v1"])

    async def main() -> None:
        async with LLMClient(["http://127.0.0.1:1"]) as llm:
            with pytest.raises(ValueError, match="no model"):
                await llm.chat(MSGS)

    run(main())


def test_backoff_has_full_jitter_and_honours_retry_after() -> None:
    import random

    p = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    delays = [p.delay(3, rng) for _ in range(200)]
    assert 0 <= min(delays) < 1 and 6 < max(delays) <= 8
    assert p.delay(0, rng, retry_after=5.0) >= 5.0
    assert p.delay(0, rng, retry_after=100.0) <= 8.0
