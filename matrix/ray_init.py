"""Starting or joining Ray from a driver, bound to 127.0.0.1 unless told where a cluster is.

Anything that needs a Ray to talk to (the P2P runtime, the serving backends, the baselines, the
benchmarks) calls `ensure_ray()`; code that starts a Ray node itself calls `local_only()` first.
"""

from __future__ import annotations

import os

import ray


def local_only() -> None:
    """Make a Ray node started from this process bind 127.0.0.1 only.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when `ray` is first imported; with it on (its
    default) `ray.init(_node_ip_address="127.0.0.1")` is overridden by the machine's address and the
    raylet and GCS listen on every interface. Setting the variable after the import is too late, so
    this sets it and the constant Ray already read. An explicit "1" in the environment is honoured.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
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
