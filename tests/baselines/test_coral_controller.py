"""Coral's central controller against a scripted OpenAI-compatible model (no Ray, no real model)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

import baselines.coral_controller as cc
from baselines.coral_controller import ControllerConfig, run_controller_async
from matrix.cases import coral
from matrix.llm.client import RetryPolicy
from matrix.runtime.local import run_local_async
from tests.cases.local_run import case_run_config
from tests.llm.fake_openai import Behaviour, FakeServer, serve_fake

FAST_RETRY = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.01)
SETTINGS = coral.CoralSettings(max_turns=4)
ANSWER = re.compile(r"The correct answer is \(([A-Z])\)")
TIMING = ("hops", "created", "finished")


class ScriptedModel(FakeServer):
    """A stand-in model whose replies depend on the request alone, so tests are deterministic.

    Dialogue: both speakers say (B) unless the question contains "never"; then the answer flips
    between (A) and (B) every turn, so the two never agree. Extraction: names the letter of the
    "The correct answer is (X)" sentence in the reply it reads.
    """

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        msgs = body["messages"]
        if msgs[0]["content"] == coral.EXTRACTOR_SYSTEM:
            found = ANSWER.findall(msgs[-1]["content"])
            text = f"({found[-1]})" if found else coral.NOT_SURE
        else:
            turn = len(msgs) - 1  # system prompt excluded; the opening plus the turns said so far
            letter = "AB"[turn % 2] if "never" in msgs[1]["content"] else "B"
            text = f"Step {turn}: checked the work. The correct answer is ({letter})"
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split())},
        }


def rows_of(n: int, never: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {
            "id": f"q{i}",
            "question": f"Question {i}" + (" never" if i in never else ""),
            "options": ["w", "x", "y", "z"],
            "answer": "B",
        }
        for i in range(n)
    ]


def run_controller(
    rows: list[dict[str, Any]], run_dir: Path, server: FakeServer | None = None, **kw: Any
) -> tuple[dict[str, Any], FakeServer]:
    server = server if server is not None else ScriptedModel()

    async def go() -> dict[str, Any]:
        async with serve_fake(server) as (s,):
            kw.setdefault("settings", SETTINGS)
            cfg = ControllerConfig(urls=[s.url], model="m", run_dir=run_dir, progress=False, **kw)
            return await run_controller_async(rows, cfg)

    return asyncio.run(go()), server


def output(run_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (run_dir / "output.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    by_id = {r["task_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a task appears twice in the output"
    return by_id


def roles(row: dict[str, Any]) -> list[str]:
    return [t["role"] for t in row["turns"]]


def test_agreement_at_the_second_turn_ends_the_conversation(tmp_path: Path) -> None:
    m, _ = run_controller(rows_of(3), tmp_path)
    out = output(tmp_path)
    assert set(out) == {"q0", "q1", "q2"} and m["tasks_finished"] == 3 and m["tasks_failed"] == 0
    row = out["q0"]
    assert row["status"] == "done" and row["error"] is None and row["workflow"] == coral.WORKFLOW
    assert roles(row) == ["teacher", "extractor", "matcher", "student", "extractor", "matcher"]
    assert [t["content"] for t in row["turns"] if t["role"] == "matcher"] == ["continue", "agree"]
    assert [t["meta"]["answer"] for t in row["turns"] if t["role"] == "extractor"] == ["B", "B"]
    assert row["turns"][-1]["meta"] == {"agreed": True, "stop": True}
    assert row["route"] == {"role": None, "steps": 6, "stop": True, "location": "row 1"}
    assert [h["role"] for h in row["hops"]] == roles(row)
    assert row["usage"]["completion_tokens"] == sum(t["usage"]["completion_tokens"] for t in row["turns"])


def test_conversations_that_never_agree_stop_at_max_turns(tmp_path: Path) -> None:
    run_controller(rows_of(3, never=(1,)), tmp_path, settings=coral.CoralSettings(max_turns=5))
    row = output(tmp_path)["q1"]
    said = [t for t in row["turns"] if t["role"] in coral.DIALOGUE_ROLES]
    assert [t["role"] for t in said] == ["teacher", "student", "teacher", "student", "teacher"]
    assert row["status"] == "done" and row["turns"][-1]["content"] == "max_turns"
    assert roles(row) == [x for t in said for x in (t["role"], "extractor", "matcher")]


def test_the_window_bound_is_never_exceeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    active = peak = 0
    original = cc.Conversations.run

    async def counted(self: cc.Conversations, msg: Any) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await original(self, msg)
        finally:
            active -= 1

    monkeypatch.setattr(cc.Conversations, "run", counted)
    server = ScriptedModel(default=Behaviour(delay=0.002))
    m, _ = run_controller(rows_of(20, never=(0, 5, 6, 13)), tmp_path, server, window=4)
    assert peak == 4 and server.peak_in_flight <= 4 and m["peak_in_flight"] == 4
    assert m["tasks_finished"] == 20 and m["tasks_lost"] == 0


def test_the_window_refills_as_soon_as_one_conversation_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversations end only when the test says so: after each end, the next one has started
    before any other ends (a sliding window, not batches that wait for their slowest member)."""
    gates: dict[str, asyncio.Event] = {}
    running: list[str] = []

    async def gated(self: cc.Conversations, msg: Any) -> Any:
        running.append(msg.task_id)
        gates[msg.task_id] = asyncio.Event()
        await gates[msg.task_id].wait()
        running.remove(msg.task_id)
        msg.status = "done"
        return msg

    def settled(ended: int) -> bool:
        """The ended conversations have left and the window is full again (or the rows ran out)."""
        return len(running) == min(3, 8 - ended) and not any(gates[t].is_set() for t in running)

    async def until_settled(ended: int) -> None:
        for _ in range(1000):
            if settled(ended):
                return
            await asyncio.sleep(0)
        raise AssertionError("the controller did not get there")

    async def go() -> dict[str, Any]:
        cfg = ControllerConfig(urls=["http://127.0.0.1:1"], model="m", window=3, run_dir=tmp_path, progress=False)
        run = asyncio.create_task(run_controller_async(rows_of(8), cfg))
        started: list[list[str]] = []
        for _ in range(8):
            await until_settled(sum(g.is_set() for g in gates.values()))
            started.append(sorted(running))
            gates[running[-1]].set()  # end the newest: a batch controller would still wait for the rest
        return {"metrics": await asyncio.wait_for(run, 10), "started": started}

    monkeypatch.setattr(cc.Conversations, "run", gated)
    result = asyncio.run(go())
    assert result["started"][:3] == [["q0", "q1", "q2"], ["q0", "q1", "q3"], ["q0", "q1", "q4"]]
    assert result["metrics"]["tasks_finished"] == 8 and result["metrics"]["peak_in_flight"] == 3


def test_a_bad_row_becomes_an_error_row_and_the_others_finish(tmp_path: Path) -> None:
    rows = [*rows_of(3), {"id": "7", "question": "no options here", "answer": "A"}]
    m, _ = run_controller(rows, tmp_path)
    out = output(tmp_path)
    assert out["7"]["status"] == "error" and out["7"]["turns"] == []
    assert out["7"]["error"] == "step error in role 'teacher': ValueError: row 7: missing 'options' " + (
        "(a Coral row needs question, options and answer)"
    )
    assert all(out[f"q{i}"]["status"] == "done" for i in range(3))
    assert m["tasks_finished"] == 3 and m["tasks_failed"] == 1
    assert m["errors_by_reason"] == {"step error in role 'teacher'": 1}


def test_duplicate_ids_become_bad_input_rows_as_in_p2p(tmp_path: Path) -> None:
    m, _ = run_controller([*rows_of(2), rows_of(1)[0]], tmp_path)
    out = output(tmp_path)
    dup = out["q0@row 3"]
    assert dup["status"] == "error" and "duplicate task id 'q0' (first at row 1)" in dup["error"]
    assert m["tasks_bad_input"] == 1 and m["tasks_finished"] == 2


def test_an_endpoint_that_always_fails_gives_error_rows_and_the_run_completes(tmp_path: Path) -> None:
    server = ScriptedModel(default=Behaviour(status=500))
    m, _ = run_controller(rows_of(5), tmp_path, server, retry=FAST_RETRY, window=2)
    out = output(tmp_path)
    assert len(out) == 5 and all(r["status"] == "error" for r in out.values())
    assert all(r["error"].startswith("step error in role 'teacher': LLMUnavailableError: ") for r in out.values())
    assert "HTTP 500" in out["q0"]["error"]
    assert len(server.bodies) == 5 * 2  # one try and one retry per conversation
    assert m["tasks_failed"] == 5 and m["tasks_lost"] == 0 and m["llm_client"]["failures"] == 5
    assert m["quality"]["conversation_errors"]["k"] == 5


def test_a_rerun_skips_rows_already_in_the_output(tmp_path: Path) -> None:
    run_controller(rows_of(4), tmp_path)
    m, server = run_controller(rows_of(6), tmp_path)
    out = output(tmp_path)
    assert sorted(out) == [f"q{i}" for i in range(6)]
    assert m["tasks_resumed"] == 4 and m["tasks_admitted"] == 2 and m["tasks_finished"] == 2
    asked = {b["messages"][1]["content"] for b in server.bodies if b["messages"][0]["content"] == coral.SYSTEM_PROMPT}
    assert all("Question 4" in a or "Question 5" in a for a in asked)
    assert m["quality"]["conversations"] == 6


def test_rows_are_written_in_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[int] = []

    class Recording(cc.SinkWriter):
        def flush(self) -> None:
            if self.buffered:
                groups.append(self.buffered)
            super().flush()

    monkeypatch.setattr(cc, "SinkWriter", Recording)
    run_controller(rows_of(7), tmp_path, write_group=3, window=2)
    assert groups == [3, 3, 1]


def test_requests_match_what_the_p2p_roles_send(tmp_path: Path) -> None:
    # One conversation, body by body, against the shared protocol functions.
    _, server = run_controller(rows_of(1), tmp_path / "one")
    q = coral.question_of(rows_of(1)[0])
    reply = "Step {}: checked the work. The correct answer is (B)"

    def body(chat: list[dict[str, str]], turn: int, kind: str, sampling: coral.Sampling) -> dict[str, Any]:
        return {"messages": chat, "seed": coral.request_seed("q0", 0, turn, kind), **sampling.body(), "model": "m"}

    expected = [
        body(coral.dialogue_messages(q, []), 1, "dialogue", SETTINGS.dialogue),
        body(coral.extraction_messages(q, reply.format(1)), 1, "extract", SETTINGS.extractor),
        body(coral.dialogue_messages(q, [("teacher", reply.format(1))]), 2, "dialogue", SETTINGS.dialogue),
        body(coral.extraction_messages(q, reply.format(2)), 2, "extract", SETTINGS.extractor),
    ]
    assert [json.dumps(b) for b in server.bodies] == [json.dumps(e) for e in expected]

    # A whole run, against the P2P roles themselves on the local transport: the same requests,
    # byte for byte, and the same output rows apart from timestamps.
    rows = [*rows_of(5, never=(2,)), {"id": "bad", "question": "q", "answer": "A"}]
    _, ctrl_server = run_controller(rows, tmp_path / "ctrl")

    async def p2p() -> FakeServer:
        async with serve_fake(ScriptedModel()) as (s,):
            deployment = coral.CoralDeployment(urls=[s.url], model="m", settings=SETTINGS)
            cfg = case_run_config(coral, deployment.roles(), rows, tmp_path / "p2p", concurrency=4)
            await run_local_async(cfg)
            return s

    p2p_server = asyncio.run(p2p())
    assert sorted(json.dumps(b) for b in ctrl_server.bodies) == sorted(json.dumps(b) for b in p2p_server.bodies)
    ctrl, ref = output(tmp_path / "ctrl"), output(tmp_path / "p2p")
    assert set(ctrl) == set(ref)
    for task_id, row in ref.items():
        assert set(ctrl[task_id]) == set(row)
        # placement, not content: the P2P transports record the admission partition a task went through
        assert row["route"].pop("partition") == 0
        strip = {k: v for k, v in row.items() if k not in TIMING}
        assert {k: v for k, v in ctrl[task_id].items() if k not in TIMING} == strip, task_id
    assert coral.quality(ctrl.values()) == coral.quality(ref.values())


def test_metrics_follow_the_results_contract(tmp_path: Path) -> None:
    labels = {"case": "coral", "system": "coral-controller", "backend": "fake", "simulated": True, "time_scale": 2.0}
    m, _ = run_controller(rows_of(4, never=(3,)), tmp_path, labels=labels)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["tasks_finished"] == m["tasks_finished"] == 4
    for key in (
        "wall_seconds", "measured_seconds", "tasks_admitted", "tasks_finished", "tasks_failed", "tasks_lost",
        "tokens_generated", "tokens_per_second", "trajectories_per_second", "messages", "peak_in_flight",
        "tokens_by_role", "latency_seconds", "hops_by_role", "quality", "versions",
    ):  # fmt: skip
        assert key in saved, key
    assert all(saved[k] == v for k, v in labels.items())
    assert saved["transport"] == "controller"
    assert saved["measured_seconds"] == pytest.approx(saved["wall_seconds"] * 2.0)
    # 3 conversations agree after 2 turns, 1 runs to max_turns=4: 3 steps per dialogue turn.
    assert saved["messages"] == 3 * 2 * 3 + 4 * 3
    assert saved["hops_by_role"] == {"teacher": 5, "student": 5, "extractor": 10, "matcher": 10}
    assert saved["tokens_generated"] == sum(r["usage"]["completion_tokens"] for r in output(tmp_path).values())
    assert set(saved["tokens_by_role"]) == {"teacher", "student", "extractor", "matcher"}
    assert saved["tokens_by_role"]["matcher"] == {"prompt_tokens": 0, "completion_tokens": 0}
    ac = saved["quality"]["agreement_correctness"]
    assert (ac["k"], ac["n"], ac["value"]) == (3, 4, 0.75)
    series = json.loads((tmp_path / "timeseries.json").read_text())
    assert series and series[-1]["tasks_done"] == 4 and series[-1]["tasks_in_flight"] == 0
    assert series[-1]["completion_tokens"] == saved["tokens_generated"]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"window": 0}, "window must be >= 1"),
        ({"write_group": 0}, "write_group must be >= 1"),
        ({"urls": []}, "urls is empty"),
        ({"model": None}, "model is not set"),
    ],
)
def test_config_errors_are_clear(kw: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"urls": ["http://127.0.0.1:1"], "model": "m", **kw}
    with pytest.raises(ValueError, match=needle):
        ControllerConfig(**args)
