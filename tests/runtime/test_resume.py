"""Resume and graceful stop: a run killed at any point (SIGKILL of the driver included) and rerun with the
same command ends with every task exactly once; SIGINT/SIGTERM drain and leave a resumable output."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

import matrix.bench.dummy  # noqa: F401
from matrix.agent import RoleSpec
from matrix.bench.dummy import Echo
from matrix.procs import live_processes
from matrix.runtime.config import RunConfig
from matrix.runtime.ray_p2p import RayRun, run_ray
from matrix.sink import SinkWriter, lock_exclusive, repair_and_load_ledger

DRIVER = Path(__file__).with_name("resume_driver.py")
REPO = Path(__file__).resolve().parents[2]


def keys_in(run_dir: Path) -> Counter[tuple[str, int]]:
    keys: Counter[tuple[str, int]] = Counter()
    for path in sorted(run_dir.glob("output*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)  # a torn line here would fail the test: the sink must have repaired it
            assert row["status"] == "done", row
            keys[(row["task_id"], row["trial"])] += 1
    return keys


def test_a_torn_last_line_is_cut_off_reported_and_never_parsed(tmp_path: Path) -> None:
    path = tmp_path / "output.jsonl"
    good = json.dumps({"task_id": "a", "trial": 0, "status": "done"}) + "\n"
    path.write_bytes(good.encode() + b'{"task_id": "b", "trial": 0, "sta')
    keys, cut = repair_and_load_ledger(path)
    assert keys == {("a", 0)} and cut == len(b'{"task_id": "b", "trial": 0, "sta')
    assert path.read_text() == good
    writer = SinkWriter(path)  # opening the output again finds it whole
    assert writer.stats.resumed == 1 and writer.stats.repaired_bytes == 0 and ("a", 0) in writer
    writer.close()
    path.write_text(good + "not json\n" + good)
    with pytest.raises(ValueError, match=r"output.jsonl:2: existing output line is not a task row"):
        repair_and_load_ledger(path)


TAG = "MATRIX_TEST_DRIVER"  # in a driver's environment, so in every Ray process it starts: ours to stop
_TAGS: dict[int, str] = {}  # a driver's PID -> its TAG entry


def _driver(run_dir: Path, n: int, step: float, drain: float = 30.0) -> subprocess.Popen[str]:
    tag = uuid.uuid4().hex
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(REPO), TAG: tag}
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(run_dir), str(n), str(step), str(drain)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the Ray head processes it starts go with it
    )
    _TAGS[proc.pid] = f"{TAG}={tag}"
    return proc


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill whatever the driver left behind: its process group (Ray's head processes), and the Ray workers
    (sessions of their own) that carry its tag. A worker whose raylet and GCS were killed can otherwise
    live on for a minute or more on a loaded host, trying to reach them, and hold an output file's lock."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    tag = _TAGS.pop(proc.pid)
    deadline = time.monotonic() + 30
    while pids := live_processes(env=tag):
        assert time.monotonic() < deadline, f"processes of a killed driver still alive after SIGKILL: {pids}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    run_dir = Path(proc.args[2])  # type: ignore[index]
    for path in run_dir.glob("output*.jsonl"):
        with open(path, "ab") as fh:
            lock_exclusive(fh, path, 10.0)  # nothing of ours is left to hold it


@pytest.mark.slow
def test_driver_killed_at_random_points_then_rerun_gives_each_task_exactly_once(tmp_path: Path) -> None:
    n, step = 2000, 0.1
    run_dir = tmp_path / "run"
    rng = random.Random(20261125)
    progress: list[int] = []
    for kill in range(3):  # once while Ray starts, twice mid-run
        proc = _driver(run_dir, n, step)
        if kill == 0:
            time.sleep(rng.uniform(1.0, 4.0))  # while Ray and the actors start, before any output
        else:  # mid-run: a random moment after this run has written its first rows
            before, deadline = sum(keys_in(run_dir).values()), time.monotonic() + 120
            while sum(keys_in(run_dir).values()) <= before:
                assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never started"
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 3.0))
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        _reap(proc)
        done = keys_in(run_dir)  # every row so far parses (a torn last line was repaired) and is there once
        assert max(done.values(), default=1) == 1, "a killed run left a duplicate row"
        progress.append(len(done))
    assert progress[-1] > 0 and progress[-1] < n, progress
    proc = _driver(run_dir, n, step)
    out, err = proc.communicate(timeout=300)
    _reap(proc)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    keys = keys_in(run_dir)
    assert sorted(keys) == sorted((str(i), 0) for i in range(n)), "lost tasks"
    assert max(keys.values()) == 1, "duplicate rows"
    assert summary["tasks_resumed"] == progress[-1]
    assert summary["tasks_finished"] == n - progress[-1]
    assert progress == sorted(progress), f"a rerun lost rows that were already written: {progress}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_drains_the_tasks_in_flight_and_the_rerun_finishes_the_rest(tmp_path: Path, sig: int) -> None:
    n, step = 600, 0.1
    run_dir = tmp_path / "run"
    proc = _driver(run_dir, n, step)
    deadline = time.monotonic() + 120
    while sum(keys_in(run_dir).values()) < 40:  # well into the run
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never started"
        time.sleep(0.2)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    _reap(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "matrix: stopping (" in err and "no new tasks" in err
    stopped = json.loads(out.strip().splitlines()[-1])["stopped"]
    assert stopped["reason"] == signal.Signals(sig).name and stopped["drained"] is True
    assert stopped["unfinished_in_flight"] == 0
    first = keys_in(run_dir)
    assert 40 <= len(first) < n and max(first.values()) == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped"]["reason"] == signal.Signals(sig).name
    assert metrics["tasks_finished"] == len(first)  # every task admitted before the stop was finished
    proc = _driver(run_dir, n, step)
    out, err = proc.communicate(timeout=300)
    _reap(proc)
    assert proc.returncode == 0, err[-3000:]
    keys = keys_in(run_dir)
    assert len(keys) == n and max(keys.values()) == 1
    assert json.loads(out.strip().splitlines()[-1])["tasks_resumed"] == len(first)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_second_stop_request_stops_without_waiting_for_the_drain(tmp_path: Path) -> None:
    cfg = RunConfig(
        workflow="echo",
        roles=[RoleSpec("a", Echo), RoleSpec("b", Echo)],
        # odd rows take 60 s: they are still in flight at the second request, whatever this machine's speed
        source=[{"id": i, "x": i, "sleep": {"b": 60.0 if i % 2 else 0.05}} for i in range(200)],
        run_dir=tmp_path / "run",
        max_concurrent_tasks=20,
        drain_seconds=600,
        progress=False,
    )
    run = RayRun(cfg)

    def stop_twice() -> None:
        time.sleep(3.0)
        run.request_stop("test")
        time.sleep(1.0)
        run.request_stop("test")

    t = threading.Thread(target=stop_twice)
    t.start()
    started = time.monotonic()
    try:
        m = run.run()
    finally:
        t.join()
        run.shutdown()
    assert time.monotonic() - started < 60  # not the 600 s drain
    assert m["stopped"]["reason"] == "test" and m["stopped"]["drained"] is False
    assert m["stopped"]["unfinished_in_flight"] > 0
    keys = keys_in(cfg.run_dir)
    assert max(keys.values()) == 1 and len(keys) == m["tasks_finished"] < 200
    # and the same run directory run again finishes the rest (quick rows now: resume goes by task id)
    m2 = run_ray(replace(cfg, source=[{"id": i, "x": i} for i in range(200)]))
    assert m2["tasks_resumed"] == len(keys) and len(keys_in(cfg.run_dir)) == 200
