"""Deaths a run survives beyond an agent's: the admission actor (alone, repeatedly, and with its sink),
and replays that start from the task's last hop instead of its first role. Slow: real Ray actors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import matrix.bench.dummy  # noqa: F401
from matrix.agent import RoleSpec
from matrix.bench.dummy import Echo
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import RayRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def output_keys(cfg: RunConfig) -> tuple[Counter[tuple[str, int]], list[dict[str, Any]]]:
    rows = []
    for p in range(cfg.num_partitions):
        rows += [json.loads(x) for x in cfg.output_path(p).read_text().splitlines()]
    return Counter((r["task_id"], r["trial"]) for r in rows), rows


def finished(run: RayRun) -> int:
    import ray

    counts = []
    for s in run.sinks.values():
        with contextlib.suppress(ray.exceptions.RayError):
            counts.append(ray.get(s.counts.remote(), timeout=10)["finished"])
    return sum(counts)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


def run_killing(run: RayRun, kill: Callable[[], None]) -> dict[str, Any]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            kill()
        except BaseException as exc:
            errors.append(exc)

    killer = threading.Thread(target=target)
    killer.start()
    try:
        m = run.run()
    finally:
        killer.join()
        run.shutdown()
    assert not errors, errors
    return m


def restarts(handle: Any) -> int:
    import ray

    return int(ray.get(handle.progress.remote(), timeout=60)["restarts"])


def echo_config(tmp_path: Path, n: int, **kw: Any) -> RunConfig:
    return RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo, num_instances=2), RoleSpec("b", Echo, num_instances=2)],
        source=[{"id": i, "x": i, "sleep": {"a": 0.01, "b": 0.1}} for i in range(n)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=40,
        progress=False,
        **kw,
    )


def test_the_admission_killed_three_times_comes_back_and_the_output_is_exactly_once(tmp_path: Path) -> None:
    import ray

    n = 500
    cfg = echo_config(tmp_path, n)
    run = RayRun(cfg)
    adm = run.admissions[0]

    def kill() -> None:
        for k in range(3):
            wait_for(lambda k=k: finished(run) >= (k + 1) * n // 5, f"{(k + 1) * n // 5} rows")
            ray.kill(adm, no_restart=False)
            wait_for(lambda k=k: restarts(adm) == k + 1, f"restart {k + 1}")

    m = run_killing(run, kill)
    keys, rows = output_keys(cfg)
    assert len(keys) == n and max(keys.values()) == 1, "lost or duplicated rows"
    assert all(r["status"] == "done" for r in rows)
    assert m["admission_restarts"] == 3
    assert m["tasks_lost"] == 0 and m["tasks_finished"] == n and m["tasks_failed"] == 0
    assert (tmp_path / "run" / "admission-0.state.json").exists()
    # Counters carry across incarnations: every task was admitted once, however often admission died.
    assert m["tasks_admitted"] == n


def test_the_admission_and_its_sink_killed_together_lose_nothing(tmp_path: Path) -> None:
    import ray

    n = 400
    cfg = echo_config(tmp_path, n, num_partitions=2)
    run = RayRun(cfg)

    def kill() -> None:
        wait_for(lambda: finished(run) >= n // 3, f"{n // 3} rows")
        ray.kill(run.admissions[1], no_restart=False)
        ray.kill(run.sinks[1], no_restart=False)
        wait_for(lambda: restarts(run.admissions[1]) == 1, "the restart")

    m = run_killing(run, kill)
    keys, rows = output_keys(cfg)
    assert len(keys) == n and max(keys.values()) == 1, "lost or duplicated rows"
    assert all(r["status"] == "done" for r in rows)
    assert m["admission_restarts"] == 1 and m["tasks_lost"] == 0


def test_a_replay_starts_from_the_last_hop_and_keeps_the_offloaded_turns(tmp_path: Path) -> None:
    import ray

    n = 200
    cfg = RunConfig(
        workflow="echo",
        # a's turn (2 kB) is offloaded, owned by the a actor; b is slow, so the b actor we kill holds
        # tasks whose first hop is done. Their replays go to b again with a's turn carried inline.
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo, num_instances=2)],
        source=[{"id": i, "x": i, "pad": 2000, "sleep": {"a": 0.01, "b": 0.8}} for i in range(n)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=40,
        progress=False,
        checkpoint_every=1,  # the message after a's hop is kept (the default keeps every 4th hop's)
    )
    run = RayRun(cfg)
    held: list[Any] = []

    victim: list[int] = []

    def b_holds_tasks() -> bool:
        """True once a b actor holds a few tasks (on a loaded host the first check may come late)."""
        counts = [ray.get(h.held.remote(), timeout=30) for _, h in run.agents["b"]]
        i = max(range(2), key=lambda j: len(counts[j]))
        if len(counts[i]) < 3:
            return False
        victim[:], held[:] = [i], counts[i]
        return True

    def kill() -> None:
        wait_for(lambda: finished(run) >= n // 8, f"{n // 8} rows")
        wait_for(b_holds_tasks, "a b actor holding 3 tasks or more")
        # SIGKILL, as the OOM killer would: the steps it was running die with it.
        os.kill(ray.get(run.agents["b"][victim[0]][1].stats.remote())["pid"], signal.SIGKILL)

    m = run_killing(run, kill)
    keys, rows = output_keys(cfg)
    assert len(keys) == n and max(keys.values()) == 1
    assert held, "the victim held nothing; the test proves nothing"
    assert m["replays_from_checkpoint"] >= 1, m["replay_reasons"]
    assert m["hops_kept_by_checkpoints"] >= m["replays_from_checkpoint"]
    # A resumed task ran a once (its first attempt's hop is in the row) and b again, and its row has a's
    # whole turn although the a actor never served it to the replay.
    resumed = [r for r in rows if r["attempt"] >= 2 and [h["role"] for h in r["hops"]] == ["a", "b"]]
    assert resumed, "no replayed row kept its first hop"
    assert all(len(r["turns"][0]["content"]) > 2000 and r["turns"][1]["role"] == "b" for r in resumed)
    assert m["checkpoints"]["enabled"] and m["checkpoints"]["received"] >= n


def test_senders_see_a_peer_die_through_their_watch_and_lose_nothing(tmp_path: Path) -> None:
    """Each sender keeps a `watch` pending on the peers it talks to: a peer killed with SIGKILL is seen
    dead by its senders (not only by admission), and the run's output stays exactly-once."""
    import ray

    cfg = echo_config(tmp_path, 400)
    for row in cfg.source:  # type: ignore[union-attr]
        row["sleep"] = {"a": 0.01, "b": 0.3}
    run = RayRun(cfg)
    _, b0 = run.agents["b"][0]
    senders = [h for _, h in run.agents["a"]]

    def seen() -> int:
        total = 0
        for h in senders:
            with contextlib.suppress(ray.exceptions.RayError):
                total += int(ray.get(h.stats.remote(), timeout=10)["peer_deaths_seen"])
        return total

    def kill() -> None:
        wait_for(lambda: finished(run) >= 40, "40 rows")
        assert seen() == 0
        os.kill(ray.get(b0.__ray_call__.remote(lambda self: os.getpid()), timeout=30), signal.SIGKILL)
        wait_for(lambda: seen() >= 1, "a sender of role a to see b-0 die")

    run_killing(run, kill)
    counts, _ = output_keys(cfg)
    assert len(counts) == 400 and set(counts.values()) == {1}
