"""matrix export on real small runs: OpenAI message shapes, each case's views and their round trips
(Coral turn for turn, tau2 re-scored by tau2's evaluator), the formats, the filters and bad input."""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from matrix.cli import main
from matrix.export import export_run

pytestmark = pytest.mark.slow  # the session's runs take about 15 s


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "output.jsonl").read_text().splitlines()]


def check_openai_shapes(record: dict[str, Any]) -> None:
    """Every message is what openai's Chat Completions types accept, with no key they do not define."""
    import openai.types.chat as oc
    from pydantic import TypeAdapter

    params = {
        "system": oc.ChatCompletionSystemMessageParam,
        "user": oc.ChatCompletionUserMessageParam,
        "assistant": oc.ChatCompletionAssistantMessageParam,
        "tool": oc.ChatCompletionToolMessageParam,
    }
    any_message = TypeAdapter(oc.ChatCompletionMessageParam)
    call = TypeAdapter(oc.ChatCompletionMessageFunctionToolCallParam)
    for m in record["messages"]:
        kind = params[m["role"]]
        assert set(m) <= kind.__optional_keys__ | kind.__required_keys__, m.keys()
        any_message.validate_python(m)
        for c in m.get("tool_calls") or []:
            call.validate_python(c)
            assert set(c) == {"id", "type", "function"} and set(c["function"]) == {"name", "arguments"}
            assert isinstance(json.loads(c["function"]["arguments"]), dict)
        if m["role"] == "tool":
            assert isinstance(m["content"], str) and isinstance(m["tool_call_id"], str)
    for tool in record.get("tools") or []:
        TypeAdapter(oc.ChatCompletionFunctionToolParam).validate_python(tool)
    assert set(record) <= {"messages", "tools", "metadata"}


def by_trajectory(recs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in recs:
        out[(r["metadata"]["task_id"], r["metadata"]["trial"])][r["metadata"]["view"]] = r
    return out


def test_coral_views_are_openai_chats_that_give_back_the_conversation_turn_for_turn(
    run_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from matrix.cases.coral import DIALOGUE_ROLES, opening, outcome, question_of
    from matrix.cases.coral.export import dialogue_of

    run = run_dirs["coral/matrix"]
    s = export_run(run, tmp_path / "coral.jsonl")
    recs = records(tmp_path / "coral.jsonl")
    assert s.accounted and s.rows == 6 and s.written == len(recs) == 12, s.line()
    groups = by_trajectory(recs)
    for row in rows(run):
        views = groups[(row["task_id"], row["trial"])]
        assert set(views) == set(DIALOGUE_ROLES)
        for v in views.values():
            check_openai_shapes(v)
            assert "tools" not in v and v["messages"][0]["role"] == "system"
            assert [m["role"] for m in v["messages"]][-1] == "assistant"
            assert not any(m["role"] in ("extractor", "matcher") for m in v["messages"])
        # the teacher sees the templated opening as the user, the student as its own first message
        assert (
            views["teacher"]["messages"][1]["role"] == "user" and views["student"]["messages"][1]["role"] == "assistant"
        )
        assert views["teacher"]["messages"][1]["content"] == opening(question_of(row["row"]))
        said = [(t["role"], t["content"]) for t in row["turns"] if t["role"] in DIALOGUE_ROLES]
        assert dialogue_of(list(views.values())) == said
        meta, out = views["student"]["metadata"], outcome(row)
        assert (meta["agreed"], meta["correct"], meta["answer"], meta["gold"]) == (
            out.agreed, out.correct, out.answer, row["row"]["answer"])  # fmt: skip
        assert [e["answer"] for e in meta["extractions"]] == [
            t["meta"]["answer"] for t in row["turns"] if t["role"] == "extractor"
        ]
        assert meta["simulated"] is True and meta["backend"] == "sim" and meta["run_id"] == "t-c16"
        assert meta["model"] == "meta-llama/Llama-3.1-8B-Instruct" and meta["sampling"]["temperature"] == 0.2
        assert meta["completion_tokens"] == row["usage"]["completion_tokens"] > 0


def test_the_central_controllers_run_exports_the_same_records(run_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The baselines write the runtime's row format; on the sim backend both systems hold the same
    conversations, so their exports differ only in the run's labels."""
    export_run(run_dirs["coral/matrix"], tmp_path / "p2p.jsonl")
    s = export_run(run_dirs["coral/coral-controller"], tmp_path / "ctl.jsonl")
    assert s.accounted and s.written == 12
    p2p, ctl = by_trajectory(records(tmp_path / "p2p.jsonl")), by_trajectory(records(tmp_path / "ctl.jsonl"))
    assert set(p2p) == set(ctl)
    for key, views in p2p.items():
        for name, rec in views.items():
            assert rec["messages"] == ctl[key][name]["messages"]
            assert ctl[key][name]["metadata"]["system"] == "coral-controller"


def test_tau2_views_carry_tool_calls_and_rescore_to_the_same_reward(run_dirs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("tau2")
    from matrix.cases.tau2 import reward_of, tau2_messages
    from matrix.cases.tau2.export import rescore_records, trajectory_of

    run = run_dirs["tau2/matrix"]
    s = export_run(run, tmp_path / "tau2.jsonl")
    recs = records(tmp_path / "tau2.jsonl")
    assert s.accounted and s.written == 6
    groups = by_trajectory(recs)
    rewards, reasoned = set(), 0
    for row in rows(run):
        views = groups[(row["task_id"], row["trial"])]
        assert set(views) == {"assistant", "user"}
        for v in views.values():
            check_openai_shapes(v)
        a, u = views["assistant"], views["user"]
        assert a["tools"] and u["tools"] and {t["function"]["name"] for t in a["tools"]}.isdisjoint(
            {t["function"]["name"] for t in u["tools"]})  # fmt: skip
        assert any(m.get("tool_calls") for m in a["messages"]) and any(m["role"] == "tool" for m in a["messages"])
        assert any(m.get("tool_calls") for m in u["messages"])  # telecom: the user runs tools on the phone
        # back into tau2's own message types: the same trajectory, scored again by tau2's evaluator
        original = tau2_messages(row["turns"])
        rebuilt = trajectory_of([a, u])
        assert [(m.role, m.content) for m in rebuilt] == [(m.role, m.content) for m in original]
        assert [m.tool_calls for m in rebuilt if m.role != "tool"] == [
            m.tool_calls for m in original if m.role != "tool"]  # fmt: skip
        for v in (a, u):  # gpt-oss's reasoning, kept beside the side's own messages
            own = [
                i
                for i, m in zip(v["metadata"]["turn_index"], v["messages"][1:], strict=True)
                if m["role"] == "assistant"
            ]
            had = [i for i in own if (row["turns"][i]["content"] or {}).get("reasoning_content")]
            assert [r["turn_index"] for r in v["metadata"]["reasoning"] or []] == had
            reasoned += len(had)
        reward = rescore_records([a, u])
        assert reward == reward_of(row) == a["metadata"]["reward"]
        rewards.add(reward)
    assert rewards == {0.0, 1.0} and reasoned > 0  # both outcomes were re-scored
    with pytest.raises(ValueError, match="in no record"):
        trajectory_of([a])  # the assistant's view alone lacks the user's tool calls


def test_natural_reasoning_questions_are_single_turn_records_with_the_stage_scores(
    run_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from matrix.cases.nr import funnel, qa_of

    run = run_dirs["nr/matrix"]
    s = export_run(run, tmp_path / "nr.jsonl")
    recs = records(tmp_path / "nr.jsonl")
    f = funnel(rows(run))
    assert s.accounted and s.rows == 120 and len(recs) == s.written == f["counts"]["success"] > 0
    assert {k: v for k, v in s.left_out.items()} == {k: v for k, v in f["counts"].items() if v and k != "success"}
    qa = {r["task_id"]: qa_of(r) for r in rows(run) if qa_of(r)}
    for r in recs:
        check_openai_shapes(r)
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        q, meta = qa[r["metadata"]["task_id"]], r["metadata"]
        assert r["messages"][0]["content"] == q["question"] and r["messages"][1]["content"] == q["solution"]
        assert meta["reference_answer"] == q["extracted_answer"] and meta["boxed_answer"] == q["boxed_answer"]
        assert meta["scores"] and all(meta[axis] == v for axis, v in meta["scores"].items())
        assert meta["classifier_label"] == "Yes" and meta["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    kept = export_run(run, tmp_path / "hard.jsonl", where=["problem_complexity >= 1"])
    assert kept.written + kept.failed_where == len(recs) and kept.written == sum(
        r["metadata"]["problem_complexity"] >= 1 for r in recs)  # fmt: skip


def test_hf_and_parquet_hold_the_chat_records(run_dirs: dict[str, Path], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    run = run_dirs["tau2/matrix"]
    export_run(run, tmp_path / "t.jsonl")
    chat = records(tmp_path / "t.jsonl")
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "ds")]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    export_run(run, tmp_path / "t.parquet", fmt="parquet")
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert len(ds) == len(table) == len(chat) == 6
    for tab in (list(ds), table):
        for got, want in zip(tab, chat, strict=True):
            assert [m["content"] for m in got["messages"]] == [m["content"] for m in want["messages"]]
            calls = [[c["function"]["arguments"] for c in m["tool_calls"] or []] for m in got["messages"]]
            assert calls == [[c["function"]["arguments"] for c in m.get("tool_calls", [])] for m in want["messages"]]
            assert json.loads(got["tools"]) == want["tools"]
            assert got["metadata"]["reward"] == want["metadata"]["reward"]
            assert json.loads(got["metadata"]["reward_info"]) == want["metadata"]["reward_info"]
    assert ds.filter(lambda r: r["metadata"]["reward"] == 1.0).num_rows == 4  # two trajectories, two views each


def test_where_filters_and_duplicates_are_counted_and_an_unknown_field_is_refused(
    run_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dirs["coral/matrix"], run)
    lines = (run / "output.jsonl").read_text().splitlines()
    copy = json.loads(lines[0])
    copy["task_id"] = "copy-of-" + copy["task_id"]  # the same conversation under another task id
    (run / "output.jsonl").write_text("\n".join([*lines, json.dumps(copy)]) + "\n")
    assert main(["export", str(run), "--out", str(tmp_path / "a.jsonl"), "--where", "view == teacher"]) == 0
    line = capsys.readouterr().out.strip()
    assert "7 rows" in line and "14 records made: 7 failed --where, 1 duplicate removed, 6 written" in line, line
    everything = export_run(run, tmp_path / "all.jsonl", dedupe=False)
    assert everything.written == 14 and everything.duplicates == 0
    s = export_run(run, tmp_path / "b.jsonl", where=["correct == true"], dedupe=False)
    correct = [r for r in records(tmp_path / "all.jsonl") if r["metadata"]["correct"] is True]
    assert s.accounted and s.written == len(correct) and s.failed_where == 14 - len(correct)
    assert records(tmp_path / "b.jsonl") == correct
    assert main(["export", str(run), "--out", str(tmp_path / "c.jsonl"), "--where", "rewrd == 1"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'rewrd'" in err and "agreed, answer, any_turn_correct" in err and "view" in err
    assert not (tmp_path / "c.jsonl").exists()


def test_error_rows_torn_and_unreadable_lines_are_left_out_counted_and_named(
    run_dirs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dirs["coral/matrix"], run)
    lines = (run / "output.jsonl").read_text().splitlines()
    failed = json.loads(lines[1])
    failed.update(status="error", error="llm_error: the endpoint kept failing", task_id="gone")
    body = [lines[0], "{not json", *lines[2:], json.dumps(failed)]
    torn = lines[1][: len(lines[1]) // 2]  # the writer was killed in the middle of a row
    (run / "output.jsonl").write_text("\n".join(body) + "\n" + torn)
    s = export_run(run, tmp_path / "out.jsonl")
    assert s.accounted and s.rows == 8 and s.exported_rows == 5 and s.written == 10
    assert dict(s.left_out) == {"unreadable line": 1, "error: llm_error": 1, "torn last line": 1}
    line = s.line()
    assert "torn last line 1 [output.jsonl:8]" in line and "unreadable line 1 [output.jsonl:2]" in line, line
    assert "8 rows" in line and "5 exported, 3 left out" in line
    with pytest.raises(ValueError, match="is a directory"):  # never replaced by a file
        export_run(run, tmp_path)
    with pytest.raises(ValueError, match="not a saved dataset"):
        export_run(run, run, fmt="hf")
    assert (run / "output.jsonl").is_file()


def test_a_missing_datasets_package_is_one_line_naming_the_extra(
    run_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["export", str(run_dirs["coral/matrix"]), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "matrix-harness[hf]" in err[0] and not (tmp_path / "x").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        export_run(run_dirs["coral/matrix"], tmp_path / "y", fmt="hf", push_to_hub="me/data")


def test_a_new_workflow_brings_its_own_view_and_without_one_export_is_refused(tmp_path: Path) -> None:
    import matrix.bench.dummy  # noqa: F401  (registers the echo workflow)
    from matrix.agent import RoleSpec
    from matrix.bench.dummy import Echo
    from matrix.export.views import registered
    from matrix.runtime.config import RunConfig
    from matrix.runtime.local import run_local

    rows_in = [{"id": i, "x": i} for i in range(12)]
    roles = [RoleSpec("a", Echo), RoleSpec("b", Echo)]
    cfg = RunConfig(workflow="echo", roles=roles, source=rows_in, run_dir=tmp_path / "run", progress=False)
    run_local(cfg)
    if "echo" not in registered():
        with pytest.raises(ValueError, match="no export view for workflow 'echo'"):
            export_run(tmp_path / "run", tmp_path / "none.jsonl")
    s = export_run(tmp_path / "run", tmp_path / "echo.jsonl", views=["tests.export.echo_view"], where=["x > 2"])
    assert s.accounted and dict(s.left_out) == {"x is a multiple of 5": 3}
    assert s.failed_where == 2 and s.written == 7  # x in 1, 2 fail; 3, 4, 6, 7, 8, 9, 11 written
    got = {r["metadata"]["x"]: r["messages"][1]["content"] for r in records(tmp_path / "echo.jsonl")}
    assert got[7] == "a:7 b:7" and set(got) == {3, 4, 6, 7, 8, 9, 11}
