"""`matrix.ray_init` is a small library module: the Ray binding rules, without the runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK_BINDING = """
import json, sys
import matrix.ray_init
from ray._private import ray_constants

matrix.ray_init.local_only()
print(json.dumps({
    "env": matrix.ray_init.os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
    "cluster": ray_constants.ENABLE_RAY_CLUSTER,
    "runtime_loaded": sorted(m for m in sys.modules if m.startswith("matrix.runtime")),
}))
"""


def _local_only_in_a_fresh_process(env_value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    if env_value is not None:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = env_value
    proc = subprocess.run([sys.executable, "-c", CHECK_BINDING], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_local_only_turns_the_cluster_mode_off_without_loading_the_runtime() -> None:
    got = _local_only_in_a_fresh_process(None)
    assert got == {"env": "0", "cluster": False, "runtime_loaded": []}


def test_local_only_honours_an_explicit_one() -> None:
    got = _local_only_in_a_fresh_process("1")
    assert got["env"] == "1" and got["cluster"] is True


def test_the_driver_module_still_offers_both_helpers() -> None:
    import matrix.ray_init
    import matrix.runtime.ray_p2p as ray_p2p

    assert ray_p2p.ensure_ray is matrix.ray_init.ensure_ray
    assert ray_p2p.local_only is matrix.ray_init.local_only


def test_local_only_gives_the_node_its_ray_settings_and_keeps_the_users() -> None:
    code = (
        "import json, os, matrix.ray_init as r; r.local_only(); "
        "print(json.dumps({k: os.environ[k] for k in r.NODE_ENV}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_t")}
    env["RAY_task_events_max_num_task_in_gcs"] = "500"  # the user's value wins
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"RAY_timeout_ms_task_wait_for_death_info": "100", "RAY_task_events_max_num_task_in_gcs": "500"}
