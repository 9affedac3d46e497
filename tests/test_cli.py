from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from matrix.cli import build_parser, main, parse_args


def test_unknown_backend_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "tgi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unknown backend 'tgi'" in err[0] and "vllm-cpu" in err[0]


def test_option_the_backend_does_not_take_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "vllm-cpu", "--profile", "a100-llama31-8b"]) == 2
    err = capsys.readouterr().err
    assert "does not take --profile" in err and "a100-llama31-8b" in err


def test_backends_lists_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("sim", "vllm-cpu", "vllm", "sglang", "openai"):
        assert name in out


def test_console_script_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "matrix.cli", "serve", "nope"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown backend 'nope'" in proc.stderr


def test_the_library_has_only_its_own_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """matrix/cli.py defines `serve` and `backends`; benchmarks, the demo and experiments are the harness's."""
    parser = build_parser(plugins=False)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"serve", "backends"}
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "serving", "--backend", "sim"])
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def test_plugin_commands_come_from_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    """`bench` and `demo` are registered by the harness (experiments.bench.cli), `cluster` and `run` by the
    slurm package, all through the entry point group matrix.commands."""
    from importlib.metadata import entry_points

    assert {ep.name for ep in entry_points(group="matrix.commands")} >= {"bench", "cluster", "export", "monitor"}
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"serve", "backends", "bench", "demo", "cluster", "run", "export", "monitor"}
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("bench", "demo", "cluster", "run"))
    assert main(["cluster", "status", "nope", "--root", "/nonexistent-matrix-root"]) == 2
    assert "no cluster named 'nope'" in capsys.readouterr().err


def test_unknown_flags_pass_through_only_where_a_command_asks(capsys: pytest.CaptureFixture[str]) -> None:
    """`matrix run` hands Hydra its own flags (-m, --cfg) in the order given; other commands refuse them."""
    parser = build_parser()
    args = parse_args(parser, ["run", "-m", "--cluster", "c1", "case=coral", "--cfg", "job"])
    assert args.cluster == "c1" and args.overrides == ["-m", "case=coral", "--cfg", "job"]
    assert parse_args(parser, ["run"]).overrides == []
    with pytest.raises(SystemExit):
        parse_args(parser, ["serve", "sim", "--prot", "8000"])
    assert "unrecognized arguments: --prot 8000" in capsys.readouterr().err


def test_run_prints_and_runs_the_one_entry_point(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert main(["run", "-m", "system=matrix,coral-controller", "backend=sim"]) == 3
    assert calls == [[sys.executable, "-m", "experiments.run", "-m", "system=matrix,coral-controller", "backend=sim"]]
    assert "matrix run: " + " ".join(calls[0]) in capsys.readouterr().err
