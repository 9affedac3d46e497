"""Composing the entry point's Hydra config in tests, as `python -m experiments.run` would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from matrix.runtime import window
from tests.host import CpuStall

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def compose_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def shared_pools() -> Iterator[Any]:
    """The entry point's pool cache, emptied after the test (its servers stopped)."""
    from experiments.pools import SHARED

    yield SHARED
    SHARED.stop()


def check_window(m: dict[str, Any], stall: CpuStall | None = None) -> None:
    """The window of `matrix.runtime.window`: from every worker up to the last result, startup apart.

    The window may end after the last row's own finish time only by what it takes to hand that row
    back (3 s), plus, where `stall` measured the run, the time the host had a CPU stall: another test's
    load can delay the hand-back by that much (a batch pipeline's last write, say), never more."""
    system = m.get("system")
    w = m.get("window")
    assert w, f"{system} records no run window"
    assert w["definition"] == window.DEFINITION, system
    assert w["launched_at"] <= w["ready_at"] <= w["start_at"] <= w["ready_at"] + 1.0, (system, w)
    assert m["startup_seconds"] == pytest.approx(w["ready_at"] - w["launched_at"], abs=0.05), system
    assert m["wall_seconds"] == pytest.approx(w["end_at"] - w["start_at"], abs=0.05), system
    lines = (Path(m["run_dir"]) / "output.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows, system
    first, last = min(float(r["created"]) for r in rows), max(float(r["finished"]) for r in rows)
    assert w["start_at"] - 0.05 <= first and last <= w["end_at"] + 0.05, (system, w, first, last)
    slack = 3.0 + ((stall.seconds or 0.0) if stall is not None else 0.0)
    tail = w["end_at"] - last
    assert tail <= slack, f"{system}: the window ends {tail:.1f} s after the last row (at most {slack:.1f} s, {stall})"
