"""Faulty LLM services (issue #9, part 3): every way an endpoint can fail is retried with backoff where
that is safe, counted by reason, and ends with an error that names the endpoint and the reason; in a
run, the task whose call cannot succeed ends as an error row and every other task finishes.

Client-level tests run against `fake_openai` servers; the end-to-end tests run the `inflight-llm`
workflow (writer then critic, one chat completion each) on the local and the Ray runtime.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import pytest

import experiments.bench.inflight  # noqa: F401  (registers the inflight-llm workflow)
from matrix.agent import RoleSpec
from matrix.llm.agent import LLMAgent
from matrix.llm.client import LLMClient, RetryPolicy, message_text, process_stats
from matrix.llm.errors import LLMRequestError, LLMUnavailableError
from matrix.runtime.config import RunConfig
from tests.llm.fake_openai import Behaviour, FakeServer, QuickLLMAgent, serve_fake, serve_fake_in_thread

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
MSGS = [{"role": "user", "content": "hi"}]

# Every fault that a server can keep up, and the reason the client gives for it.
PERSISTENT_FAULTS: dict[str, tuple[Behaviour, str]] = {
    "500": (Behaviour(status=500), "http_500"),
    "503": (Behaviour(status=503), "http_503"),
    "429": (Behaviour(status=429, retry_after="0"), "http_429"),
    "drop": (Behaviour(drop=True), "connection"),
    "cut_mid_body": (Behaviour(truncate=True), "truncated"),
    "malformed_json": (Behaviour(malformed=True), "bad_json"),
    "json_not_object": (Behaviour(raw=b"[1, 2, 3]"), "bad_reply"),
    "no_choices": (Behaviour(body={"object": "chat.completion", "usage": {"completion_tokens": 1}}), "bad_reply"),
    "empty_choices": (Behaviour(body={"object": "chat.completion", "choices": []}), "bad_reply"),
    "error_in_200": (Behaviour(body={"error": {"message": "upstream overloaded"}}), "bad_reply"),
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("fault", sorted(PERSISTENT_FAULTS))
def test_a_fault_that_persists_is_retried_then_named_and_counted(fault: str) -> None:
    behaviour, reason = PERSISTENT_FAULTS[fault]

    async def main() -> None:
        s = FakeServer(default=behaviour)
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST) as llm:
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS, role="writer")
            stats = llm.stats()
        assert len(s.bodies) == 4, "every attempt reaches the server: 1 + 3 retries"
        assert err.value.reason == reason and err.value.attempts == 4
        assert err.value.endpoint == s.url and s.url in str(err.value) and reason in str(err.value)
        assert stats.errors_by_reason == {reason: 4}
        assert stats.failures_by_reason == {reason: 1}
        assert (stats.requests, stats.retries, stats.failures, stats.outstanding) == (1, 3, 1, 0)
        assert llm.usage.role("writer").failures == 1 and llm.usage.role("writer").retries == 3

    run(main())


def test_an_error_object_in_a_200_reply_keeps_the_servers_message() -> None:
    async def main() -> None:
        s = FakeServer(default=PERSISTENT_FAULTS["error_in_200"][0])
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST) as llm:
            with pytest.raises(LLMUnavailableError, match="upstream overloaded"):
                await llm.chat(MSGS)

    run(main())


@pytest.mark.parametrize(
    "fault",
    [
        Behaviour(hang=True),
        Behaviour(truncate=True),
        Behaviour(drop=True),
        Behaviour(body={"object": "chat.completion"}),
        Behaviour(status=502),
    ],
    ids=["hang", "cut_mid_body", "drop", "no_choices", "502"],
)
def test_a_fault_that_passes_is_retried_and_the_request_succeeds(fault: Behaviour) -> None:
    async def main() -> None:
        s = FakeServer(script=deque([fault]))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST, timeout=0.5) as llm:
            reply = await llm.chat(MSGS, role="r")
            stats = llm.stats()
        assert message_text(reply) == "reply from fake"
        assert len(s.bodies) == 2
        assert stats.retries == 1 and stats.failures == 0 and sum(stats.errors_by_reason.values()) == 1
        assert llm.usage.role("r").completion_tokens == 3

    run(main())


def test_a_hung_replica_times_out_and_the_request_is_served_by_another() -> None:
    async def main() -> None:
        hung = FakeServer(name="hung", default=Behaviour(hang=True))
        good = FakeServer(name="good")
        async with serve_fake(hung, good), LLMClient([hung.url, good.url], model="m", retry=FAST, timeout=0.3) as llm:
            # A sticky key that prefers the hung replica, so that the first attempt goes there.
            key = next(k for k in map(str, range(1000)) if llm.balancer.pick(sticky_key=k).base_url == hung.url)
            t0 = time.monotonic()
            reply = await llm.chat(MSGS, sticky_key=key)
            took = time.monotonic() - t0
            stats = llm.stats()
        assert message_text(reply) == "reply from good"
        assert len(hung.bodies) == 1 and len(good.bodies) == 1
        assert 0.3 <= took < 3.0
        assert stats.errors_by_reason == {"timeout": 1} and stats.failures == 0

    run(main())


def test_a_server_that_hangs_on_every_attempt_ends_the_request_with_a_timeout() -> None:
    async def main() -> None:
        a = FakeServer(name="a", default=Behaviour(hang=True))
        b = FakeServer(name="b", default=Behaviour(hang=True))
        retry = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
        async with serve_fake(a, b), LLMClient([a.url, b.url], model="m", retry=retry, timeout=0.3) as llm:
            t0 = time.monotonic()
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS)
            took = time.monotonic() - t0
            stats = llm.stats()
        assert err.value.reason == "timeout" and "timed out" in str(err.value)
        assert err.value.endpoint in (a.url, b.url)
        assert len(a.bodies) + len(b.bodies) == 3 and a.bodies and b.bodies  # the retry went to the other
        assert 0.9 <= took < 5.0  # three timeouts of 0.3 s, not a wait for the hung servers
        assert stats.errors_by_reason == {"timeout": 3} and stats.failures_by_reason == {"timeout": 1}

    run(main())


def test_a_stream_from_a_hung_server_ends_with_a_timeout() -> None:
    async def main() -> None:
        s = FakeServer(default=Behaviour(hang=True))
        retry = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.02)
        async with serve_fake(s), LLMClient([s.url], model="m", retry=retry, timeout=0.3) as llm:
            with pytest.raises(LLMUnavailableError) as err:
                async for _ in llm.chat_stream(MSGS):
                    pass
            stats = llm.stats()
        assert err.value.reason == "timeout" and len(s.bodies) == 2
        assert stats.failures_by_reason == {"timeout": 1}

    run(main())


def test_an_input_error_is_counted_once_and_not_retried() -> None:
    async def main() -> None:
        s = FakeServer(default=Behaviour(status=400))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST) as llm:
            with pytest.raises(LLMRequestError) as err:
                await llm.chat(MSGS)
            stats = llm.stats()
        assert err.value.reason == "http_400" and len(s.bodies) == 1
        assert stats.errors_by_reason == {"http_400": 1} and stats.failures_by_reason == {"http_400": 1}
        assert stats.retries == 0

    run(main())


def test_a_refused_connection_is_a_connection_failure() -> None:
    async def main() -> None:
        async with LLMClient(["http://127.0.0.1:9/v1"], model="m", retry=FAST) as llm:  # nothing listens on 9
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS)
        assert err.value.reason == "connection" and "127.0.0.1:9" in str(err.value)

    run(main())


def test_a_reply_over_the_size_limit_is_refused_without_reading_it() -> None:
    async def main() -> None:
        big = {"object": "chat.completion", "choices": [{"message": {"content": "x" * 200_000}}]}
        s = FakeServer(default=Behaviour(body=big))
        async with serve_fake(s), LLMClient([s.url], model="m", retry=FAST, max_reply_bytes=50_000) as llm:
            with pytest.raises(LLMUnavailableError) as err:
                await llm.chat(MSGS)
        assert err.value.reason == "too_large" and "50000" in str(err.value)

    run(main())


def test_process_stats_add_up_every_client_of_the_process() -> None:
    async def main() -> None:
        before = process_stats()
        bad = FakeServer(default=Behaviour(status=503))
        good = FakeServer()
        async with serve_fake(bad, good):
            async with LLMClient([bad.url], model="m", retry=FAST) as one:
                with pytest.raises(LLMUnavailableError):
                    await one.chat(MSGS)
            async with LLMClient([good.url], model="m", retry=FAST) as two:
                await two.chat(MSGS)
        after = process_stats()
        assert after.requests - before.requests == 2
        assert after.retries - before.retries == 3
        assert after.failures_by_reason.get("http_503", 0) - before.failures_by_reason.get("http_503", 0) == 1
        assert after.errors_by_reason.get("http_503", 0) - before.errors_by_reason.get("http_503", 0) == 4

    run(main())


# -- end to end: a run with faulty endpoints --------------------------------------------------------------

# Markers in a task's prompt that make the writer's server (first role) or the critic's (second) fail:
# marker -> (behaviour, text the error row must hold, error type, requests the server must have seen).
WRITER_FAULTS = {
    "FAIL500": (Behaviour(status=500), "http_500", "LLMUnavailableError", 4),
    "RATE429": (Behaviour(status=429, retry_after="0"), "http_429", "LLMUnavailableError", 4),
    "BADJSON": (Behaviour(malformed=True), "bad_json", "LLMUnavailableError", 4),
    "NOCHOICES": (Behaviour(body={"object": "chat.completion"}), "bad_reply", "LLMUnavailableError", 4),
    "DROPPED": (Behaviour(drop=True), "connection", "LLMUnavailableError", 4),
    "REFUSED400": (Behaviour(status=400), "HTTP 400", "LLMRequestError", 1),
}
CRITIC_FAULTS = {
    "HANGS": (Behaviour(hang=True), "timeout", "LLMUnavailableError", 2),
    "CUTOFF": (Behaviour(truncate=True), "truncated", "LLMUnavailableError", 2),
}
GOOD = 14


def fault_rows() -> list[dict[str, Any]]:
    rows = [{"id": f"ok-{i}", "prompt": f"say something about {i}"} for i in range(GOOD)]
    rows += [{"id": f"bad-{m}", "prompt": f"please {m} now"} for m in [*WRITER_FAULTS, *CRITIC_FAULTS]]
    return rows


def fault_config(writer: FakeServer, critic: FakeServer, run_dir: Path) -> RunConfig:
    return RunConfig(
        workflow="inflight-llm",
        roles=[
            # The writer is the stock LLMAgent with the client's default retry policy.
            RoleSpec("writer", LLMAgent, {"urls": [writer.url], "model": "w"}),
            # The critic gives up quickly: a hung server costs it 2 x 1 s, not 4 x 30 min.
            RoleSpec("critic", QuickLLMAgent, {"urls": [critic.url], "model": "c", "timeout": 1.0, "max_retries": 1}),
        ],
        source=fault_rows(),
        run_dir=run_dir,
        max_concurrent_tasks=8,
        workflow_modules=["experiments.bench.inflight"],
        progress=False,
    )


def check_fault_run(metrics: dict[str, Any], run_dir: Path, writer: FakeServer, critic: FakeServer) -> None:
    rows = [json.loads(line) for line in (run_dir / "output.jsonl").read_text().splitlines()]
    keys = Counter((r["task_id"], r["trial"]) for r in rows)
    assert set(k for k, _ in keys) == {r["id"] for r in fault_rows()} and max(keys.values()) == 1
    by_id = {r["task_id"]: r for r in rows}
    for i in range(GOOD):
        ok = by_id[f"ok-{i}"]
        assert ok["status"] == "done", ok["error"]
        assert [(t["role"], t["content"]) for t in ok["turns"]] == [
            ("writer", "reply from w"),
            ("critic", "reply from c"),
        ]
    for role, server, faults in (("writer", writer, WRITER_FAULTS), ("critic", critic, CRITIC_FAULTS)):
        for marker, (_, reason, error_type, attempts) in faults.items():
            bad = by_id[f"bad-{marker}"]
            assert bad["status"] == "error", marker
            err = bad["error"]
            assert f"role {role!r}" in err and error_type in err and reason in err and server.url in err, err
            assert server.count(marker) == attempts, (marker, server.count(marker))
    assert writer.count("HANGS") == writer.count("CUTOFF") == 1  # the writer's step went through
    n_bad = len(WRITER_FAULTS) + len(CRITIC_FAULTS)
    assert metrics["tasks_finished"] == GOOD and metrics["tasks_failed"] == n_bad
    assert metrics["tasks_lost"] == 0 and metrics["tasks_replayed"] == 0  # a failed call is an answer, not a loss
    by_reason = metrics["errors_by_reason"]
    assert sum(by_reason.values()) == n_bad
    assert sum(n for k, n in by_reason.items() if "'writer'" in k) == len(WRITER_FAULTS)
    assert sum(n for k, n in by_reason.items() if "'critic'" in k) == len(CRITIC_FAULTS)
    # every attempt the servers saw is in the run's LLM call counters, each failed one under its reason
    calls = metrics["llm_calls"]
    good_calls = 2 * GOOD + len(CRITIC_FAULTS)  # each good task's two calls; the writer's call of a critic fault
    assert calls["requests"] == good_calls + n_bad
    assert calls["failures"] == n_bad
    assert calls["failures_by_reason"] == {
        reason if reason != "HTTP 400" else "http_400": 1
        for _, reason, _, _ in [*WRITER_FAULTS.values(), *CRITIC_FAULTS.values()]
    }
    failed_attempts = sum(attempts for *_, attempts in [*WRITER_FAULTS.values(), *CRITIC_FAULTS.values()])
    assert sum(calls["errors_by_reason"].values()) == failed_attempts
    assert calls["retries"] == failed_attempts - n_bad


def fault_servers() -> tuple[FakeServer, FakeServer]:
    writer = FakeServer(name="w", rules=[(m, b) for m, (b, *_) in WRITER_FAULTS.items()])
    critic = FakeServer(name="c", rules=[(m, b) for m, (b, *_) in CRITIC_FAULTS.items()])
    return writer, critic


def test_failed_llm_calls_end_their_tasks_as_error_rows_and_the_local_run_goes_on(tmp_path: Path) -> None:
    from matrix.runtime.local import run_local

    with serve_fake_in_thread(*fault_servers()) as (writer, critic):
        metrics = run_local(fault_config(writer, critic, tmp_path))
    check_fault_run(metrics, tmp_path, writer, critic)


@pytest.mark.slow
def test_failed_llm_calls_end_their_tasks_as_error_rows_and_the_ray_run_goes_on(
    local_ray: None, tmp_path: Path
) -> None:
    from matrix.runtime.ray_p2p import run_ray

    with serve_fake_in_thread(*fault_servers()) as (writer, critic):
        metrics = run_ray(fault_config(writer, critic, tmp_path))
    check_fault_run(metrics, tmp_path, writer, critic)
    assert metrics["internal_errors"] == []
