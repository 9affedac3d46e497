"""Node loss: the refusals before a run starts, the node-kill accounting, the local multi-node cluster,
and a real run whose worker node holding the sink and payload-owning agents is killed mid-run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import ray

from experiments.bench import chaos, nodes
from matrix.runtime import ray_p2p
from matrix.runtime.ray_p2p import RayRun


def test_node_kills_need_worker_nodes_and_bad_targets_are_refused_in_one_line() -> None:
    assert chaos.parse_targets("node,agent", nodes=2) == ("node", "agent")
    with pytest.raises(ValueError, match=r"'node' needs a cluster of several nodes.*--nodes N") as err:
        chaos.parse_targets("agent,node", nodes=0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"nodes \(worker nodes beside the head\) must be >= 0, got -1"):
        chaos.parse_targets("agent", nodes=-1)
    with pytest.raises(ValueError, match=r"unknown chaos target 'nodes' \(choose from: agent, sink, model, node"):
        chaos.parse_targets("nodes", nodes=2)
    if not chaos.ADMISSION_RESTARTABLE:
        with pytest.raises(ValueError, match="'admission' is not supported"):
            chaos.parse_targets("admission", nodes=2)


def test_the_cli_refuses_node_kills_on_one_node_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    from matrix.cli import main

    assert main(["bench", "chaos", "--targets", "node", "--tasks", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'node' needs a cluster of several nodes" in err[0]
    assert main(["bench", "soak", "--targets", "agent,tool", "--tasks", "10"]) == 2
    assert "'tool' is not supported" in capsys.readouterr().err


def test_node_kills_are_summarised_with_their_actors_detection_and_replacement() -> None:
    kills = [
        chaos.Kill(2.0, "node", "node-1", held=40, restart_seconds=7.0,
                   detail={"actors": ["sink-0", "teacher-1"], "processes_killed": 6, "death_detected_seconds": 3.0,
                           "actors_back_seconds": 7.0, "replacement_seconds": 2.0}),
        chaos.Kill(12.0, "node", "node-2", held=0, restart_seconds=2.5,
                   detail={"actors": [], "processes_killed": 4, "death_detected_seconds": 4.0,
                           "actors_back_seconds": 0.0, "replacement_seconds": 2.5}),
        chaos.Kill(20.0, "agent", "student-0", held=5, restart_seconds=1.0),
    ]  # fmt: skip
    s = chaos.restart_summary(kills)
    assert s["by_target"]["node"]["kills"] == 2 and s["by_target"]["node"]["mean_restart_seconds"] == 4.75
    assert s["by_target"]["agent"]["max_restart_seconds"] == 1.0
    n = s["node_kills"]
    assert (n["actors_on_killed_nodes"], n["sinks_on_killed_nodes"], n["processes_killed"]) == (2, 1, 10)
    assert n["mean_death_detected_seconds"] == 3.5 and n["mean_replacement_seconds"] == 2.25


def test_a_local_cluster_is_refused_when_ray_is_already_up_or_badly_sized() -> None:
    with pytest.raises(nodes.ClusterError, match="object_store_mb must be >= 78"):
        nodes.LocalCluster(workers=1, object_store_mb=10)
    with pytest.raises(nodes.ClusterError, match="workers must be >= 0"):
        nodes.LocalCluster(workers=-1)
    with (
        mock.patch.object(ray, "is_initialized", return_value=True),
        pytest.raises(nodes.ClusterError, match="already initialised"),
    ):
        nodes.LocalCluster(workers=1).start()


SINK_SLOT = "test_sink_slot"  # a custom resource that only the victim node, and its replacement, offer


@contextmanager
def sink_on_slot() -> Iterator[None]:
    """The run's sinks go where SINK_SLOT is (the victim node; after its death, its replacement)."""
    options = ray_p2p.SinkActor.options

    def pinned(*args: Any, **kwargs: Any) -> Any:
        return options(*args, **{**kwargs, "resources": {SINK_SLOT: 0.01}})

    with mock.patch.object(ray_p2p.SinkActor, "options", pinned):
        yield


def output_rows(run_dir: Path) -> int:
    return sum(1 for p in run_dir.glob("output*.jsonl") for line in p.open() if line.strip())


@pytest.mark.slow
def test_killing_the_node_that_holds_the_sink_and_payload_owners_loses_nothing(no_ray: None, tmp_path: Path) -> None:
    tasks = 400
    case = chaos.coral_case(tasks=tasks, max_turns=8, length_scale=1.0, replicas=2, profile="a100-llama31-8b")
    (spec,) = case.pool_specs()
    run_dir = tmp_path / "coral" / "matrix" / "node-kill"
    seen: dict[str, Any] = {}
    with nodes.local_cluster(1, object_store_mb=100) as cluster, chaos.sim_fleet(spec, 10.0, cluster) as fleet:
        victim = cluster.add_worker(resources={SINK_SLOT: 1})
        pools = {spec.name: fleet.pool()}
        settings = case.settings(pools)
        inputs = case.inputs(settings)

        def kill_mid_run(run: RayRun) -> None:
            deadline = time.monotonic() + 120
            while output_rows(run_dir) < tasks // 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            handles = {f"sink-{p}": h for p, h in run.sinks.items()} | dict(run.all_agents())
            handles |= {f"admission-{p}": h for p, h in run.admissions.items()}
            where = nodes.placement_of(handles)
            seen["on_victim"] = sorted(n for n, (node, _) in where.items() if node == victim.node_id)
            seen["sink_node"] = cluster.node_name(where["sink-0"][0]) if "sink-0" in where else None
            seen["rows_at_kill"] = output_rows(run_dir)
            owners = [h for n, h in run.all_agents() if n in seen["on_victim"]]
            seen["payloads_owned"] = sum(s["payload"]["puts"] for s in ray.get([h.stats.remote() for h in owners]))
            seen["processes"] = cluster.kill(victim)
            cluster.add_worker(resources={SINK_SLOT: 1})  # a node of the same kind replaces it
            seen["dead_after"] = nodes.wait_node_dead(victim.node_id, deadline_s=60)

        @contextmanager
        def watch(run: RayRun, killer: Any) -> Iterator[None]:
            thread = threading.Thread(target=kill_mid_run, args=(run,), daemon=True)
            thread.start()
            yield
            thread.join(60)

        with sink_on_slot():
            metrics, _ = chaos._run_once(
                case, pools, settings, inputs, run_dir, concurrency=60, instances=2, max_attempts=10,
                progress=False, stall_seconds=120.0, chaos=None, fleet=None, log=lambda s: None, cluster=cluster,
                watch=watch,
            )  # fmt: skip
    assert "sink-0" in seen["on_victim"], seen
    # SPREAD decides what shares the sink's node: once in CI only the matcher (no model call, no payload)
    # did. A teacher or student there had offloaded payloads (their turns pass the 512-byte threshold; the
    # extractor's short answers do not), and any role that calls the model held tasks in flight, which the
    # kill took with it.
    owners_on_victim = any(n.startswith(("teacher-", "student-")) for n in seen["on_victim"])
    callers_on_victim = owners_on_victim or any(n.startswith("extractor-") for n in seen["on_victim"])
    if owners_on_victim:
        assert seen["payloads_owned"] > 0, seen
    assert 0 < seen["rows_at_kill"] < tasks, seen  # killed mid-run
    assert seen["dead_after"] is not None and seen["processes"] >= 3
    audit = chaos.audit_rows(chaos.iter_output_rows(run_dir.glob("output*.jsonl")), [(str(r["id"]), 0) for r in inputs])
    detail = json.dumps({"seen": seen, "missing": audit.missing_examples, "errors": audit.errors_by_reason})
    assert (audit.lost, audit.duplicate_rows, audit.failed_rows, audit.unexpected_rows) == (0, 0, 0, 0), detail
    assert audit.rows == tasks
    if callers_on_victim:
        assert metrics["tasks_replayed"] >= 1, metrics.get("replay_reasons")
    # the deaths the admission actor saw (an admission that died with the node starts over from a new process)
    assert metrics["actor_deaths"] >= 1 or "admission-0" in seen["on_victim"], (metrics["actor_deaths"], seen)
