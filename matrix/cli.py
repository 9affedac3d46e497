"""The `matrix` command: serve a backend, list the backends; installed packages add more commands.

The library's own commands are `serve` and `backends`. Others come from the `matrix.commands`
entry-point group (`add_plugin_commands`): this distribution's harness adds `bench` and `demo`
(experiments/bench/cli.py), and `cluster` and `run` (slurm/cluster.py).

Errors the user can fix (an unknown backend or profile, a bad option, an unreachable endpoint)
print one line naming the value and exit with status 2 (usage) or 1 (runtime).
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matrix.llm.backends import BACKENDS, Backend, BackendError, Server, get_backend


class UsageError(Exception):
    """A command-line value is wrong; the message names it."""


def csv_ints(text: str) -> list[int]:
    """An argparse type: `1,8,32` -> [1, 8, 32] (positive integers)."""
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


def add_server_flags(p: argparse.ArgumentParser) -> None:
    """The flags that choose how a backend starts (`SERVE_OPTIONS`), for `serve` and for plugin commands."""
    p.add_argument("--profile", help="sim: hardware/model profile, e.g. a100-llama31-8b, h100-llama31-8b")
    p.add_argument("--time-scale", type=float, help="sim: run this many times faster than real time")
    p.add_argument("--behaviour", help="sim: behaviour model that writes the replies (default generic)")
    p.add_argument("--model", help="model name or path (backend-specific default)")
    p.add_argument("--base-url", help="openai: the external API's base URL")
    p.add_argument("--log-path", type=Path, help="where the server's log goes")


def start_server(backend_name: str, args: argparse.Namespace, host: str, port: int) -> tuple[Backend, Server]:
    """Start `backend_name` with the `SERVE_OPTIONS` set in `args` (one it does not take is a UsageError)."""
    backend = get_backend(backend_name)
    options = backend_options(backend, args, SERVE_OPTIONS)
    print(f"matrix: starting backend {backend_name!r} ...", file=sys.stderr, flush=True)
    return backend, backend.start(host=host, port=port, **options)


def cmd_serve(args: argparse.Namespace) -> int:
    _, server = start_server(args.backend, args, args.host, args.port)
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


def cmd_backends(args: argparse.Namespace) -> int:
    for name in BACKENDS:
        print(name)
    try:
        from matrix.llm.sim.profile import list_profiles

        print("sim profiles: " + ", ".join(list_profiles()))
    except ImportError:
        pass
    return 0


def build_parser(*, plugins: bool = True) -> argparse.ArgumentParser:
    """The `matrix` parser; `plugins=False` gives the library's own commands only."""
    parser = argparse.ArgumentParser(prog="matrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start one serving backend on 127.0.0.1 and print its base URL")
    p.add_argument("backend", help=f"one of: {', '.join(BACKENDS)}")
    p.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    add_server_flags(p)
    p.set_defaults(func=cmd_serve)

    s = sub.add_parser("backends", help="list serving backends and sim profiles")
    s.set_defaults(func=cmd_backends)
    if plugins:
        add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub: Any) -> None:
    """Commands that other installed packages register under the `matrix.commands` entry-point group
    (this distribution's harness adds `bench`, `demo`, `cluster` and `run`); the library imports none of them.
    A plugin that fails to load is reported on stderr and left out; the other commands still work."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="matrix.commands"):
        try:
            ep.load()(sub)
        except Exception as exc:
            print(f"matrix: note: command plugin {ep.name!r} ({ep.value}) not loaded: {exc}", file=sys.stderr)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args`, except for commands that hand their arguments to another program.

    Such a command (`matrix run`, `matrix demo`: Hydra's command line) names the attribute that
    collects the rest of the line with `set_defaults(passthrough=NAME)`; flags that `matrix` does not
    know (Hydra's `-m`, `--cfg job`) go there too, ahead of the rest, in the order they were given.
    Elsewhere an unknown flag is the usual usage error.
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        name = getattr(args, "passthrough", None)
        if name is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        setattr(args, name, [*unknown, *(getattr(args, name, None) or [])])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
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
