"""The harness's commands on the `matrix` command: `matrix bench ...` and `matrix demo`.

Registered through the `matrix.commands` entry-point group (pyproject.toml), so that the library's
`matrix/cli.py` imports nothing of the harness. Each command imports its benchmark only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from experiments.bench import portable as _portable
from matrix.cli import add_server_flags, csv_ints, start_server
from matrix.llm.backends import BACKENDS, Server

DEFAULT_CONCURRENCY = {"vllm-cpu": "1,8,32"}


def _api_key(server: Server) -> str | None:
    env = server.info.get("api_key_env")
    return os.environ.get(str(env)) if env else None


def cmd_bench_serving(args: argparse.Namespace) -> int:
    from experiments.bench import serving

    concurrencies = args.concurrency or csv_ints(DEFAULT_CONCURRENCY.get(args.backend, "1,8,32,128"))
    out = args.out or Path("results/bench") / f"serving_{args.backend}.json"
    _, server = start_server(args.backend, args, "127.0.0.1", 0)
    try:
        time_scale = float(server.info.get("time_scale", 1.0)) if server.simulated else 1.0
        per_point = args.requests
        print(
            f"matrix bench serving: {args.backend} {server.model} at {server.base_url}"
            + (f" (simulated, time scale {time_scale:g})" if server.simulated else ""),
            flush=True,
        )

        def progress(p: serving.PointResult) -> None:
            print(
                f"  concurrency {p.concurrency:>4}: {p.output_tokens_per_s:9.1f} out tok/s, "
                f"TTFT p50 {p.ttft_p50_ms:8.1f} ms, ITL p50 {p.itl_p50_ms:6.2f} ms, failed {p.failed}",
                flush=True,
            )

        points = asyncio.run(
            serving.sweep(
                [server.base_url],
                server.model,
                concurrencies=concurrencies,
                requests_per_point=(lambda c: per_point) if per_point else (lambda c: max(8, 2 * c)),
                max_tokens=args.output_tokens,
                fixed_length=not args.natural_length,
                time_scale=time_scale,
                api_key=_api_key(server),
                progress=progress,
            )
        )
    finally:
        server.stop()
    record = serving.run_record(
        backend=args.backend,
        model=server.model,
        simulated=server.simulated,
        time_scale=time_scale,
        points=points,
        settings={
            "concurrency": concurrencies,
            "requests_per_point": per_point or "max(8, 2*concurrency)",
            "max_tokens": args.output_tokens,
            "fixed_length": not args.natural_length,
            "prompt_chars": len(serving.DEFAULT_PROMPT),
        },
        info=_portable(dict(server.info)),
    )
    if server.simulated:
        from matrix.llm.sim.calibration import compare_with_published

        record["calibration"] = compare_with_published(str(server.info.get("profile")), points)
    key = str(server.info.get("profile") or server.model)
    serving.write_results(out, key, record)
    print(serving.format_points(points, simulated=server.simulated))
    if server.simulated and record.get("calibration"):
        from matrix.llm.sim.calibration import format_comparison

        print(format_comparison(record["calibration"]))
    print(f"wrote {out}")
    failed = sum(p.failed for p in points)
    if failed:
        print(f"matrix bench serving: {failed} requests failed after retries (see 'errors' in {out})")
    return 1 if failed else 0


def cmd_bench_overhead(args: argparse.Namespace) -> int:
    from experiments.bench.overhead import run_overhead
    from matrix.runtime.report import write_json

    offload = {"both": (True, False), "on": (True,), "off": (False,)}[args.offload]
    out = args.out or Path("results/bench/overhead.json")
    doc = run_overhead(
        tasks=args.tasks, concurrencies=tuple(args.concurrency), offload=offload, on_point=lambda d: write_json(out, d)
    )
    write_json(out, doc)
    print(f"wrote {out}")
    lost = sum(p["tasks_lost"] for p in doc["points"])
    return 1 if lost else 0


def cmd_bench_chaos(args: argparse.Namespace) -> int:
    from experiments.bench import chaos
    from experiments.bench.nodes import ClusterError
    from matrix.runtime.report import write_json

    out = args.out or Path("results/bench/chaos.json")
    targets = chaos.parse_targets(args.targets, nodes=args.nodes)  # a bad target: one line before anything starts
    print(
        f"matrix bench chaos: {args.tasks} Coral tasks on SIMULATED replicas, a kill every {args.interval:g} s "
        f"({', '.join(targets)})" + (f" on a head and {args.nodes} worker nodes" if args.nodes else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        doc = chaos.run_chaos(
            tasks=args.tasks,
            interval=args.interval,
            targets=targets,
            concurrency=args.concurrency,
            replicas=args.replicas,
            instances=args.instances,
            time_scale=args.time_scale,
            max_turns=args.max_turns,
            seed=args.seed,
            max_attempts=args.max_attempts,
            nodes=args.nodes,
            object_store_mb=args.object_store_mb,
            run_root=args.run_root,
            run_id=args.run_id,
            on_point=lambda d: write_json(out, _portable(d)),
            checkpoint_overhead=args.checkpoint_overhead,
            repeats=args.repeats,
        )
    except (chaos.RunStalled, ClusterError) as exc:  # a fault the run did not survive: the reason, no hang
        print(f"matrix bench chaos: {exc} (rows so far stay in {args.run_root}/coral/matrix/)", file=sys.stderr)
        return 1
    write_json(out, _portable(doc))
    print(chaos.format_table(doc))
    print(f"wrote {out} and {doc['run_dirs']['faulty']}/metrics.json")
    return 0 if chaos.ok(doc) else 1


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from experiments.bench import soak

    return soak.main(args)


def cmd_bench_saturation(args: argparse.Namespace) -> int:
    from experiments.bench import saturation as sat
    from matrix.runtime.report import write_json

    run = Path(args.run)
    meta_path = (run if run.is_dir() else run.parent) / "metrics.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    profile = args.profile or (meta.get("sim") or {}).get("profile")
    if not profile:
        print(f"matrix bench saturation: no --profile given and {meta_path} names none", file=sys.stderr)
        return 2
    replicas = args.replicas or int(meta.get("replicas") or 1)
    try:
        specs = sat.requests_from_run(run)
        doc = sat.saturation(
            profile, specs, replicas=replicas, concurrencies=args.concurrency or sat.DEFAULT_CONCURRENCIES
        )
    except sat.WorkloadError as e:
        print(f"matrix bench saturation: {e}", file=sys.stderr)
        return 2
    doc["run"] = str(run)
    out = args.out or Path("results/bench") / f"saturation_{profile}.json"
    write_json(out, doc)
    print(sat.format_saturation(doc))
    print(f"wrote {out}")
    return 0


def cmd_bench_inflight(args: argparse.Namespace) -> int:
    from experiments.bench import inflight

    return inflight.main(args)


def cmd_bench_offload(args: argparse.Namespace) -> int:
    from experiments.bench import offload

    return offload.main(args)


def cmd_bench_ceiling(args: argparse.Namespace) -> int:
    from experiments.bench import ceiling

    return ceiling.main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from experiments.bench.demo import run_demo

    return run_demo(args.overrides)


def cmd_bench_virtual(args: argparse.Namespace) -> int:
    from experiments.bench import virtual

    return virtual.main(args)


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from experiments.bench import stream

    return stream.main(args)


def register_cli(sub: Any) -> None:
    """Add `matrix bench ...` and `matrix demo` to the `matrix` command's subparsers."""
    bench = sub.add_parser("bench", help="benchmarks that write JSON under results/bench/")
    bsub = bench.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("serving", help="concurrency sweep of one serving backend")
    b.add_argument("--backend", required=True, help=f"one of: {', '.join(BACKENDS)}")
    b.add_argument("--concurrency", type=csv_ints, help="comma-separated, default 1,8,32,128 (vllm-cpu: 1,8,32)")
    b.add_argument("--requests", type=int, help="requests per point (default max(8, 2 x concurrency))")
    b.add_argument("--output-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    b.add_argument("--natural-length", action="store_true", help="let replies end at EOS (no ignore_eos)")
    b.add_argument("--out", type=Path, help="JSON path (default results/bench/serving_<backend>.json)")
    add_server_flags(b)
    b.set_defaults(func=cmd_bench_serving)

    o = bsub.add_parser("overhead", help="dummy Coral-shaped agents on the Ray transport (no LLM)")
    o.add_argument("--tasks", type=int, default=2000)
    o.add_argument("--concurrency", type=csv_ints, default=[100, 1000], help="default 100,1000")
    o.add_argument("--offload", choices=["both", "on", "off"], default="both")
    o.add_argument("--out", type=Path, help="JSON path (default results/bench/overhead.json)")
    o.set_defaults(func=cmd_bench_overhead)

    i = bsub.add_parser("inflight", help="10,000 LLM tasks in flight at once on the Ray transport (sim replicas)")
    i.add_argument("--tasks", type=int, help="tasks to run (default 18000)")
    i.add_argument("--concurrency", type=int, help="max_concurrent_tasks, the bound to reach (default 10000)")
    i.add_argument("--replicas", type=int, help="sim replicas (default 2)")
    i.add_argument("--profile", help="sim profile (default a100-llama31-8b)")
    i.add_argument("--time-scale", type=float, help="sim time scale (default 1)")
    i.add_argument("--mean-tokens", type=float, help="mean reply length in tokens (default 48)")
    i.add_argument("--max-tokens", type=int, help="max_tokens per request (default 64)")
    i.add_argument("--per-replica-concurrency", type=int, help="client's open requests per replica (default 2000)")
    i.add_argument("--instances", type=int, help="actors per role (default 1)")
    i.add_argument("--out", type=Path, help="JSON path (default results/bench/inflight.json)")
    i.set_defaults(func=cmd_bench_inflight)

    s = bsub.add_parser("saturation", help="a sim replica's best tokens/s for a run's own request mix (virtual time)")
    s.add_argument("run", type=Path, help="run directory (or its output.jsonl) whose LLM calls make the mix")
    s.add_argument("--profile", default=None, help="sim profile (default: the run's, from its metrics.json)")
    s.add_argument("--replicas", type=int, default=None, help="split the mix over this many (default: the run's)")
    s.add_argument("--concurrency", type=csv_ints, help="clients per replica, default 32,64,128,192,256,384,512")
    s.add_argument("--out", type=Path, help="JSON path (default results/bench/saturation_<profile>.json)")
    s.set_defaults(func=cmd_bench_saturation)

    f = bsub.add_parser("offload", help="payload offloading on vs off on long histories (dummy agents, no LLM)")
    f.add_argument("--tasks", type=int, help="tasks per run (default 400)")
    f.add_argument("--concurrency", type=int, help="max_concurrent_tasks (default 100)")
    f.add_argument("--reply-chars", type=int, help="characters per dialogue turn (default 4000)")
    f.add_argument("--agree-min", type=int, help="earliest agreement, in dialogue turns (default 10)")
    f.add_argument("--agree-max", type=int, help="latest agreement, at most 20 (default 19)")
    f.add_argument("--instances", type=int, help="actors per role (default 1)")
    f.add_argument("--threshold", type=int, help="offload threshold in bytes for the 'on' run (default 512)")
    f.add_argument("--out", type=Path, help="JSON path (default results/bench/offload.json)")
    f.set_defaults(func=cmd_bench_offload)

    c = bsub.add_parser("chaos", help="Coral on sim replicas without and with an actor killed every few seconds")
    c.add_argument("--tasks", type=int, default=5000, help="Coral tasks per run (default 5000)")
    c.add_argument("--interval", type=float, default=5.0, help="seconds between kills (default 5)")
    c.add_argument("--targets", default="agent", help="comma-separated: agent (default), sink, model, node, admission")
    c.add_argument("--nodes", type=int, default=0, help="worker nodes beside the head (default 0: one node)")
    c.add_argument("--object-store-mb", type=int, default=128, help="object store per node, MB (default 128)")
    c.add_argument("--concurrency", type=int, default=200, help="max_concurrent_tasks (default 200)")
    c.add_argument("--replicas", type=int, default=2, help="sim replicas (default 2)")
    c.add_argument("--instances", type=int, default=2, help="actors per role (default 2)")
    c.add_argument("--time-scale", type=float, default=10.0, help="sim time scale (default 10)")
    c.add_argument("--max-turns", type=int, default=20, help="Coral dialogue turn limit (default 20, the paper's)")
    c.add_argument(
        "--max-attempts", type=int, default=10, help="runs of a task before it becomes an error row (default 10)"
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the victim choice (default 0)")
    c.add_argument("--out", type=Path, help="JSON path (default results/bench/chaos.json)")
    c.add_argument("--run-root", type=Path, default=Path("results/runs"), help="run directories' root")
    c.add_argument("--run-id", help="the faulty run's directory name (default chaos-<timestamp>)")
    c.add_argument(
        "--checkpoint-overhead",
        action="store_true",
        help="first a fault-free run with checkpoints off: their fault-free cost beside what they save",
    )
    c.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of the runs, interleaved; figures judged on the medians over rounds (default 1)",
    )
    c.set_defaults(func=cmd_bench_chaos)

    k = bsub.add_parser("soak", help="a long Coral run on sim replicas under mixed kills: nothing lost, memory flat")
    k.add_argument("--tasks", type=int, default=50_000, help="Coral tasks (default 50000)")
    k.add_argument("--interval", type=float, default=10.0, help="seconds between kills (default 10)")
    k.add_argument(
        "--targets", default="agent,sink,node,model,admission", help="comma-separated (default all five kinds)"
    )
    k.add_argument("--nodes", type=int, default=2, help="worker nodes beside the head (default 2)")
    k.add_argument("--sample-seconds", type=float, default=10.0, help="seconds between memory samples (default 10)")
    k.add_argument("--window-seconds", type=float, default=120.0, help="memory level windows, seconds (default 120)")
    k.add_argument("--out", type=Path, help="JSON path (default results/bench/soak.json)")
    k.add_argument("--run-root", type=Path, default=Path("results/runs"), help="run directories' root")
    k.add_argument("--run-id", help="the run's directory name (default soak-<timestamp>)")
    k.set_defaults(func=cmd_bench_soak)

    g = bsub.add_parser(
        "ceiling",
        help="CPU per LLM request of each scheduler's request path against an instant local server (the "
        "single-process ceiling: fair-matrix, legacy aiohttp, pooled client, tau2 threads, controller, P2P hops)",
    )
    g.add_argument("--concurrency", type=csv_ints, help="requests in flight, comma-separated (default 1,64,512)")
    g.add_argument("--repeats", type=int, default=3, help="measured batches per point (default 3)")
    g.add_argument(
        "--paths", help="comma-separated subset of the paths (default all; see experiments/bench/ceiling.py)"
    )
    g.add_argument("--scale", type=float, default=1.0, help="multiply the requests per batch (default 1)")
    g.add_argument(
        "--fair-matrix-dir", type=Path, help="fair-matrix's side directory (default .venv/side/fair-matrix-0.2.6)"
    )
    g.add_argument(
        "--install-fair-matrix",
        action="store_true",
        help="first pip install fair-matrix (--no-deps, with its client's pins) into that side directory",
    )
    g.add_argument("--out", type=Path, help="JSON path (default results/bench/process_ceiling.json)")
    g.set_defaults(func=cmd_bench_ceiling)

    v = bsub.add_parser(
        "virtual", help="the committed twin runs again on the virtual clock (SIMULATED): within 10%% of real time?"
    )
    v.add_argument("--only", help="comma-separated substrings of the reference runs to check (default: all)")
    v.add_argument("--run-root", default="results/runs/virtual-validation", help="where the virtual runs go")
    v.add_argument("--out", type=Path, help="JSON path (default results/bench/virtual_clock_validation.json)")
    v.set_defaults(func=cmd_bench_virtual)

    st = bsub.add_parser("stream", help="1,000,000 generated rows through admission (local transport): memory growth")
    st.add_argument("--rows", type=int, default=1_000_000, help="generated rows (default 1000000)")
    st.add_argument("--source", choices=["zst", "parquet", "hf", "jsonl"], default="zst", help="input (default zst)")
    st.add_argument("--concurrency", type=int, default=1000, help="max_concurrent_tasks (default 1000)")
    st.add_argument("--text-chars", type=int, default=256, help="characters of text per row (default 256)")
    st.add_argument("--sleep", type=float, default=0.01, help="seconds each step sleeps (default 0.01)")
    st.add_argument("--out", type=Path, help="JSON path (default results/bench/stream.json, one entry per source)")
    st.set_defaults(func=cmd_bench_stream)

    d = sub.add_parser(
        "demo",
        help="Coral: the P2P runtime vs Coral's central controller on a real small model "
        "(python -m experiments.run -m experiment=demo)",
    )
    d.add_argument("overrides", nargs=argparse.REMAINDER, help="further Hydra overrides, e.g. backend=sim")
    d.set_defaults(func=cmd_demo, passthrough="overrides")
