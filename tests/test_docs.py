"""Every command the docs show exists and is well formed.

The README, REPRODUCE.md, experiments/README.md and slurm/README.md show commands in code blocks
and inline code. Each one is checked without running anything long: an `experiments.run` line is
composed by Hydra (every sweep value of every swept key) and its case and system accept it, as the
entry point would before starting a server; a `matrix` line is parsed by the real `matrix` parser;
a `make` line names an existing target (`make -n`). The long runs themselves are made by `make`
targets and tests elsewhere.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "REPRODUCE.md", "experiments/README.md", "slurm/README.md"]
PREFIXES = ("python -m experiments.run", "matrix ", "make ")


def doc_commands() -> list[tuple[str, str]]:
    """(doc, command) for every command line in a code block or inline code span (an inline span that
    only names a command family, like `matrix bench serving / overhead` or `make reproduce-*`, is prose)."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        fenced = False
        candidates = []
        for line in text.splitlines():
            if line.strip().startswith("```"):
                fenced = not fenced
                continue
            if fenced or line.startswith("    "):
                candidates.append(line.strip())
            candidates += [c for c in re.findall(r"`([^`\n]+)`", line) if " / " not in c and "*" not in c]
        for c in candidates:
            c = re.sub(r"\s+#\s.*$", "", c).strip()  # a trailing comment
            c = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", c)  # environment assignments in front
            if c.startswith(PREFIXES) and "..." not in c.split("#")[0].replace("=...", ""):
                found.append((doc, c))
    return sorted(set(found))


COMMANDS = doc_commands()


def test_the_docs_show_commands_of_each_kind() -> None:
    kinds = {c.split()[0] if not c.startswith("python") else "run" for _, c in COMMANDS}
    assert kinds == {"run", "matrix", "make"}, kinds
    assert ("README.md", "make demo") in COMMANDS and ("README.md", "make test") in COMMANDS


def _jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a multirun: the cartesian product of the swept keys' values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o, text in zip(parsed, overrides, strict=True):
        if o.is_sweep_override():
            key = text.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("doc,command", [c for c in COMMANDS if c[1].startswith("python -m experiments.run")])
def test_entry_point_commands_compose(doc: str, command: str) -> None:
    from omegaconf import OmegaConf

    from experiments.cases import get_case
    from experiments.systems import get_system
    from tests.experiments.conftest import compose_cfg

    args = shlex.split(command)[3:]
    overrides, skip = [], False
    for a in args:
        if skip or a.startswith("-"):
            skip = a in ("--cfg", "-c", "--package", "-p")  # flags that take a value
            continue
        overrides.append(a)
    for job in _jobs(overrides):
        cfg = compose_cfg(*job)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves (${cluster.layout...})
        case = get_case(cfg.case)
        case.pool_specs()
        get_system(str(cfg.system.name)).check(case, cfg.system)


@pytest.mark.parametrize("doc,command", [c for c in COMMANDS if c[1].startswith("matrix ")])
def test_matrix_commands_parse(doc: str, command: str) -> None:
    from matrix.cli import build_parser, parse_args

    argv = shlex.split(command)[1:]
    try:
        args = parse_args(build_parser(), argv)
    except SystemExit:
        # A command named in prose without its required arguments (`matrix serve`): the command
        # itself must exist, which its --help shows (exit 0); an unknown one is a usage error (2).
        with pytest.raises(SystemExit) as exc:
            parse_args(build_parser(), [*argv, "--help"])
        assert exc.value.code == 0 and len(argv) <= 2, command
        return
    assert callable(args.func), command


def test_make_targets_exist() -> None:
    targets = sorted({shlex.split(c)[1] for _, c in COMMANDS if c.startswith("make ")})
    assert "demo" in targets and "test" in targets
    for target in targets:
        p = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "No rule to make target" not in p.stderr, (target, p.stderr)
