"""The Ray P2P transport on a private local Ray (127.0.0.1). Slow: each test deploys actors."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import matrix.bench.dummy  # noqa: F401
from matrix.agent import RoleSpec
from matrix.bench.dummy import Echo
from matrix.runtime import window
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import RayRun, run_ray

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def output_rows(cfg: RunConfig) -> list[dict]:
    rows = []
    for p in range(cfg.num_partitions):
        rows += [json.loads(x) for x in cfg.output_path(p).read_text().splitlines()]
    return rows


def test_end_to_end_with_bad_rows_and_step_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "x": i, "fail_at": "b" if i == 5 else None}) for i in range(100)]
    src.write_text("\n".join([*lines[:50], "{broken", *lines[50:]]) + "\n")
    cfg = RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo, num_instances=2)],
        source=src,
        run_dir=tmp_path / "run",
        max_concurrent_tasks=16,
        progress=False,
    )
    m = run_ray(cfg)
    rows = output_rows(cfg)
    assert len(rows) == 101 and len({(r["task_id"], r["trial"]) for r in rows}) == 101
    assert m["tasks_finished"] == 99 and m["tasks_failed"] == 2 and m["tasks_lost"] == 0
    bad = next(r for r in rows if r["row"] and r["row"].get("raw_line") == "{broken")
    assert "in.jsonl:51" in bad["error"]
    assert m["peak_in_flight"] <= 16
    assert m["internal_errors"] == []
    assert (tmp_path / "run" / "metrics.json").exists()
    # The window starts once every actor is up (their launch is startup) and ends with the last row.
    w = m["window"]
    assert w["definition"] == window.DEFINITION
    assert w["launched_at"] < w["ready_at"] <= w["start_at"] < w["end_at"]
    assert m["startup_seconds"] == pytest.approx(w["ready_at"] - w["launched_at"]) and m["startup_seconds"] > 0
    assert m["wall_seconds"] == pytest.approx(w["end_at"] - w["start_at"])
    assert w["start_at"] <= min(r["created"] for r in rows) and max(r["finished"] for r in rows) <= w["end_at"]


def run_with_kill(run: RayRun, done_before_kill: int, kill: Callable[[], None]) -> dict:
    """Run, calling `kill()` from another thread once `done_before_kill` tasks are in the output."""
    import ray

    def kill_later() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = ray.get([s.counts.remote() for s in run.sinks.values()])
            if sum(c["finished"] for c in counts) >= done_before_kill:
                break
            time.sleep(0.02)
        kill()

    killer = threading.Thread(target=kill_later)
    killer.start()
    try:
        return run.run()
    finally:
        killer.join()
        run.shutdown()


def test_killing_an_agent_actor_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    import ray

    n = 400
    cfg = RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo, num_instances=2), RoleSpec("b", Echo, num_instances=2)],
        # Role b is the slow one, so that the actor we kill always holds tasks in its steps.
        source=[{"id": i, "x": i, "sleep": {"a": 0.02, "b": 0.3}} for i in range(n)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=40,
        num_partitions=2,
        progress=False,
    )
    run = RayRun(cfg)
    held_at_kill: list[object] = []

    def kill() -> None:
        # Kill whichever b actor holds more tasks, once a quarter of the tasks are done.
        held = [ray.get(h.held.remote()) for _, h in run.agents["b"]]
        i = max(range(len(held)), key=lambda j: len(held[j]))
        held_at_kill.extend(held[i])
        ray.kill(run.agents["b"][i][1], no_restart=False)

    m = run_with_kill(run, n // 4, kill)
    rows = output_rows(cfg)
    keys = Counter((r["task_id"], r["trial"]) for r in rows)
    assert len(keys) == n, f"lost {n - len(keys)} tasks"
    assert max(keys.values()) == 1, "duplicate rows in the output"
    assert all(r["status"] == "done" for r in rows)
    assert m["actor_deaths"] >= 1
    assert held_at_kill, "the victim held no task when it was killed; the test proves nothing"
    # A census ran after the death. Whether it had to replay anything depends on where the victim's
    # tasks were: ones already handed on (acknowledged by the next peer or the sink) are not lost.
    assert m["census_runs"] >= 1
    held_keys = {(str(k[0]), int(k[1])) for k in held_at_kill}  # type: ignore[index]
    assert held_keys <= set(keys), "a task the victim held is missing from the output"
    assert m["tasks_lost"] == 0


def test_offloading_moves_fewer_bytes_per_hop_on_long_histories(tmp_path: Path) -> None:
    rows = [{"id": i, "x": i, "pad": 4000} for i in range(40)]
    results = {}
    for label, threshold in (("on", 512), ("off", None)):
        cfg = RunConfig(
            workflow="echo",
            roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)],
            source=rows,
            run_dir=tmp_path / label,
            offload_threshold=threshold,
            progress=False,
        )
        results[label] = run_ray(cfg)
        out = output_rows(cfg)
        # Output rows are always resolved back to the full text.
        assert all(len(r["turns"][1]["content"]) > 4000 for r in out)
    assert results["on"]["bytes_moved"] < results["off"]["bytes_moved"] / 4
    assert results["on"]["payload"]["puts"] >= 80
    assert results["off"]["payload"]["puts"] == 0
    # The size a message would have with nothing offloaded (paper Fig 8) is the same with offloading on or off
    # (up to the handles' own bytes), and with it off it is what travels.
    on, off = results["on"], results["off"]
    assert off["message_bytes"] == off["bytes_per_hop"]
    assert on["message_bytes"]["count"] == off["message_bytes"]["count"]
    assert abs(on["message_bytes"]["mean"] - off["message_bytes"]["mean"]) < 0.1 * off["message_bytes"]["mean"]
    assert on["bytes_per_hop"]["mean"] < on["message_bytes"]["mean"] / 4


def test_offloaded_payloads_are_fetched_from_their_owners_and_freed(tmp_path: Path) -> None:
    from matrix.bench.dummy import coral_dummy_roles

    cfg = RunConfig(
        workflow="coral-dummy",
        roles=coral_dummy_roles(2),
        source=[{"id": i, "text": f"{i} " + "q" * 900} for i in range(300)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=100,
        progress=False,
        workflow_modules=["matrix.bench.dummy"],
    )
    m = run_ray(cfg)
    rows = output_rows(cfg)
    assert len({r["task_id"] for r in rows}) == 300 and all(r["status"] == "done" for r in rows)
    assert all(r["row"]["text"].endswith("q" * 900) for r in rows)
    assert all(len(t["content"]) >= 1599 for r in rows for t in r["turns"] if t["role"] in ("teacher", "student"))
    p = m["payload"]
    assert p["puts"] > 600 and p["fetched"] > 0 and p["fetch_calls"] < p["fetched"]
    # A fault-free run replays nothing, and the sink freed every payload once it had written it.
    assert m["tasks_replayed"] == 0, m["replay_reasons"]
    assert p["owned_bytes"] == 0 and p["freed"] == p["puts"]


def test_killing_a_payload_owner_replays_its_tasks_and_loses_none(tmp_path: Path) -> None:
    import ray

    n = 200
    gate = tmp_path / "gate"
    cfg = RunConfig(
        workflow="echo",
        # a's turns (2 kB) are offloaded and owned by a. b's steps wait at the gate until a has been
        # killed and restarted, so b holds handles to a's payloads when a dies.
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)],
        source=[{"id": i, "x": i, "pad": 2000, "sleep": {"a": 0.01}, "gate": {"b": str(gate)}} for i in range(n)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=40,
        progress=False,
    )
    run = RayRun(cfg)
    b_held: list[object] = []

    def kill() -> None:
        a = run.agents["a"][0][1]
        deadline = time.monotonic() + 60
        while len(b_held) < 10 and time.monotonic() < deadline:
            b_held[:] = ray.get(run.agents["b"][0][1].held.remote())
            time.sleep(0.02)
        pid = ray.get(a.stats.remote())["pid"]
        ray.kill(a, no_restart=False)
        # Open the gate only once a's successor runs: the payloads b's tasks point at are gone by then.
        while time.monotonic() < deadline + 60:
            with contextlib.suppress(ray.exceptions.RayError):
                if ray.get(a.stats.remote(), timeout=5)["pid"] != pid:
                    break
            time.sleep(0.1)
        gate.touch()

    m = run_with_kill(run, 0, kill)
    rows = output_rows(cfg)
    keys = Counter((r["task_id"], r["trial"]) for r in rows)
    assert len(keys) == n and max(keys.values()) == 1
    assert all(r["status"] == "done" and len(r["turns"][0]["content"]) > 2000 for r in rows)
    assert len(b_held) >= 10, "b held too few tasks at the kill; the test proves nothing"
    # The tasks b held carried a turn that lived only in the dead actor: they had to start over.
    assert any("payload lost" in k for k in m["replay_reasons"]), m["replay_reasons"]
    attempt = {(r["task_id"], r["trial"]): r["attempt"] for r in rows}
    assert all(attempt[(k[0], k[1])] >= 2 for k in b_held), "a task whose payload died was written, not replayed"
    assert m["tasks_lost"] == 0
    assert m["tasks_failed"] == 0, "a replayed task lost its payloads again"


DRIVE_SMALL_THEN_LARGE = """
import json, sys
import ray
import matrix.bench.dummy
from matrix.agent import RoleSpec
from matrix.bench.dummy import Echo
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import RayRun

for label, pad in (("small", 0), ("large", 80_000)):
    cfg = RunConfig(workflow="echo", roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)],
                    source=[{"id": i, "x": i, "text": "t" * pad} for i in range(4)],
                    run_dir=sys.argv[1] + "/" + label, progress=False)
    print("== " + label, file=sys.stderr, flush=True)
    run = RayRun(cfg)
    try:
        inline = run._cfg_ref is cfg
        by_ref = isinstance(run._cfg_ref, ray.ObjectRef)
        m = run.run()
    finally:
        run.shutdown()
    print(json.dumps({"label": label, "inline": inline, "by_ref": by_ref, "finished": m["tasks_finished"]}), flush=True)
"""


def test_restartable_actors_get_their_arguments_inline_when_the_config_is_small(tmp_path: Path) -> None:
    """No actor handle and no small config goes through the object store (Ray logs an error that a
    restart could fail then); a config too large to inline does, pinned by the driver, and runs.
    Ray logs that line once per process, so a fresh driver runs the small config, then the large."""
    import os
    import subprocess
    import sys

    env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVE_SMALL_THEN_LARGE, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {d["label"]: d for d in map(json.loads, proc.stdout.splitlines())}
    assert got["small"] == {"label": "small", "inline": True, "by_ref": False, "finished": 4}
    assert got["large"] == {"label": "large", "inline": False, "by_ref": True, "finished": 4}
    small_err, large_err = proc.stderr.split("== large")
    warning = "constructor arguments in the object store"
    assert warning not in small_err, small_err[-2000:]
    assert warning in large_err, "Ray no longer logs its warning: this test cannot see it any more"
