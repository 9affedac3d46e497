"""The offload benchmark: the long-history workload (fast, local transport) and on vs off (slow, local Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench.offload import (
    WORKFLOW,
    content_digest,
    failed,
    long_history_roles,
    output_content,
    run_offload,
    table,
)
from matrix.bench.dummy import dialogue_turns
from matrix.cli import build_parser
from matrix.runtime.config import RunConfig
from matrix.runtime.local import run_local


def test_long_history_agrees_inside_its_window(tmp_path: Path) -> None:
    cfg = RunConfig(
        workflow=WORKFLOW,
        roles=long_history_roles(reply_chars=300, agree_min=5, agree_max=8),
        source=[{"id": i} for i in range(40)],
        run_dir=tmp_path,
        max_concurrent_tasks=8,
        progress=False,
    )
    m = run_local(cfg)
    assert m["tasks_finished"] == 40 and m["tasks_failed"] == 0
    content = output_content(cfg.output_path(0))
    turns = [sum(1 for t in c["turns"] if t[0] in ("teacher", "student")) for c in content.values()]
    assert min(turns) >= 5 and max(turns) <= 8 and len(set(turns)) > 1
    assert all(c["agreed"] for c in content.values())
    dialogue = [t for t in next(iter(content.values()))["turns"] if t[0] == "teacher"]
    assert all(299 <= len(t[1]) <= 300 for t in dialogue)  # canned_text may end one short


def test_output_content_ignores_timings_and_placement(tmp_path: Path) -> None:
    row = {
        "task_id": "1",
        "trial": 0,
        "status": "done",
        "error": None,
        "turns": [{"role": "teacher", "content": "x", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}],
        "route": {"agreed": True, "steps": 3, "partition": 0},
        "hops": [{"actor": "teacher-0", "sent": 1.0}],
        "created": 1.0,
    }
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(row) + "\n")
    b.write_text(json.dumps({**row, "hops": [{"actor": "teacher-1", "sent": 9.0}], "created": 5.0}) + "\n")
    assert output_content(a) == output_content(b)
    assert content_digest(output_content(a)) == content_digest(output_content(b))
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({**row, "turns": [{**row["turns"][0], "content": "y"}]}) + "\n")
    assert content_digest(output_content(c)) != content_digest(output_content(a))


def test_agree_max_above_the_graph_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="agree_max"):
        run_offload(agree_max=25)


def test_cli_parses_offload_options() -> None:
    args = build_parser().parse_args(["bench", "offload", "--tasks", "50", "--reply-chars", "1000"])
    assert (args.tasks, args.reply_chars, args.threshold) == (50, 1000, None)
    assert callable(args.func)


def test_dialogue_turns_helper_counts_only_dialogue() -> None:
    from matrix.message import Turn, new_message

    msg = new_message("t", WORKFLOW, {})
    msg.turns = [Turn("teacher", "a"), Turn("extractor", "B"), Turn("matcher", "x"), Turn("student", "b")]
    assert dialogue_turns(msg) == 2


@pytest.mark.slow
def test_offloading_cuts_bytes_per_hop_and_changes_no_output(local_ray: None, tmp_path: Path) -> None:
    doc = run_offload(
        tasks=12,
        concurrency=6,
        reply_chars=2000,
        agree_min=4,
        agree_max=6,
        stall_seconds=20,
        run_dir=tmp_path,
        progress=False,
    )
    on, off = doc["points"]
    assert on["offload"] and not off["offload"]
    assert failed(doc) == [], failed(doc)
    assert doc["outputs_identical"] and on["output_digest"] == off["output_digest"]
    assert on["bytes_per_hop"]["count"] == off["bytes_per_hop"]["count"] == on["messages"]
    assert on["bytes_per_hop"]["mean"] < 0.25 * off["bytes_per_hop"]["mean"]
    assert on["message_bytes_total"] < 0.25 * off["message_bytes_total"]
    assert on["payload"]["puts"] > 0 and off["payload"].get("puts", 0) == 0
    assert on["payload_bytes_offloaded"] >= 2000 * 4 * 12  # every dialogue turn, once
    assert on["payload_bytes_fetched"] >= on["payload_bytes_offloaded"]  # the sink reads each one
    assert "outputs identical: True" in table(doc)
