"""The harness's commands on `matrix` (experiments.bench.cli): `bench ...` keeps its flags, `demo` runs the preset."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from matrix.cli import build_parser, main


def test_bad_concurrency_list_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "serving", "--backend", "sim", "--concurrency", "1,x"])
    assert "'1,x'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench", "serving", "--backend", "sim", "--concurrency", "1,8", "--profile", "h100-llama31-8b"],
         {"backend": "sim", "concurrency": [1, 8], "profile": "h100-llama31-8b", "output_tokens": 128}),
        (["bench", "overhead", "--concurrency", "10", "--offload", "on"],
         {"tasks": 2000, "concurrency": [10], "offload": "on"}),
        (["bench", "chaos", "--tasks", "50", "--targets", "agent,sink", "--time-scale", "5"],
         {"tasks": 50, "targets": "agent,sink", "time_scale": 5.0, "interval": 5.0, "max_attempts": 10}),
        (["bench", "saturation", "results/runs/x", "--replicas", "2"], {"replicas": 2, "profile": None}),
    ],
)  # fmt: skip
def test_bench_commands_keep_their_flags(argv: list[str], expected: dict[str, object]) -> None:
    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert callable(args.func)


def test_demo_runs_the_demo_preset_with_further_overrides(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert main(["demo"]) == 0
    assert main(["demo", "backend=sim", "--cfg", "job"]) == 0
    head = [sys.executable, "-m", "experiments.run", "-m", "experiment=demo"]
    assert calls == [head, [*head, "backend=sim", "--cfg", "job"]]
    err = capsys.readouterr().err
    assert f"matrix demo: {shlex.join(head)}\n" in err
