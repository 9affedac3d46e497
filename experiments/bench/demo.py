"""`matrix demo` (`make demo`): Coral, the P2P runtime against Coral's central controller, on a real small model.

The demo is a preset of the one entry point (`experiments/conf/experiment/demo.yaml`): on the
embedded default backend (`vllm-cpu`) the real vLLM engine on this machine's CPU serves a tiny
instruct model (no GPU, no hub, no keys); both systems run the same conversations on the same
server, alternated three times, and the multirun's summary prints their tokens/s and quality with
the spread over the repeats. Further Hydra overrides go after `matrix demo` (`matrix demo
backend=sim` runs the same pair against simulated replicas, and every figure says so).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence

DEMO = ("-m", "experiment=demo")


def experiment_command(args: Sequence[str]) -> list[str]:
    """The command line of the one entry point with `args` (Hydra flags and overrides)."""
    return [sys.executable, "-m", "experiments.run", *args]


def run_experiment(args: Sequence[str], *, env: Mapping[str, str] | None = None, prog: str = "matrix run") -> int:
    """Run `python -m experiments.run ARGS...` in a child process (Hydra owns its argv), after printing
    the command on stderr; returns its exit status."""
    cmd = experiment_command(args)
    print(f"{prog}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=None if env is None else dict(env), check=False).returncode


def run_demo(overrides: Sequence[str] = ()) -> int:
    """The demo preset, as a multirun, with the user's further overrides after it."""
    return run_experiment([*DEMO, *overrides], prog="matrix demo")
