"""tau2's threaded runner retries as the P2P roles do: failed calls with the client's RetryPolicy
(litellm's own retries off), empty replies through tau2's own `generate`, 1,800 s per call."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import pytest

pytest.importorskip("tau2")

from baselines.tau2_threads import ThreadsConfig, _Spread, litellm_args
from matrix.llm.client import RetryPolicy
from tests.llm.fake_openai import Behaviour, FakeServer, serve_fake_in_thread

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.02)
EMPTY = {
    "id": "cmpl-empty",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
}


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def call(spread: _Spread) -> str:
    try:
        reply = spread(model="openai/m", messages=[{"role": "user", "content": "hi"}], api_key="x", num_retries=3)
    except Exception as exc:
        return type(exc).__name__
    return str(reply.choices[0].message.content)


@pytest.mark.parametrize(
    ("script", "requests", "outcome", "retries", "failures"),
    [
        ([503, 503, 200], 3, "reply from fake", 2, 0),  # retried, then answered
        ([429, 200], 2, "reply from fake", 1, 0),
        ([503] * 5, 4, "ServiceUnavailableError", 3, 1),  # 1 + max_retries attempts, then the error
        ([400], 1, "BadRequestError", 0, 1),  # an input error is never retried
    ],
)
def test_failed_calls_are_retried_by_the_policy_and_litellm_adds_none(
    script: list[int], requests: int, outcome: str, retries: int, failures: int
) -> None:
    server = FakeServer(script=deque(Behaviour(status=c) for c in script))
    with serve_fake_in_thread(server) as (srv,):
        spread = _Spread([srv.url], _litellm().completion, retry=FAST, timeout_s=30)
        assert call(spread) == outcome
    assert len(srv.bodies) == requests
    assert spread.stats() == {"requests": 1, "attempts": requests, "retries": retries, "failures": failures}


def test_a_retry_goes_to_another_replica() -> None:
    bad, good = FakeServer("bad", default=Behaviour(status=503)), FakeServer("good")
    with serve_fake_in_thread(bad, good) as (b, g):
        spread = _Spread([b.url, g.url], _litellm().completion, retry=FAST, timeout_s=30)
        answers = {call(spread) for _ in range(4)}
    assert answers == {"reply from good"}
    assert len(b.bodies) <= 4 and len(g.bodies) == 4


def test_an_empty_reply_is_asked_again_by_tau2_as_often_as_the_p2p_roles_do() -> None:
    """tau2's `generate` retries an empty reply `num_retries` times (the P2P roles' `empty_retries`),
    then gives it back empty, which ends the trajectory as an agent or user error."""
    _litellm()
    import tau2.utils.llm_utils as llm_utils
    from tau2.data_model.message import UserMessage

    cfg = ThreadsConfig(urls=["http://127.0.0.1:9"], model="m", run_dir="unused")
    args = litellm_args(cfg)
    assert args["num_retries"] == cfg.empty_retries == 3
    server = FakeServer(default=Behaviour(body=EMPTY))
    with serve_fake_in_thread(server) as (srv,):
        spread = _Spread([srv.url], llm_utils.completion, retry=cfg.retry_policy, timeout_s=cfg.timeout_s)
        original, llm_utils.completion = llm_utils.completion, spread
        try:
            reply = llm_utils.generate("openai/m", [UserMessage(role="user", content="hi")], **args)
        finally:
            llm_utils.completion = original
    assert len(srv.bodies) == 1 + cfg.empty_retries
    assert not reply.content and not reply.tool_calls
    assert spread.stats()["retries"] == 0  # empty replies are tau2's retries, not the client's


def test_config_defaults_are_the_papers_and_bad_values_are_named() -> None:
    cfg = ThreadsConfig(urls=["http://h"], model="m", run_dir="r")
    assert cfg.timeout_s == 1800.0 and cfg.retry_policy == RetryPolicy() and cfg.retry_policy.max_retries == 3
    assert cfg.to_dict()["retry"] == {"max_retries": 3, "base_delay": 0.5, "max_delay": 20.0}
    with pytest.raises(ValueError, match="empty_retries"):
        ThreadsConfig(urls=["http://h"], model="m", run_dir="r", empty_retries=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        ThreadsConfig(urls=["http://h"], model="m", run_dir="r", timeout_s=0)
