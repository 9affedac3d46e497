"""`matrix monitor start | stop | check | snapshot` (registered through the `matrix.commands` entry points)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from experiments.monitor.prometheus import (
    DEFAULT_PORT,
    MonitorError,
    MonitorSettings,
    parse_target,
    read_state,
    start_background,
    stop_monitor,
    supervise,
)

DEFAULT_FIGURE = Path("results/figures/monitor_dashboard.png")


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    return MonitorSettings(
        port=args.port,
        prometheus=args.prometheus,
        scrape_interval=args.scrape_interval,
        retention=args.retention,
        ray_session=args.ray_session,
        ray_temp_dir=Path(args.ray_temp_dir),
        ray_host=args.ray_host,
        targets=[parse_target(t) for t in args.target or []],
    )


def settings_argv(s: MonitorSettings) -> list[str]:
    """The flags that give `s` again (for the background monitor)."""
    argv = [
        f"--port={s.port}",
        f"--prometheus={s.prometheus}",
        f"--scrape-interval={s.scrape_interval}",
        f"--retention={s.retention}",
        f"--ray-session={s.ray_session}",
        f"--ray-temp-dir={s.ray_temp_dir}",
        f"--ray-host={s.ray_host}",
    ]
    return argv + [f"--target={job}={address}" for job, address in s.targets]


def _fail(exc: Exception) -> int:
    print(f"matrix monitor: error: {exc}", file=sys.stderr)
    return 1


def cmd_start(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        if args.foreground:
            return supervise(settings)
        state = start_background(settings, settings_argv(settings))
    except MonitorError as exc:
        return _fail(exc)
    print(
        f"matrix monitor: Prometheus at {state['url']} (monitor pid {state['pid']}), scraping Ray "
        f"({settings.ray_session}), run exporters and replicas announced in {settings.folder / 'targets'}; "
        "`matrix monitor stop` ends it"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    try:
        state = stop_monitor()
    except MonitorError as exc:
        return _fail(exc)
    print(f"matrix monitor: stopped (pid {state['pid']}, {state.get('url')})")
    return 0


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    state = read_state()
    if state is None:
        raise MonitorError("no monitor is running: `matrix monitor start` first, or pass --url")
    return str(state["url"])


def cmd_check(args: argparse.Namespace) -> int:
    from experiments.monitor.dashboard import evaluate, expected_empty, load_dashboard, problems_of

    try:
        url = _url(args)
        end = time.time()
        results = evaluate(url, load_dashboard(), end - 60 * args.minutes, end)
    except MonitorError as exc:
        return _fail(exc)
    empty_ok = expected_empty()
    for r in results:
        state = "error" if r.error else f"{r.series} series" if r.series else "empty"
        note = f" (known: {empty_ok[r.query.key].split(':')[0]})" if r.series == 0 and r.query.key in empty_ok else ""
        print(f"{state:>10}  {r.query.key}{note}")
    problems = problems_of(results, empty_ok)
    for p in problems:
        print(f"matrix monitor check: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from experiments.monitor.dashboard import expected_empty, load_dashboard
    from experiments.monitor.figure import draw

    try:
        url = _url(args)
    except MonitorError as exc:
        return _fail(exc)
    end = time.time()
    out = draw(url, load_dashboard(), end - 60 * args.minutes, end, args.out, empty_notes=expected_empty())
    print(f"matrix monitor: wrote {out}")
    return 0


def register_cli(sub: Any) -> None:
    """Add `matrix monitor ...` to the `matrix` command's subparsers."""
    monitor = sub.add_parser("monitor", help="Prometheus on 127.0.0.1 watching runs live (Grafana dashboard included)")
    msub = monitor.add_subparsers(dest="monitor", required=True)
    s = msub.add_parser("start", help="start Prometheus in the background (stop it with `matrix monitor stop`)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"its port on 127.0.0.1 (default {DEFAULT_PORT})")
    s.add_argument("--prometheus", default="prometheus", help="the Prometheus binary (default: prometheus on PATH)")
    s.add_argument("--scrape-interval", default="1s", help="how often every target is scraped (default 1s)")
    s.add_argument("--retention", default="2d", help="how long Prometheus keeps samples (default 2d)")
    s.add_argument(
        "--ray-session",
        default="latest",
        help="Ray session folder to scrape, `latest` (default: follow the newest under --ray-temp-dir) or `none`",
    )
    s.add_argument("--ray-temp-dir", default="/tmp/ray", help="Ray's temporary folder (default /tmp/ray)")
    s.add_argument("--ray-host", default="127.0.0.1", help="where local Ray nodes serve metrics (default 127.0.0.1)")
    s.add_argument(
        "--target",
        action="append",
        metavar="JOB=HOST:PORT",
        help="also scrape HOST:PORT/metrics as JOB (e.g. replicas=127.0.0.1:8001 for a vLLM server); repeatable",
    )
    s.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    s.set_defaults(func=cmd_start)

    t = msub.add_parser("stop", help="stop the running monitor and its Prometheus")
    t.set_defaults(func=cmd_stop)

    for name, helptext, func in (
        ("check", "run every dashboard query; list those with no series or an error", cmd_check),
        ("snapshot", "draw every dashboard panel's data into a PNG (matplotlib)", cmd_snapshot),
    ):
        c = msub.add_parser(name, help=helptext)
        c.add_argument("--url", help="Prometheus (default: the running monitor's)")
        c.add_argument("--minutes", type=float, default=15.0, help="the window to query, ending now (default 15)")
        if name == "snapshot":
            c.add_argument("--out", type=Path, default=DEFAULT_FIGURE, help=f"PNG path (default {DEFAULT_FIGURE})")
        c.set_defaults(func=func)
