"""What tau2's per-simulation results rewrite costs as a run grows (the Tau2 baseline, paper Table 10).

tau2's `run_tasks(save_to=...)` saves after every simulation by reading the whole results JSON,
appending the new simulation and writing the whole file again with `indent=2`, under a lock, in
the runner's one Python process (so, holding the GIL for the json work, it also stalls the other
threads). The cost of one save grows with the simulations already saved; the sum over a run grows
with its square.

This benchmark times exactly those operations (json.load, append a `SimulationRun.model_dump()`,
json.dump with indent=2) on files holding N simulations taken from a real baseline run directory
(`tau2_results.json`, so the per-simulation size is that run's: the twin's gpt-oss trajectories
with their reasoning), fits save(N) = a + b*N, and sums it over the paper's trajectory counts.

    python scripts/bench_tau2_rewrite.py --results results/runs/tau2/tau2-threads/twin-c100/tau2_results.json

Writes results/bench/tau2_results_rewrite.json. The seconds are this machine's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAPER_BASELINE = {"trajectories": 1519, "runtime_seconds": 1 * 3600 + 13 * 60 + 41, "threads": 500}
PAPER_P2P_TRAJECTORIES = 22800


def one_save(path: Path, simulation: dict[str, Any]) -> float:
    """The body of tau2's `_save`, timed."""
    t0 = time.perf_counter()
    with open(path) as fp:
        ckpt = json.load(fp)
    ckpt["simulations"].append(simulation)
    with open(path, "w") as fp:
        json.dump(ckpt, fp, indent=2)
    return time.perf_counter() - t0


def measure(source: dict[str, Any], points: list[int], repeats: int) -> list[dict[str, Any]]:
    sims = source["simulations"]
    if not sims:
        raise SystemExit("the results file has no simulations to replicate")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        for n in points:
            ckpt = {k: v for k, v in source.items() if k != "simulations"}
            ckpt["simulations"] = [sims[i % len(sims)] for i in range(n)]
            times, size = [], 0
            for r in range(repeats):
                with open(path, "w") as fp:
                    json.dump(ckpt, fp, indent=2)
                size = path.stat().st_size
                times.append(one_save(path, copy.deepcopy(sims[(n + r) % len(sims)])))
            out.append({"simulations": n, "file_bytes": size, "save_seconds": statistics.median(times)})
            print(f"N={n:>6}: file {size / 1e6:8.1f} MB, one save {statistics.median(times):7.3f} s", flush=True)
    return out


def fit(points: list[dict[str, Any]]) -> tuple[float, float]:
    """Least squares save(N) = a + b*N."""
    xs = [float(p["simulations"]) for p in points]
    ys = [float(p["save_seconds"]) for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def total(a: float, b: float, k: int) -> float:
    """Seconds of saving for a run of k simulations: sum of save(N) for N = 0 .. k-1."""
    return k * a + b * k * (k - 1) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True, help="a baseline run's tau2_results.json")
    p.add_argument("--points", default="100,400,800,1519", help="simulation counts to time (comma list)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/bench/tau2_results_rewrite.json"))
    a = p.parse_args(argv)
    if not a.results.is_file():
        print(f"error: no results file at {a.results}", file=sys.stderr)
        return 2
    source = json.loads(a.results.read_text())
    sims = source.get("simulations") or []
    per_sim = statistics.fmean(len(json.dumps(s, indent=2)) for s in sims) if sims else 0.0
    points = measure(source, [int(x) for x in a.points.split(",")], a.repeats)
    a0, b0 = fit(points)
    paper_k = PAPER_BASELINE["trajectories"]
    out = {
        "what": "tau2 run_tasks' per-simulation results rewrite (json.load + append + json.dump indent=2)",
        "source": str(a.results),
        "bytes_per_simulation": round(per_sim),
        "points": points,
        "fit_save_seconds": {"a": a0, "b_per_simulation": b0},
        "save_seconds_at_paper_baseline_end": a0 + b0 * paper_k,
        "total_save_seconds_for_paper_baseline": total(a0, b0, paper_k),
        "paper_baseline_runtime_seconds": PAPER_BASELINE["runtime_seconds"],
        "share_of_paper_baseline_runtime": total(a0, b0, paper_k) / PAPER_BASELINE["runtime_seconds"],
        "total_save_seconds_for_paper_p2p_count": total(a0, b0, PAPER_P2P_TRAJECTORIES),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{per_sim / 1e3:.1f} kB per simulation; save(N) = {a0:.3f} + {b0 * 1e3:.3f} ms x N; "
        f"{paper_k} simulations: last save {out['save_seconds_at_paper_baseline_end']:.2f} s, all saves "
        f"{out['total_save_seconds_for_paper_baseline']:,.0f} s = "
        f"{out['share_of_paper_baseline_runtime']:.0%} of the paper baseline's {PAPER_BASELINE['runtime_seconds']:,} s "
        f"-> {a.out}"
    )
    if b0 <= 0:
        print(
            f"warning: the save time does not grow with the file here (slope {b0 * 1e3:.4f} ms per simulation): "
            "timing noise dominates these points; use larger --points and more --repeats",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
