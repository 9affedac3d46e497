"""`python -m experiments.monitor ARGS` is `matrix monitor ARGS` (the background monitor runs this way)."""

from __future__ import annotations

import argparse
import sys

from experiments.monitor.cli import register_cli


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="matrix")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["monitor", *argv])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
