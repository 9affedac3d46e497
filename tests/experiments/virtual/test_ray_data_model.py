"""The Ray Data scheduling model (experiments/virtual/ray_data.py) against what it models.

Fast: the tasks and batches it cuts from the input, the dispatch bound it reads from Ray Data, and
its dispatch (a batch queued behind a slow one waits for it) on a virtual loop with stub actors.
Slow: the model on the virtual clock against the real baseline (Ray Data actors, HTTP sim
replicas) at a small twin setting, through the one entry point: the same rows, and tokens/s within
10% when the host kept up with the real run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.virtual.ray_data import MODEL, max_tasks_in_flight_per_actor, ray_data_tasks, schedule
from matrix.cases import nr
from matrix.message import DONE, Message


def sizes(tasks: list[list[range]]) -> list[list[int]]:
    return [[len(b) for b in task] for task in tasks]


def test_tasks_are_the_blocks_of_from_items_bundled_to_the_batch_size() -> None:
    # B divides n (every reference run): one task per block, one batch per task, in input order.
    tasks = ray_data_tasks(6000, 50)
    assert sizes(tasks) == [[50]] * 120
    assert [b for task in tasks for b in task] == [range(i, i + 50) for i in range(0, 6000, 50)]
    # 610 rows in 25 blocks: 10 of 25 rows, then 15 of 24, bundled two by two (48 rows: batches of
    # 25 and 23), the last block alone at the flush.
    tasks = ray_data_tasks(610, 25)
    assert sizes(tasks) == [[25]] * 10 + [[25, 23]] * 7 + [[24]]
    assert [i for task in tasks for b in task for i in b] == list(range(610))
    assert sizes(ray_data_tasks(7, 50)) == [[7]]
    assert ray_data_tasks(0, 50) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ray_data_tasks(10, 0)


def test_ray_data_queues_two_tasks_per_actor_of_the_baseline() -> None:
    # The baseline's UDF is a synchronous class: max_concurrency 1, so 2 x 1 tasks in flight.
    assert max_tasks_in_flight_per_actor() == 2


class StubActor:
    """Takes `seconds` (the record's field) of clock time per batch; logs (batch's first index, start)."""

    def __init__(self) -> None:
        self.log: list[tuple[int, float]] = []

    async def process(self, records: list[dict[str, Any]]) -> list[Message]:
        loop = asyncio.get_running_loop()
        self.log.append((int(records[0]["index"]), loop.time()))
        await asyncio.sleep(max(float(r["seconds"]) for r in records))  # the barrier: the slowest row
        return [Message(task_id=str(r["index"]), workflow="w", row=None, status=DONE) for r in records]


def run_stubs(seconds: list[float], actors: int, depth: int) -> list[list[tuple[int, float]]]:
    import looptime

    stubs = [StubActor() for _ in range(actors)]
    records = [{"index": i, "seconds": s} for i, s in enumerate(seconds)]
    loop = looptime.new_event_loop(start=0.0)
    try:
        done = loop.run_until_complete(schedule(records, stubs, 1, depth))
    finally:
        loop.close()
    assert sorted(i for i, _ in done) == list(range(len(seconds)))
    return [s.log for s in stubs]


def test_a_batch_queued_behind_a_slow_one_waits_for_it() -> None:
    # Batch 0 takes 10 s, the others 1 s; two actors. Ray's heap hands a tie to the actor updated
    # last, so at the start actor 1 gets batch 0, actor 0 batches 1 and 2, and actor 1 batch 3,
    # queued behind the slow batch 0 (two tasks in flight per actor, Ray Data's bound for the
    # baseline): batch 3 begins at 10 s although actor 0 is idle from 4 s.
    a, b = run_stubs([10, 1, 1, 1, 1, 1], actors=2, depth=2)
    assert a == [(1, 0.0), (2, 1.0), (4, 2.0), (5, 3.0)]
    assert b == [(0, 0.0), (3, 10.0)]
    # One task in flight per actor: an actor takes the next batch only when it is free.
    a, b = run_stubs([10, 1, 1, 1, 1, 1], actors=2, depth=1)
    assert a == [(1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0), (5, 4.0)]
    assert b == [(0, 0.0)]


# ------------------------------------------------------------------ against the real baseline

TIMES = ("created", "finished")
PLACE = ("batch", "batch_started", "batch_finished", "work_finished", "worker")


def rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(m["run_dir"]) / "output.jsonl").read_text().splitlines()]


def without_time_and_place(row: dict[str, Any]) -> dict[str, Any]:
    """A row less its timestamps and which actor ran it (decisions, texts, usage and errors stay)."""
    out = {k: v for k, v in row.items() if k not in TIMES}
    out["route"] = {k: v for k, v in row["route"].items() if k not in PLACE}
    out["hops"] = [h["role"] for h in row["hops"]]
    return out


def batch_window(rs: list[dict[str, Any]]) -> tuple[float, float]:
    """Tokens per second over the span from the first batch's start to the last batch's return, and
    that span (simulated s: wall seconds at the test's time scale of 1)."""
    start = min(r["route"]["batch_started"] for r in rs)
    end = max(r["route"]["batch_finished"] for r in rs)
    return sum(r["usage"]["completion_tokens"] for r in rs) / (end - start), end - start


def batches(rs: list[dict[str, Any]]) -> list[list[str]]:
    by: dict[str, list[str]] = {}
    for r in rs:
        by.setdefault(r["route"]["batch"], []).append(r["task_id"])
    return sorted(sorted(ids) for ids in by.values())


@pytest.fixture(scope="module")
def ray_with_warm_workers() -> Iterator[None]:
    """A private Ray node on 127.0.0.1 whose worker processes load py3langid's model when they start.

    The baseline's actors load it lazily, on their first row: 1-3 s per actor on this machine, inside
    the run's window, while the model's process has it loaded already (and virtual time does not see
    it). Loading it at process start makes it startup, as the model assumes (actors ready at once),
    so that what is compared is the scheduling.
    """
    import ray

    from matrix.runtime.ray_p2p import local_only

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    local_only()
    if ray.is_initialized():
        ray.shutdown()
    # A lambda, so that it travels by value (this test module is not importable in a worker).
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": lambda: nr.language_of("warm up")})  # fmt: skip
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_with_warm_workers", "shared_pools")
def test_the_model_on_the_virtual_clock_matches_the_real_baseline(tmp_path: Path) -> None:
    """400 documents, 2 actors x 25 rows on the NR twin's pools (1 x 3B + 2 x 70B, SIMULATED): the
    real baseline in real time (Ray Data actors, HTTP replicas) against the model on the virtual
    clock, CPU charges off (what is compared is the scheduling). The rows must be the same; tokens/s
    within 10%, as far as the host's load leaves the real run a reference (tests/host.py: on a loaded
    machine the real run is slower than it would be alone, so only the lower bound stays tight)."""
    from experiments import run
    from experiments.pools import SHARED
    from tests.experiments.conftest import compose_cfg
    from tests.experiments.virtual.conftest import late_share
    from tests.host import CpuStall, assert_model_near_real

    point = ["case=nr", "backend=sim", "scale=twin", "case.limit=400", "system=ray-data", "system.concurrency=50",
             "system.batch_size=25", f"run_root={tmp_path}", "progress=false"]  # fmt: skip
    with CpuStall() as stall:
        real = run.run_job(compose_cfg(*point, "run_id=real"))
    assert SHARED.pools is not None
    behind = late_share([u for pool in SHARED.pools.values() for u in pool.urls])
    virtual = run.run_job(compose_cfg(*point, "run_id=virtual", "clock=virtual", "clock.charge_cpu=false"))

    assert virtual["clock"] == "virtual" and virtual["simulated"] is True and virtual["model"] == MODEL
    assert virtual["parallelism"] == real["parallelism"] == [2, 25, 1]
    r, v = rows(real), rows(virtual)
    assert [x["task_id"] for x in r] == [x["task_id"] for x in v] and len(r) == 400  # both in input order
    assert [without_time_and_place(x) for x in r] == [without_time_and_place(x) for x in v]
    assert batches(r) == batches(v)  # the same rows batched together
    assert real["tokens_generated"] == virtual["tokens_generated"] > 0
    assert real["quality"]["counts"] == virtual["quality"]["counts"]
    assert virtual["ray_data"]["batches"] == real["ray_data"]["batches"] == 16
    assert virtual["startup_seconds"] == 0.0

    # Timestamps are on the virtual clock: each hop inside its row's work, inside its batch.
    for x in v:
        route = x["route"]
        assert route["batch_started"] <= x["hops"][0]["started"], x["task_id"]
        assert x["hops"][-1]["finished"] <= route["work_finished"] <= route["batch_finished"], x["task_id"]

    # Throughput over each run's window, and over the span of its batches alone.
    (real_span, real_span_s), (virtual_span, _) = batch_window(r), batch_window(v)
    said = f"{100 * behind:.1f}% of the real run's engine steps late"
    assert_model_near_real(virtual["tokens_per_second"], real["tokens_per_second"], real["wall_seconds"], stall,
                           said=f"tokens/s; {said}")  # fmt: skip
    assert_model_near_real(virtual_span, real_span, real_span_s, stall, said=f"tokens/s over the batches; {said}")
