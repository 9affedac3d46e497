"""What one tau2 tool call costs against a real tool server (the virtual clock's tool charges).

On the virtual clock (issue 19) the P2P tool role calls tau2's environment in-process
(`matrix.tools.inproc`), which takes no clock time by itself. This benchmark measures what the
real path costs on this machine, so that the in-process pool can charge it: a `ToolServerPool` of
one server in each sandbox (bubblewrap where it works, and a plain process), driven with `call_tool`
the way the tool role drives it, replaying the tool calls of real telecom trajectories (tau2's own
orchestrator and environment, both sides played by the sim behaviour, `simulate_trajectory`).

Per operation (open a session = `acquire`, a tool call, close = `release`) it records:

- latency: the round trip seen by the caller, one operation at a time (median and mean, ms);
- server CPU: the server process's CPU time over the phase divided by the operations (ms): the
  part that serializes on the server's one interpreter (the GIL), charged on the server's
  `SerialCpu`; the rest of the round trip (client, sockets, scheduling) is charged as latency;
- saturation: calls per second with `--concurrency` sessions calling at once against the one
  server, against 1 / server CPU per call (how well a serial CPU describes it).

    python scripts/bench_tau2_tool_call.py --tasks 12 --out results/bench/tau2_tool_call.json

The seconds are this machine's (2 shared cores); the JSON records which sandbox gave which number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def trajectories_calls(domain: str, n_tasks: int, seed: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(task id, tool calls in order) for every `len/n`-th task, from tau2's orchestrator on the sim behaviour."""
    from matrix.cases import tau2 as case
    from matrix.cases.tau2.sim import Tau2Behaviour, simulate_trajectory

    tasks = case.load_tasks(domain)
    step = max(1, len(tasks) // n_tasks)
    behaviour = Tau2Behaviour(domain=domain, mode="model")
    out = []
    for task in tasks[::step][:n_tasks]:
        sim = simulate_trajectory(domain, task, behaviour, seed, evaluate=False)
        calls = []
        for m in sim.messages:
            for call in getattr(m, "tool_calls", None) or []:
                calls.append(
                    {"id": call.id, "name": call.name, "arguments": call.arguments, "requestor": call.requestor}
                )
        out.append((task.id, calls))
    return out


def _ms(xs: list[float]) -> dict[str, float]:
    return {
        "median_ms": 1000 * statistics.median(xs),
        "mean_ms": 1000 * statistics.fmean(xs),
        "p90_ms": 1000 * sorted(xs)[int(0.9 * (len(xs) - 1))],
        "n": len(xs),
    }


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def measure(sandbox: str, work: list[tuple[str, list[dict[str, Any]]]], rounds: int, concurrency: int) -> dict:
    from matrix.tools.pool import ToolPoolConfig, ToolServerPool, call_tool

    cfg = ToolPoolConfig(domain="telecom", servers=1, sessions_per_server=max(64, concurrency), sandbox=sandbox)
    async with ToolServerPool(cfg) as pool:
        (server,) = pool.servers()
        pid = int(server["pid"])
        task_ids = [tid for tid, _ in work]
        # warm up: every path once (imports, first environment, connections)
        lease = await pool.acquire(task_ids[0])
        for call in work[0][1][:3]:
            await call_tool(lease, call, timeout=30)
        await pool.release(lease)

        # open and close, one at a time
        opens, closes = [], []
        cpu0 = _cpu(pid)
        for _ in range(rounds):
            for tid in task_ids:
                t0 = time.perf_counter()
                lease = await pool.acquire(tid)
                t1 = time.perf_counter()
                await pool.release(lease)
                opens.append(t1 - t0)
                closes.append(time.perf_counter() - t1)
        open_close_cpu = (_cpu(pid) - cpu0) / len(opens)

        # tool calls, one at a time, each task's calls on its own session (sessions opened beforehand)
        leases = {tid: await pool.acquire(tid) for tid in task_ids}
        lat: list[float] = []
        cpu0, client0 = _cpu(pid), time.process_time()
        for _ in range(rounds):
            for tid, calls in work:
                for call in calls:
                    t0 = time.perf_counter()
                    await call_tool(leases[tid], call, timeout=30)
                    lat.append(time.perf_counter() - t0)
        call_cpu = (_cpu(pid) - cpu0) / len(lat)
        client_cpu = (time.process_time() - client0) / len(lat)

        # saturation: `concurrency` callers at once, each replaying trajectories' calls on its own session
        flat = [(tid, call) for tid, calls in work for call in calls]

        async def caller(i: int) -> int:
            lease = await pool.acquire(flat[i % len(flat)][0])
            done = 0
            try:
                for k in range(len(flat)):
                    call = flat[(i + k) % len(flat)][1]
                    await call_tool(lease, call, timeout=30)
                    done += 1
            finally:
                await pool.release(lease)
            return done

        for lease in leases.values():
            await pool.release(lease)
        t0 = time.perf_counter()
        done = sum(await asyncio.gather(*(caller(i) for i in range(concurrency))))
        elapsed = time.perf_counter() - t0
        return {
            "sandbox": pool.sandbox,
            "open": {**_ms(opens), "server_cpu_ms_open_and_close": 1000 * open_close_cpu},
            "close": _ms(closes),
            "call": {**_ms(lat), "server_cpu_ms": 1000 * call_cpu, "client_cpu_ms": 1000 * client_cpu},
            "saturation": {
                "concurrency": concurrency,
                "calls": done,
                "calls_per_second": done / elapsed,
                "serial_cpu_bound_calls_per_second": 1 / call_cpu if call_cpu > 0 else None,
            },
        }


def charges(result: dict[str, Any]) -> dict[str, float]:
    """The in-process pool's charges (seconds) from one sandbox's measurement: the server's CPU per
    operation on its SerialCpu, the caller's CPU per call on the pool's client CPU, the round trip's
    median as the operation's whole latency."""
    open_close_cpu = result["open"]["server_cpu_ms_open_and_close"] / 1000
    # opening builds the environment and closing only drops it: split the pair's CPU by their latencies
    o, c = result["open"]["median_ms"], result["close"]["median_ms"]
    open_share = o / (o + c) if o + c > 0 else 0.5
    return {
        "open_cpu_s": open_close_cpu * open_share,
        "open_latency_s": result["open"]["median_ms"] / 1000,
        "call_cpu_s": result["call"]["server_cpu_ms"] / 1000,
        "call_client_cpu_s": result["call"]["client_cpu_ms"] / 1000,
        "call_latency_s": result["call"]["median_ms"] / 1000,
        "close_cpu_s": open_close_cpu * (1 - open_share),
        "close_latency_s": result["close"]["median_ms"] / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=12, help="telecom tasks whose tool calls are replayed")
    parser.add_argument("--rounds", type=int, default=3, help="times each task's calls are replayed")
    parser.add_argument("--concurrency", type=int, default=16, help="callers at once in the saturation phase")
    parser.add_argument("--sandboxes", default="bwrap,process", help="comma-separated; one that cannot run is noted")
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "tau2_tool_call.json")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--tasks, --rounds and --concurrency must be >= 1")

    from loguru import logger

    logger.disable("tau2")
    work = trajectories_calls("telecom", args.tasks, args.seed)
    calls = sum(len(c) for _, c in work)
    print(f"{len(work)} telecom trajectories, {calls} tool calls ({calls / len(work):.1f} per trajectory)")
    results: dict[str, Any] = {}
    for sandbox in [s.strip() for s in args.sandboxes.split(",") if s.strip()]:
        try:
            results[sandbox] = asyncio.run(measure(sandbox, work, args.rounds, args.concurrency))
        except Exception as exc:  # e.g. bubblewrap unavailable here: say so, measure the others
            results[sandbox] = {"error": f"{type(exc).__name__}: {exc}"}
        print(sandbox, json.dumps(results[sandbox], indent=1))
    chosen = next((s for s in ("bwrap", "apptainer", "process") if "error" not in results.get(s, {"error": 1})), None)
    out = {
        "what": "a tau2 tool call (and session open/close) on a real tool server, via ToolServerPool + call_tool",
        "trajectories": len(work),
        "tool_calls_per_trajectory": calls / len(work),
        "rounds": args.rounds,
        "results": results,
        "charges_from": chosen,
        "charges": charges(results[chosen]) if chosen else None,
        "machine": {"python": platform.python_version(), "cpu": platform.machine(), "cores": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}: charges from {chosen}: {out['charges']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
