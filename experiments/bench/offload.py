"""The offload benchmark: payload offloading on vs off, on a workload whose histories grow long.

Coral's shape (`coral-dummy`: teacher -> extractor -> matcher -> student -> ...) with long
dialogue turns (`reply_chars`, default 4,000 characters, about 1,000 tokens) and late agreement
(`LongExtractor`: agreement after `agree_min`..`agree_max` dialogue turns, default 10..19, under
the graph's cap of 20), so a trajectory ends with tens of kilobytes of history that, without
offloading, every hop pickles and ships again. The same tasks run twice on the Ray P2P transport,
with `offload_threshold=512` (the paper's) and with offloading off, and the outputs are compared.

Bytes are counted three ways:

- per hop: the pickled message as sent (`metrics.json` `bytes_per_hop`; an offloaded field counts
  as its handle);
- messages end to end: the sum over every hop of a run (`bytes_moved`), and per trajectory;
- with the payloads: messages plus every payload byte an owner sent to a reader (agents that read
  the history, and the sink, which reads each payload once to write the row). A payload that no one
  reads never moves: it stays with the actor that produced it until the sink frees it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from experiments.bench.inflight import RunStalled, bench_run_dir, run_ray_watched
from matrix.agent import Agent, RoleSpec
from matrix.bench.dummy import CORAL_DUMMY, MAX_DIALOGUE_TURNS, DummyDialogue, DummyMatcher, dialogue_turns
from matrix.message import Message, Turn, Usage
from matrix.runtime.config import RunConfig

WORKFLOW = CORAL_DUMMY.name


class LongExtractor(Agent):
    """Extracts a letter; agrees (two equal letters in a row) after a task-specific number of turns.

    Config: `agree_min`, `agree_max` dialogue turns (the turn is drawn from the task's seed, so it
    is the same in every run and every replay). Before that turn consecutive letters differ.
    """

    async def step(self, message: Message) -> Message:
        lo = max(2, int(self.config.get("agree_min", 10)))
        hi = max(lo, int(self.config.get("agree_max", 19)))
        agree_at = lo + message.seed % (hi - lo + 1)
        n = dialogue_turns(message)
        letter = "B" if n >= agree_at - 1 else "ACD"[n % 3]
        message.turns.append(Turn(self.role, letter, Usage(prompt_tokens=450, completion_tokens=2)))
        return message


def long_history_roles(*, reply_chars: int, agree_min: int, agree_max: int, instances: int = 1) -> list[RoleSpec]:
    dialogue = {"reply_chars": reply_chars}
    extractor = {"agree_min": agree_min, "agree_max": agree_max}
    return [
        RoleSpec("teacher", DummyDialogue, dialogue, num_instances=instances),
        RoleSpec("student", DummyDialogue, dialogue, num_instances=instances),
        RoleSpec("extractor", LongExtractor, extractor, num_instances=instances),
        RoleSpec("matcher", DummyMatcher, num_instances=instances),
    ]


def output_content(path: Path) -> dict[str, Any]:
    """What a run produced, per task, without timings or placement: status, turns, decisions."""
    out: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        route = row.get("route") or {}
        out[f"{row['task_id']}#{row.get('trial', 0)}"] = {
            "status": row["status"],
            "error": row.get("error"),
            "turns": [[t["role"], t["content"], t["usage"]] for t in row["turns"]],
            "agreed": route.get("agreed"),
            "steps": route.get("steps"),
        }
    return out


def content_digest(content: dict[str, Any]) -> str:
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def run_point(
    *,
    tasks: int,
    concurrency: int,
    offload_threshold: int | None,
    reply_chars: int,
    agree_min: int,
    agree_max: int,
    instances: int,
    run_dir: Path,
    progress: bool,
    stall_seconds: float = 60.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run; returns its record and its output content (for comparing runs)."""
    cfg = RunConfig(
        workflow=WORKFLOW,
        roles=long_history_roles(
            reply_chars=reply_chars, agree_min=agree_min, agree_max=agree_max, instances=instances
        ),
        source=[{"id": i} for i in range(tasks)],
        run_dir=run_dir,
        max_concurrent_tasks=concurrency,
        offload_threshold=offload_threshold,
        workflow_modules=["matrix.bench.dummy", "experiments.bench.offload"],
        progress=progress,
        labels={"case": "offload", "system": "p2p", "backend": "none", "simulated": False},
    )
    m, watch = run_ray_watched(cfg, expected_rows=tasks, stall_seconds=stall_seconds)
    if m is None:
        raise RunStalled(f"offload {'on' if offload_threshold is not None else 'off'}: {watch['stalled']}")
    content = output_content(cfg.output_path(0))
    trajectories = max(1, int(m["trajectories"]))
    payload = dict(m.get("payload") or {})
    offloaded_bytes = int(payload.get("bytes_offloaded", 0))
    fetched_bytes = int(payload.get("served_bytes", 0))  # counted by the owners, so the sink's reads too
    message_bytes = int(m["bytes_moved"])
    hop = m["bytes_per_hop"] or {}
    e2e = m["latency_seconds"]["end_to_end"]
    dialogue = [len([t for t in c["turns"] if t[0] in ("teacher", "student")]) for c in content.values()]
    record = {
        "offload_threshold": offload_threshold,
        "offload": offload_threshold is not None,
        "tasks_finished": m["tasks_finished"],
        "tasks_failed": m["tasks_failed"],
        "tasks_lost": m["tasks_lost"],
        "wall_seconds": m["wall_seconds"],
        "trajectories_per_second": m["trajectories_per_second"],
        "messages": m["messages"],
        "hops_per_trajectory": m["messages"] / trajectories,
        "dialogue_turns_mean": sum(dialogue) / max(1, len(dialogue)),
        "bytes_per_hop": {k: hop.get(k) for k in ("count", "mean", "p50", "p99", "max")},
        "message_bytes_total": message_bytes,
        "message_bytes_per_trajectory": message_bytes / trajectories,
        "payload_bytes_offloaded": offloaded_bytes,
        "payload_bytes_fetched": fetched_bytes,
        "end_to_end_bytes_per_trajectory": (message_bytes + fetched_bytes) / trajectories,
        "payload": payload,
        "e2e_seconds": {"p50": e2e.get("p50"), "p99": e2e.get("p99")},
        "internal_errors": m.get("internal_errors", []),
        "output_digest": content_digest(content),
    }
    return record, content


def run_offload(
    *,
    tasks: int = 400,
    concurrency: int = 100,
    reply_chars: int = 4000,
    agree_min: int = 10,
    agree_max: int = 19,
    instances: int = 1,
    threshold: int = 512,
    stall_seconds: float = 60.0,
    run_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the workload with offloading on (`threshold`) and off; compare bytes and outputs."""
    if agree_max > MAX_DIALOGUE_TURNS:
        raise ValueError(f"agree_max must be <= {MAX_DIALOGUE_TURNS} (the coral-dummy graph's cap), got {agree_max}")
    with bench_run_dir(run_dir, "matrix-offload-") as base:
        points: list[dict[str, Any]] = []
        contents: list[dict[str, Any]] = []
        for t in (threshold, None):
            rec, content = run_point(
                tasks=tasks,
                concurrency=concurrency,
                offload_threshold=t,
                reply_chars=reply_chars,
                agree_min=agree_min,
                agree_max=agree_max,
                instances=instances,
                run_dir=base / ("on" if t is not None else "off"),
                progress=progress,
                stall_seconds=stall_seconds,
            )
            points.append(rec)
            contents.append(content)
            print(f"  offload {'on ' if t is not None else 'off'}: {format_point(rec)}", flush=True)
    on, off = points
    identical = contents[0] == contents[1]
    differing = sorted(k for k in set(contents[0]) | set(contents[1]) if contents[0].get(k) != contents[1].get(k))
    ratio = lambda a, b: a / b if b else None  # noqa: E731
    return {
        "benchmark": "offload",
        "workload": (
            f"coral-dummy graph, {reply_chars}-char dialogue turns, agreement after {agree_min}-{agree_max} "
            f"dialogue turns (cap {MAX_DIALOGUE_TURNS}); no LLM"
        ),
        "settings": {
            "tasks": tasks,
            "concurrency": concurrency,
            "reply_chars": reply_chars,
            "agree_min": agree_min,
            "agree_max": agree_max,
            "instances_per_role": instances,
            "threshold": threshold,
        },
        "cpu_count": os.cpu_count(),
        "host_load_average": list(os.getloadavg()),
        "points": points,
        "outputs_identical": identical,
        "differing_tasks": differing[:20],
        "on_over_off": {
            "bytes_per_hop_mean": ratio(on["bytes_per_hop"]["mean"], off["bytes_per_hop"]["mean"]),
            "message_bytes_per_trajectory": ratio(
                on["message_bytes_per_trajectory"], off["message_bytes_per_trajectory"]
            ),
            "end_to_end_bytes_per_trajectory": ratio(
                on["end_to_end_bytes_per_trajectory"], off["end_to_end_bytes_per_trajectory"]
            ),
            "trajectories_per_second": ratio(on["trajectories_per_second"], off["trajectories_per_second"]),
        },
    }


def _kb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e3:,.1f} kB"


def format_point(p: dict[str, Any]) -> str:
    h = p["bytes_per_hop"]
    return (
        f"{p['tasks_finished']} finished, {p['trajectories_per_second']:.1f} traj/s, bytes/hop mean {_kb(h['mean'])} "
        f"p50 {_kb(h['p50'])} p99 {_kb(h['p99'])}, {p['message_bytes_per_trajectory'] / 1e6:.2f} MB/trajectory"
    )


def _get(point: dict[str, Any], key: str) -> int:
    return int((point.get("payload") or {}).get(key, 0))


def _rows() -> list[tuple[str, Any]]:
    return [
        ("tasks finished / failed / lost",
            lambda p: f"{p['tasks_finished']} / {p['tasks_failed']} / {p['tasks_lost']}"),
        ("hops per trajectory", lambda p: f"{p['hops_per_trajectory']:.1f}"),
        ("dialogue turns per trajectory", lambda p: f"{p['dialogue_turns_mean']:.1f}"),
        ("bytes per hop, mean", lambda p: _kb(p["bytes_per_hop"]["mean"])),
        ("bytes per hop, p50", lambda p: _kb(p["bytes_per_hop"]["p50"])),
        ("bytes per hop, p99", lambda p: _kb(p["bytes_per_hop"]["p99"])),
        ("message bytes, total", lambda p: f"{p['message_bytes_total'] / 1e6:,.1f} MB"),
        ("message bytes per trajectory", lambda p: _kb(p["message_bytes_per_trajectory"])),
        ("payloads offloaded", lambda p: f"{_get(p, 'puts'):,}"),
        ("payload bytes offloaded (kept by owners)", lambda p: f"{p['payload_bytes_offloaded'] / 1e6:,.1f} MB"),
        ("payload bytes fetched by readers", lambda p: f"{p['payload_bytes_fetched'] / 1e6:,.1f} MB"),
        ("payload fetch calls", lambda p: f"{_get(p, 'fetch_calls'):,}"),
        ("payload cache hits / misses", lambda p: f"{_get(p, 'cache_hits'):,} / {_get(p, 'cache_misses'):,}"),
        ("end-to-end bytes/trajectory", lambda p: _kb(p["end_to_end_bytes_per_trajectory"])),
        ("trajectories/s", lambda p: f"{p['trajectories_per_second']:.1f}"),
        ("e2e p50 / p99 (s)", lambda p: f"{p['e2e_seconds']['p50']:.2f} / {p['e2e_seconds']['p99']:.2f}"),
    ]  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    """Offloading on and off side by side."""
    on, off = doc["points"]
    rows = [(label, cell(on), cell(off)) for label, cell in _rows()]
    w = max(len(r[0]) for r in rows)
    head = f"{'':<{w}}  {'offload on (' + str(on['offload_threshold']) + ' B)':>22}  {'offload off':>22}"
    lines = [head, "-" * len(head)] + [f"{a:<{w}}  {b:>22}  {c:>22}" for a, b, c in rows]
    r = doc["on_over_off"]
    lines.append(
        f"on/off: bytes per hop x{r['bytes_per_hop_mean']:.3f}, "
        f"message bytes per trajectory x{r['message_bytes_per_trajectory']:.3f}, "
        f"end to end x{r['end_to_end_bytes_per_trajectory']:.3f}, "
        f"throughput x{r['trajectories_per_second']:.2f}; outputs identical: {doc['outputs_identical']}"
    )
    return "\n".join(lines)


def failed(doc: dict[str, Any]) -> list[str]:
    """Why the comparison is not valid: lost or failed tasks, or outputs that differ."""
    out = []
    for p in doc["points"]:
        name = "on" if p["offload"] else "off"
        if p["tasks_failed"] or p["tasks_lost"] or p["tasks_finished"] != doc["settings"]["tasks"]:
            out.append(
                f"offload {name}: {p['tasks_finished']} finished, {p['tasks_failed']} failed, {p['tasks_lost']} lost"
            )
        if p["internal_errors"]:
            out.append(f"offload {name}: internal errors {p['internal_errors'][:3]}")
    if not doc["outputs_identical"]:
        out.append(f"outputs differ between on and off (e.g. tasks {doc['differing_tasks'][:5]})")
    return out


def main(args: argparse.Namespace) -> int:
    """`matrix bench offload`: both runs, the table, the JSON; 1 if a task failed or outputs differ."""
    from matrix.runtime.report import write_json

    names = ("tasks", "concurrency", "reply_chars", "agree_min", "agree_max", "instances", "threshold")
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    try:
        doc = run_offload(**options)
    except RunStalled as exc:
        print(f"matrix bench offload: FAILED, the run stalled: {exc}")
        return 1
    doc["problems"] = failed(doc)
    out = args.out or Path("results/bench/offload.json")
    write_json(out, doc)
    print(table(doc))
    print(f"wrote {out}")
    for p in doc["problems"]:
        print(f"matrix bench offload: {p}")
    return 1 if doc["problems"] else 0
