"""Starting or joining Ray from a driver, bound to 127.0.0.1 unless told where a cluster is.

Anything that needs a Ray to talk to (the P2P runtime, the serving backends, the baselines, the
benchmarks) calls `ensure_ray()`; code that starts a Ray node itself calls `local_only()` first.
"""

from __future__ import annotations

import os

import ray

# Ray settings every node of a run starts with (a value already in the environment is kept):
# - How long Ray waits, after a call to an actor failed because the connection to it broke, for the
#   news of that actor's death before it fails the call (Ray's default: 1,000 ms). Every peer of a dead
#   actor waited that long before it could send elsewhere or replay, so a death stalled the tasks around
#   it for 1-2 s; at 100 ms a pending call fails 0.2-0.6 s after the kill (measured on 2 cores). Only
#   the error's detail is at stake: without the death's cause in time the call fails as unavailable.
# - How many tasks' events the GCS keeps for Ray's state API and dashboard. A run makes millions of
#   actor calls, so the GCS fills whatever it is given: at Ray's default its memory grew by about
#   70 MB a minute through a 16-minute soak; at 10,000 it levels off near 100 MB.
NODE_ENV = {
    "RAY_timeout_ms_task_wait_for_death_info": "100",
    "RAY_task_events_max_num_task_in_gcs": "10000",
}


def node_env() -> dict[str, str]:
    """`NODE_ENV`, with any value the environment already sets kept. Processes of a Ray node read these
    when they start (raylets pass them on to their workers), so they go in the environment of whatever
    starts a node."""
    return {k: os.environ.get(k, v) for k, v in NODE_ENV.items()}


def local_only() -> None:
    """Make a Ray node started from this process bind 127.0.0.1 only.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when `ray` is first imported; with it on (its
    default) `ray.init(_node_ip_address="127.0.0.1")` is overridden by the machine's address and the
    raylet and GCS listen on every interface. Setting the variable after the import is too late, so
    this sets it and the constant Ray already read. An explicit "1" in the environment is honoured.
    It also sets the Ray settings of `node_env` for the node it will start.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.update(node_env())
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start a private local Ray on 127.0.0.1 unless one is already initialised (or RAY_ADDRESS says where)."""
    if ray.is_initialized():
        return
    local_only()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    # address="local": always a new private instance, never a cluster that `ray start` left on this
    # machine (ray.init() with no address joins one through /tmp/ray/ray_current_cluster).
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        log_to_driver=True,
        configure_logging=False,
    )
