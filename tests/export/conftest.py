"""Small real run directories to export: the one entry point on the sim backend and the virtual clock
(the real scheduling code and agents, simulated replicas in-process), made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUNS = {
    # case, system -> overrides, the run directory's name
    ("coral", "matrix"): (["case=coral", "case.limit=6", "case.max_turns=4"], "coral/matrix/t-c16"),
    ("coral", "coral-controller"): (["case=coral", "case.limit=6", "case.max_turns=4"], "coral/coral-controller/t-w16"),
    ("tau2", "matrix"): (["case=tau2", "case.domain=telecom", "case.limit=3"], "tau2/matrix/t-c16"),
    ("nr", "matrix"): (["case=nr", "case.limit=120"], "natural_reasoning/matrix/t-p1-t16-a1"),
}


def make_run(root: Path, case: str, system: str) -> Path:
    overrides, name = RUNS[(case, system)]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "experiments.run", *overrides, f"system={system}", "backend=sim", "clock=virtual",
           f"run_root={root}", "run_id=t", "progress=false", "wandb.mode=disabled"]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = root / name
    assert (run_dir / "output.jsonl").is_file(), p.stdout
    return run_dir


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-runs")
    return {f"{case}/{system}": make_run(root, case, system) for case, system in RUNS}
