"""The `matrix` command: serve a backend, run benchmarks, run the demo.

Errors the user can fix (an unknown backend or profile, a bad option, an unreachable endpoint)
print one line naming the value and exit with status 2 (usage) or 1 (runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matrix.llm.backends import BACKENDS, Backend, BackendError, Server, get_backend

DEFAULT_CONCURRENCY = {"vllm-cpu": "1,8,32"}


class UsageError(Exception):
    """A command-line value is wrong; the message names it."""


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def backend_options(backend: Backend, args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options the user set on the command line, checked against what `backend.start` takes."""
    params = inspect.signature(backend.start).parameters
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    options: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"backend {backend.name!r} does not take {flag} (got {value!r})")
        options[name] = value
    return options


SERVE_OPTIONS = ("profile", "time_scale", "behaviour", "model", "base_url", "log_path")


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="sim: hardware/model profile, e.g. a100-llama31-8b, h100-llama31-8b")
    p.add_argument("--time-scale", type=float, help="sim: run this many times faster than real time")
    p.add_argument("--behaviour", help="sim: behaviour model that writes the replies (default generic)")
    p.add_argument("--model", help="model name or path (backend-specific default)")
    p.add_argument("--base-url", help="openai: the external API's base URL")
    p.add_argument("--log-path", type=Path, help="where the server's log goes")


def _start(backend_name: str, args: argparse.Namespace, host: str, port: int) -> tuple[Backend, Server]:
    backend = get_backend(backend_name)
    options = backend_options(backend, args, SERVE_OPTIONS)
    print(f"matrix: starting backend {backend_name!r} ...", file=sys.stderr, flush=True)
    return backend, backend.start(host=host, port=port, **options)


def cmd_serve(args: argparse.Namespace) -> int:
    _, server = _start(args.backend, args, args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        tag = " (simulated)" if server.simulated else ""
        print(server.base_url, flush=True)
        print(f"matrix: serving model {server.model!r}{tag}; Ctrl-C stops it", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        server.stop()
    return 0


def _portable(value: Any) -> Any:
    """Paths of this machine made relative (to the checkout) or home-relative, for committed results."""
    if isinstance(value, str):
        return value.replace(str(Path.cwd()) + "/", "").replace(str(Path.home()), "~")
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(v) for v in value]
    return value


def _api_key(server: Server) -> str | None:
    env = server.info.get("api_key_env")
    return os.environ.get(str(env)) if env else None


def cmd_bench_serving(args: argparse.Namespace) -> int:
    from matrix.bench import serving

    concurrencies = args.concurrency or _csv_ints(DEFAULT_CONCURRENCY.get(args.backend, "1,8,32,128"))
    out = args.out or Path("results/bench") / f"serving_{args.backend}.json"
    _, server = _start(args.backend, args, "127.0.0.1", 0)
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
    from matrix.bench.overhead import run_overhead
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
    from matrix.bench import chaos
    from matrix.runtime.report import write_json

    out = args.out or Path("results/bench/chaos.json")
    targets = chaos.parse_targets(args.targets)  # a bad target is one line before anything starts
    print(
        f"matrix bench chaos: {args.tasks} Coral tasks on SIMULATED replicas, a kill every {args.interval:g} s "
        f"({', '.join(targets)})",
        file=sys.stderr,
        flush=True,
    )
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
        run_root=args.run_root,
        run_id=args.run_id,
        on_point=lambda d: write_json(out, _portable(d)),
    )
    write_json(out, _portable(doc))
    print(chaos.format_table(doc))
    print(f"wrote {out} and {doc['run_dirs']['faulty']}/metrics.json")
    return 0 if chaos.ok(doc) else 1


def cmd_bench_saturation(args: argparse.Namespace) -> int:
    from matrix.bench import saturation as sat
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


def cmd_demo(args: argparse.Namespace) -> int:
    from matrix.demo import run_coral_demo, run_demo

    if args.batch:
        return run_demo(backend=args.backend, requests=args.requests, concurrency=args.concurrency)
    return run_coral_demo(backend=args.backend, conversations=args.conversations, concurrency=args.concurrency)


def cmd_backends(args: argparse.Namespace) -> int:
    for name in BACKENDS:
        print(name)
    try:
        from matrix.llm.sim.profile import list_profiles

        print("sim profiles: " + ", ".join(list_profiles()))
    except ImportError:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start one serving backend on 127.0.0.1 and print its base URL")
    p.add_argument("backend", help=f"one of: {', '.join(BACKENDS)}")
    p.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    _add_server_flags(p)
    p.set_defaults(func=cmd_serve)

    bench = sub.add_parser("bench", help="benchmarks that write JSON under results/bench/")
    bsub = bench.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("serving", help="concurrency sweep of one serving backend")
    b.add_argument("--backend", required=True, help=f"one of: {', '.join(BACKENDS)}")
    b.add_argument("--concurrency", type=_csv_ints, help="comma-separated, default 1,8,32,128 (vllm-cpu: 1,8,32)")
    b.add_argument("--requests", type=int, help="requests per point (default max(8, 2 x concurrency))")
    b.add_argument("--output-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    b.add_argument("--natural-length", action="store_true", help="let replies end at EOS (no ignore_eos)")
    b.add_argument("--out", type=Path, help="JSON path (default results/bench/serving_<backend>.json)")
    _add_server_flags(b)
    b.set_defaults(func=cmd_bench_serving)

    o = bsub.add_parser("overhead", help="dummy Coral-shaped agents on the Ray transport (no LLM)")
    o.add_argument("--tasks", type=int, default=2000)
    o.add_argument("--concurrency", type=_csv_ints, default=[100, 1000], help="default 100,1000")
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
    i.set_defaults(func=lambda a: __import__("matrix.bench.inflight", fromlist=["main"]).main(a))

    s = bsub.add_parser("saturation", help="a sim replica's best tokens/s for a run's own request mix (virtual time)")
    s.add_argument("run", type=Path, help="run directory (or its output.jsonl) whose LLM calls make the mix")
    s.add_argument("--profile", default=None, help="sim profile (default: the run's, from its metrics.json)")
    s.add_argument("--replicas", type=int, default=None, help="split the mix over this many (default: the run's)")
    s.add_argument("--concurrency", type=_csv_ints, help="clients per replica, default 32,64,128,192,256,384,512")
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
    f.set_defaults(func=lambda a: __import__("matrix.bench.offload", fromlist=["main"]).main(a))

    c = bsub.add_parser("chaos", help="Coral on sim replicas without and with an actor killed every few seconds")
    c.add_argument("--tasks", type=int, default=5000, help="Coral tasks per run (default 5000)")
    c.add_argument("--interval", type=float, default=5.0, help="seconds between kills (default 5)")
    c.add_argument("--targets", default="agent", help="comma-separated: agent (default), sink, model")
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
    c.set_defaults(func=cmd_bench_chaos)

    d = sub.add_parser("demo", help="Coral: the P2P runtime vs Coral's central controller on a real small model")
    d.add_argument("--backend", default="vllm-cpu", help="vllm-cpu (default, a real model) or sim")
    d.add_argument("--conversations", type=int, default=16, help="Coral conversations per system")
    d.add_argument("--batch", action="store_true", help="instead: a plain batch of chat completions")
    d.add_argument("--requests", type=int, default=48, help="with --batch: how many requests")
    d.add_argument("--concurrency", type=int, default=16)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("backends", help="list serving backends and sim profiles")
    s.set_defaults(func=cmd_backends)
    add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub: Any) -> None:
    """Commands that other installed packages register under the `matrix.commands` entry-point group
    (this distribution's `slurm` package adds `cluster` and `run`); the runtime core imports none of them.
    A plugin that fails to load is reported on stderr and left out; the other commands still work."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="matrix.commands"):
        try:
            ep.load()(sub)
        except Exception as exc:
            print(f"matrix: note: command plugin {ep.name!r} ({ep.value}) not loaded: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"matrix: error: {exc}", file=sys.stderr)
        return 2
    except (BackendError, ValueError, TimeoutError) as exc:
        print(f"matrix: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:
        print("matrix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
