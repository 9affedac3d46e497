"""The Ray Data batch baseline of NaturalReasoning against deterministic fake models on 127.0.0.1.

The fake servers run in a background thread's event loop, because `run_batch` blocks the test's
thread while Ray Data's actors send their requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard
from aiohttp import web

from baselines.ray_data_batch import BatchConfig, run_batch
from matrix.cases import nr
from matrix.llm.client import RetryPolicy
from matrix.runtime import window
from matrix.runtime.local import run_local_async
from tests.cases.local_run import case_run_config
from tests.cases.nr.test_natural_reasoning import FRENCH, PLAIN, REASONING
from tests.llm.fake_openai import FakeServer, serve_fake

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


FAST_RETRY = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.01)
PASSING = {"problem_completeness": 1, "problem_complexity": 1, "technical_correctness": 1, "thinking_and_reasoning": 2}
# Markers in a passage that steer the fake model: scores below the bar, a solution without a boxed
# answer, and (on the large model) an HTTP 500 for every score request.
SHALLOW, UNANSWERED, SERVER_ERROR = "shallow", "unanswered", "server-error"


class NRModel(FakeServer):
    """Answers from the request alone: Yes for passages with "because"; failing scores for
    "shallow"; no boxed answer for "unanswered"; HTTP 500 on score requests for "server-error".
    Completion lengths depend on the passage, and the total handed out is kept for the checks."""

    completion_tokens = 0
    errors = 0

    @staticmethod
    def parts(body: dict[str, Any]) -> tuple[str, str]:
        return str(body["messages"][0]["content"]), str(body["messages"][-1]["content"])

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        system, passage = self.parts(body)
        if system == nr.CLASSIFIER_SYSTEM:
            text, n = ("Yes" if "because" in passage.lower() else "No"), 1
        elif system == nr.SCORE_SYSTEM:
            scores = dict(PASSING, problem_complexity=0) if SHALLOW in passage else PASSING
            text, n = "Each criterion in turn...\n```json\n" + json.dumps(scores) + "\n```", 30 + len(passage) % 7
        elif system == nr.QUESTION_SYSTEM:
            last = "So it is six." if UNANSWERED in passage else "Therefore, the final answer is: \\boxed{42}."
            qa = {
                "exam_question": "When does the second train catch up?",
                "question_category": "mathematics",
                "extracted_answer": "",
                "independent_answer": ["The gap is 60 km.", "It closes at 30 km/h.", last],
            }
            text, n = "```json\n" + json.dumps(qa) + "\n```", 50 + len(passage) % 11
        else:
            raise AssertionError(f"unexpected system prompt {system[:40]!r}")
        self.completion_tokens += n
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(passage) // 4, "completion_tokens": n},
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body, so the base handler can read it again
        system, passage = self.parts(body)
        if system == nr.SCORE_SYSTEM and SERVER_ERROR in passage:
            self.bodies.append(body)
            self.errors += 1
            return web.json_response({"error": {"message": "scripted failure"}}, status=500)
        return await super().handle(request)


@contextmanager
def served(*servers: NRModel) -> Iterator[tuple[NRModel, ...]]:
    """The fake servers on 127.0.0.1 in a background event loop, stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-openai", daemon=True)
    thread.start()
    cm = serve_fake(*servers)
    try:
        asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result(timeout=30)
        yield servers
    finally:
        asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def config(small: FakeServer, large: FakeServer, run_dir: Path, **kw: Any) -> BatchConfig:
    kw.setdefault("batch_size", 4)
    kw.setdefault("data_parallelism", 2)
    return BatchConfig(
        small_urls=[small.url],
        large_urls=[large.url],
        small_model="small-3b",
        large_model="large-70b",
        run_dir=run_dir,
        progress=False,
        retry=FAST_RETRY,
        **kw,
    )


def output(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "output.jsonl").read_text().splitlines()]


def corpus() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Thirty documents, six per outcome, with the outcome the fake model's rules imply."""
    kinds = {
        nr.ENGLISH: FRENCH + " Séance numéro {i}.",
        nr.CLASSIFIER: PLAIN + " Offer number {i}.",
        nr.SCORE: REASONING + " Variant {i}, " + SHALLOW + ".",
        nr.NO_BOXED: REASONING + " Variant {i}, " + UNANSWERED + ".",
        nr.SUCCESS: REASONING + " Variant {i}.",
    }
    rows, want = [], {}
    for i in range(6):
        for outcome, text in kinds.items():
            doc_id = f"{outcome}-{i}"
            rows.append({"id": doc_id, "text": text.format(i=i), "url": f"https://example.org/{doc_id}"})
            want[doc_id] = outcome
    return rows, want


def test_every_document_gets_one_row_and_the_funnel_follows_the_model(tmp_path: Path) -> None:
    rows, want = corpus()
    with served(NRModel("small"), NRModel("large")) as (small, large):
        cfg = config(small, large, tmp_path / "ray", labels={"run": "t1"})
        m = run_batch(rows, cfg)
        # The same documents on the P2P workflow (local transport) for a row-by-row comparison.
        dep = nr.NRDeployment([small.url], [large.url], small_model="small-3b", large_model="large-70b")
        p2p = case_run_config(nr, dep.roles(), rows, tmp_path / "p2p", concurrency=8)
        ray_requests = len(small.bodies) + len(large.bodies)
        ray_tokens = small.completion_tokens + large.completion_tokens
        n_small, n_large = len(small.bodies), len(large.bodies)
        ray_bodies = [json.dumps(b, sort_keys=True) for b in small.bodies + large.bodies]
        asyncio.run(run_local_async(p2p))
        p2p_bodies = [json.dumps(b, sort_keys=True) for b in small.bodies[n_small:] + large.bodies[n_large:]]

    out = output(tmp_path / "ray")
    assert [r["task_id"] for r in out] == [r["id"] for r in rows]  # one row per document, in input order
    assert {r["task_id"]: nr.outcome_of(r) for r in out} == want
    q = m["quality"]
    assert q["counts"] == {k: 6 for k in nr.OUTCOMES} and q["failed"] == 0 and q["questions"] == 6
    assert q["survival_rate"] == pytest.approx(0.2)
    assert m["case"] == nr.WORKFLOW and m["system"] == "ray-data" and m["run"] == "t1"
    assert m["trajectories"] == 30 and m["tasks_failed"] == 0 and m["tasks_bad_input"] == 0 and m["tasks_lost"] == 0

    # Tokens are the servers' own usage; French never reaches the classifier.
    assert m["tokens_generated"] == ray_tokens == sum(r["usage"]["completion_tokens"] for r in out)
    assert m["llm_client"]["requests"] == ray_requests == 24 + 18 + 12
    assert m["tokens_by_role"]["filter"]["completion_tokens"] == 24
    small_systems = {json.loads(b)["messages"][0]["content"] for b in ray_bodies[:24]}
    assert small_systems == {nr.CLASSIFIER_SYSTEM}  # the filter stage goes to the small pool only

    row = next(r for r in out if r["task_id"] == "success-0")
    assert set(row) == set(nr.Message("x", nr.WORKFLOW, None).to_row())  # the P2P row schema
    assert [t["role"] for t in row["turns"]] == ["filter", "score", "question"] == [h["role"] for h in row["hops"]]
    assert row["status"] == "done" and row["error"] is None and (nr.qa_of(row) or {}).get("boxed_answer") == "42"
    assert row["route"]["location"] == "row 5" and row["route"]["batch_rows"] <= 4
    assert row["created"] <= row["hops"][0]["started"] <= row["hops"][-1]["finished"] <= row["finished"]
    french = next(r for r in out if r["task_id"] == "filtered_by_english-0")
    assert [t["role"] for t in french["turns"]] == ["filter"] and french["usage"]["completion_tokens"] == 0

    # Same requests and the same decisions as the P2P workflow, row for row.
    p2p_rows = output(tmp_path / "p2p")
    assert nr.decisions(out) == nr.decisions(p2p_rows)
    assert sorted(ray_bodies) == sorted(p2p_bodies)

    # Batches: never more than B rows, never more than D workers, never more than B x D in flight.
    rd = m["ray_data"]
    assert rd["worker_cpus"] == 0.5  # auto: half of the 2 CPUs over 2 actors
    assert rd["batch_rows"]["max"] <= 4 and 1 <= rd["workers_used"] <= 2 and 1 <= m["peak_in_flight"] <= 8
    assert sum(r["route"]["batch_rows"] == 4 for r in out) >= 24
    series = json.loads((tmp_path / "ray" / "timeseries.json").read_text())
    assert series[-1]["completion_tokens"] == m["tokens_generated"] and series[-1]["tasks_done"] == 30
    assert all(s["tasks_in_flight"] <= 8 for s in series)
    cfg_json = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert cfg_json["batch_size"] == 4 and cfg_json["data_parallelism"] == 2 and cfg_json["input"].startswith("<30")
    assert json.loads((tmp_path / "ray" / "metrics.json").read_text())["tokens_generated"] == ray_tokens
    assert any((tmp_path / "ray" / "ray_data_output").iterdir())  # what Ray Data wrote

    # The window starts once the whole pool is up (not at the dataset's build); the launch is startup.
    w = m["window"]
    assert w["definition"] == window.DEFINITION
    assert w["launched_at"] < w["ready_at"] == w["start_at"] < w["end_at"]
    assert m["startup_seconds"] == pytest.approx(w["ready_at"] - w["launched_at"]) and m["startup_seconds"] > 0
    assert m["wall_seconds"] == pytest.approx(w["end_at"] - w["start_at"])
    assert min(r["route"]["batch_started"] for r in out) >= w["start_at"]
    assert rd["first_batch_after_start_seconds"] >= 0


def test_bad_lines_documents_and_calls_become_error_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "g1", "text": REASONING}).encode(),
        b'{"id": "broken", "text": "no closing brace"',
        json.dumps({"id": "nokey", "body": "the text is under another key"}).encode(),
        json.dumps({"id": "junk", "text": "".join(chr(i % 31 + 1) for i in range(400))}).encode(),
        b"\xff\xfe not UTF-8 at all",
        json.dumps({"id": "g2", "text": PLAIN}).encode(),
        json.dumps({"id": "boom", "text": REASONING + " " + SERVER_ERROR}).encode(),
        json.dumps({"id": "g1", "text": "a second row with the same id"}).encode(),
        json.dumps({"id": "g3", "text": REASONING + " " + UNANSWERED}).encode(),
    ]
    src = tmp_path / "docs.jsonl.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    with served(NRModel("small"), NRModel("large")) as (small, large):
        m = run_batch(src, config(small, large, tmp_path / "run", batch_size=3))
        tokens = small.completion_tokens + large.completion_tokens
        assert large.errors == 2  # the first try and the one retry

    out = {r["task_id"]: r for r in output(tmp_path / "run")}
    assert len(out) == 9
    assert {k: nr.outcome_of(out[k]) for k in ("g1", "g2", "g3")} == {
        "g1": nr.SUCCESS,
        "g2": nr.CLASSIFIER,
        "g3": nr.NO_BOXED,
    }
    errors = {k: r["error"] for k, r in out.items() if r["status"] == "error"}
    assert errors["docs.jsonl.zst:2"].startswith("bad input row at docs.jsonl.zst:2: malformed JSON")
    assert errors["docs.jsonl.zst:5"].startswith("bad input row at docs.jsonl.zst:5: line is not UTF-8")
    assert "duplicate task id 'g1' (first at docs.jsonl.zst:1)" in errors["g1@docs.jsonl.zst:8"]
    assert "BadDocument: document nokey: missing 'text'" in errors["nokey"] and "docs.jsonl.zst:3" in errors["nokey"]
    assert "document junk: 'text' looks binary" in errors["junk"] and "docs.jsonl.zst:4" in errors["junk"]
    assert errors["boom"].startswith("step error in role 'score': LLMUnavailableError")
    assert [t["role"] for t in out["boom"]["turns"]] == ["filter"]  # the kept stage's tokens still count
    assert out["docs.jsonl.zst:2"]["row"]["raw_line"].startswith('{"id": "broken"')

    assert m["tasks_bad_input"] == 3 and m["tasks_failed"] == 6 and m["tasks_finished"] == 3
    assert m["errors_by_reason"] == {
        "bad input row at docs.jsonl.zst": 3,
        "step error in role 'filter'": 2,
        "step error in role 'score'": 1,
    }
    assert m["bad_documents"] == 2 and m["quality"]["failed"] == 6 and m["quality"]["decided"] == 3
    assert m["tokens_generated"] == tokens and m["llm_client"]["failures"] == 1 and m["llm_client"]["retries"] == 1


def test_config_errors_name_the_field() -> None:
    base: dict[str, Any] = {
        "small_urls": ["http://127.0.0.1:1"],
        "large_urls": ["http://127.0.0.1:2"],
        "small_model": "s",
        "large_model": "l",
    }
    for field_, value in [
        ("batch_size", 0),
        ("data_parallelism", -2),
        ("max_concurrency_per_replica", 0),
        ("limit", 0),
        ("batch_size", 2.5),
        ("data_parallelism", True),
    ]:
        with pytest.raises(ValueError, match=rf"BatchConfig\.{field_} must be a positive integer, got {value!r}"):
            BatchConfig(**{**base, field_: value})
    with pytest.raises(ValueError, match=r"BatchConfig\.large_urls is empty"):
        BatchConfig(**{**base, "large_urls": []})
    with pytest.raises(ValueError, match=r"BatchConfig\.small_model is not set"):
        BatchConfig(**{**base, "small_model": None})
    with pytest.raises(ValueError, match=r"BatchConfig\.worker_cpus must be a number >= 0 or None \(auto\), got -1"):
        BatchConfig(**{**base, "worker_cpus": -1})
    with pytest.raises(TypeError, match=r"BatchConfig\.settings must be an NRSettings"):
        BatchConfig(**{**base, "settings": {}})
    assert BatchConfig(**base).to_dict()["in_flight_bound"] == 200


def test_a_gzip_file_runs_and_a_second_run_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows, want = corpus()
    src = tmp_path / "docs.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows[:10])
    run_dir = tmp_path / "run"
    with served(NRModel("small"), NRModel("large")) as (small, large):
        cfg = BatchConfig(small_urls=[small.url], large_urls=[large.url], small_model="s", large_model="l",
                          batch_size=5, data_parallelism=2, run_dir=run_dir)  # fmt: skip
        assert run_batch(str(src), cfg)["tasks_finished"] == 10
        requests = len(small.bodies) + len(large.bodies)
        m = run_batch(str(src), dataclasses.replace(cfg, progress=False))  # everything is written already
        assert len(small.bodies) + len(large.bodies) == requests
    assert "ray-data: 10/10 documents done, 0 failed" in capsys.readouterr().err
    out = output(run_dir)
    assert len(out) == 10 and {r["task_id"]: nr.outcome_of(r) for r in out} == {
        r["id"]: want[r["id"]] for r in rows[:10]
    }
    assert m["tasks_resumed"] == 10 and m["tasks_finished"] == 0 and m["quality"]["decided"] == 10
