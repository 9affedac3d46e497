"""A Ray cluster of several nodes on this one machine, whose worker nodes can be killed whole.

Each node is a real Ray node: its own raylet, object store and worker processes, all bound to
127.0.0.1 (the same `ray._private.node.Node` that `ray start` and Ray's own fault-tolerance tests
use). The head node (GCS, and the driver's raylet) is never killed; a worker node's loss is every
process of it killed at once with SIGKILL: the raylet, its object store, its worker processes (the
run's actors that lived there, with the payloads they own). That is what a SLURM preemption, the
OOM killer or a lost host does. `replace` then starts a fresh worker node, as a cluster's
autoscaler or a requeued SLURM job would.

Worker nodes offer no CPU to Ray's scheduler (`worker_cpus=0` by default): only zero-CPU actors
land there, i.e. the run's agents and sinks, which `RunConfig.placement="spread"` spreads over every
node. Actors left on Ray's default placement (the run's directory and admission, the sim replicas)
stay on the driver's node, the head; `placement_of` lets a caller check that.

The head's GCS marks a lost node dead after `health_check_failure_threshold` failed health checks
`health_check_period_ms` apart (Ray's defaults, 5 x 3 s, take about 15 s); a smaller period here
shortens each recovery, and all three settings are recorded with the results. A killed node's checks
fail at once (connection refused); a live node gets `health_check_timeout_ms` per check to answer,
long enough for a raylet on two busy cores (with a 1 s timeout a freshly started replacement node
was seen declared dead under load).

Unlike `ray.cluster_utils.Cluster`, this writes no `/tmp/ray/ray_current_cluster`: a plain
`ray.init()` elsewhere on the machine must not join a benchmark's cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psutil
import ray

from matrix.ray_init import local_only

DEFAULT_OBJECT_STORE_MB = 128
DEFAULT_HEALTH_CHECK_PERIOD_MS = 1000
DEFAULT_HEALTH_CHECK_FAILURE_THRESHOLD = 5
DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 5000


class ClusterError(RuntimeError):
    """The local cluster could not be started, or was asked for something it cannot do."""


@dataclass
class WorkerNode:
    """One worker node of the local cluster: its Ray node id and the `Node` that owns its processes."""

    name: str  # node-1, node-2, ... in the order they were started
    node_id: str
    node: Any  # ray._private.node.Node
    started_seconds: float  # from the start call until the node was registered
    killed: bool = False


@dataclass
class LocalCluster:
    """A head node plus `workers` worker nodes on 127.0.0.1; the driver connects to the head.

    Use it as a context manager (or call `start` and `shutdown`): every process it starts is stopped
    at the end, and Ray's reaper stops them if this process dies first.
    """

    workers: int = 2
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB
    head_cpus: int | None = None  # None: this machine's CPU count
    worker_cpus: int = 0
    health_check_period_ms: int = DEFAULT_HEALTH_CHECK_PERIOD_MS
    health_check_failure_threshold: int = DEFAULT_HEALTH_CHECK_FAILURE_THRESHOLD
    health_check_timeout_ms: int = DEFAULT_HEALTH_CHECK_TIMEOUT_MS
    head: Any = None  # ray._private.node.Node once started
    nodes: list[WorkerNode] = field(default_factory=list)
    _counter: int = 0
    _starter: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ClusterError(f"workers must be >= 0, got {self.workers}")
        if self.object_store_mb < 78:
            raise ClusterError(f"object_store_mb must be >= 78 (Ray's minimum), got {self.object_store_mb}")
        if self.health_check_period_ms < 100 or self.health_check_failure_threshold < 1:
            raise ClusterError(
                f"health checks every {self.health_check_period_ms} ms with threshold "
                f"{self.health_check_failure_threshold}: need >= 100 ms and >= 1"
            )

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _params(self, **kw: Any) -> Any:
        from ray._private.parameter import RayParams

        return RayParams(
            node_ip_address="127.0.0.1",
            num_gpus=0,
            object_store_memory=self.object_store_mb * 1024 * 1024,
            min_worker_port=0,
            max_worker_port=0,
            include_dashboard=False,
            **kw,
        )

    def start(self) -> LocalCluster:
        """Start the head and the worker nodes and connect this process's driver to the head."""
        if ray.is_initialized():
            raise ClusterError(
                "Ray is already initialised in this process; call ray.shutdown() before starting a local cluster"
            )
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        local_only()
        from ray._private.node import Node

        system_config = {
            "health_check_period_ms": self.health_check_period_ms,
            "health_check_failure_threshold": self.health_check_failure_threshold,
            "health_check_timeout_ms": self.health_check_timeout_ms,
        }
        params = self._params(num_cpus=self.head_cpus or os.cpu_count() or 1, _system_config=system_config)
        self.head = Node(params, head=True, shutdown_at_exit=True, spawn_reaper=True)
        try:
            for _ in range(self.workers):
                self.add_worker()
            ray.init(address=self.head.gcs_address, log_to_driver=True, configure_logging=False)
            if ray.get_runtime_context().get_node_id() != self.head.node_id:
                raise ClusterError("the driver did not connect to the head node")
        except BaseException:
            self.shutdown()
            raise
        return self

    def add_worker(self, resources: dict[str, float] | None = None) -> WorkerNode:
        """Start one more worker node (offering `resources`, custom ones included) and wait until the GCS
        has it; returns it.

        Every worker node is started from one thread that lives as long as the cluster: Ray ties a
        node's processes to the thread that started them (Linux's parent-death signal follows the
        thread), so a node started from a short-lived thread (a chaos killer's) would die with it.
        """
        if self.head is None:
            raise ClusterError("the cluster is not started")
        if self._starter is None:
            self._starter = ThreadPoolExecutor(1, thread_name_prefix="matrix-node-starter")
        return self._starter.submit(self._start_worker, resources).result()

    def _start_worker(self, resources: dict[str, float] | None) -> WorkerNode:
        from ray._private import services
        from ray._private.node import Node

        params = self._params(
            num_cpus=self.worker_cpus,
            gcs_address=self.head.gcs_address,
            include_log_monitor=False,
            node_manager_port=0,
            resources=dict(resources or {}),
        )
        params.dashboard_agent_listen_port = None  # a free one, not the head's
        t0 = time.monotonic()
        # Ray's exit hooks install signal handlers, which only the main thread may do: a worker node
        # relies on `shutdown`, and on Ray's reaper should this process die first.
        node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=True)
        services.wait_for_node(node.gcs_address, node.plasma_store_socket_name, 60)
        self._counter += 1
        worker = WorkerNode(f"node-{self._counter}", node.node_id, node, time.monotonic() - t0)
        self.nodes.append(worker)
        return worker

    def live_workers(self) -> list[WorkerNode]:
        return [w for w in self.nodes if not w.killed]

    def kill(self, worker: WorkerNode) -> int:
        """Every process of `worker` killed at once (SIGKILL), as a lost host loses them; returns how many.

        The raylet's worker processes (the actors on the node) are found first and killed in the same
        sweep as the raylet and its object store, so none of them outlives its node to finish a call.
        """
        if worker.killed:
            raise ClusterError(f"{worker.name} is already dead")
        if worker.node is self.head:
            raise ClusterError("the head node is never killed (the driver and the GCS live there)")
        procs: list[psutil.Process] = []
        for _, proc in worker.node.live_processes():
            with suppress(psutil.Error):
                p = psutil.Process(proc.pid)
                procs += [p, *p.children(recursive=True)]
        for p in procs:
            with suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        worker.killed = True
        # reap what was started through Node (and anything that survived the sweep)
        worker.node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        psutil.wait_procs(procs, timeout=10)
        return len(procs)

    def shutdown(self) -> None:
        """Disconnect the driver and stop every node this cluster started (workers first, then the head)."""
        if ray.is_initialized():
            ray.shutdown()
        for w in self.live_workers():
            with suppress(Exception):
                w.node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            w.killed = True
        if self.head is not None:
            with suppress(Exception):
                self.head.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            self.head = None
        if self._starter is not None:
            self._starter.shutdown(wait=True)
            self._starter = None

    # ------------------------------------------------------------------ what runs where

    def node_name(self, node_id: str) -> str:
        """`head`, `node-<n>`, or the id's first 8 characters for a node this cluster did not start."""
        if self.head is not None and node_id == self.head.node_id:
            return "head"
        return next((w.name for w in self.nodes if w.node_id == node_id), node_id[:8])

    def processes(self) -> list[psutil.Process]:
        """Every live process of the cluster's nodes and their descendants (the actors' worker processes)."""
        nodes = ([self.head] if self.head is not None else []) + [w.node for w in self.live_workers()]
        seen: dict[int, psutil.Process] = {}
        for node in nodes:
            for _, proc in node.live_processes():
                with suppress(psutil.Error):
                    p = psutil.Process(proc.pid)
                    for q in [p, *p.children(recursive=True)]:
                        seen.setdefault(q.pid, q)
        return list(seen.values())

    def rss_bytes(self) -> int:
        """Summed resident memory of the cluster's processes (not counting the driver)."""
        return sum_rss(self.processes())


def sum_rss(procs: list[psutil.Process]) -> int:
    """Summed RSS of the processes that are still alive."""
    total = 0
    for p in procs:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def ray_processes() -> list[psutil.Process]:
    """The processes of the Ray node this driver started (`ensure_ray`) and their descendants; empty
    when this process joined a cluster it did not start."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    seen: dict[int, psutil.Process] = {}
    for _, proc in node.live_processes() if node is not None else []:
        with suppress(psutil.Error):
            p = psutil.Process(proc.pid)
            for q in [p, *p.children(recursive=True)]:
                seen.setdefault(q.pid, q)
    return list(seen.values())


def _where(_actor: Any) -> tuple[str, int]:
    """Run on an actor through `__ray_call__`: its node id and process id."""
    return ray.get_runtime_context().get_node_id(), os.getpid()


def placement_of(handles: dict[str, Any], *, timeout: float = 60.0) -> dict[str, tuple[str, int]]:
    """Where each named actor runs now: name -> (node id, pid); an actor that does not answer is left out."""
    names = list(handles)
    refs = [handles[n].__ray_call__.remote(_where) for n in names]
    out: dict[str, tuple[str, int]] = {}
    for name, ref in zip(names, refs, strict=True):
        with suppress(ray.exceptions.RayError, TimeoutError):
            node_id, pid = ray.get(ref, timeout=timeout)
            out[name] = (str(node_id), int(pid))
    return out


def wait_node_dead(node_id: str, *, deadline_s: float = 120.0) -> float | None:
    """Seconds until the GCS lists `node_id` as dead (None: not within the deadline)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        if not alive.get(node_id, False):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


@contextmanager
def local_cluster(workers: int, **options: Any) -> Iterator[LocalCluster]:
    """A started `LocalCluster` of a head and `workers` worker nodes, stopped on exit."""
    cluster = LocalCluster(workers=workers, **options)
    with cluster:
        yield cluster
