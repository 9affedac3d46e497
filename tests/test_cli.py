from __future__ import annotations

import subprocess
import sys

import pytest

from matrix.cli import main


def test_unknown_backend_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "tgi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unknown backend 'tgi'" in err[0] and "vllm-cpu" in err[0]


def test_option_the_backend_does_not_take_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "vllm-cpu", "--profile", "a100-llama31-8b"]) == 2
    err = capsys.readouterr().err
    assert "does not take --profile" in err and "a100-llama31-8b" in err


def test_bad_concurrency_list_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "serving", "--backend", "sim", "--concurrency", "1,x"])
    assert "'1,x'" in capsys.readouterr().err


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


def test_plugin_commands_come_from_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    """`cluster` and `run` are registered by the slurm package (entry point group matrix.commands)."""
    from importlib.metadata import entry_points

    assert {ep.name for ep in entry_points(group="matrix.commands")} >= {"cluster"}
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "cluster" in out and "run" in out
    assert main(["cluster", "status", "nope", "--root", "/nonexistent-matrix-root"]) == 2
    assert "no cluster named 'nope'" in capsys.readouterr().err
